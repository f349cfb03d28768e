"""Real client programs of peer hosts, from the package registries, against a real twistd.

``scripts/peer_clients`` installs the npm Chevereto client imgbb-uploader 1.5.1 (no
dependencies; it contacts only the host it is given, pinned to 127.0.0.1), starts
``twistd imgshare`` on loopback and uploads through ``/api/1/upload`` from a path and
from base64, checks the answer's URLs are served, and that a wrong key is refused.
Node.js and npm must be installed: a missing one fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.serverprocess import REPO


class PeerClientTests(unittest.TestCase):
    timeout = 300

    async def test_chevereto_client_from_npm(self):
        """imgbb-uploader (Chevereto mode) uploads, reads image.url, image.thumb.url and
        image.delete_url, and is refused with code 100 for a wrong key."""
        script = os.path.join(REPO, "scripts", "peer_clients")
        done = await deferToThread(
            subprocess.run, [sys.executable, script], capture_output=True, text=True, timeout=240,
            cwd=REPO,
        )
        self.assertEqual(done.returncode, 0, done.stdout[-4000:] + done.stderr[-2000:])
        self.assertNotIn("FAIL", done.stdout)
        self.assertGreaterEqual(done.stdout.count("\nok "), 21, done.stdout[-2000:])
