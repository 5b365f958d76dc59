"""The HTTP layer: routing, JSON in and out, errors, auth, rate limits, CORS, access log."""
