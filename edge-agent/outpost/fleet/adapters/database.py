"""The fleet's store on SQLAlchemy: SQLite (the embedded default) or PostgreSQL (psycopg).

Schema changes are Alembic migrations (``migrations/versions``), run at start under a
PostgreSQL advisory lock so several instances starting together migrate once. Merging
writes are compare-and-set on a version column, so instances never lose each other's
updates without holding locks. Implements :class:`outpost.fleet.store.FleetStore`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from outpost.errors import StoreError
from outpost.fleet.adapters.transaction import transaction
from outpost.fleet.errors import ConflictError
from outpost.fleet.models import (
    CountRow,
    DeploymentRecord,
    DeviceRecord,
    DeviceStatus,
    HistoryEntry,
    ModuleTwin,
    now_utc,
)
from outpost.fleet.store import Changes, CountCompute, DeviceSecrets, ReportsBasis

__all__ = ["SqlStore", "engine_for", "migrate"]


class _StaleError(Exception):
    """A compare-and-set lost to another writer: roll the transaction back and try again."""


_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x0F1EE7
_COUNT_LOCK = 0x0F1EE8  # PostgreSQL: writers of count rows share it, a recount holds it alone
RECOUNT_CHUNK = 250  # devices per recount transaction (about 10-30 ms of holding off the reports)

meta = sa.MetaData()
operators = sa.Table(
    "operators", meta, sa.Column("name", sa.String, primary_key=True), sa.Column("secret_hash", sa.String),
    sa.Column("created", sa.String),
)  # fmt: skip
devices = sa.Table(
    "devices",
    meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("tags", sa.JSON),
    sa.Column("status", sa.String),
    sa.Column("activation_hash", sa.String),
    sa.Column("credential_hash", sa.String),
    sa.Column("desired", sa.JSON),
    sa.Column("reported", sa.JSON),
    sa.Column("version", sa.Integer),
    sa.Column("created", sa.String),
    sa.Column("last_activity", sa.String),
)
module_twins = sa.Table(
    "module_twins",
    meta,
    sa.Column("device_id", sa.String, primary_key=True),
    sa.Column("module_id", sa.String, primary_key=True),
    sa.Column("desired", sa.JSON),
    sa.Column("reported", sa.JSON),
    sa.Column("desired_version", sa.Integer),
    sa.Column("reported_version", sa.Integer),
    sa.Column("desired_signatures", sa.JSON),
)
deployments = sa.Table(
    "deployments",
    meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("seq", sa.Integer),
    sa.Column("content", sa.JSON),
    sa.Column("content_hash", sa.String),
    sa.Column("target", sa.Text),
    sa.Column("priority", sa.Integer),
    sa.Column("layered", sa.Boolean),
    sa.Column("labels", sa.JSON),
    sa.Column("metrics", sa.JSON),
    sa.Column("created", sa.String),
    sa.Column("created_by", sa.String),
    sa.Column("signatures", sa.JSON),
)
history = sa.Table(
    "history",
    meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String),
    sa.Column("actor", sa.String),
    sa.Column("action", sa.String),
    sa.Column("deployment_id", sa.String),
    sa.Column("detail", sa.JSON),
)
meta_values = sa.Table("meta", meta, sa.Column("key", sa.String, primary_key=True), sa.Column("value", sa.Integer))
changes = sa.Table(
    "changes",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String),
    sa.Column("at", sa.Float),
)
deployment_devices = sa.Table(
    "deployment_devices",
    meta,
    sa.Column("deployment_id", sa.String, primary_key=True),
    sa.Column("device_id", sa.String, primary_key=True),
    sa.Column("targeted", sa.Boolean),
    sa.Column("applied", sa.Boolean),
    sa.Column("state", sa.String),
    sa.Column("code", sa.Integer),
    sa.Column("reason", sa.Text),
)


def _count_row(row: Any) -> CountRow:
    return CountRow(row.deployment_id, row.device_id, bool(row.targeted), bool(row.applied), row.state, row.code,
                    row.reason)  # fmt: skip


def _row_values(row: CountRow) -> dict[str, Any]:
    return {"deployment_id": row.deployment_id, "device_id": row.device_id, "targeted": row.targeted,
            "applied": row.applied, "state": row.state, "code": row.code, "reason": row.reason}  # fmt: skip


_REPORT_UPDATE = (
    module_twins.update()
    .where(
        module_twins.c.device_id == sa.bindparam("b_device"),
        module_twins.c.module_id == sa.bindparam("b_module"),
        module_twins.c.desired_version == sa.bindparam("b_old_desired"),
        module_twins.c.reported_version == sa.bindparam("b_old_reported"),
    )
    .values(reported=sa.bindparam("b_reported", type_=sa.JSON), reported_version=sa.bindparam("b_version"))
)
_TOUCH = (
    devices.update()
    .where(
        devices.c.id == sa.bindparam("b_id"),
        devices.c.version == sa.bindparam("b_version"),
        devices.c.status == DeviceStatus.ENABLED.value,
    )
    .values(last_activity=sa.bindparam("b_at"))
)


def engine_for(url: str) -> Engine:
    """An engine for ``sqlite:///PATH`` or ``postgresql://...`` (psycopg 3 is used for the latter)."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        if url.startswith("sqlite"):
            # as many connections as the request threads: reads never wait for the pool (writes wait for SQLite)
            engine = sa.create_engine(url, connect_args={"timeout": 30}, pool_size=20, max_overflow=20)

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            return engine
        return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"cannot use database {redact(url)}: {exc}") from exc


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparsable database URL>"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (once, even with several instances starting)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate the fleet database {redact(str(engine.url))}: {exc}") from exc


