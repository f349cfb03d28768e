"""Is the reactor free while uploads, derivations and downloads are under way?

    python bench/reactor_block.py [--seconds 20] [--rounds 2] [--quick] [--only single|mixed]

Two parts, every server pinned to core 0 and every load generator (this process,
its prober process, wrk) to core 1:

- single upload: a ~30 MB upload while a small file is GOT every 10 ms; the slowest
  of those GETs, against a bare twisted.web resource whose Request parses
  multipart on the reactor (twisted.web's default), as the baseline;
- mixed load (issue 15 item 7): for ``--seconds``, two 30 MB uploads at a time
  (each client uploads again as soon as one is stored), a 12-megapixel JPEG
  upload every second (each one derived: XGA, VGA, QVGA, thumbnail), and
  ``wrk -t1 -c16`` on a 60 KB original through /img/, while a prober in its
  own process GETs a small original every 10 ms and records each latency.  It
  prints the prober's p50, p99 and worst (goal: p99 < 50 ms, worst < 100 ms),
  and the work done meanwhile.  The mixed load runs in interleaved rounds against
  two servers: as shipped, and with its thread pools at the reactor's own CPU
  priority (the server before they were lowered), the comparison in one run.
  The prober runs at nice -10 when it may (as root), so that the load generators
  sharing its core do not delay the instrument.

``--quick`` runs one round of 8 s.  ``--profile FILE`` records the server's
stacks meanwhile (py-spy, ``pip install py-spy``; collapsed text, a stack per line,
the thread first); ``--stalls FILE`` times every reactor iteration of the server
and its parts (bench/stallwatch.py); the CPU each server thread used is printed
either way.  The machine's other load moves the
figures: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import http.client
import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time

import stallwatch
from common import (
    CLIENT_CPU,
    SERVER_CPU,
    Baseline,
    Imgshare,
    multipart,
    noise_jpeg,
    pinned,
    request,
)
from derive import make_photo

#: The prober's period, seconds.
PERIOD = 0.01


def big_bmp(target: int = 30_000_000) -> bytes:
    from PIL import Image

    side = int((target / 3) ** 0.5)
    out = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(out, "BMP")
    return out.getvalue()


def distinct(jpeg: bytes, index: int) -> bytes:
    """``jpeg`` with a comment segment naming ``index`` after its SOI: other bytes
    (another digest, another upload) that decode to the same 12 MP picture."""
    comment = f"bench upload {index} {os.urandom(8).hex()}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def probe(port: int, path: str, body: bytes, ctype: str, small_path: str) -> tuple[float, float, int]:
    """(upload seconds, slowest concurrent GET in ms, GETs made during the upload)."""
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not done.is_set():
            t = time.perf_counter()
            status, _ = request(conn, "GET", small_path)
            assert status == 200, status
            latencies.append(time.perf_counter() - t)
            time.sleep(PERIOD)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    latencies.clear()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    status, out = request(conn, "POST", path, body, {"Content-Type": ctype})
    elapsed = time.perf_counter() - t
    done.set()
    poller.join()
    assert status == 200, (status, out[:200])
    return elapsed, max(latencies) * 1000, len(latencies)


def prober(port: int, path: str, seconds: float, out: multiprocessing.Queue) -> None:
    """GET ``path`` every PERIOD for ``seconds`` (in a process of its own, so the load
    threads' GIL never delays it); put the latencies, in seconds, on ``out``."""
    os.sched_setaffinity(0, {CLIENT_CPU})
    try:
        os.nice(-10)  # the instrument ahead of the load on its core (allowed as root only)
    except OSError:
        pass
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    errors = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        status, _ = request(conn, "GET", path)
        latencies.append(time.perf_counter() - t)
        errors += status != 200
        time.sleep(PERIOD)
    conn.close()
    out.put((latencies, errors))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process ``pid``, by thread id (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def core_busy(cpu: int) -> float:
    """Seconds core ``cpu`` has been busy (not idle, not waiting for I/O) since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(v) for v in line.split()[1:]]
                return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def mixed(ours: Imgshare, seconds: float, small_path: str,
          profile: str | None = None) -> tuple[float, float, float]:
    """The mixed load against ``ours`` for ``seconds``; prints the prober's figures and
    returns its p50, p99 and worst in ms."""
    served = noise_jpeg(60_000)
    served_path = f"/img/bench/{ours.upload('served.jpg', served)}"
    big = big_bmp()
    with tempfile.TemporaryDirectory(prefix="imgshare-bench-photo-") as tmp:
        make_photo(os.path.join(tmp, "photo.jpg"))
        with open(os.path.join(tmp, "photo.jpg"), "rb") as f:
            photo = f.read()
    print(f"  mixed load for {seconds:g} s: 2 concurrent uploads of {len(big) / 1e6:.1f} MB, a 12 MP JPEG "
          f"({len(photo) / 1e6:.1f} MB) upload each second, wrk -t1 -c16 on a {len(served)} byte /img/; "
          f"prober: GET a small /img/ every {PERIOD * 1000:g} ms")
    stop = threading.Event()
    counts = {"big": 0, "photo": 0, "failed": 0}
    lock = threading.Lock()

    def upload(filename: str, data: bytes, kind: str) -> None:
        body, ctype = multipart({"token": ours.token}, filename, data)
        conn = http.client.HTTPConnection("127.0.0.1", ours.port, timeout=300)
        status, out = request(conn, "POST", "/api/v1/img_upload.php", body, {"Content-Type": ctype})
        conn.close()
        with lock:
            counts[kind if status == 200 else "failed"] += 1
            if status != 200:
                print(f"  upload of {filename}: {status} {out[:200]!r}", file=sys.stderr)

    def big_uploads() -> None:
        while not stop.is_set():
            upload("big.bmp", big, "big")

    def photo_uploads() -> None:
        started = []
        index = 0
        next_at = time.perf_counter()
        while not stop.is_set():
            thread = threading.Thread(target=upload, args=(f"photo{index}.jpg", distinct(photo, index), "photo"))
            thread.start()
            started.append(thread)
            index += 1
            next_at += 1.0
            stop.wait(max(0.0, next_at - time.perf_counter()))
        for thread in started:
            thread.join()

    results: multiprocessing.Queue = multiprocessing.Queue()
    probing = multiprocessing.Process(target=prober, args=(ours.port, small_path, seconds, results))
    wrk = subprocess.Popen(pinned(["wrk", "-t1", "-c16", f"-d{seconds:g}s",
                                   f"http://127.0.0.1:{ours.port}{served_path}"], CLIENT_CPU),
                           stdout=subprocess.PIPE, text=True)
    loaders = [threading.Thread(target=big_uploads), threading.Thread(target=big_uploads),
               threading.Thread(target=photo_uploads)]
    before = thread_cpu(ours.proc.pid)
    core_before = core_busy(SERVER_CPU)
    for thread in loaders:
        thread.start()
    probing.start()
    spy = None
    if profile:
        # Every thread's stacks, 200 times a second, as collapsed text (one stack a line).
        spy = subprocess.Popen(pinned(["py-spy", "record", "--pid", str(ours.proc.pid), "--threads", "--idle",
                                       "--rate", "500", "--nonblocking", "--format", "chrometrace", "--output", profile,
                                       "--duration", str(int(seconds))], CLIENT_CPU),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latencies, errors = results.get(timeout=seconds + 120)
    probing.join()
    after = thread_cpu(ours.proc.pid)
    core_after = core_busy(SERVER_CPU)
    stop.set()
    wrk_out, _ = wrk.communicate(timeout=seconds + 60)
    for thread in loaders:
        thread.join()
    rate = next((line.split()[-1] for line in wrk_out.splitlines() if line.startswith("Requests/sec")), "?")
    bad = "Non-2xx" in wrk_out or "Socket errors" in wrk_out
    ms = [v * 1000 for v in latencies]
    print(f"  meanwhile: {counts['big']} uploads of 30 MB, {counts['photo']} of 12 MP, "
          f"{counts['failed']} failed; /img/ {rate} req/s{' (wrk saw errors)' if bad else ''}")
    print(f"  prober: {len(ms)} GETs, {errors} not 200; p50 {percentile(ms, 0.5):.1f} ms, "
          f"p99 {percentile(ms, 0.99):.1f} ms, worst {max(ms):.1f} ms   (goal: p99 < 50 ms, worst < 100 ms)")
    slow = sum(1 for v in ms if v > 50)
    print(f"  GETs slower than 50 ms: {slow}; slower than 100 ms: {sum(1 for v in ms if v > 100)}")
    pid = ours.proc.pid
    reactor = after.get(pid, 0.0) - before.get(pid, 0.0)
    others = sorted((after[t] - before.get(t, 0.0) for t in after if t != pid), reverse=True)
    print(f"  server CPU while probed: reactor thread {reactor:.2f} s, other threads {sum(others):.2f} s "
          f"(busiest: {', '.join(f'{v:.2f}' for v in others[:4])}) in {seconds:g} s on one core")
    foreign = (core_after - core_before) - reactor - sum(others)
    print(f"  core {SERVER_CPU} busy {core_after - core_before:.2f} s of {seconds:g} s, of which other processes "
          f"(not this server) {max(0.0, foreign):.2f} s: the machine's own noise")
    if spy is not None:
        spy.wait(60)
        print(f"  py-spy stacks of every thread: {profile}")
    return percentile(ms, 0.5), percentile(ms, 0.99), max(ms)


#: The server variants of the mixed load: as shipped, and with the pools' threads at the
#: reactor's own CPU priority (as before they were lowered), each a prelude of the server.
VARIANTS = {
    "pools below the reactor (as shipped)": "",
    "pools at the reactor's priority": ("import imgshare.service as s, imgshare.threads as t; "
                                        "s.IO_NICENESS = s.IMAGE_NICENESS = t.IO_NICENESS = t.IMAGE_NICENESS = 0"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each mixed load")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the mixed-load variants")
    parser.add_argument("--quick", action="store_true", help="one round of 8 s")
    parser.add_argument("--only", choices=("single", "mixed"), help="run one part only")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the server's stacks during the mixed load with py-spy (PyPI) into FILE.N")
    parser.add_argument("--stalls", metavar="FILE",
                        help="time every reactor iteration of the server (bench/stallwatch.py) into FILE.N")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="an extra argument for twistd imgshare (repeatable)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 8.0, 1
    os.sched_setaffinity(0, {CLIENT_CPU})
    small = noise_jpeg(20_000)
    print(f"servers on core {SERVER_CPU}, load on core {CLIENT_CPU}")
    if args.only != "mixed":
        ours, base = Imgshare(*args.server_arg, cpu=SERVER_CPU), Baseline(cpu=SERVER_CPU)
        try:
            small_ours = f"/img/bench/{ours.upload('small.jpg', small)}"
            with open(f"{base.folder}/small.jpg", "wb") as f:
                f.write(small)
            body, ctype = multipart({"token": ours.token}, "big.bmp", big_bmp())
            print(f"single upload of {len(body) / 1e6:.1f} MB while GETting a {len(small)} byte file every 10 ms")
            up, worst, n = probe(ours.port, "/api/v1/img_upload.php", body, ctype, small_ours)
            print(f"  IMGSHARE:             upload {up:5.2f} s, slowest concurrent GET {worst:7.1f} ms ({n} GETs)")
            # The baseline parses multipart on the reactor: its stock Request does.
            up, worst, n = probe(base.port, "/parse", body, ctype, "/files/small.jpg")
            print(f"  twisted.web default:  upload {up:5.2f} s, slowest concurrent GET {worst:7.1f} ms ({n} GETs)")
        finally:
            ours.stop()
            base.stop()
    if args.only == "single":
        return
    summary: dict[str, list[tuple[float, float, float]]] = {name: [] for name in VARIANTS}
    run = 0
    for _ in range(args.rounds):
        for name, prelude in VARIANTS.items():
            run += 1
            env = {}
            if args.stalls:
                prelude += "\n" + stallwatch.PRELUDE
                env["IMGSHARE_STALLWATCH"] = os.path.abspath(f"{args.stalls}.{run}")
            ours = Imgshare(*args.server_arg, cpu=SERVER_CPU, prelude=prelude, env=env)
            try:
                print(f"[{run}] {name}")
                small_ours = f"/img/bench/{ours.upload('small.jpg', small)}"
                summary[name].append(mixed(ours, args.seconds, small_ours,
                                           f"{args.profile}.{run}" if args.profile else None))
            finally:
                ours.stop()
            if args.stalls:
                print(f"  reactor iterations of the server: {args.stalls}.{run}")
    print("mixed load, the prober's small GET (goal: p99 < 50 ms, worst < 100 ms):")
    for name, rows in summary.items():
        print(f"  {name:<40} " + "; ".join(f"p50 {a:.1f} / p99 {b:.1f} / worst {c:.1f} ms" for a, b, c in rows))


if __name__ == "__main__":
    main()
