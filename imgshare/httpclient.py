"""HTTP client connection pools that log nothing per connection.

twisted.web's client factory logs "Starting factory" and "Stopping factory" for
every connection it makes: two lines per img_gather.php fetch, two per S3
connection.  These pools' factories are quiet.
"""

from __future__ import annotations

from typing import Any

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory


class QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


def quiet_pool(reactor: Any, persistent: bool) -> HTTPConnectionPool:
    """An ``HTTPConnectionPool`` whose connections start and stop without a log line."""
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool._factory = QuietClientFactory
    return pool
