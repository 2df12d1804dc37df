"""The commands plugin's schema migrations (Alembic revision files)."""
