"""Shared pieces of the benchmarks: servers in subprocesses, HTTP clients, test images.

Benchmarks are run by hand and print ratios against a baseline measured in the
same run; nothing here is a test.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


#: The core servers are pinned to, and the core the load generator is pinned to
#: (``taskset``), so the two never compete for one core.
SERVER_CPU = 0
CLIENT_CPU = 1


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on core ``cpu`` (taskset), or as it is when ``cpu`` is None or
    taskset is missing (with a warning)."""
    if cpu is None:
        return command
    if not shutil.which("taskset"):
        print("warning: taskset is missing (util-linux): processes are not pinned to cores", file=sys.stderr)
        return command
    return ["taskset", "-c", str(cpu), *command]


class Imgshare:
    """``twistd -n imgshare`` in a subprocess with its own data folder, an account and a token.

    ``env`` adds environment variables (backend URLs, AWS credentials) for the
    server and its admin commands; ``cpu`` pins the server to one core; with ``access_log``
    the access lines go to ``access.log`` in its data folder (``--access-log``); with
    ``share``, it is a second server on the data folder (and account) of that one;
    ``prelude`` is Python run in the server process before twistd (bench/ is on its path)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cpu: int | None = None,
                 access_log: bool = False, share: Imgshare | None = None, prelude: str = ""):
        self.data = share.data if share is not None else tempfile.mkdtemp(prefix="imgshare-bench-")
        self.port = free_port()
        if access_log:
            args = (*args, "--access-log", os.path.join(self.data, f"access-{self.port}.log"))
        self.env = dict(os.environ, PYTHONPATH=REPO, IMGSHARE_DATA_DIR=self.data,
                        IMGSHARE_RATE_LIMIT_IP="1000000/1", IMGSHARE_RATE_LIMIT_TOKEN="1000000/1",
                        **(env or {}))
        if share is not None:
            self.token = share.token
        else:
            self._admin("user", "add", "bench", stdin="bench password\n")
            self.token = self._admin("token", "create", "bench").strip()
        self.proc = subprocess.Popen(pinned(
            [sys.executable, "-c", f"import sys; sys.path.append({os.path.join(REPO, 'bench')!r}); {prelude}\n"
             "from twisted.scripts.twistd import run; sys.exit(run())",
             "-n", "--pidfile=", "--logfile", os.path.join(self.data, f"twistd-{self.port}.log"), "imgshare",
             "--listen", f"tcp:{self.port}:interface=127.0.0.1", *args], cpu),
            env=self.env, cwd=REPO,
        )
        wait_port(self.port)

    def _admin(self, *argv: str, stdin: str = "") -> str:
        return subprocess.run(
            [sys.executable, "-c", "from imgshare.cli import main; main()", *argv],
            input=stdin, capture_output=True, text=True, env=self.env, check=True,
        ).stdout

    def rss(self) -> int:
        """The server process's resident set size in bytes."""
        return rss_of(self.proc.pid)

    def upload(self, filename: str, data: bytes) -> str:
        """Upload ``data``; return the stored file name."""
        body, ctype = multipart({"token": self.token}, filename, data)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
        conn.close()
        assert status == 200, out
        return name_of(out)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def rss_of(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by process ``pid`` (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class S3Bucket:
    """A ``moto_server`` on loopback with one bucket, and dummy credentials in the environment."""

    def __init__(self) -> None:
        from tests.backends import MotoServer, s3_client, storage_url, use_test_credentials

        use_test_credentials()
        self.server = MotoServer().start()
        self.bucket = "imgshare-bench"
        s3_client(self.server.endpoint).create_bucket(Bucket=self.bucket)
        #: ``--storage`` for IMGSHARE.
        self.url = storage_url(self.server.endpoint, self.bucket)
        self.port = self.server.port
        self.env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}

    def path(self, key: str) -> str:
        """A presigned GET path (with its query) for ``key`` on the endpoint."""
        from urllib.parse import urlsplit

        from tests.backends import s3_client

        url = s3_client(self.server.endpoint).generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=3600)
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"

    def stop(self) -> None:
        self.server.stop()


