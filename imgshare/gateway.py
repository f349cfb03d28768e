"""The translation of a database outage into the answer clients get (503).

Every service that runs database operations for a request (the library, the
accounts, the sessions) goes through ``run_query``: the one place a
``DatabaseUnavailable`` becomes ``errors.Unavailable``.  Background services
(the derived-file worker, the expiry service) call the database directly: they
need the outage itself to decide when to retry.
"""

from __future__ import annotations

from typing import Any

from imgshare import db
from imgshare.domain import errors


async def run_query(database: Any, operation: Any, *args: Any) -> Any:
    """``database.run(operation, *args)``; a DatabaseUnavailable becomes the 503 error."""
    try:
        return await database.run(operation, *args)
    except db.DatabaseUnavailable as e:
        raise errors.Unavailable("the database is unavailable") from e
