"""Public image ids (PEERS section 0.2): ``<account>~<file>``.

``~`` is in neither the account-name nor the file-name alphabet and is
URL-unreserved, so an id splits unambiguously and travels in a path segment
unescaped.  Wherever an ``<id>`` is taken, a bare file name is accepted too,
resolved only in the authenticated caller's account.
"""

from __future__ import annotations

import attrs

from imgshare.domain import errors, naming

SEPARATOR = "~"


@attrs.frozen
class ImageId:
    """One image named by its account and file name."""

    account: str
    name: str

    def __str__(self) -> str:
        return public_id(self.account, self.name)


def public_id(account: str, name: str) -> str:
    """The public id of ``account``'s image ``name``: ``kitten~20260214_fountain.jpg``."""
    return f"{account}{SEPARATOR}{name}"


def parse_id(value: str, caller: str | None) -> ImageId:
    """The image an ``<id>`` names: a composite ``<account>~<file>``, or a bare file
    name in ``caller``'s account (None: no caller, so a bare name names nothing).

    Raises BadRequest for anything that cannot name an image."""
    value = value.strip()
    account, separator, name = value.partition(SEPARATOR)
    if not separator:
        account, name = caller or "", value
        if not caller:
            raise errors.BadRequest("id: a bare file name needs a token (or use <account>~<file>)")
    if not naming.is_valid_account_name(account, allow_reserved=True) or not naming.is_valid_file_name(name):
        raise errors.BadRequest("id: not <account>~<file> or a file name")
    return ImageId(account, name)
