"""AWS Signature Version 4 for one kind of request: an S3 ``GET`` of a byte range.

``/img/`` on S3 storage signs one request per read, so the signing is on the hot
path.  boto3's ``generate_presigned_url`` costs a boto3 call and (because it may
refresh credentials) a thread hop per read; ``botocore.auth.S3SigV4Auth`` is
general (an ``AWSRequest``, header maps, sorting, path normalisation, four HMACs
deriving the signing key every time).  ``RangeSigner`` does only what a ranged
GET needs: the signing key is derived once per (day, secret) and reused (a
SigV4 key is valid for its whole UTC day), the ``X-Amz-Date`` text once per
second, and the canonical request is one string format of fixed header names
(already in canonical order).

The output is byte for byte botocore's (``tests/test_s3_reads.py`` compares
both at fixed timestamps, with session tokens, regions, prefixes, path and
virtual addressing and keys that need URI-encoding): the header form
(``Authorization``), because it is the cheaper of the two and keeps the URL
short; a presigned query would add six encoded query parameters to every URL.

Measured on this machine (2 cores shared with other work, best of 5 repeats,
``python -m imgshare.sigv4``; a run under heavier load gave 23 / 260 / 494 / 457 µs):

=====================================================  ============
``RangeSigner.headers`` (this module)                        5.3 µs
``botocore.auth.S3SigV4Auth.add_auth`` on an AWSRequest     87.5 µs
``botocore.auth.S3SigV4QueryAuth`` (presigned URL)          84.3 µs
``client.generate_presigned_url`` (what was used before)   152.9 µs
=====================================================  ============

(plus, before, a thread hop per read).  botocore's pieces that are cheap are
reused: its endpoint resolution and addressing rules (``S3Storage`` takes the
URL layout from one presigned URL at start-up) and its credential chain with
its refresh rules (``CredentialKeeper``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

#: SHA-256 of an empty body: what botocore sends as ``X-Amz-Content-SHA256`` for a GET.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: How often (seconds) the hot path asks botocore whether the credentials need refreshing.
CHECK_EVERY = 1.0


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    """The SigV4 signing key of ``secret`` for one UTC ``day`` (``YYYYMMDD``)."""
    k = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
    k = hmac.new(k, region.encode(), hashlib.sha256).digest()
    k = hmac.new(k, service.encode(), hashlib.sha256).digest()
    return hmac.new(k, b"aws4_request", hashlib.sha256).digest()


def encode_path(path: str) -> str:
    """A URI path as S3 signs and receives it: every byte but unreserved ones, ``/``
    and ``~`` percent-encoded (what botocore's serializer does to a key)."""
    return quote(path, safe="/~")


class RangeSigner:
    """Signs ``GET <path>`` with a ``Range`` header for one host, region and service.

    ``headers(credentials, path, range_value)`` returns the request headers to send
    (``Host``, ``Range``, ``X-Amz-Content-SHA256``, ``X-Amz-Date``, maybe
    ``X-Amz-Security-Token``, ``Authorization``) as (name, value) byte pairs;
    ``path`` is already URI-encoded (``encode_path``).  ``credentials`` is a
    botocore ``ReadOnlyCredentials`` (access_key, secret_key, token).
    """

    def __init__(self, host: str, region: str, service: str = "s3", clock: Any = time.time):
        self.host = host
        self.region = region
        self.service = service
        self.clock = clock
        self._second = -1
        self._stamp = ""
        self._day = ""
        self._key_for: tuple[str, str] = ("", "")
        self._key = b""
        self._host_bytes = host.encode()

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        return self._stamp

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key_for != (secret, day):
            self._key = signing_key(secret, day, self.region, self.service)
            self._key_for = (secret, day)
        return self._key

    def headers(self, credentials: Any, path: str, range_value: str,
                now: float | None = None) -> list[tuple[bytes, bytes]]:
        stamp = self._timestamp(self.clock() if now is None else now)
        day = stamp[:8]
        token = credentials.token
        if token:
            canonical = (f"GET\n{path}\n\nhost:{self.host}\nrange:{range_value}\n"
                         f"x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:{stamp}\n"
                         f"x-amz-security-token:{token}\n\n"
                         f"host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token\n{EMPTY_SHA256}")
            signed = "host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token"
        else:
            canonical = (f"GET\n{path}\n\nhost:{self.host}\nrange:{range_value}\n"
                         f"x-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:{stamp}\n\n"
                         f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}")
            signed = "host;range;x-amz-content-sha256;x-amz-date"
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(credentials.secret_key, day), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        authorization = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                         f"SignedHeaders={signed}, Signature={signature}")
        result = [
            (b"Host", self._host_bytes),
            (b"Range", range_value.encode()),
            (b"X-Amz-Content-SHA256", EMPTY_SHA256.encode()),
            (b"X-Amz-Date", stamp.encode()),
        ]
        if token:
            result.append((b"X-Amz-Security-Token", token.encode()))
        result.append((b"Authorization", authorization.encode()))
        return result


