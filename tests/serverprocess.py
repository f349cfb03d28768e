"""Start the real ``twistd -n imgshare`` in a subprocess on a loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.backends import stop_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LISTENING = re.compile(r"IMGSHARE listening on IPv4Address\(type='TCP', host='127\.0\.0\.1', port=(\d+)\)")


#: The ``imgshare`` console script, run from the checkout.
ADMIN_COMMAND = [sys.executable, "-c", "from imgshare.cli import main; main()"]


def environment(data_dir: str | None, **extra: str) -> dict[str, str]:
    """The environment of a test process: none of the caller's own IMGSHARE_* settings (they
    must not leak into a test server), the checkout on the path, and ``IMGSHARE_DATA_DIR``
    unless ``data_dir`` is None."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSHARE_") or k.startswith("IMGSHARE_TEST_")}
    env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    if data_dir is not None:
        env["IMGSHARE_DATA_DIR"] = data_dir
    env.update(extra)
    return env


def run_admin(data_dir: str | None, *argv: str, stdin: str = "", cwd: str | None = None,
              **env: str) -> subprocess.CompletedProcess:
    """Run the ``imgshare`` admin command (in ``cwd``; without ``IMGSHARE_DATA_DIR`` if
    ``data_dir`` is None); its exit status, stdout and stderr, whatever they are."""
    return subprocess.run(
        [*ADMIN_COMMAND, *argv], input=stdin, capture_output=True, text=True,
        env=environment(data_dir, **env), cwd=cwd, timeout=60,
    )


def admin(data_dir: str, *argv: str, stdin: str = "", **env: str) -> str:
    """Run the ``imgshare`` admin command; return its stdout (raises on failure)."""
    done = run_admin(data_dir, *argv, stdin=stdin, **env)
    if done.returncode:
        raise AssertionError(f"imgshare {' '.join(argv)} failed: {done.stderr}")
    return done.stdout


class ServerProcess:
    """One ``twistd -n imgshare`` process; ``url`` once ``start`` has returned."""

    def __init__(self, data_dir: str, *args: str, **env: str):
        self.data_dir = data_dir
        self.args = args
        self.env = env
        self.log_path = os.path.join(data_dir + "-twistd.log")
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    async def start(self, timeout: float = 60.0) -> ServerProcess:
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        if os.path.exists(self.log_path):  # a restart: keep the earlier run's log apart
            os.replace(self.log_path, self.log_path + f".{time.time():.0f}")
        argv = [
            sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
            "-n", "--pidfile=", "--logfile", self.log_path, "imgshare",
            "--listen", "tcp:0:interface=127.0.0.1", *self.args,
        ]
        self.process = subprocess.Popen(argv, env=environment(self.data_dir, **self.env), cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.log_path):
                m = _LISTENING.search(self.log())
                if m:
                    self.port = int(m.group(1))
                    return self
            if self.process.poll() is not None:
                raise AssertionError(f"twistd exited with {self.process.returncode}:\n{self._tail()}")
            await deferLater(reactor, 0.05, lambda: None)
        self.stop()
        raise AssertionError(f"twistd did not start listening within {timeout} s:\n{self._tail()}")

    def _tail(self) -> str:
        return self.log()[-4000:] if os.path.exists(self.log_path) else "(no log)"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.process, sig)
        self.process = None
