"""Several processes behind haproxy on one PostgreSQL and one S3 bucket, against one process.

    python bench/cluster.py [--processes 4] [--seconds 10] [--uploads 200] [--rounds 1] [--no-cache] [--quick]

Starts a PostgreSQL cluster and a moto_server (S3) on loopback (tests/backends.py,
as scripts/test does), ``--processes`` ``twistd imgshare`` processes on them (each
with its own spool and, unless ``--no-cache``, its own ``--cache-dir``; process i
pinned to core i mod 2), and haproxy (Debian package, TCP mode, the PROXY
protocol to ``haproxy:`` listeners) with two front ends: one balancing over every
process, one sending everything to process 0.  In each round it measures, first
with process 0 alone running, then with all of them:

- ``/img/`` of a 60 KB original: ``wrk -t1 -c16`` (pinned to core 1) through haproxy;
- uploads of a 100 KB JPEG: 8 Python clients (this process, core 1) through haproxy,
  the CPU counted until every derived file is made (any process may claim a job);
- uploads of a 12-megapixel JPEG (bench/derive.py's make_photo): 2 clients, likewise;

and for each the CPU per request of the IMGSHARE processes, haproxy, PostgreSQL and
moto_server, and the PostgreSQL statements per request (pg_stat_statements, loaded
in the bench's cluster; the background loops' statements are counted too).  With 2 cores the ratio is bounded by about 2.  Then it checks what
must hold across the processes (through each one's own plain listener): a deleted
image answers 404 at once from every process (SPEC section 7); a session made by one
process is valid in all and a logout through one ends it in all; failed logins
spread over the processes trip one login throttle (a limit kept in PostgreSQL).
``--quick``: 4 s wrk runs and 60 uploads.

PostgreSQL runs as the tests run it (fsync off): the upload figures leave out the
cost of a durable commit on the database server.
"""

from __future__ import annotations

import argparse
import html
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

from common import (
    CLIENT_CPU,
    REPO,
    S3Bucket,
    cpu_seconds,
    free_port,
    multipart,
    name_of,
    noise_jpeg,
    pinned,
    request,
    run_clients,
    wait_port,
    wrk,
)
from derive import make_photo  # noqa: E402

from tests.backends import LocalPostgres, with_database  # noqa: E402

PASSWORD = "bench password"


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError):
                continue
    return found


class CountingPostgres(LocalPostgres):
    """The tests' throw-away PostgreSQL with pg_stat_statements loaded, to count statements."""

    def start_server(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
                   "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all")
        self._run(f"{self.bin}/pg_ctl", "-D", self.data, "-l", os.path.join(self.folder, "log"),
                  "-o", options, "-w", "-t", "60", "start")


