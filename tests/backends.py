"""PostgreSQL and S3 (``moto_server``) for the tests of the production backends.

``IMGSHARE_TEST_POSTGRES`` (a DSN of a server where tests may CREATE and DROP
DATABASE) and ``IMGSHARE_TEST_S3`` (an S3 endpoint URL) name servers to use;
``scripts/test`` starts one of each for the whole run and exports them.  When
they are unset, the first test that needs a server starts a private one for
its process (stopped at exit).  A server that cannot be had raises
``BackendUnavailable``: the tests fail, they are never skipped.

Each test gets its own database (``imgshare_test_<random>``) and its own bucket,
dropped at cleanup, so tests in parallel processes never see each other.

``python -m tests.backends serve ENV_FILE`` starts both servers, writes their
``export`` lines to ENV_FILE and runs until SIGTERM (used by ``scripts/test``).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from twisted.internet.threads import deferToThread

POSTGRES_ENV = "IMGSHARE_TEST_POSTGRES"
S3_ENV = "IMGSHARE_TEST_S3"
REGION = "us-east-1"
#: Dummy credentials for moto_server; real ones come from the standard AWS chain.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "imgshare-test", "AWS_SECRET_ACCESS_KEY": "imgshare-test-secret"}
_PG_VERSIONS = ("17", "16", "15", "14", "13")


class BackendUnavailable(Exception):
    """A server the tests need could not be found or started."""


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a still-running child and reap it (killed if it lingers 20 s)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> str:
    for version in _PG_VERSIONS:
        folder = f"/usr/lib/postgresql/{version}/bin"
        if os.path.exists(os.path.join(folder, "initdb")):
            return folder
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise BackendUnavailable("PostgreSQL is not installed (no initdb); apt-get install postgresql")


class LocalPostgres:
    """A throw-away PostgreSQL cluster in a temporary folder, on a loopback port.

    As root, the server runs as the ``postgres`` user (PostgreSQL refuses root).
    Durability is switched off: test data need not survive a power cut.
    """

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.folder = tempfile.mkdtemp(prefix="imgshare-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        try:
            done = subprocess.run([*self._as_user, *argv], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BackendUnavailable(f"cannot run {os.path.basename(argv[0])}: {e}") from e
        if done.returncode:
            raise BackendUnavailable(f"{os.path.basename(argv[0])} failed: {done.stdout}{done.stderr}")

    def start(self) -> LocalPostgres:
        """Create the cluster and start its server on a free port."""
        self._run(f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync")
        for attempt in range(5):
            self.port = free_port()
            try:
                self.start_server()
                return self
            except BackendUnavailable:
                if attempt == 4:
                    raise BackendUnavailable(f"PostgreSQL did not start: {self.log()}") from None
        raise AssertionError("unreachable")

    def start_server(self) -> None:
        """Start the server (again) on ``self.port``."""
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-l", os.path.join(self.folder, "log"),
                  "-o", options, "-w", "-t", "60", "start")

    def stop_server(self) -> None:
        """Shut the server down (as an administrator's restart would), keeping the cluster."""
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def log(self) -> str:
        try:
            with open(os.path.join(self.folder, "log"), encoding="utf-8", errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run([*self._as_user, f"{self.bin}/pg_ctl", "-D", self.data, "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


class MotoServer:
    """``moto_server`` (PyPI ``moto[server]``): an S3 endpoint in a subprocess on loopback."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> MotoServer:
        try:
            import moto.server  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable("moto_server is not installed: pip install 'moto[server]'") from e
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendUnavailable(f"moto_server exited with {self.process.returncode}")
            if endpoint_answers(self.endpoint):
                return self
            time.sleep(0.1)
        self.stop()
        raise BackendUnavailable(f"moto_server did not answer within {timeout} s")

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def endpoint_answers(endpoint: str) -> bool:
    """True if something answers HTTP at ``endpoint`` (any status)."""
    try:
        urllib.request.urlopen(endpoint + "/", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


_started: dict[str, Any] = {}


def postgres_dsn() -> str:
    """The DSN of the test PostgreSQL server: the environment's, or one started for this process."""
    dsn = os.environ.get(POSTGRES_ENV)
    if dsn:
        return dsn
    if "postgres" not in _started:
        server = LocalPostgres()
        atexit.register(server.stop)
        _started["postgres"] = server.start()
    return _started["postgres"].dsn


def s3_endpoint() -> str:
    """The test S3 endpoint: the environment's, or a moto_server started for this process."""
    use_test_credentials()
    endpoint = os.environ.get(S3_ENV)
    if endpoint:
        return endpoint.rstrip("/")
    if "s3" not in _started:
        server = MotoServer()
        atexit.register(server.stop)
        _started["s3"] = server.start()
    return _started["s3"].endpoint


def use_test_credentials() -> None:
    """Give boto3 dummy credentials through the environment unless some are set."""
    for name, value in TEST_CREDENTIALS.items():
        os.environ.setdefault(name, value)


def with_database(dsn: str, name: str) -> str:
    """``dsn`` with its database replaced by ``name``."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin_sql(statement: str) -> None:
    import psycopg2

    try:
        connection = psycopg2.connect(postgres_dsn(), connect_timeout=10)
    except psycopg2.OperationalError as e:
        raise BackendUnavailable(f"cannot reach the test PostgreSQL server: {e}") from e
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


async def create_database(testcase: Any) -> str:
    """A new empty database for ``testcase`` (dropped at its cleanup); returns its DSN."""
    name = "imgshare_test_" + secrets.token_hex(6)
    await deferToThread(_admin_sql, f"CREATE DATABASE {name}")
    testcase.addCleanup(deferToThread, _admin_sql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return with_database(postgres_dsn(), name)


def database_admin(statement: str) -> Any:
    """Run one statement on the test server's maintenance database (in a thread)."""
    return deferToThread(_admin_sql, statement)


def s3_client(endpoint: str) -> Any:
    """A boto3 client for the test endpoint (blocking: call it in a thread)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


def _make_bucket(endpoint: str, bucket: str) -> None:
    try:
        s3_client(endpoint).create_bucket(Bucket=bucket)
    except Exception as e:
        raise BackendUnavailable(f"cannot create a bucket at {endpoint}: {e}") from e


def _remove_bucket(endpoint: str, bucket: str) -> None:
    client = s3_client(endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


async def create_bucket(testcase: Any) -> tuple[str, str]:
    """A new empty bucket for ``testcase`` (emptied and removed at cleanup): (endpoint, bucket)."""
    endpoint = await deferToThread(s3_endpoint)
    bucket = "imgshare-test-" + secrets.token_hex(6)
    await deferToThread(_make_bucket, endpoint, bucket)
    testcase.addCleanup(deferToThread, _remove_bucket, endpoint, bucket)
    return endpoint, bucket


def storage_url(endpoint: str, bucket: str, **extra: str) -> str:
    """The ``s3://`` URL of a test bucket."""
    return f"s3://{bucket}?" + urlencode({"endpoint_url": endpoint, "region": REGION, **extra})


def serve(env_file: str) -> None:
    """Start one PostgreSQL and one moto_server, write their exports, run until signalled."""
    servers: list[Any] = []
    stop_requested = []

    def on_signal(signum: int, frame: Any) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        postgres = LocalPostgres()
        servers.append(postgres)
        postgres.start()
        moto = MotoServer()
        servers.append(moto)
        moto.start()
        lines = [f"export {POSTGRES_ENV}='{postgres.dsn}'", f"export {S3_ENV}='{moto.endpoint}'"]
        lines += [f"export {name}='{value}'" for name, value in TEST_CREDENTIALS.items()]
        with open(env_file + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(env_file + ".tmp", env_file)
        while not stop_requested:
            time.sleep(0.2)
            if moto.process is None or moto.process.poll() is not None:
                print("moto_server died", file=sys.stderr)
                break
    except BackendUnavailable as e:
        print(f"test backends: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        sys.exit("usage: python -m tests.backends serve ENV_FILE")
    serve(sys.argv[2])
