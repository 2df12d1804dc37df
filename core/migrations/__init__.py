"""The core's schema migrations (Alembic revision files; see core/store/migrate.py)."""
