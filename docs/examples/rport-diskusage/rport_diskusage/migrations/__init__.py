"""Alembic revision files of the diskusage plugin's table (run by rportd at start-up)."""