def _device(row: Any) -> DeviceRecord:
    return DeviceRecord(
        id=row.id,
        tags=row.tags or {},
        status=DeviceStatus(row.status),
        activated=row.credential_hash is not None,
        desired=row.desired or {},
        reported=row.reported or {},
        version=row.version,
        created=row.created,
        last_activity=row.last_activity,
    )


def _module(row: Any) -> ModuleTwin:
    return ModuleTwin(
        row.device_id, row.module_id, row.desired or {}, row.reported or {}, row.desired_version, row.reported_version,
        row.desired_signatures or [],
    )  # fmt: skip


def _deployment(row: Any) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        content=row.content,
        target=row.target,
        priority=row.priority,
        layered=bool(row.layered),
        labels=row.labels or {},
        metrics=row.metrics or {},
        created=row.created,
        created_by=row.created_by,
        seq=row.seq,
        content_hash=row.content_hash,
        signatures=row.signatures or [],
    )


def _entry(row: Any) -> HistoryEntry:
    return HistoryEntry(row.seq, row.at, row.actor, row.action, row.deployment_id, row.detail or {})


class SqlStore:
    """FleetStore on one SQLAlchemy engine; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> SqlStore:
        engine = engine_for(url)
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def _tx(self) -> AbstractContextManager[Connection]:
        return transaction(self.engine, conflicts=True)  # IntegrityError: the callers' compare-and-set

    @staticmethod
    def _changed(connection: Connection, device_id: str | None) -> None:
        connection.execute(changes.insert().values(device_id=device_id, at=time.time()))

    # operators
    def operator_hash(self, name: str) -> str | None:
        with self._tx() as c:
            return c.execute(sa.select(operators.c.secret_hash).where(operators.c.name == name)).scalar()

    def add_operator(self, name: str, secret_hash: str) -> bool:
        try:
            with self._tx() as c:
                c.execute(operators.insert().values(name=name, secret_hash=secret_hash, created=now_utc()))
        except IntegrityError:
            return False
        return True

    # devices
    def add_device(self, device: DeviceRecord, activation_hash: str) -> None:
        try:
            with self._tx() as c:
                c.execute(
                    devices.insert().values(
                        id=device.id,
                        tags=device.tags,
                        status=device.status.value,
                        activation_hash=activation_hash,
                        credential_hash=None,
                        desired=device.desired,
                        reported=device.reported,
                        version=device.version,
                        created=device.created,
                        last_activity=None,
                    )
                )
                self._changed(c, device.id)
        except IntegrityError as exc:
            raise ConflictError(f"device {device.id!r} exists already") from exc

    def device(self, device_id: str) -> DeviceRecord | None:
        with self._tx() as c:
            row = c.execute(sa.select(devices).where(devices.c.id == device_id)).first()
        return _device(row) if row else None

    def devices(self) -> list[DeviceRecord]:
        with self._tx() as c:
            return [_device(row) for row in c.execute(sa.select(devices).order_by(devices.c.id))]

    def devices_by_id(self, device_ids: Sequence[str]) -> dict[str, DeviceRecord]:
        with self._tx() as c:
            rows = c.execute(sa.select(devices).where(devices.c.id.in_(list(device_ids))))
            return {row.id: _device(row) for row in rows}

    def device_secrets(self, device_id: str) -> DeviceSecrets | None:
        query = sa.select(devices.c.activation_hash, devices.c.credential_hash, devices.c.status)
        with self._tx() as c:
            row = c.execute(query.where(devices.c.id == device_id)).first()
        return DeviceSecrets(row.activation_hash, row.credential_hash, DeviceStatus(row.status)) if row else None

    def activate(self, device_id: str, activation_hash: str, credential_hash: str) -> bool:
        with self._tx() as c:
            done = c.execute(
                devices.update()
                .where(devices.c.id == device_id, devices.c.activation_hash == activation_hash)
                .values(activation_hash=None, credential_hash=credential_hash)
            ).rowcount
            if done:
                self._changed(c, device_id)  # the twin's "activated" changed: count it again
            return bool(done)

    def set_status(self, device_id: str, status: DeviceStatus) -> bool:
        with self._tx() as c:
            done = c.execute(
                devices.update()
                .where(devices.c.id == device_id)
                .values(status=status.value, version=devices.c.version + 1)
            ).rowcount
            if done:
                self._changed(c, device_id)
            return bool(done)

    def write_device(self, device: DeviceRecord, expected_version: int) -> bool:
        with self._tx() as c:
            done = c.execute(
                devices.update()
                .where(devices.c.id == device.id, devices.c.version == expected_version)
                .values(tags=device.tags, desired=device.desired, reported=device.reported, version=device.version)
            ).rowcount
            if done:
                self._changed(c, device.id)
            return bool(done)

    def delete_device(self, device_id: str) -> bool:
        with self._tx() as c:
            done = c.execute(devices.delete().where(devices.c.id == device_id)).rowcount
            c.execute(module_twins.delete().where(module_twins.c.device_id == device_id))
            if done:
                self._changed(c, device_id)
            return bool(done)

    def touch(self, device_id: str, at: str) -> None:
        with self._tx() as c:
            c.execute(devices.update().where(devices.c.id == device_id).values(last_activity=at))

    # module twins
    def module_twins(self, device_id: str | None = None) -> list[ModuleTwin]:
        query = sa.select(module_twins)
        if device_id is not None:
            query = query.where(module_twins.c.device_id == device_id)
        with self._tx() as c:
            return [_module(row) for row in c.execute(query)]

    def desired_overrides(self) -> dict[str, list[ModuleTwin]]:
        """device -> module twins with operator-set desired properties (or signatures), reported left out."""
        c_ = module_twins.c
        query = sa.select(c_.device_id, c_.module_id, c_.desired, c_.desired_version, c_.desired_signatures).where(
            c_.desired_version > 0
        )
        result: dict[str, list[ModuleTwin]] = {}
        with self._tx() as c:
            for row in c.execute(query):
                if row.desired or row.desired_signatures:
                    twin = ModuleTwin(row.device_id, row.module_id, row.desired or {},
                                      desired_version=row.desired_version,
                                      desired_signatures=row.desired_signatures or [])  # fmt: skip
                    result.setdefault(row.device_id, []).append(twin)
        return result

    def module_twins_of(self, device_ids: Sequence[str]) -> dict[str, dict[str, ModuleTwin]]:
        """device -> module -> twin, for these devices (one query)."""
        result: dict[str, dict[str, ModuleTwin]] = {}
        with self._tx() as c:
            for row in c.execute(sa.select(module_twins).where(module_twins.c.device_id.in_(list(device_ids)))):
                result.setdefault(row.device_id, {})[row.module_id] = _module(row)
        return result

    def reports_basis(self, device_ids: Sequence[str]) -> ReportsBasis:
        """Devices (with credential hashes), module twins and count rows of a report batch: one transaction."""
        ids = list(device_ids)
        found: dict[str, DeviceRecord] = {}
        hashes: dict[str, str | None] = {}
        twins: dict[str, dict[str, ModuleTwin]] = {}
        rows: dict[str, list[CountRow]] = {}
        with self._tx() as c:
            for row in c.execute(sa.select(devices).where(devices.c.id.in_(ids))):
                found[row.id] = _device(row)
                hashes[row.id] = row.credential_hash
            for row in c.execute(sa.select(module_twins).where(module_twins.c.device_id.in_(ids))):
                twins.setdefault(row.device_id, {})[row.module_id] = _module(row)
            query = sa.select(deployment_devices).where(deployment_devices.c.device_id.in_(ids))
            for row in c.execute(query.order_by(deployment_devices.c.device_id, deployment_devices.c.deployment_id)):
                rows.setdefault(row.device_id, []).append(_count_row(row))
        return ReportsBasis(found, hashes, twins, rows)

    def write_reports(
        self,
        pairs: Sequence[tuple[ModuleTwin, ModuleTwin | None]],
        touches: Sequence[tuple[str, int, str]],
        rows: Mapping[str, Sequence[CountRow]],
        deployments_version: int,
    ) -> bool:
        """Module twins' reported properties (new, expected), each device's last activity and its new
        count rows (computed against ``deployments_version``), all or nothing.

        ``touches``: ``(device id, expected version, at)``; a device whose version moved, or that
        is no longer enabled, or deployments that moved, fail the whole write (the caller reads again).
        """
        updates = [
            {"b_device": t.device_id, "b_module": t.module_id, "b_reported": t.reported,
             "b_version": t.reported_version, "b_old_desired": old.desired_version,
             "b_old_reported": old.reported_version}
            for t, old in pairs if old is not None
        ]  # fmt: skip
        inserts = [
            {"device_id": t.device_id, "module_id": t.module_id, "desired": t.desired, "reported": t.reported,
             "desired_version": t.desired_version, "reported_version": t.reported_version,
             "desired_signatures": t.desired_signatures or None}
            for t, old in pairs if old is None
        ]  # fmt: skip
        try:
            with self._tx() as c:
                if updates and c.execute(_REPORT_UPDATE, updates).rowcount != len(updates):
                    raise _StaleError
                if inserts:
                    c.execute(module_twins.insert(), inserts)
                touched = [{"b_id": d, "b_version": v, "b_at": at} for d, v, at in touches]
                if touched and c.execute(_TOUCH, touched).rowcount != len(touched):
                    raise _StaleError
                if rows:
                    self._count_lock(c, shared=True)
                    if self._deployments_version(c) != deployments_version:
                        raise _StaleError
                    self._replace_rows(c, list(rows), [r for device_rows in rows.values() for r in device_rows])
        except (_StaleError, IntegrityError):
            return False
        return True

    # status counts
    @staticmethod
    def _count_lock(c: Connection, *, shared: bool) -> None:
        """PostgreSQL: count-row writers exclude a recount (SQLite: the write lock they hold does)."""
        if c.dialect.name == "postgresql":
            function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
            c.execute(sa.text(f"SELECT {function}(:id)"), {"id": _COUNT_LOCK})

    @staticmethod
    def _deployments_version(c: Connection) -> int:
        return int(c.execute(sa.select(meta_values.c.value).where(meta_values.c.key == "deployments")).scalar_one())

    @staticmethod
    def _replace_rows(c: Connection, device_ids: Sequence[str], new: Sequence[CountRow]) -> None:
        """The count rows of these devices become ``new`` (a report batch's devices whose rows changed:
        the batch compared them with the stored ones already, which :meth:`_update_rows` has to read)."""
        for start in range(0, len(device_ids), 1000):
            chunk = list(device_ids[start : start + 1000])
            c.execute(deployment_devices.delete().where(deployment_devices.c.device_id.in_(chunk)))
        if new:
            c.execute(deployment_devices.insert(), [_row_values(r) for r in new])

    @staticmethod
    def _update_rows(c: Connection, device_ids: Sequence[str], new: Sequence[CountRow]) -> None:
        """The count rows of these devices become ``new``, writing only the rows that differ: after a
        push to all, two of a device's rows change (the new deployment's, the one it replaces), not
        all of them."""
        t = deployment_devices.c
        query = sa.select(deployment_devices).where(t.device_id.in_(list(device_ids)))
        stored = {(row.deployment_id, row.device_id): _count_row(row) for row in c.execute(query)}
        fresh = {(row.deployment_id, row.device_id): row for row in new}
        gone = [{"b_deployment": d, "b_device": v} for (d, v), row in stored.items() if fresh.get((d, v)) != row]
        if gone:
            c.execute(deployment_devices.delete().where(t.deployment_id == sa.bindparam("b_deployment"),
                                                        t.device_id == sa.bindparam("b_device")), gone)  # fmt: skip
        added = [_row_values(row) for key, row in fresh.items() if stored.get(key) != row]
        if added:
            c.execute(deployment_devices.insert(), added)

    def count_rows_of(self, device_ids: Sequence[str]) -> dict[str, list[CountRow]]:
        """Each device's stored count rows, ordered by deployment."""
        query = sa.select(deployment_devices).where(deployment_devices.c.device_id.in_(list(device_ids)))
        result: dict[str, list[CountRow]] = {}
        with self._tx() as c:
            for row in c.execute(query.order_by(deployment_devices.c.device_id, deployment_devices.c.deployment_id)):
                result.setdefault(row.device_id, []).append(_count_row(row))
        return result

    def deployment_rows(self, deployment_id: str) -> list[CountRow]:
        query = sa.select(deployment_devices).where(deployment_devices.c.deployment_id == deployment_id)
        with self._tx() as c:
            return [_count_row(row) for row in c.execute(query.order_by(deployment_devices.c.device_id))]

    def count_summary(self) -> dict[str, dict[str, int]]:
        """deployment -> targeted, applied, successful, failed: one GROUP BY on the columns of the
        ``deployment_devices_counts`` index (migration 0007), which it reads alone."""
        t = deployment_devices.c
        query = sa.select(t.deployment_id, t.targeted, t.applied, t.state, sa.func.count().label("n")).group_by(
            t.deployment_id, t.targeted, t.applied, t.state
        )
        result: dict[str, dict[str, int]] = {}
        with self._tx() as c:
            for row in c.execute(query):
                counts = result.setdefault(row.deployment_id, {"targetedCount": 0, "appliedCount": 0,
                                           "reportedSuccessfulCount": 0, "reportedFailedCount": 0})  # fmt: skip
                counts["targetedCount"] += row.n if row.targeted else 0
                if row.applied:
                    counts["appliedCount"] += row.n
                    counts["reportedSuccessfulCount"] += row.n if row.state == "success" else 0
                    counts["reportedFailedCount"] += row.n if row.state == "failed" else 0
        return result

    def connection_counts(self, online_since: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Devices online (activity at or after ``online_since``), offline and never seen: of all
        devices, and of each deployment's targeted devices."""
        seen = devices.c.last_activity

        def counts(row: Any) -> dict[str, int]:
            return {"online": int(row.online or 0), "offline": int(row.total or 0) - int(row.online or 0)
                    - int(row.never or 0), "never": int(row.never or 0)}  # fmt: skip

        columns = (
            sa.func.count().label("total"),
            sa.func.sum(sa.case((seen.is_(None), 1), else_=0)).label("never"),
            sa.func.sum(sa.case((seen >= online_since, 1), else_=0)).label("online"),
        )
        everyone = sa.select(*columns)
        by_deployment = (
            sa.select(deployment_devices.c.deployment_id, *columns)
            .select_from(deployment_devices.join(devices, devices.c.id == deployment_devices.c.device_id))
            .where(deployment_devices.c.targeted.is_(True))
            .group_by(deployment_devices.c.deployment_id)
        )
        with self._tx() as c:
            total = counts(c.execute(everyone).one())
            return total, {row.deployment_id: counts(row) for row in c.execute(by_deployment)}

    def recount(
        self,
        deployments_version: int,
        compute: CountCompute,
    ) -> bool:
        """Bring the count rows up to the change feed: recompute the devices changed since the last
        count (every device after a deployment changed, or when the feed was pruned past it).

        In transactions of ``RECOUNT_CHUNK`` devices, each excluding every other count-row writer
        only while it writes its devices' rows, so a recount of the whole fleet after a push holds
        up the device reports for tens of milliseconds at a time, never for the whole pass. The
        cursor moves only after the last one. False (the cursor stays) if the deployments are no
        longer at ``deployments_version`` (the caller's resolver is stale).
        """
        with self._tx() as c:  # the usual case first, without a lock: nothing changed since the last count
            marks = {row.key: row.value for row in c.execute(sa.select(meta_values.c.key, meta_values.c.value))}
            if int(marks["deployments"]) != deployments_version:
                return False
            cursor, pruned = int(marks["counted_cursor"]), int(marks["pruned_below"])
            latest = max(int(c.execute(sa.select(sa.func.max(changes.c.id))).scalar() or 0), pruned)
            if 0 <= cursor >= latest:
                return True
            pending = c.execute(sa.select(changes.c.device_id).where(changes.c.id > cursor)).scalars().all()
            everything = cursor < 0 or cursor < pruned or any(device_id is None for device_id in pending)
            if everything:
                ids = list(c.execute(sa.select(devices.c.id).order_by(devices.c.id)).scalars())
            else:
                ids = sorted(set(pending))
        # Changes up to ``latest`` committed before the reads above, so every chunk, read after them
        # under the count lock, sees them; later ones stay on the feed for the next count.
        for start in range(0, len(ids), RECOUNT_CHUNK):
            chunk = ids[start : start + RECOUNT_CHUNK]
            with self._tx() as c:
                self._exclusive_count(c)
                if self._deployments_version(c) != deployments_version:
                    return False
                found = [_device(row) for row in c.execute(sa.select(devices).where(devices.c.id.in_(chunk)))]
                twins: dict[str, dict[str, ModuleTwin]] = {}
                for row in c.execute(sa.select(module_twins).where(module_twins.c.device_id.in_(chunk))):
                    twins.setdefault(row.device_id, {})[row.module_id] = _module(row)
                rows = compute(found, twins)
                self._update_rows(c, chunk, [r for device_rows in rows.values() for r in device_rows])
        with self._tx() as c:
            self._exclusive_count(c)
            if self._deployments_version(c) != deployments_version:
                return False
            if everything:  # rows of devices removed while the feed was pruned
                c.execute(deployment_devices.delete().where(deployment_devices.c.device_id.not_in(
                    sa.select(devices.c.id))))  # fmt: skip
            c.execute(meta_values.update().where(meta_values.c.key == "counted_cursor", meta_values.c.value < latest)
                      .values(value=latest))  # fmt: skip
        return True

    @staticmethod
    def _exclusive_count(c: Connection) -> None:
        """Hold off every other count-row writer until this transaction ends, and read the newest data."""
        if c.dialect.name == "postgresql":
            SqlStore._count_lock(c, shared=False)
        else:  # SQLite: a write first, so the reads that follow see the newest data and nobody writes meanwhile
            c.execute(meta_values.update().where(meta_values.c.key == "counted_cursor")
                      .values(value=meta_values.c.value))  # fmt: skip

    def _write_module(self, c: Connection, twin: ModuleTwin, expected: ModuleTwin | None) -> bool:
        values = {
            "desired": twin.desired,
            "reported": twin.reported,
            "desired_version": twin.desired_version,
            "reported_version": twin.reported_version,
            "desired_signatures": twin.desired_signatures or None,
        }
        if expected is None:
            c.execute(module_twins.insert().values(device_id=twin.device_id, module_id=twin.module_id, **values))
            done = 1
        else:
            done = c.execute(
                module_twins.update()
                .where(
                    module_twins.c.device_id == twin.device_id,
                    module_twins.c.module_id == twin.module_id,
                    module_twins.c.desired_version == expected.desired_version,
                    module_twins.c.reported_version == expected.reported_version,
                )
                .values(**values)
            ).rowcount
        if done and twin.desired_version != (expected.desired_version if expected else 0):
            self._changed(c, twin.device_id)
        return bool(done)

    def write_module(self, twin: ModuleTwin, expected: ModuleTwin | None) -> bool:
        try:
            with self._tx() as c:
                return self._write_module(c, twin, expected)
        except IntegrityError:
            return False

    # deployments
    def _bump(self, c: Connection) -> int:
        c.execute(meta_values.update().where(meta_values.c.key == "deployments").values(value=meta_values.c.value + 1))
        value = c.execute(sa.select(meta_values.c.value).where(meta_values.c.key == "deployments")).scalar_one()
        self._changed(c, None)
        return int(value)

    @staticmethod
    def _log(c: Connection, entry: HistoryEntry) -> None:
        c.execute(
            history.insert().values(
                at=entry.at, actor=entry.actor, action=entry.action, deployment_id=entry.deployment_id,
                detail=entry.detail,
            )
        )  # fmt: skip

    def add_deployment(self, record: DeploymentRecord, entry: HistoryEntry) -> DeploymentRecord:
        try:
            with self._tx() as c:
                seq = self._bump(c)
                c.execute(
                    deployments.insert().values(
                        id=record.id,
                        seq=seq,
                        content=record.content,
                        content_hash=record.content_hash,
                        target=record.target,
                        priority=record.priority,
                        layered=record.layered,
                        labels=record.labels,
                        metrics=record.metrics,
                        created=record.created,
                        created_by=record.created_by,
                        signatures=record.signatures or None,
                    )
                )
                self._log(c, entry)
        except IntegrityError as exc:
            raise ConflictError(
                f"deployment {record.id!r} exists already and its content cannot change: push under a new name "
                "(then delete the old one), or change target, priority or labels with 'outpost deploy retarget'"
            ) from exc
        return DeploymentRecord(**{**record.__dict__, "seq": seq})

    def deployments(self) -> list[DeploymentRecord]:
        with self._tx() as c:
            return [_deployment(row) for row in c.execute(sa.select(deployments).order_by(deployments.c.seq))]

    def deployment(self, deployment_id: str) -> DeploymentRecord | None:
        with self._tx() as c:
            row = c.execute(sa.select(deployments).where(deployments.c.id == deployment_id)).first()
        return _deployment(row) if row else None

    def update_deployment(self, record: DeploymentRecord, entry: HistoryEntry) -> bool:
        with self._tx() as c:
            done = c.execute(
                deployments.update()
                .where(deployments.c.id == record.id)
                .values(target=record.target, priority=record.priority, labels=record.labels, metrics=record.metrics)
            ).rowcount
            if done:
                self._bump(c)
                self._log(c, entry)
            return bool(done)

    def delete_deployment(self, deployment_id: str, entry: HistoryEntry) -> bool:
        with self._tx() as c:
            done = c.execute(deployments.delete().where(deployments.c.id == deployment_id)).rowcount
            if done:
                self._bump(c)
                self._log(c, entry)
            return bool(done)

    def history(self, deployment_id: str | None = None) -> list[HistoryEntry]:
        query = sa.select(history).order_by(history.c.seq)
        if deployment_id is not None:
            query = query.where(history.c.deployment_id == deployment_id)
        with self._tx() as c:
            return [_entry(row) for row in c.execute(query)]

    def deployments_version(self) -> int:
        with self._tx() as c:
            value = c.execute(sa.select(meta_values.c.value).where(meta_values.c.key == "deployments")).scalar_one()
        return int(value)

    # change feed
    def changes(self, cursor: int) -> Changes:
        with self._tx() as c:
            if cursor < 0:
                latest = c.execute(sa.select(sa.func.max(changes.c.id))).scalar()
                return Changes(int(latest or 0), False, frozenset())
            rows = c.execute(
                sa.select(changes.c.id, changes.c.device_id).where(changes.c.id > cursor).order_by(changes.c.id)
            ).all()
        if not rows:
            return Changes(cursor, False, frozenset())
        return Changes(
            int(rows[-1].id),
            any(r.device_id is None for r in rows),
            frozenset(r.device_id for r in rows if r.device_id is not None),
        )

    def prune_changes(self, keep_seconds: float) -> None:
        cutoff = time.time() - keep_seconds
        with self._tx() as c:
            newest = c.execute(sa.select(sa.func.max(changes.c.id)).where(changes.c.at < cutoff)).scalar()
            if newest is not None:
                c.execute(changes.delete().where(changes.c.id <= newest))
                c.execute(meta_values.update().where(meta_values.c.key == "pruned_below", meta_values.c.value < newest)
                          .values(value=newest))  # fmt: skip
