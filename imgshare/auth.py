"""Secrets: API tokens (stored as SHA-256) and passwords (scrypt)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")

# scrypt cost: 2**14 x 8 x 1 takes ~50 ms and 16 MiB; stored with the hash so
# it can be raised later without invalidating existing passwords.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def new_token() -> str:
    """A fresh API token: 32 random lowercase hex characters."""
    return secrets.token_hex(16)


def token_digest(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def looks_like_token(value: str) -> bool:
    return bool(TOKEN_RE.match(value))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` with a per-user random salt."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, compared in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
            p=int(p), dklen=len(expected), maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
