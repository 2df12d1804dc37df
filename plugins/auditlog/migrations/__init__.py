"""The auditlog plugin's schema migrations (Alembic revision files)."""
