"""Server-side cryptography, pure functions: keys, hashes, tokens, signatures."""
