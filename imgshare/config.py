"""The parsed, validated settings of one IMGSHARE process."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import attrs

from imgshare.domain.lifetime import DEFAULT_TIERS, Tier

MiB = 1024 * 1024
DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
DEFAULT_DATA_DIR = "./imgshare-data"
#: The size of the storage cache when --cache-dir is given without --cache-size.
DEFAULT_CACHE_SIZE = 1024 * MiB

#: Connection limits (see imgshare.web.request): seconds for a whole request head, the
#: slowest body (at least COUNT bytes in every PERIOD seconds), connections per address.
HEAD_TIMEOUT = 10.0
MAX_CONNECTIONS_PER_ADDRESS = 64
#: Files one request to ``POST /api/v1/upload`` may carry.
MAX_FILES = 10
#: Form overhead allowed on top of the files of a request body.
FORM_OVERHEAD = 64 * 1024

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


@attrs.frozen
class RateLimit:
    """At most ``count`` requests per ``period`` seconds (a token bucket)."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"600/60"``, ``"600/1m"`` or ``"20/1s"``."""
        m = _RATE_RE.match(text)
        if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
            raise ValueError(f"rate limit must look like 600/60 or 600/1m, not {text!r}")
        factor = {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(3)]
        return cls(int(m.group(1)), float(m.group(2)) * factor)


MIN_BODY_RATE = RateLimit(16 * 1024, 30.0)


def _split_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """An endpoint description's positional and keyword parts (``\\:`` escapes a colon)."""
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    args, kwargs = [], {}
    for part in parts:
        key, equals, value = part.partition("=")
        if equals and key.isidentifier():
            kwargs[key] = value
        else:
            args.append(part)
    return args, kwargs


_LOOPBACK_NAMES = ("localhost", "::1")
_ALL_INTERFACES = ("", "0.0.0.0", "::")


def guess_public_url(listen: str) -> tuple[str, str | None]:
    """The URL clients most likely reach the ``listen`` endpoint at, and a warning when
    that is only a guess: anything but a plain TCP (or TLS) listener on loopback."""
    args, kwargs = _split_endpoint(listen)
    kind = args[0] if args else ""
    behind_proxy = kind == "haproxy"
    if behind_proxy:
        args, kwargs = _split_endpoint(listen.split(":", 1)[1] if ":" in listen else "")
        kind = args[0] if args else ""
    if kind not in ("tcp", "tcp6", "ssl"):
        return ("http://127.0.0.1:8080",
                f"cannot tell the public URL of the listener {listen!r}: set --public-url "
                "(or IMGSHARE_PUBLIC_URL) to the address clients use, such as https://img.example.org")
    port = kwargs.get("port", args[1] if len(args) > 1 else "")
    port = port if port.isdigit() else "8080"
    host = kwargs.get("interface", "")
    loopback = host.startswith("127.") or host in _LOOPBACK_NAMES
    shown = "127.0.0.1" if host in _ALL_INTERFACES else host
    if ":" in shown:
        shown = f"[{shown}]"
    scheme = "https" if kind == "ssl" else "http"
    default = 443 if scheme == "https" else 80
    url = f"{scheme}://{shown}" + ("" if int(port) == default else f":{port}")
    if behind_proxy:
        return url, (f"{listen!r} takes connections from a proxy: set --public-url (or "
                     "IMGSHARE_PUBLIC_URL) to the address clients reach the proxy at, such as "
                     "https://img.example.org")
    if not loopback:
        where = "every interface" if host in _ALL_INTERFACES else host
        return url, (f"listening on {where}, every URL handed out says {url}: set --public-url (or "
                     "IMGSHARE_PUBLIC_URL) to the address clients use, such as https://img.example.org")
    return url, None


def default_public_url(listen: str) -> str:
    """The URL a client reaches the first ``--listen`` endpoint at, as a default."""
    return guess_public_url(listen)[0]


def check_public_url(text: str) -> str:
    """``text`` as the base of every URL handed out (without a trailing ``/``), or ValueError:
    an absolute http or https URL with a host, and no user, query or fragment."""
    parts = urlsplit(text.strip())
    try:
        parts.port  # noqa: B018 (a bad port raises)
    except ValueError:
        parts = parts._replace(netloc="")
    if (parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc
            or parts.query or parts.fragment or " " in text.strip()):
        raise ValueError(f"--public-url {text!r}: give an absolute http:// or https:// URL such as "
                         "https://img.example.org (no user, query or fragment)")
    return text.strip().rstrip("/")


def _unless_empty(default: Callable[[Config], str]) -> attrs.Converter:
    """A converter: an empty value becomes ``default(config)``, from the fields before it."""
    return attrs.Converter(lambda value, config: value or default(config), takes_self=True)


