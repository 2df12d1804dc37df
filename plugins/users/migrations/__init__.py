"""The users plugin's schema migrations (Alembic revision files)."""
