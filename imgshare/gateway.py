"""The translation of a database outage into the answer clients get (503).

Services outside the library (sessions) run their database operations through
``run``; ``ImageLibrary._db`` and ``Accounts._db`` make the same translation.
"""

from __future__ import annotations

from typing import Any

from imgshare import db
from imgshare.domain import errors


async def run(database: Any, operation: Any, *args: Any) -> Any:
    """``database.run(operation, *args)``; a DatabaseUnavailable becomes the 503 error."""
    try:
        return await database.run(operation, *args)
    except db.DatabaseUnavailable as e:
        raise errors.StorageUnavailable("the database is unavailable") from e
