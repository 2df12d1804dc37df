"""The scheduler plugin's schema migrations (Alembic revision files)."""
