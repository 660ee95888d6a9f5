"""The fleet console: server-rendered pages over :class:`~outpost.fleet.service.FleetService`.

Pure parts only (what a page shows, signed sessions, the Jinja2 environment); the FastAPI
routes are in :mod:`outpost.fleet.adapters.console`.
"""
