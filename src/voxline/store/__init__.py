"""Durable storage behind one interface: SQLite by default; PostgreSQL and Redis plug in later."""
