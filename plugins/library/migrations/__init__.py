"""The library plugin's schema migrations (Alembic revision files)."""
