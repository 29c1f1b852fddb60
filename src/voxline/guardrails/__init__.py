"""Guardrails: keeping personal data out of logs, and limits on what agents say."""
