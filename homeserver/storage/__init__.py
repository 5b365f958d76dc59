"""Storage: the database engine, migrations, and one store module per domain (SQL only)."""
