"""Persistence: SQLAlchemy 2 models, Alembic migrations and the tenant-aware repositories."""
