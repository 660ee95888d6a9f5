"""Rollouts, the driver's lease and the model registry on SQLAlchemy (SQLite or PostgreSQL).

Model blobs live in the database, not in a state directory: the service stays stateless over
its database, so any instance serving the fleet can hand any device any model, and a backup of
the database is a backup of the registry. Ranges are read with ``substr`` in the database, so a
resumed download does not load the whole model. Implements
:class:`outpost.fleet.rollout.store.RolloutStore`; the tables come from migration 0002.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from outpost.fleet.adapters.transaction import transaction
from outpost.fleet.models import now_utc
from outpost.fleet.rollout.store import ModelRecord

__all__ = ["SqlRolloutStore"]

meta = sa.MetaData()
rollouts = sa.Table(
    "rollouts",
    meta,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("doc", sa.JSON),
    sa.Column("version", sa.Integer),
    sa.Column("created", sa.String),
    sa.Column("updated", sa.String),
)
leases = sa.Table(
    "leases", meta, sa.Column("name", sa.String, primary_key=True), sa.Column("holder", sa.String),
    sa.Column("expires", sa.Float),
)  # fmt: skip
models = sa.Table(
    "models",
    meta,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("version", sa.String, primary_key=True),
    sa.Column("sha256", sa.String),
    sa.Column("size", sa.BigInteger),
    sa.Column("metadata", sa.JSON),
    sa.Column("content", sa.LargeBinary),
    sa.Column("created", sa.String),
    sa.Column("created_by", sa.String),
)
_MODEL_COLUMNS = [c for c in models.c if c.name != "content"]


def _model(row: Any) -> ModelRecord:
    return ModelRecord(row.name, row.version, row.sha256, int(row.size), dict(row.metadata or {}), row.created,
                       row.created_by)  # fmt: skip


class SqlRolloutStore:
    """RolloutStore on the fleet's engine (migrated by :func:`outpost.fleet.adapters.database.migrate`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # rollouts

    def add_rollout(self, doc: dict[str, Any]) -> bool:
        at = now_utc()
        try:
            with transaction(self.engine, conflicts=True) as c:
                c.execute(rollouts.insert().values(name=doc["name"], doc=doc, version=doc["version"], created=at,
                                                   updated=at))  # fmt: skip
        except IntegrityError:
            return False
        return True

    def rollout(self, name: str) -> dict[str, Any] | None:
        with transaction(self.engine, conflicts=True) as c:
            row = c.execute(sa.select(rollouts.c.doc).where(rollouts.c.name == name)).first()
        return dict(row.doc) if row else None

    def rollouts(self) -> list[dict[str, Any]]:
        with transaction(self.engine, conflicts=True) as c:
            rows = c.execute(sa.select(rollouts.c.doc).order_by(rollouts.c.created)).all()
        return [dict(r.doc) for r in rows]

    def write_rollout(self, doc: dict[str, Any], expected_version: int) -> bool:
        with transaction(self.engine, conflicts=True) as c:
            result = c.execute(
                rollouts.update()
                .where(rollouts.c.name == doc["name"], rollouts.c.version == expected_version)
                .values(doc=doc, version=doc["version"], updated=now_utc())
            )
        return result.rowcount == 1

    def acquire_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Take or renew the lease ``name`` until ``now + ttl`` unless another holder's is still valid."""
        try:
            with transaction(self.engine, conflicts=True) as c:
                result = c.execute(
                    leases.update()
                    .where(leases.c.name == name, sa.or_(leases.c.holder == holder, leases.c.expires < now))
                    .values(holder=holder, expires=now + ttl)
                )
                if result.rowcount == 1:
                    return True
                if c.execute(sa.select(leases.c.name).where(leases.c.name == name)).first() is not None:
                    return False
                c.execute(leases.insert().values(name=name, holder=holder, expires=now + ttl))
        except IntegrityError:
            return False
        return True

    # model registry

    def add_model(self, record: ModelRecord, content: bytes) -> bool:
        try:
            with transaction(self.engine, conflicts=True) as c:
                c.execute(
                    models.insert().values(
                        name=record.name,
                        version=record.version,
                        sha256=record.sha256,
                        size=record.size,
                        metadata=record.metadata,
                        content=content,
                        created=record.created,
                        created_by=record.created_by,
                    )
                )
        except IntegrityError:
            return False
        return True

    def model(self, name: str, version: str) -> ModelRecord | None:
        with transaction(self.engine, conflicts=True) as c:
            row = c.execute(
                sa.select(*_MODEL_COLUMNS).where(models.c.name == name, models.c.version == version)
            ).first()
        return _model(row) if row else None

    def models(self) -> list[ModelRecord]:
        with transaction(self.engine, conflicts=True) as c:
            rows = c.execute(sa.select(*_MODEL_COLUMNS).order_by(models.c.name, models.c.created)).all()
        return [_model(r) for r in rows]

    def model_content(self, name: str, version: str, start: int = 0, end: int | None = None) -> bytes | None:
        """Bytes ``start..end`` (inclusive, as in HTTP ranges) of a model, read in the database."""
        length = sa.func.length(models.c.content) if end is None else end - start + 1
        column = sa.func.substr(models.c.content, start + 1, length)
        with transaction(self.engine, conflicts=True) as c:
            row = c.execute(sa.select(column.label("part")).where(models.c.name == name,
                                                                  models.c.version == version)).first()  # fmt: skip
        return bytes(row.part) if row else None
