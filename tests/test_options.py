"""``twistd imgshare`` options: defaults, environment variables, validation."""

from __future__ import annotations

import os
import sys

from twisted.trial import unittest

from imgshare.config import check_public_url, default_public_url, guess_public_url
from imgshare.options import build_config, resolve
from imgshare.tap import Options


class OptionsTests(unittest.TestCase):
    def parse(self, argv, env=None):
        self.patch(os, "environ", env or {})
        options = Options()
        options.parseOptions(argv)
        return options.config

    def test_defaults(self):
        """No options: 127.0.0.1:8080, ./imgshare-data, sqlite and files inside it, SPEC limits."""
        config = self.parse([])
        data = os.path.abspath("./imgshare-data")
        self.assertEqual(config.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(config.public_url, "http://127.0.0.1:8080")
        self.assertEqual(config.db, f"sqlite:///{data}/imgshare.sqlite3")
        self.assertEqual(config.storage, f"file://{data}/storage")
        self.assertEqual((config.max_size, config.max_pixels), (32 * 1024 * 1024, 100_000_000))
        self.assertEqual(config.registration, "closed")
        self.assertEqual(config.resize_threads, os.cpu_count())

    def test_every_option(self):
        """Every SPEC section 2 option is accepted; --listen repeats."""
        config = self.parse([
            "--listen", "tcp:9000", "--listen", "tcp:9001", "--data-dir", "/srv/x", "--db", "sqlite:///srv/db",
            "--storage", "file:///srv/s", "--public-url", "https://img.example/", "--resize-threads", "3",
            "--max-size", "8MiB", "--max-pixels", "5000", "--contact", "admin@example.com",
            "--registration", "open", "--tiers", "1MiB:permanent,8MiB:30d", "--rate-limit-ip", "10/1m",
        ])
        self.assertEqual(config.listen, ("tcp:9000", "tcp:9001"))
        self.assertEqual((config.data_dir, config.db, config.storage), ("/srv/x", "sqlite:///srv/db", "file:///srv/s"))
        self.assertEqual(config.public_url, "https://img.example")
        self.assertEqual((config.resize_threads, config.max_size, config.max_pixels), (3, 8 * 1024 * 1024, 5000))
        self.assertEqual((config.contact, config.registration), ("admin@example.com", "open"))
        self.assertEqual(len(config.tiers), 2)
        self.assertEqual((config.rate_ip.count, config.rate_ip.period), (10, 60.0))

    def test_environment(self):
        """IMGSHARE_<OPTION> variables are read; the command line wins."""
        env = {"IMGSHARE_DATA_DIR": "/env/data", "IMGSHARE_MAX_SIZE": "1MiB",
               "IMGSHARE_LISTEN": "tcp:7000 tcp:7001", "IMGSHARE_PUBLIC_URL": "https://env.example"}
        config = self.parse(["--max-size", "2MiB"], env)
        self.assertEqual(config.data_dir, "/env/data")
        self.assertEqual(config.max_size, 2 * 1024 * 1024)
        self.assertEqual(config.listen, ("tcp:7000", "tcp:7001"))
        self.assertEqual(config.public_url, "https://env.example")

    def test_public_url_from_listen(self):
        """Without --public-url, the URL follows the first endpoint."""
        self.assertEqual(self.parse(["--listen", "tcp:9000"]).public_url, "http://127.0.0.1:9000")
        self.assertEqual(default_public_url("ssl:443:privateKey=k"), "https://127.0.0.1")

    def test_public_url_guesses_and_warnings(self):
        """Loopback TCP is a sure guess; every other listener warns that --public-url is needed."""
        sure = {"tcp:8080:interface=127.0.0.1": "http://127.0.0.1:8080",
                "tcp6:18645:interface=\\:\\:1": "http://[::1]:18645",
                "ssl:8443:interface=127.0.0.1:privateKey=k": "https://127.0.0.1:8443",
                "tcp:port=9000:interface=localhost": "http://localhost:9000"}
        for listen, url in sure.items():
            self.assertEqual(guess_public_url(listen), (url, None), listen)
        guessed = {"tcp:8080": "http://127.0.0.1:8080", "haproxy:tcp:18667": "http://127.0.0.1:18667",
                   "tcp:80:interface=10.0.0.5": "http://10.0.0.5", "unix:/run/imgshare.sock": None,
                   "systemd:domain=INET:index=0": None}
        for listen, url in guessed.items():
            found, warning = guess_public_url(listen)
            if url is not None:
                self.assertEqual(found, url, listen)
            self.assertIn("set --public-url", warning, listen)
        self.assertIsNone(build_config({"listen": ["tcp:8080"], "public_url": "https://img.example"}
                                       ).public_url_warning)
        self.assertIn("proxy", build_config({"listen": ["haproxy:tcp:18667"]}).public_url_warning)

    def test_public_url_is_checked(self):
        self.assertEqual(check_public_url(" https://img.example.org/ "), "https://img.example.org")
        self.assertEqual(check_public_url("http://127.0.0.1:8080/pics"), "http://127.0.0.1:8080/pics")
        for bad in ("notaurl", "ftp://img.example", "https://user:pw@img.example", "https://img.example?a=1",
                    "https://img.example/#x", "https://img.example:99999", "http://", "//img.example"):
            with self.assertRaises(ValueError, msg=bad):
                check_public_url(bad)

    def test_offered_tiers_end_at_max_size(self):
        """--max-size 1MiB offers one tier (permanent, up to 1 MiB), not the 8 and 32 MiB ones."""
        config = build_config({"max_size": "1MiB"})
        self.assertEqual([(t.max_size, t.permanent) for t in config.offered_tiers], [(1024 * 1024, True)])
        config = build_config({"max_size": "3MiB"})
        self.assertEqual([t.max_size for t in config.offered_tiers], [2 * 1024 * 1024, 3 * 1024 * 1024])
        self.assertEqual(len(build_config({}).offered_tiers), 3)

    def test_bad_values(self):
        """Bad values end the command with status 2 and one line naming the option."""
        import io

        for argv in (["--registration", "maybe"], ["--max-size", "lots"], ["--resize-threads", "x"],
                     ["--rate-limit-ip", "fast"], ["--tiers", "nonsense"], ["--max-pixels", "0"]):
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            with self.assertRaises(SystemExit) as e:
                self.parse(argv)
            self.assertEqual(e.exception.code, 2, argv)
            self.assertIn(argv[0], err.getvalue())
            self.assertEqual(err.getvalue().count("\n"), 1, err.getvalue())

    def test_resolve_ignores_empty(self):
        """Empty environment values count as unset."""
        self.assertEqual(resolve({}, {"IMGSHARE_DB": ""}), {})
        self.assertEqual(build_config({}).registration, "closed")


class TacTests(unittest.TestCase):
    def test_tac_builds_the_service(self):
        """tac/imgshare.tac builds the same service as the plugin, configured from IMGSHARE_*."""
        from twisted.application.service import IServiceCollection

        from imgshare.service import ImgshareService

        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        data = os.path.abspath(self.mktemp())
        self.patch(os, "environ", {"IMGSHARE_DATA_DIR": data, "IMGSHARE_LISTEN": "tcp:0"})
        namespace: dict = {}
        with open(os.path.join(here, "tac", "imgshare.tac")) as f:
            exec(compile(f.read(), "imgshare.tac", "exec"), namespace)
        [service] = list(IServiceCollection(namespace["application"]))
        self.assertIsInstance(service, ImgshareService)
        self.assertEqual(service.config.data_dir, data)
        self.assertEqual(service.config.listen, ("tcp:0",))

    def test_plugin_is_found(self):
        """twistd finds the imgshare plugin, which points at imgshare.tap."""
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertEqual(makers["imgshare"].module, "imgshare.tap")


class ConsistencyTests(unittest.TestCase):
    def test_max_size_needs_a_tier(self):
        """A --max-size above the largest lifetime tier is refused with an explanation."""
        import io

        options = Options()
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit):
            options.parseOptions(["--max-size", "64MiB"])
        self.assertIn("tier", err.getvalue())
        options = Options()
        options.parseOptions(["--max-size", "64MiB", "--tiers", "2MiB:permanent,64MiB:7d"])
        self.assertEqual(options.config.max_size, 64 * 1024 * 1024)
