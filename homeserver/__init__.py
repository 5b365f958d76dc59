"""The Twisted application: HTTP layer, services per domain, storage."""

__version__ = "0.1.0"