class Baseline:
    """A bare twisted.web server: POST /store stores the body, POST /durable stores it durably
    (fsync of the file and its folder, rename), POST /parse lets twisted.web parse the form (on
    the reactor, as its stock Request does), GET /files/ serves a folder with static.File."""

    SCRIPT = r'''
import os, sys, tempfile
from twisted.internet import reactor
from twisted.web import resource, server, static
folder = sys.argv[2]
class Store(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        request.content.seek(0)
        fd, path = tempfile.mkstemp(dir=folder, prefix="body-")
        with os.fdopen(fd, "wb") as out:
            while chunk := request.content.read(1 << 20):
                out.write(chunk)
        return b"stored"
class Durable(resource.Resource):
    """Store the body as a durable store must: write it under a temporary name, fsync the
    file, rename it into place, fsync the folder (in a thread, as a server would)."""
    isLeaf = True
    def render_POST(self, request):
        from twisted.internet import threads
        from twisted.web.server import NOT_DONE_YET
        def store():
            request.content.seek(0)
            fd, path = tempfile.mkstemp(dir=folder, prefix=".body-")
            with os.fdopen(fd, "wb") as out:
                while chunk := request.content.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.rename(path, path.replace("/.body-", "/body-"))
            dirfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        def done(_):
            request.write(b"stored durably")
            request.finish()
        threads.deferToThread(store).addCallback(done)
        return NOT_DONE_YET
class Parse(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        return b"parsed %d fields" % len(request.args)
root = resource.Resource()
root.putChild(b"store", Store())
root.putChild(b"parse", Parse())
root.putChild(b"durable", Durable())
root.putChild(b"files", static.File(folder))
reactor.listenTCP(int(sys.argv[1]), server.Site(root), interface="127.0.0.1")
class NoParse(server.Request):
    def __init__(self, *a, **kw):
        super().__init__(*a, parsePOSTFormSubmission=False, **kw)
reactor.listenTCP(int(sys.argv[3]), server.Site(root, requestFactory=NoParse), interface="127.0.0.1")
reactor.run()
'''

    def __init__(self, cpu: int | None = None) -> None:
        self.folder = tempfile.mkdtemp(prefix="imgshare-baseline-")
        self.port = free_port()
        #: The same resources behind a Request that leaves the body unparsed.
        self.raw_port = free_port()
        self.proc = subprocess.Popen(pinned(
            [sys.executable, "-c", self.SCRIPT, str(self.port), self.folder, str(self.raw_port)], cpu))
        wait_port(self.port)
        wait_port(self.raw_port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


class Nginx:
    """nginx (Debian ``nginx-light``) serving ``folder`` under /files/ on a loopback port: one
    worker, in the foreground, logging nothing, sendfile on (its defaults for static files)."""

    CONFIG = """
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {folder}/; etag on; }}
    }}
}}
"""

    def __init__(self, folder: str, cpu: int | None = None, bucket: str | None = None) -> None:
        """With ``bucket``, ``folder`` is served at / instead, as an S3 endpoint with that bucket
        would serve its objects (``folder/<bucket>/<key>``, path-style GETs, the signatures not
        checked), on keep-alive connections, which moto_server does not keep."""
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if binary is None:
            raise RuntimeError("nginx is missing: apt-get install -y nginx-light")
        self.dir = tempfile.mkdtemp(prefix="imgshare-nginx-")
        self.port = free_port()
        config = os.path.join(self.dir, "nginx.conf")
        with open(config, "w") as f:
            text = self.CONFIG.format(dir=self.dir, port=self.port, folder=folder)
            if bucket is not None:  # HEAD /<bucket> (the bucket exists) and GET /<bucket>/<key>
                text = text.replace(f"location /files/ {{ alias {folder}/; etag on; }}",
                                    f"location = /{bucket} {{ return 200; }} location / {{ root {folder}; }}")
            f.write(text)
        self.proc = subprocess.Popen(pinned([binary, "-c", config, "-p", self.dir], cpu),
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk(port: int, path: str, connections: int, seconds: float, cpu: int | None = CLIENT_CPU) -> float:
    """Requests per second ``wrk -t1`` reaches on ``path`` (keep-alive, ``connections``
    connections, pinned to ``cpu``); RuntimeError if any answer was not a 2xx or 3xx."""
    out = subprocess.run(
        pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}{path}"], cpu),
        capture_output=True, text=True, check=True).stdout
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on {path}:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"no rate in wrk's output:\n{out}")
    return float(m.group(1))


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "bench" + secrets.token_hex(8)
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
              "Content-Type: application/octet-stream\r\n\r\n".encode())
    out.write(data + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def run_clients(port: int, clients: int, per_client: int, job) -> list[float]:
    """``job(conn)`` repeated by ``clients`` keep-alive connections; returns each call's latency."""
    def worker(_: int) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        times = []
        for _ in range(per_client):
            t = time.perf_counter()
            job(conn)
            times.append(time.perf_counter() - t)
        conn.close()
        return times

    with ThreadPoolExecutor(clients) as pool:
        return [t for ts in pool.map(worker, range(clients)) for t in ts]


def jobs_waiting(port: int) -> int:
    """The server's derived-file job queue, read from ``/metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        status, text = request(conn, "GET", "/metrics")
    finally:
        conn.close()
    assert status == 200, status
    return int(float(re.search(rb"^imgshare_job_queue_length (\S+)$", text, re.M).group(1)))


def drained(port: int) -> float:
    """Wait until every derivation of the server is done; the seconds it took."""
    start = time.perf_counter()
    while jobs_waiting(port):
        time.sleep(0.01)
    return time.perf_counter() - start


def noise_jpeg(target_bytes: int) -> bytes:
    """A JPEG of about ``target_bytes`` (noise over a gradient, so it is a real, decodable photo-like file)."""
    from PIL import Image

    side = 64
    while True:
        noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        grad = Image.linear_gradient("L").resize((side, side)).convert("RGB")
        img = Image.blend(noise, grad, 0.5)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=90)
        if out.tell() >= target_bytes:
            return out.getvalue()
        side = int(side * max(1.05, (target_bytes / out.tell()) ** 0.5))


def padded_jpeg(target_bytes: int) -> bytes:
    """A small real JPEG padded with comment segments to ``target_bytes``: a file that
    streams like a big photo without costing the server a big decode."""
    base = noise_jpeg(50_000)
    segments = []
    size = len(base)
    while size < target_bytes:
        n = min(65533, target_bytes - size)
        n = max(n, 1)
        segments.append(b"\xff\xfe" + (n + 2).to_bytes(2, "big") + os.urandom(n))
        size += n + 4
    return base[:2] + b"".join(segments) + base[2:]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def name_of(body: bytes) -> str:
    return re.search(rb'"file":\s*"([^"]+)"', body).group(1).decode()
