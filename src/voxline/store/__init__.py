"""Durable storage behind one interface (SQLite by default, PostgreSQL, Redis) and event brokers."""
