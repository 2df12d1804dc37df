"""The uploads plugin's schema migrations (Alembic revision files)."""
