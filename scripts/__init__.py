"""Command-line entry points: register a user, benchmarks, and (later) restore and export."""
