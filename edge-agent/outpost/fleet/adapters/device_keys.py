"""Devices' signing keys on SQLAlchemy (SQLite or PostgreSQL); the table comes from migration 0003.

Implements :class:`outpost.fleet.imports.DeviceKeyStore` on the fleet's engine.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from outpost.fleet.adapters.transaction import transaction
from outpost.fleet.imports import SigningKey

__all__ = ["SqlDeviceKeyStore"]

meta = sa.MetaData()
device_keys = sa.Table(
    "device_keys",
    meta,
    sa.Column("device_id", sa.String, primary_key=True),
    sa.Column("key_id", sa.String),
    sa.Column("public_key", sa.String),
    sa.Column("device_created", sa.String),
    sa.Column("added", sa.String),
    sa.Column("added_by", sa.String),
    sa.Column("last_export_at", sa.String),
    sa.Column("last_export_sha256", sa.String),
)


def _is(column: sa.Column[str], value: str | None) -> sa.ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


class SqlDeviceKeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def signing_key(self, device_id: str) -> SigningKey | None:
        with transaction(self.engine) as c:
            row = c.execute(sa.select(device_keys).where(device_keys.c.device_id == device_id)).first()
        if row is None:
            return None
        return SigningKey(row.device_id, row.key_id, row.public_key, row.device_created, row.added, row.added_by,
                          row.last_export_at, row.last_export_sha256)  # fmt: skip

    def put_signing_key(self, key: SigningKey) -> None:
        """Register or replace a device's key; a new key starts a new export history."""
        values = {
            "key_id": key.key_id,
            "public_key": key.public_key,
            "device_created": key.device_created,
            "added": key.added,
            "added_by": key.added_by,
            "last_export_at": None,
            "last_export_sha256": None,
        }
        with transaction(self.engine) as c:
            done = c.execute(device_keys.update().where(device_keys.c.device_id == key.device_id).values(**values))
            if not done.rowcount:
                c.execute(device_keys.insert().values(device_id=key.device_id, **values))

    def mark_export(self, device_id: str, at: str, sha256: str, expected_sha256: str | None) -> bool:
        with transaction(self.engine) as c:
            done = c.execute(
                device_keys.update()
                .where(device_keys.c.device_id == device_id, _is(device_keys.c.last_export_sha256, expected_sha256))
                .values(last_export_at=at, last_export_sha256=sha256)
            )  # fmt: skip
            return bool(done.rowcount)
