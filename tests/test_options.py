"""``twistd imgshare`` options: defaults, environment variables, validation."""

from __future__ import annotations

import os

from twisted.python import usage
from twisted.trial import unittest

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
        self.assertEqual(self.parse(["--listen", "ssl:443:privateKey=k"]).public_url, "https://127.0.0.1")

    def test_bad_values(self):
        """Bad values are usage errors that say what is wrong."""
        for argv in (["--registration", "maybe"], ["--max-size", "lots"], ["--resize-threads", "x"],
                     ["--rate-limit-ip", "fast"], ["--tiers", "nonsense"], ["--max-pixels", "0"]):
            self.assertRaises(usage.UsageError, self.parse, argv)

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
        options = Options()
        with self.assertRaises(usage.UsageError) as e:
            options.parseOptions(["--max-size", "64MiB"])
        self.assertIn("tier", str(e.exception))
        options = Options()
        options.parseOptions(["--max-size", "64MiB", "--tiers", "2MiB:permanent,64MiB:7d"])
        self.assertEqual(options.config.max_size, 64 * 1024 * 1024)