class Deployment:
    """PostgreSQL, moto_server, N IMGSHARE processes and haproxy, all on loopback."""

    def __init__(self, processes: int, cache: bool) -> None:
        self.tmp = tempfile.mkdtemp(prefix="imgshare-cluster-")
        self.postgres = CountingPostgres().start()
        self._sql("CREATE DATABASE imgshare_bench")
        self._sql("CREATE EXTENSION pg_stat_statements", "imgshare_bench")
        self.dsn = with_database(self.postgres.dsn, "imgshare_bench")
        self.bucket = S3Bucket()
        self.env = dict(os.environ, PYTHONPATH=REPO, IMGSHARE_DB=self.dsn, IMGSHARE_STORAGE=self.bucket.url,
                        IMGSHARE_RATE_LIMIT_IP="1000000/1", IMGSHARE_RATE_LIMIT_TOKEN="1000000/1",
                        IMGSHARE_RESIZE_THREADS="1", **self.bucket.env)
        self.admin("user", "add", "bench", stdin=PASSWORD + "\n")
        self.admin("user", "add", "other", stdin=PASSWORD + "\n")
        self.token = self.admin("token", "create", "bench").strip()
        self.cache = cache
        #: Per process: (proxied port for haproxy, plain port for the checks).
        self.ports = [(free_port(), free_port()) for _ in range(processes)]
        self.procs: list[subprocess.Popen | None] = [None] * processes
        self.all_port, self.one_port = free_port(), free_port()
        self.haproxy = self._haproxy()

    def _sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg2

        connection = psycopg2.connect(with_database(self.postgres.dsn, database))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def admin(self, *argv: str, stdin: str = "") -> str:
        data = os.path.join(self.tmp, "admin")
        os.makedirs(data, exist_ok=True)
        return subprocess.run([sys.executable, "-c", "from imgshare.cli import main; main()", *argv],
                              input=stdin, capture_output=True, text=True, check=True,
                              env=dict(self.env, IMGSHARE_DATA_DIR=data)).stdout

    def start(self, index: int) -> None:
        proxied, plain = self.ports[index]
        data = os.path.join(self.tmp, f"p{index}")
        os.makedirs(data, exist_ok=True)
        args = ["--listen", f"haproxy:tcp:{proxied}:interface=127.0.0.1",
                "--listen", f"tcp:{plain}:interface=127.0.0.1",
                "--public-url", f"http://127.0.0.1:{self.all_port}"]
        if self.cache:
            args += ["--cache-dir", os.path.join(data, "cache")]
        self.procs[index] = subprocess.Popen(pinned(
            [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
             "-n", "--pidfile=", "--logfile", os.path.join(data, "twistd.log"), "imgshare", *args], index % 2),
            env=dict(self.env, IMGSHARE_DATA_DIR=data), cwd=REPO)
        wait_port(plain)

    def stop(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        self.procs[index] = None

    def _haproxy(self) -> subprocess.Popen:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(binary):
            raise RuntimeError("haproxy is missing: apt-get install -y haproxy")
        servers = "\n".join(f"    server p{i} 127.0.0.1:{proxied} send-proxy"
                            for i, (proxied, _) in enumerate(self.ports))
        config = f"""
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend all
    bind 127.0.0.1:{self.all_port}
    default_backend all
frontend one
    bind 127.0.0.1:{self.one_port}
    default_backend one
backend all
    balance roundrobin
{servers}
backend one
    server p0 127.0.0.1:{self.ports[0][0]} send-proxy
"""
        path = os.path.join(self.tmp, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(config)
        proc = subprocess.Popen([binary, "-f", path, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.all_port)
        wait_port(self.one_port)
        return proc

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each part of the deployment."""
        ours = sum(cpu_seconds(p.pid) for p in self.procs if p is not None)
        with open(os.path.join(self.postgres.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        pg = 0.0
        for pid in [postmaster, *children(postmaster)]:
            try:
                pg += cpu_seconds(pid)
            except OSError:
                continue  # a backend that just ended
        return {"imgshare": ours, "haproxy": cpu_seconds(self.haproxy.pid), "postgresql": pg,
                "moto": cpu_seconds(self.bucket.server.process.pid)}

    def reset_statements(self) -> None:
        self._sql("SELECT pg_stat_statements_reset()", "imgshare_bench")

    def statements(self) -> list[tuple[int, str]]:
        """(calls, statement) run on the bench database since the last reset, most called first."""
        rows = self._sql("SELECT s.calls, s.query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                         "WHERE d.datname = 'imgshare_bench' AND s.query NOT LIKE '%pg_stat_statements%' "
                         "ORDER BY s.calls DESC", "imgshare_bench")
        return [(int(calls), " ".join(query.split())) for calls, query in rows]

    def pending_jobs(self) -> int:
        return self._sql("SELECT count(*) FROM jobs", "imgshare_bench")[0][0]

    def close(self, keep: bool = False) -> None:
        """Stop everything; with ``keep``, leave the processes' folders (their logs) in place."""
        for index in range(len(self.procs)):
            self.stop(index)
        self.haproxy.terminate()
        self.haproxy.wait(20)
        self.bucket.stop()
        self.postgres.stop()
        if keep:
            print(f"the processes' logs are kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


def post_form(port: int, path: str, fields: dict[str, str], headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=urllib.parse.urlencode(fields),
                     headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read(), response
    finally:
        conn.close()


def cookie(response: http.client.HTTPResponse, name: str) -> str:
    for value in response.headers.get_all("Set-Cookie") or []:
        if value.startswith(name + "="):
            return value.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie in {response.headers.get_all('Set-Cookie')}")


def csrf_of(page: bytes) -> str:
    m = re.search(rb'name="csrf" value="([^"]+)"', page)
    if m is None:
        raise AssertionError("no CSRF field in the page")
    return html.unescape(m.group(1).decode())


def check(deployment: Deployment) -> None:
    """What must hold across the processes, through each one's plain listener."""
    plain = [p for _, p in deployment.ports]
    photo = noise_jpeg(30_000)
    body, ctype = multipart({"token": deployment.token}, "check.jpg", photo)
    conn = http.client.HTTPConnection("127.0.0.1", plain[0], timeout=60)
    status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
    assert status == 200, out
    name = name_of(out)
    path = f"/img/bench/{name}"
    assert all(get(port, path)[0] == 200 for port in plain), "every process serves the upload"
    status, out, _ = post_form(plain[1 % len(plain)], "/api/v1/img_delete.php",
                               {"token": deployment.token, "file": name})
    assert status == 200, out
    after = [get(port, path)[0] for port in plain]
    assert after == [404] * len(plain), f"after a delete through process 1: {after}"
    print(f"  delete through process 1, then /img/ from every process at once: {after}")

    # A session begun through one process, used through every other, ended through one.
    status, page, response = get(plain[-1], "/login")
    pre = cookie(response, "imgshare_pre")
    status, out, response = post_form(plain[0], "/login", {"csrf": csrf_of(page), "name": "bench",
                                                           "password": PASSWORD}, {"Cookie": pre})
    assert status in (302, 303), (status, out[:300])
    session = cookie(response, "imgshare_session")
    seen = [get(port, "/images", {"Cookie": session})[0] for port in plain]
    assert seen == [200] * len(plain), f"the session through each process: {seen}"
    status, page, _ = get(plain[-1], "/images", {"Cookie": session})
    status, out, _ = post_form(plain[-1], "/logout", {"csrf": csrf_of(page)}, {"Cookie": session})
    assert status in (302, 303), (status, out[:300])
    ended = [get(port, "/images", {"Cookie": session})[0] for port in plain]
    assert all(code in (302, 303) for code in ended), f"after the logout: {ended}"
    print(f"  a session made through process 0: /images through each {seen}; "
          f"logout through the last, then {ended}")

    # The login throttle (failed password checks per account and address) is in PostgreSQL.
    status, page, response = get(plain[0], "/login")
    pre, csrf = cookie(response, "imgshare_pre"), csrf_of(page)
    codes = []
    for attempt in range(12):
        status, _, _ = post_form(plain[attempt % len(plain)], "/login",
                                 {"csrf": csrf, "name": "other", "password": "wrong password"}, {"Cookie": pre})
        codes.append(status)
    right = [post_form(port, "/login", {"csrf": csrf, "name": "other", "password": PASSWORD},
                       {"Cookie": pre})[0] for port in plain]
    assert 429 in codes and right == [429] * len(plain), (codes, right)
    print(f"  12 wrong passwords spread over the processes: {codes}; then the right one through each: {right}")


def measure(deployment: Deployment, port: int, served: str, photo: bytes, big_photo: bytes, seconds: float,
            uploads: int, clients: int) -> dict:
    """/img/ req/s, uploads/s of ``photo`` and of the 12 MP ``big_photo`` through haproxy's
    ``port``, with the CPU per request of each part and the statements run."""
    result: dict = {}
    deployment.reset_statements()
    before = deployment.cpu()
    result["img"] = wrk(port, served, 16, seconds, CLIENT_CPU)
    after = deployment.cpu()
    requests = result["img"] * seconds
    for part in before:
        result[f"img {part}"] = (after[part] - before[part]) / requests
    result["img statements"] = (deployment.statements(), requests)

    for key, data, count, clients_now in (("upload", photo, uploads, clients),
                                          ("photo", big_photo, max(4, uploads // 10), 2)):
        body, ctype = multipart({"token": deployment.token}, "photo.jpg", data)

        def job(conn, body=body, ctype=ctype):
            status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
            assert status == 200, (status, out[:200])

        deployment.reset_statements()
        before = deployment.cpu()
        started = time.perf_counter()
        done = run_clients(port, clients_now, max(1, count // clients_now), job)
        result[key] = len(done) / (time.perf_counter() - started)
        deadline = time.monotonic() + 300
        while deployment.pending_jobs() and time.monotonic() < deadline:
            time.sleep(0.2)
        after = deployment.cpu()
        for part in before:
            result[f"{key} {part}"] = (after[part] - before[part]) / len(done)
        result[f"{key} statements"] = (deployment.statements(), len(done))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--uploads", type=int, default=200, help="uploads in each upload run")
    parser.add_argument("--clients", type=int, default=8, help="upload clients")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-cache", action="store_true", help="no --cache-dir: every /img/ reads the bucket")
    parser.add_argument("--quick", action="store_true", help="4 s wrk runs, 60 uploads")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.uploads = 4.0, 60
    os.sched_setaffinity(0, {CLIENT_CPU})
    deployment = Deployment(args.processes, cache=not args.no_cache)
    try:
        deployment.start(0)
        photo = noise_jpeg(100_000)
        with tempfile.TemporaryDirectory() as tmp:
            make_photo(os.path.join(tmp, "photo.jpg"))
            with open(os.path.join(tmp, "photo.jpg"), "rb") as f:
                big_photo = f.read()
        served = noise_jpeg(60_000)
        body, ctype = multipart({"token": deployment.token}, "served.jpg", served)
        conn = http.client.HTTPConnection("127.0.0.1", deployment.ports[0][1], timeout=60)
        status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
        assert status == 200, out
        served_path = f"/img/bench/{name_of(out)}"
        print(f"{args.processes} processes on {os.cpu_count()} cores, PostgreSQL {deployment.postgres.bin}, "
              f"moto_server, haproxy (TCP, PROXY protocol); /img/ of {len(served)} bytes "
              f"{'from a local cache in each process' if deployment.cache else 'read from the bucket each time'}; "
              f"uploads of {len(photo)} bytes by {args.clients} clients, and of a 12 MP JPEG "
              f"({len(big_photo) / 1e6:.1f} MB) by 2")
        rows: dict[str, list[dict[str, float]]] = {"1 process": [], f"{args.processes} processes": []}
        for _ in range(args.rounds):
            for index in range(1, args.processes):
                deployment.stop(index)
            for _ in range(20):  # fill process 0's cache
                get(deployment.ports[0][1], served_path)
            rows["1 process"].append(measure(deployment, deployment.one_port, served_path, photo,
                                             big_photo, args.seconds, args.uploads, args.clients))
            for index in range(1, args.processes):
                deployment.start(index)
                for _ in range(20):
                    get(deployment.ports[index][1], served_path)
            rows[f"{args.processes} processes"].append(measure(deployment, deployment.all_port, served_path,
                                                               photo, big_photo, args.seconds, args.uploads,
                                                               args.clients))
        parts = ("imgshare", "haproxy", "postgresql", "moto")
        print(f"{'':<14}{'/img/ req/s':>12}  CPU per /img/ ({', '.join(parts)}) ms"
              f"{'uploads/s':>14}  CPU per upload with its derivation ({', '.join(parts)}) ms")
        for label, results in rows.items():
            for r in results:
                img_cpu = " / ".join(f"{r[f'img {p}'] * 1e3:.2f}" for p in parts)
                up_cpu = " / ".join(f"{r[f'upload {p}'] * 1e3:.1f}" for p in parts)
                print(f"{label:<14}{r['img']:>12.0f}  {img_cpu:<44}{r['upload']:>10.1f}  {up_cpu}")
                photo_cpu = " / ".join(f"{r[f'photo {p}'] * 1e3:.1f}" for p in parts)
                print(f"{'  12 MP JPEG':<14}{'':>12}  {'':<44}{r['photo']:>10.1f}  {photo_cpu}")
        one, many = rows["1 process"], rows[f"{args.processes} processes"]
        for what in ("img", "upload", "photo"):
            ratios = [m[what] / o[what] for o, m in zip(one, many, strict=True)]
            print(f"ratio {args.processes} processes / 1, {what}: " + ", ".join(f"{r:.2f}" for r in ratios))
        for what, label in (("img", "/img/ request"), ("upload", "upload (with its derivation)"),
                            ("photo", "12 MP upload (with its derivation)")):
            counted, requests = rows[f"{args.processes} processes"][-1][f"{what} statements"]
            total = sum(calls for calls, _ in counted)
            print(f"PostgreSQL statements per {label}, {args.processes} processes (pg_stat_statements, "
                  f"background loops included): {total / requests:.2f}")
            for calls, query in counted[:8]:
                if calls / requests >= 0.01:
                    print(f"  {calls / requests:6.2f}  {query[:150]}")
        print("across the processes:")
        check(deployment)
    except BaseException:
        deployment.close(keep=True)
        raise
    deployment.close()


if __name__ == "__main__":
    main()
