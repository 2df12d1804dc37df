"""The tunnels plugin's schema migrations (Alembic revision files)."""
