"""The client version matrix: one end-to-end scenario run by several client libraries."""