def _public_url(value: str, config: Config) -> str:
    """The public URL without a trailing ``/``; by default, the first listener's."""
    return check_public_url(value) if value else default_public_url(config.listen[0]).rstrip("/")


@attrs.frozen
class Config:
    """Every setting of SPEC section 2, with defaults resolved.

    ``data_dir`` is made absolute; an empty ``db``, ``storage`` or ``public_url`` becomes
    its default under ``data_dir`` or for the first ``listen`` endpoint."""

    data_dir: str = attrs.field(default=DEFAULT_DATA_DIR, converter=os.path.abspath)
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    db: str = attrs.field(
        default="", converter=_unless_empty(lambda c: f"sqlite:///{c.data_dir}/imgshare.sqlite3"))
    storage: str = attrs.field(default="", converter=_unless_empty(lambda c: f"file://{c.data_dir}/storage"))
    public_url: str = attrs.field(default="", converter=attrs.Converter(_public_url, takes_self=True))
    resize_threads: int = attrs.field(factory=lambda: os.cpu_count() or 1)
    max_size: int = 32 * MiB
    max_pixels: int = 100_000_000
    contact: str = ""
    registration: str = "closed"
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    rate_ip: RateLimit = RateLimit(600, 60.0)
    rate_token: RateLimit = RateLimit(300, 60.0)
    head_timeout: float = HEAD_TIMEOUT  # 0: none
    min_body_rate: RateLimit | None = MIN_BODY_RATE
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS  # 0: no cap
    max_files: int = MAX_FILES
    #: The storage quota (bytes) each new account gets; None: none.
    default_quota: int | None = None
    #: What start-up says when --public-url was not given and the listener's URL is a guess.
    public_url_warning: str | None = None
    #: "on" (/metrics on the main listeners), "off", or an endpoint description of its own listener.
    metrics: str = attrs.field(default="on", converter=str.strip)
    #: A local cache of hot objects of remote storage ("": none) and its size in bytes.
    cache_dir: str = ""
    cache_size: int = DEFAULT_CACHE_SIZE
    #: A file of its own for the access lines ("": the twistd log).
    access_log: str = ""

    def __attrs_post_init__(self) -> None:
        """Checks only: the defaults that depend on other settings come from the converters."""
        if self.registration not in ("open", "closed"):
            raise ValueError("--registration must be open or closed")
        if self.max_size < 1 or self.max_pixels < 1 or self.resize_threads < 1 or self.max_files < 1:
            raise ValueError("--max-size, --max-pixels, --resize-threads and --max-files must be positive")
        if self.head_timeout < 0 or self.max_connections_per_address < 0:
            raise ValueError("--head-timeout and --max-connections-per-address must not be negative")
        if self.metrics not in ("on", "off") and ":" not in self.metrics:
            raise ValueError(f"--metrics must be on, off or an endpoint such as tcp:9100:interface=127.0.0.1, "
                             f"not {self.metrics!r}")
        if self.cache_size < 1:
            raise ValueError("--cache-size must be positive")
        if self.max_size > self.tiers[-1].max_size:
            raise ValueError(
                f"--max-size ({self.max_size} bytes) is above the largest lifetime tier "
                f"({self.tiers[-1].max_size} bytes): add a tier for it with --tiers"
            )

    @property
    def offered_tiers(self) -> tuple[Tier, ...]:
        """The lifetime tiers an upload can fall in: those up to ``max_size``, the last one
        ending at ``max_size`` (``--max-size 1MiB`` offers no 8 or 32 MiB tier)."""
        offered = []
        for tier in self.tiers:
            offered.append(attrs.evolve(tier, max_size=min(tier.max_size, self.max_size)))
            if tier.max_size >= self.max_size:
                break
        return tuple(offered)

    @property
    def metrics_listen(self) -> str | None:
        """The endpoint of the metrics' own listener, if they have one."""
        return None if self.metrics in ("on", "off") else self.metrics

    @property
    def spool_dir(self) -> str:
        """Where request bodies and originals awaiting derivation are kept."""
        return os.path.join(self.data_dir, "spool")

    @property
    def max_body(self) -> int:
        """The largest request body accepted: a maximal file plus form overhead."""
        return self.max_size + FORM_OVERHEAD

    @property
    def max_batch_body(self) -> int:
        """The largest multipart body of ``POST /api/v1/upload``: max_files maximal files."""
        return self.max_files * self.max_size + FORM_OVERHEAD

    @property
    def max_encoded_body(self) -> int:
        """The largest body that may carry a maximal file in base64 (PEERS section 0.6):
        ceil(4/3 * max_size) plus form overhead."""
        return -(-4 * self.max_size // 3) + FORM_OVERHEAD
