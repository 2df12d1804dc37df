"""The auth_jwt plugin's schema migrations (Alembic revision files)."""
