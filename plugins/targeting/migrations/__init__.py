"""The targeting plugin's schema migrations (Alembic revision files)."""
