"""The password policy for every password that is set (NIST SP 800-63B, 3.1.1.2).

A new password has 10 to 1024 characters, counted as Unicode code points after
NFKC normalisation (nothing is stripped or truncated, and the password hashed
is the one typed), and is refused when it is in the shipped list of common
passwords (compared case-insensitively), when it is one character repeated, a
short block repeated or an obvious sequence ("1234567890", "abcdefghij",
"qwertyuiop"), or when it is the account's name.  No composition rules
(digits, symbols) and no expiry, as NIST asks.  Logging in never applies it:
accounts made under an older, weaker rule keep working.
"""

from __future__ import annotations

import importlib.resources
import unicodedata

MIN_LENGTH = 10
MAX_LENGTH = 1024

#: What the forms say next to the field.
RULE = f"At least {MIN_LENGTH} characters, and not a common password."
TOO_SHORT = f"The password must have at least {MIN_LENGTH} characters."
TOO_LONG = f"The password may have at most {MAX_LENGTH} characters."
COMMON = "That password is among the most common passwords, which are tried first: choose another one."
PATTERN = "That password is one character repeated or a simple sequence: choose another one."
IS_NAME = "The password must not be the account name."
SAME_AS_NOW = "The new password is the one you have now: choose a different one."

_LIST = "common-passwords.txt"
_common: frozenset[str] | None = None

#: Runs of characters people type in order; a password inside one of them (either way) is refused.
_RUNS = (
    "0123456789" * 3,
    "abcdefghijklmnopqrstuvwxyz" * 2,
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertyuiop" * 3,
    "asdfghjkl" * 3,
    "zxcvbnm" * 3,
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
)


def normalise(password: str) -> str:
    """``password`` in NFKC form, the form its length is counted in."""
    return unicodedata.normalize("NFKC", password)


def length(password: str) -> int:
    """The number of characters (code points) ``password`` counts for."""
    return len(normalise(password))


def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, lower case, read once on first use."""
    global _common
    if _common is None:
        text = importlib.resources.files("imgshare").joinpath("data", _LIST).read_text("utf-8")
        _common = frozenset(
            line.strip().casefold() for line in text.splitlines() if line.strip() and not line.startswith("#")
        )
    return _common


def is_common(password: str) -> bool:
    """Whether ``password`` is in the common list, whatever its case."""
    return normalise(password).casefold() in common_passwords()


def is_pattern(password: str) -> bool:
    """Whether ``password`` is a block of at most 4 characters repeated, a run of code points
    rising or falling by one, or a piece of a keyboard row or the alphabet typed in order."""
    folded = normalise(password).casefold()
    if len(folded) < 2:
        return True
    for size in range(1, 5):
        block = folded[:size]
        if len(folded) > size and (block * (len(folded) // size + 1)).startswith(folded):
            return True
    steps = {ord(b) - ord(a) for a, b in zip(folded, folded[1:], strict=False)}
    if steps in ({1}, {-1}):
        return True
    return any(folded in run or folded in run[::-1] for run in _RUNS)


def problem(password: str, name: str | None = None) -> str | None:
    """Why ``password`` may not be set (for the account ``name`` when given), or None."""
    count = length(password)
    if count < MIN_LENGTH:
        return TOO_SHORT
    if count > MAX_LENGTH:
        return TOO_LONG
    if name and normalise(password).casefold() == normalise(name).casefold():
        return IS_NAME
    if is_pattern(password):
        return PATTERN
    if is_common(password):
        return COMMON
    return None
