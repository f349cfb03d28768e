"""Start-up of the real ``twistd imgshare``: every mistake and unreachable backend is one
clear line and a non-zero exit, daemonized or not; option messages name the option."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests import backends
from tests.serverprocess import REPO, environment

TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; sys.exit(run())"]


def twistd(*argv: str, data_dir: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess:
    """Run twistd to its end (it must end by itself); its exit status and output."""
    return subprocess.run([*TWISTD, *argv], capture_output=True, text=True, timeout=timeout,
                          env=environment(data_dir, **env), cwd=REPO)


class StartupFailureTests(unittest.TestCase):
    timeout = 240

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "twistd.log")

    def read_log(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def busy_port(self) -> int:
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        self.addCleanup(held.close)
        return held.getsockname()[1]

    def failed(self, done: subprocess.CompletedProcess, *words: str) -> str:
        """Exit 1, one 'could not start' line naming ``words``, no traceback; the line."""
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        log = self.read_log()
        lines = [line for line in log.splitlines() if "IMGSHARE could not start" in line]
        self.assertEqual(len(lines), 1, log)
        self.assertNotIn("Traceback", log)
        for word in words:
            self.assertIn(word, lines[0])
        return lines[0]

    async def test_port_in_use_in_the_foreground(self):
        port = self.busy_port()
        done = await deferToThread(twistd, "-n", "--pidfile=", "--logfile", self.log, "imgshare",
                                   "--listen", f"tcp:{port}:interface=127.0.0.1", data_dir=self.data)
        self.failed(done, f"tcp:{port}", "address already in use", "--listen")
        self.assertIn("IMGSHARE could not start: cannot listen", done.stderr)  # the log is in a file

    async def test_port_in_use_daemonized(self):
        """The shell that started the daemon gets status 1 and the reason; no pid file stays."""
        port = self.busy_port()
        pidfile = os.path.join(self.base, "twistd.pid")
        done = await deferToThread(twistd, f"--pidfile={pidfile}", "--logfile", self.log, "imgshare",
                                   "--listen", f"tcp:{port}:interface=127.0.0.1", data_dir=self.data)
        self.failed(done, "address already in use")
        self.assertIn("cannot listen on", done.stderr)
        for _ in range(100):  # the daemon removes its pid file as it ends
            if not os.path.exists(pidfile):
                break
            await deferToThread(__import__("time").sleep, 0.1)
        self.assertFalse(os.path.exists(pidfile))

    async def test_data_folder_that_cannot_be_made(self):
        blocker = os.path.join(self.base, "a-file")
        with open(blocker, "w") as f:
            f.write("not a folder")
        done = await deferToThread(twistd, "-n", "--pidfile=", "--logfile", self.log, "imgshare",
                                   "--listen", "tcp:0:interface=127.0.0.1", data_dir=os.path.join(blocker, "data"))
        self.failed(done, "cannot create the data folder", "--data-dir")

    async def test_access_log_that_cannot_be_opened(self):
        done = await deferToThread(twistd, "-n", "--pidfile=", "--logfile", self.log, "imgshare",
                                   "--listen", "tcp:0:interface=127.0.0.1",
                                   "--access-log", os.path.join(self.base, "no-such-folder", "access.log"),
                                   data_dir=self.data)
        self.failed(done, "cannot open the access log", "--access-log")

    async def test_postgresql_unreachable(self):
        done = await deferToThread(twistd, "-n", "--pidfile=", "--logfile", self.log, "imgshare",
                                   "--listen", "tcp:0:interface=127.0.0.1",
                                   "--db", "postgresql://imgshare:hunter2secret@127.0.0.1:1/imgshare",
                                   data_dir=self.data)
        self.failed(done, "PostgreSQL", "--db")
        self.assertNotIn("hunter2secret", self.read_log() + done.stdout + done.stderr)

    async def test_missing_bucket_and_missing_credentials(self):
        endpoint = await deferToThread(backends.s3_endpoint)
        url = backends.storage_url(endpoint, "imgshare-no-such-bucket")
        done = await deferToThread(twistd, "-n", "--pidfile=", "--logfile", self.log, "imgshare",
                                   "--listen", "tcp:0:interface=127.0.0.1", "--storage", url,
                                   data_dir=self.data, **backends.TEST_CREDENTIALS)
        self.failed(done, "imgshare-no-such-bucket", "--storage")
        os.remove(self.log)
        bucket_endpoint, bucket = await backends.create_bucket(self)
        empty_home = os.path.join(self.base, "home")
        os.makedirs(empty_home)
        done = await deferToThread(
            twistd, "-n", "--pidfile=", "--logfile", self.log, "imgshare", "--listen", "tcp:0:interface=127.0.0.1",
            "--storage", backends.storage_url(bucket_endpoint, bucket), data_dir=self.data,
            HOME=empty_home, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="", AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
        self.failed(done, "--storage")


class OptionMessageTests(unittest.TestCase):
    timeout = 120

    def run_twistd(self, *argv: str, **env: str) -> subprocess.CompletedProcess:
        data = os.path.abspath(self.mktemp())
        return twistd("-n", "--pidfile=", "imgshare", *argv, data_dir=data, **env)

    async def test_bad_values_are_one_line_naming_the_option(self):
        cases = [
            (["--max-size", "foo"], {}, "--max-size: invalid size: 'foo'"),
            ([], {"IMGSHARE_MAX_SIZE": "foo"}, "(the value comes from IMGSHARE_MAX_SIZE)"),
            (["--listen", "tcp:notaport"], {}, "--listen 'tcp:notaport': a port must be a number"),
            (["--listen", "bogus:1"], {}, "--listen 'bogus:1': Unknown endpoint type"),
            (["--listen", "tcp:99999"], {}, "port 99999 is not between 0 and 65535"),
            (["--db", "bogus://"], {}, "--db 'bogus://': no backend for bogus://"),
            (["--storage", "bogus://x"], {}, "--storage 'bogus://x': no backend for bogus://"),
            (["--public-url", "notaurl"], {}, "--public-url 'notaurl': give an absolute http:// or https:// URL"),
            (["--max-files", "ten"], {}, "--max-files: must be a whole number"),
        ]
        for argv, env, expected in cases:
            done = await deferToThread(self.run_twistd, *argv, **env)
            self.assertEqual(done.returncode, 2, (argv, done.stdout, done.stderr))
            self.assertEqual(done.stderr.strip().count("\n"), 0, (argv, done.stderr))  # one line, no help
            self.assertIn(expected, done.stderr, argv)
            self.assertNotIn("Traceback", done.stderr + done.stdout)
            self.assertNotIn("--rate-limit-ip", done.stdout, "the whole help was printed")

    async def test_help_and_version(self):
        from imgshare import __version__

        done = await deferToThread(self.run_twistd, "--help")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"IMGSHARE {__version__}", done.stdout)
        self.assertIn("IMGSHARE_MAX_SIZE", done.stdout)
        self.assertIn("IMGSHARE_PUBLIC_URL", done.stdout)
        done = await deferToThread(self.run_twistd, "--version")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"IMGSHARE {__version__}", done.stdout)


class PublicUrlWarningTests(unittest.TestCase):
    timeout = 120

    async def test_a_listener_behind_a_proxy_warns_at_start(self):
        """A haproxy: listener without --public-url starts, saying the URL must be given;
        loopback TCP does not warn."""
        from tests.serverprocess import ServerProcess

        data = os.path.abspath(self.mktemp())
        server = ServerProcess(data)
        argv_listen = "haproxy:tcp:0:interface=127.0.0.1"
        proc = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "--logfile", server.log_path, "imgshare",
                                 "--listen", argv_listen], env=environment(data), cwd=REPO)
        self.addCleanup(backends.stop_process, proc)
        for _ in range(600):
            if os.path.exists(server.log_path) and "IMGSHARE listening" in server.log():
                break
            await deferToThread(__import__("time").sleep, 0.05)
        log = server.log()
        self.assertIn("IMGSHARE listening", log)
        self.assertIn("takes connections from a proxy: set --public-url", log)
        quiet = await ServerProcess(os.path.abspath(self.mktemp())).start()
        self.addCleanup(quiet.stop)
        self.assertNotIn("set --public-url", quiet.log())
