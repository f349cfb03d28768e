"""Which IP addresses a server-side fetch may connect to, and how hosts spell them.

Pure functions over ``ipaddress`` (no I/O): ``imgshare.gather`` calls them for
every address it would connect to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Decides whether a connection to ``(address, port)`` may be made.
AddressPolicy = Callable[[IPAddress, int], bool]

# Special-purpose IPv4 blocks (IANA registry) refused whatever the running
# Python's ``is_global`` says: its tables differ between versions.
_REFUSED_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
))
# Special-purpose IPv6 blocks. ``::/8`` holds ::, ::1, the deprecated
# IPv4-compatible ::a.b.c.d and the SIIT ::ffff:0:a.b.c.d forms.
_REFUSED_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/8", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20",
    "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
_OCTAL = re.compile(r"0[0-7]+")

# ------------------------------------------------------------------ addresses

def carried_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address stands for, if it is a translation form.

    IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``, 6to4
    ``2002:AABB:CCDD::/48`` and Teredo ``2001:0::/32`` (its server, and its
    client whose bits are stored inverted). Empty for any other address.
    """
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in _NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return ()


def address_allowed(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address.

    Refused: loopback, private, link-local, CGNAT, multicast, reserved,
    unspecified, documentation and benchmarking blocks, unique-local and
    site-local IPv6, the deprecated IPv4-compatible ``::a.b.c.d`` form, the
    local-use NAT64 prefix ``64:ff9b:1::/48``, and zone-scoped addresses.
    IPv4-mapped, NAT64 (``64:ff9b::/96``), 6to4 and Teredo addresses are
    allowed exactly when every IPv4 address they carry is.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        carried = carried_ipv4(ip)
        if carried:
            return all(_ipv4_allowed(v4) for v4 in carried)
        return _ipv6_allowed(ip)
    return _ipv4_allowed(ip)


def _ipv4_allowed(ip: ipaddress.IPv4Address) -> bool:
    return _plain_allowed(ip) and not any(ip in net for net in _REFUSED_V4)


def _ipv6_allowed(ip: ipaddress.IPv6Address) -> bool:
    return _plain_allowed(ip) and not ip.is_site_local and not any(ip in net for net in _REFUSED_V6)


def _plain_allowed(ip: IPAddress) -> bool:
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
        or ip.is_link_local or ip.is_private
    )


def public_only(ip: IPAddress, port: int) -> bool:
    """The production policy: any port, globally routable addresses only."""
    return address_allowed(ip)


# ---------------------------------------------------------------- host parsing

def parse_host_literal(host: str) -> IPAddress | None:
    """The IP address ``host`` spells, or None when it is a name to resolve.

    IPv6 literals may come with or without brackets; zone identifiers are
    refused. A host whose last label is a number is read as an IPv4 address
    with the WHATWG URL rules that browsers and ``inet_aton`` follow: one to
    four parts, each decimal, ``0x`` hexadecimal or ``0``-prefixed octal, the
    last part filling the remaining bytes -- so ``127.1``, ``0x7f.1``,
    ``2130706433``, ``017700000001`` and ``0177.0.0.1`` are all 127.0.0.1 and
    are vetted (and connected to) as that address. Such a host that is not a
    valid address in that syntax raises ValueError, as browsers refuse it.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        if "%" in text:
            raise ValueError("zone identifiers are not accepted in URLs")
        return ipaddress.IPv6Address(text)
    parts = text.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot, as in "127.0.0.1."
    if not (_DIGITS.fullmatch(parts[-1]) or _HEX.fullmatch(parts[-1])):
        return None
    if len(parts) > 4:
        raise ValueError(f"not a valid IPv4 address: {host!r}")
    numbers = [_ipv4_part(part, host) for part in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"not a valid IPv4 address: {host!r}")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str, host: str) -> int:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        if _OCTAL.fullmatch(part):
            return int(part, 8)
    elif _DIGITS.fullmatch(part):
        return int(part)
    raise ValueError(f"not a valid IPv4 address: {host!r}")
