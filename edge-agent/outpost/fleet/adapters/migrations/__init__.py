"""Alembic migrations of the fleet's schema (run at start by :mod:`outpost.fleet.adapters.database`)."""
