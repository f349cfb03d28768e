"""Instructions per /img/ request, counted by valgrind (callgrind), against static.File:

    python bench/instructions.py [--requests 300] [--size 60000]

A figure that does not move with the machine's load (req/s and CPU time do, on a
shared machine): both servers run under callgrind with instrumentation off while
they start, then on for ``--requests`` sequential keep-alive GETs of the same
original (after 50 unmeasured ones), so only the requests are counted.  User-space
instructions only: the kernel's share (send, recv, epoll) is the same work for
both and is not counted.  IMGSHARE logs to ``--access-log``; static.File is
twisted.web's own file server, as bench/serve.py runs it.  Needs valgrind
(``apt-get install -y valgrind``); about a minute per server.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import shutil
import subprocess
import sys
import tempfile

from common import Baseline, Imgshare, free_port, padded_jpeg, request, wait_port


def count(command: list[str], env: dict[str, str], port: int, path: str, expected: bytes, requests: int) -> float:
    """Instructions per request of the server ``command`` (listening on ``port``)."""
    out = tempfile.mkdtemp(prefix="imgshare-callgrind-")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/callgrind.%p",
         *command], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 600)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

        def get() -> None:
            status, body = request(conn, "GET", path)
            if status != 200 or body != expected:
                raise RuntimeError(f"GET {path}: {status}, {len(body)} bytes")

        for _ in range(50):
            get()
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        for _ in range(requests):
            get()
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(120)
    total = 0
    for name in glob.glob(f"{out}/callgrind.*"):
        with open(name) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    total = max(total, int(line.split()[1]))
    shutil.rmtree(out, ignore_errors=True)
    if not total:
        raise RuntimeError("callgrind counted nothing")
    return total / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--size", type=int, default=60_000, help="bytes of the original")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install -y valgrind")
    photo = padded_jpeg(args.size)  # the same size every run
    ours = Imgshare()
    name = ours.upload("photo.jpg", photo)
    ours.stop()  # counted again under callgrind, on the same data folder
    port = free_port()
    command = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
               "-n", "--pidfile=", "--logfile", os.path.join(ours.data, "callgrind-twistd.log"), "imgshare",
               "--listen", f"tcp:{port}:interface=127.0.0.1",
               "--access-log", os.path.join(ours.data, "callgrind-access.log")]
    mine = count(command, ours.env, port, f"/img/bench/{name}", photo, args.requests)
    folder = tempfile.mkdtemp(prefix="imgshare-bench-static-")
    with open(os.path.join(folder, "photo.jpg"), "wb") as f:
        f.write(photo)
    port, raw_port = free_port(), free_port()
    base = count([sys.executable, "-c", Baseline.SCRIPT, str(port), folder, str(raw_port)], dict(os.environ),
                 port, "/files/photo.jpg", photo, args.requests)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"{len(photo)} byte original, {args.requests} sequential keep-alive GETs, user-space instructions per request:")
    print(f"  /img/ (sqlite + local files, --access-log)  {mine / 1e6:7.3f} M")
    print(f"  twisted.web static.File                    {base / 1e6:7.3f} M")
    print(f"  ratio /img/ / static.File                  {mine / base:7.2f}")


if __name__ == "__main__":
    main()