class CredentialKeeper:
    """botocore's resolved credentials, frozen, for signing on the reactor.

    ``source`` is what a botocore session resolved (``Credentials`` or
    ``RefreshableCredentials``: instance roles, assumed roles, SSO, container
    credentials).  ``frozen`` is a ``ReadOnlyCredentials`` to sign with.  At most
    every ``CHECK_EVERY`` seconds ``current`` asks the source whether it needs
    refreshing (botocore's own rule, a comparison of times, never I/O); a refresh
    always runs in ``runner`` (a thread pool: botocore refreshes with HTTP calls
    of its own), one at a time.  Past the advisory time (botocore: 15 minutes
    before expiry) reads go on signing with the current credentials while the
    refresh runs; past the mandatory time (10 minutes before expiry) they wait
    for it, without blocking the reactor.
    """

    def __init__(self, source: Any, runner: Any, clock: Any = time.monotonic):
        self.source = source
        self.runner = runner
        self.clock = clock
        self.frozen: Any = None
        self.refreshes = 0
        self._next_check = 0.0
        self._refreshing = False
        self._waiting: list[Deferred[Any]] = []

    def _freeze(self) -> Any:
        """The source's frozen credentials (blocking: botocore may refresh them here)."""
        if self.source is None:
            from botocore.exceptions import NoCredentialsError

            raise NoCredentialsError()
        return self.source.get_frozen_credentials()

    def start(self) -> Deferred[Any]:
        """Freeze the credentials (in the runner)."""
        return self._wait()

    def current(self) -> Any:
        """The credentials to sign with now: a ReadOnlyCredentials, or a Deferred of one
        when they must be refreshed first."""
        now = self.clock()
        if self.frozen is not None and now < self._next_check:
            return self.frozen
        self._next_check = now + CHECK_EVERY
        if self.frozen is None:
            return self._wait()
        needed = getattr(self.source, "refresh_needed", None)
        if needed is None or not needed():
            return self.frozen
        if needed(getattr(self.source, "_mandatory_refresh_timeout", 0)):
            self._next_check = 0.0  # ask again at every read until refreshed
            return self._wait()
        self._begin_refresh()  # the current ones stay valid meanwhile
        return self.frozen

    def _wait(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        self._begin_refresh()
        return d

    def _begin_refresh(self) -> None:
        if self._refreshing:
            return
        self._refreshing = True
        self.refreshes += 1
        self.runner.run(self._freeze).addBoth(self._refreshed)

    def _refreshed(self, result: Any) -> None:
        self._refreshing = False
        failed = isinstance(result, Failure)
        if failed:
            self._next_check = 0.0
        else:
            self.frozen = result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if failed:
                d.errback(result)
            else:
                d.callback(result)


def _measure() -> None:  # pragma: no cover - a benchmark run by hand
    """Print the cost of one signature each way (``python -m imgshare.sigv4``)."""
    import timeit

    import botocore.auth
    import botocore.session
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").get_frozen_credentials()
    signer = RangeSigner("127.0.0.1:9000", "us-east-1")
    n = 20000

    def ours() -> None:
        signer.headers(creds, "/bucket/kitten/20260214_a.jpg", "bytes=0-59999")

    def boto() -> None:
        request = AWSRequest("GET", "http://127.0.0.1:9000/bucket/kitten/20260214_a.jpg",
                             headers={"Range": "bytes=0-59999"})
        botocore.auth.S3SigV4Auth(creds, "s3", "us-east-1").add_auth(request)

    def query() -> None:
        request = AWSRequest("GET", "http://127.0.0.1:9000/bucket/kitten/20260214_a.jpg")
        botocore.auth.S3SigV4QueryAuth(creds, "s3", "us-east-1", expires=300).add_auth(request)

    session = botocore.session.get_session()
    session.set_credentials(creds.access_key, creds.secret_key)
    client = session.create_client("s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1")

    def presigned() -> None:
        client.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "kitten/a.jpg"},
                                      ExpiresIn=300)

    for name, f, count in [("RangeSigner.headers", ours, n), ("S3SigV4Auth.add_auth", boto, n // 4),
                           ("S3SigV4QueryAuth.add_auth", query, n // 4),
                           ("generate_presigned_url", presigned, n // 20)]:
        best = min(timeit.repeat(f, number=count, repeat=5)) / count
        print(f"{name:<28} {best * 1e6:8.1f} µs")


if __name__ == "__main__":  # pragma: no cover
    _measure()
