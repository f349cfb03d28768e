"""Files of the spool folder (request bodies, downloads, originals awaiting derivation,
derivations under way), removed once nobody needs them."""

from __future__ import annotations

import os


def remove_if_present(path: str) -> None:
    """Remove the file at ``path``; one already gone is no error (blocking: run it in a runner)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
