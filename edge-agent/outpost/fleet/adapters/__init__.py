"""The fleet's adapters: the database (SQLAlchemy, Alembic), the HTTP API (FastAPI) and its server (uvicorn)."""
