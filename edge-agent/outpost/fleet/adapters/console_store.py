"""The console's tables on SQLAlchemy (SQLite or PostgreSQL): sessions and reported metric series.

Kept apart from :class:`~outpost.fleet.adapters.database.SqlStore` (the fleet's own seam) like the
rollouts' store, on the same engine; the tables come from migration 0004. Implements
:class:`outpost.fleet.console.session.SessionStore`, :class:`outpost.fleet.series.SeriesStore` and the
device list's search (:class:`outpost.fleet.console.views.DeviceIndex`, over the fleet's ``devices``
table: filtered, counted and paged by the database, so a page of 10,000 devices reads one page).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outpost.fleet.adapters.database import devices
from outpost.fleet.adapters.transaction import transaction
from outpost.fleet.console.session import SessionRecord
from outpost.fleet.console.views import DeviceQuery
from outpost.fleet.series import Point

__all__ = ["SqlConsoleStore"]


def _contains(column: Any, text: str) -> Any:
    """Case-insensitive "contains", with LIKE's wildcards in ``text`` taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(column).like(f"%{escaped}%", escape="\\")


def _where(query: DeviceQuery) -> list[Any]:
    clauses: list[Any] = []
    key, equals, value = query.text.partition("=")
    if equals and key.strip():
        clauses.append(_contains(devices.c.tags[key.strip()].as_string(), value.strip()))
    elif query.text:
        clauses.append(sa.or_(_contains(devices.c.id, query.text), _contains(sa.cast(devices.c.tags, sa.Text),
                                                                              query.text)))  # fmt: skip
    if query.state in {"enabled", "disabled"}:
        clauses.append(devices.c.status == query.state)
    elif query.state == "never":
        clauses.append(devices.c.last_activity.is_(None))
    elif query.state == "online":
        clauses.append(devices.c.last_activity >= query.online_since)
    elif query.state == "offline":
        clauses.append(devices.c.last_activity < query.online_since)
    return clauses


meta = sa.MetaData()
sessions = sa.Table(
    "console_sessions",
    meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("operator", sa.String),
    sa.Column("created", sa.Float),
    sa.Column("expires", sa.Float),
    sa.Column("last_seen", sa.Float),
)
points = sa.Table(
    "metric_points",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String),
    sa.Column("metric", sa.String),
    sa.Column("at", sa.Float),
    sa.Column("value", sa.Float),
)


class SqlConsoleStore:
    """Sessions and metric series on the fleet's engine (migrated by ``database.migrate``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # sessions

    def add_session(self, session: str, record: SessionRecord) -> None:
        with transaction(self.engine) as c:
            c.execute(sessions.insert().values(id=session, operator=record.operator, created=record.created,
                                               expires=record.expires, last_seen=record.last_seen))  # fmt: skip

    def session(self, session: str) -> SessionRecord | None:
        query = sa.select(sessions.c.operator, sessions.c.created, sessions.c.expires, sessions.c.last_seen)
        with transaction(self.engine) as c:
            row = c.execute(query.where(sessions.c.id == session)).first()
        return SessionRecord(row.operator, row.created, row.expires, row.last_seen) if row else None

    def touch_session(self, session: str, at: float) -> None:
        with transaction(self.engine) as c:
            c.execute(sessions.update().where(sessions.c.id == session).values(last_seen=at))

    def end_session(self, session: str) -> bool:
        with transaction(self.engine) as c:
            return bool(c.execute(sessions.delete().where(sessions.c.id == session)).rowcount)

    def prune_sessions(self, now: float) -> None:
        with transaction(self.engine) as c:
            c.execute(sessions.delete().where(sessions.c.expires < now))

    # the device list

    def search_devices(self, query: DeviceQuery) -> tuple[int, list[dict[str, Any]]]:
        """How many devices match, and the page ``offset..offset+limit`` of them by id (list rows, not twins)."""
        where = _where(query)
        columns = (devices.c.id, devices.c.tags, devices.c.status, devices.c.last_activity, devices.c.credential_hash)
        page = sa.select(*columns).where(*where).order_by(devices.c.id).offset(query.offset).limit(query.limit)
        with transaction(self.engine) as c:
            total = int(c.execute(sa.select(sa.func.count()).select_from(devices).where(*where)).scalar_one())
            rows = c.execute(page).all()
        return total, [
            {"deviceId": r.id, "tags": r.tags or {}, "status": r.status, "lastActivityTime": r.last_activity,
             "activated": r.credential_hash is not None}
            for r in rows
        ]  # fmt: skip

    # metric series

    def add_points(self, batch: Sequence[Point]) -> None:
        """One transaction, one multi-row insert per chunk."""
        rows = [{"device_id": p.device_id, "metric": p.metric, "at": p.at, "value": p.value} for p in batch]
        with transaction(self.engine) as c:
            for start in range(0, len(rows), 5000):
                c.execute(points.insert(), rows[start : start + 5000])

    def trim_series(self, series: Sequence[tuple[str, str]], keep: int) -> None:
        """Keep the newest ``keep`` points of each (device, metric)."""
        with transaction(self.engine) as c:
            for device_id, metric in series:
                newest = (
                    sa.select(points.c.id)
                    .where(points.c.device_id == device_id, points.c.metric == metric)
                    .order_by(points.c.at.desc(), points.c.id.desc())
                    .limit(keep)
                    .scalar_subquery()
                )
                c.execute(
                    points.delete().where(
                        points.c.device_id == device_id, points.c.metric == metric, points.c.id.not_in(newest)
                    )
                )

    def prune_points(self, before: float) -> None:
        with transaction(self.engine) as c:
            c.execute(points.delete().where(points.c.at < before))

    def series(self, device_id: str, since: float) -> dict[str, list[tuple[float, float]]]:
        """Every metric of a device since ``since``: name -> [(at, value)], oldest first."""
        query = (
            sa.select(points.c.metric, points.c.at, points.c.value)
            .where(points.c.device_id == device_id, points.c.at >= since)
            .order_by(points.c.metric, points.c.at)
        )
        found: dict[str, list[tuple[float, float]]] = {}
        with transaction(self.engine) as c:
            for row in c.execute(query):
                found.setdefault(row.metric, []).append((float(row.at), float(row.value)))
        return found
