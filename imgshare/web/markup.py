"""A synchronous flattener for ``twisted.web.template`` trees.

``twisted.web.template.flattenString`` drives every node through a trampoline of
generators and Deferreds, so that a renderer may return a Deferred.  None of the
pages' renderers does: they are given their data up front (``web.views``).  For
them this module walks the same tree with plain recursion and joins the bytes
once, giving byte for byte what ``flattenString`` gives (the same escaping, the
same slot look-up, including its quirk of keeping a tag's slots visible to the
tags after it) at a fraction of the cost: the gallery's 24 cards are most of a
page view's work otherwise.

A tree holding a Deferred or a coroutine raises ``NotSynchronous``; ``flatten``'s
caller then uses ``flattenString``.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutine
from types import GeneratorType
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web._flatten import (
    _getSlotValue,
    attributeEscapingDoneOutside,
    escapedCDATA,
    escapedComment,
    escapeForContent,
    writeWithAttributeEscaping,
)
from twisted.web._stan import voidElements
from twisted.web.error import UnsupportedType
from twisted.web.iweb import IRenderable
from twisted.web.template import CDATA, CharRef, Comment, Tag, slot

Write = Callable[[bytes], object]
Escaper = Callable[[bytes | str], bytes]


class NotSynchronous(Exception):
    """The tree holds a Deferred or a coroutine: it needs ``flattenString``."""


def flatten(request: Any, root: Any) -> bytes:
    """``root`` as bytes, as ``flattenString(request, root)`` would give them."""
    out: list[bytes] = []
    _flatten(request, root, out.append, [], None, escapeForContent)
    return b"".join(out)


#: Tag names as bytes, and whether each is a void element (``<br />``).
_NAMES: dict[str, tuple[bytes, bool]] = {}


def _name_of(tag_name: str | bytes) -> tuple[bytes, bool]:
    known = _NAMES.get(tag_name)  # type: ignore[arg-type]
    if known is None:
        encoded = tag_name.encode("ascii") if isinstance(tag_name, str) else tag_name
        known = (encoded, encoded.decode("ascii") in voidElements)
        if isinstance(tag_name, str):
            _NAMES[tag_name] = known
    return known


def _flatten(request: Any, root: Any, write: Write, slot_data: list[Any],
             factory: Any, escaper: Escaper) -> None:
    """One node, following ``twisted.web._flatten._flattenElement`` case by case."""
    if isinstance(root, str | bytes):
        write(escaper(root))
    elif isinstance(root, Tag):
        slot_data.append(root.slotData)  # not popped after a plain tag, as in Twisted
        if root.render is not None:
            if factory is None:
                raise ValueError(f'Tag wants to be rendered by method "{root.render}" '
                                 "but is not contained in any IRenderable")
            clone = root.clone(False)
            clone.render = None
            result = factory.lookupRenderMethod(root.render)(request, clone)
            _flatten(request, result, write, slot_data, factory, escaper)
            slot_data.pop()
            return
        if not root.tagName:
            _flatten(request, root.children, write, slot_data, factory, escaper)
            return
        name, void = _name_of(root.tagName)
        write(b"<" + name)
        for key, value in root.attributes.items():
            write(b" " + (key.encode("ascii") if isinstance(key, str) else key) + b'="')
            _flatten(request, value, writeWithAttributeEscaping(write), slot_data, factory,
                     attributeEscapingDoneOutside)
            write(b'"')
        if root.children or not void:
            write(b">")
            _flatten(request, root.children, write, slot_data, factory, escapeForContent)
            write(b"</" + name + b">")
        else:
            write(b" />")
    elif isinstance(root, list | tuple | GeneratorType):
        for element in root:
            _flatten(request, element, write, slot_data, factory, escaper)
    elif isinstance(root, slot):
        _flatten(request, _getSlotValue(root.name, slot_data, root.default), write, slot_data, factory, escaper)
    elif isinstance(root, CharRef):
        write(b"&#%d;" % (root.ordinal,))
    elif isinstance(root, CDATA):
        write(b"<![CDATA[" + escapedCDATA(root.data) + b"]]>")
    elif isinstance(root, Comment):
        write(b"<!--" + escapedComment(root.data) + b"-->")
    elif isinstance(root, Deferred) or iscoroutine(root):
        raise NotSynchronous(root)
    elif IRenderable.providedBy(root):
        _flatten(request, root.render(request), write, slot_data, root, escaper)
    else:
        raise UnsupportedType(root)
