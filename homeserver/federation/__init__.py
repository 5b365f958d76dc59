"""Federation: talking to other homeservers (transport, keys, sending, receiving)."""
