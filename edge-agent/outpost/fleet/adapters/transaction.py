"""One transaction on the fleet's database engine, its failures as :class:`StoreError`.

Every SQL store of the fleet (devices and deployments, rollouts, console sessions, device keys)
opens its transactions here, so a failing database reads the same to the service and the API
(a 503 with the driver's message) whichever table failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from outpost.errors import StoreError

__all__ = ["transaction"]


@contextmanager
def transaction(engine: Engine, *, conflicts: bool = False) -> Iterator[Connection]:
    """``engine.begin()``; with ``conflicts`` an :class:`IntegrityError` reaches the caller (a
    compare-and-set or insert-once that handles it), any other database error is a StoreError."""
    try:
        with engine.begin() as connection:
            yield connection
    except IntegrityError:
        if conflicts:
            raise
        raise StoreError("the fleet database refused a write (a constraint failed)") from None
    except OperationalError as exc:
        raise StoreError(f"the fleet database failed: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"the fleet database failed: {exc}") from exc
