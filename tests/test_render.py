"""The pages' synchronous flattener (``web.markup``): byte for byte what Twisted's
``flattenString`` gives, for hand-made trees and for every page of the site."""

from __future__ import annotations

from unittest import mock

from twisted.internet.defer import succeed
from twisted.trial import unittest
from twisted.web.error import UnfilledSlot, UnsupportedType
from twisted.web.template import (
    CDATA,
    CharRef,
    Comment,
    Element,
    TagLoader,
    XMLString,
    flattenString,
    renderer,
    slot,
    tags,
)

from imgshare.testing import image_bytes
from imgshare.web import markup
from tests.test_pages import HOSTILE, PASSWORD, Browser, PagesTestCase

XHTML = 'xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1"'


class Card(Element):
    """Renderers in the shapes the pages use: slots, clones, attributes, repeats."""

    loader = XMLString(
        f'<ul {XHTML} t:render="cards"><li t:render="card"><t:attr name="data-x"><t:slot name="x" /></t:attr>'
        '<t:slot name="x" /><br /><img t:render="maybe" /><span t:render="late"><t:slot name="gone" '
        'default="fallback" /></span></li></ul>'
    )

    def __init__(self, values):
        super().__init__()
        self.values = values

    @renderer
    def cards(self, request, tag):
        return tag

    @renderer
    def card(self, request, tag):
        for value in self.values:
            yield tag.clone(False).fillSlots(x=value)

    @renderer
    def maybe(self, request, tag):
        return tag(src="/a?b=1&c=2") if len(self.values) > 1 else ""

    @renderer
    def late(self, request, tag):
        return tag


class Waiting(Element):
    loader = TagLoader(tags.p(tags.span(render="later")))

    @renderer
    def later(self, request, tag):
        return succeed(tag("arrived"))


async def twisted_bytes(root):
    return await flattenString(None, root)


class TreesTests(unittest.TestCase):
    """Hand-made trees: every kind of node, in content and in attributes."""

    async def assertSame(self, root_factory):
        expected = await twisted_bytes(root_factory())
        self.assertEqual(markup.flatten(None, root_factory()), expected)
        return expected

    async def test_text_and_escaping(self):
        out = await self.assertSame(lambda: tags.div(HOSTILE, " & “quotes” ", b"<raw bytes>", title='a"b<c>&'))
        self.assertIn(b"&lt;script&gt;", out)
        self.assertIn(b'title="a&quot;b&lt;c&gt;&amp;"', out)

    async def test_void_and_empty_elements(self):
        out = await self.assertSame(lambda: [tags.br(), tags.img(src="x"), tags.p(), tags.input(value="")])
        self.assertEqual(out, b'<br /><img src="x" /><p></p><input value="" />')

    async def test_special_nodes(self):
        await self.assertSame(lambda: tags.div(CharRef(8212), Comment("a --> b-"), CDATA("x ]]> y"), "end"))

    async def test_tags_inside_attributes_are_quoted(self):
        out = await self.assertSame(lambda: tags.a(href=[tags.b("bold & <b>"), CharRef(38), Comment("c")]))
        self.assertNotIn(b"<b>", out)

    async def test_slots_defaults_and_generators(self):
        def tree():
            tag = tags.div(slot("a"), tags.span(slot("b", default="dflt")), (str(i) for i in range(3)))
            return tag.fillSlots(a=tags.em("filled"))
        await self.assertSame(tree)

    async def test_slots_stay_visible_to_later_siblings_as_in_twisted(self):
        def tree():
            return tags.div(tags.p(slot("a")).fillSlots(a="first"), tags.p(slot("a")))
        out = await self.assertSame(tree)
        self.assertEqual(out.count(b"first"), 2)

    async def test_elements_renderers_and_clones(self):
        for values in ([], ["one"], ["x<1>", "y&2", HOSTILE]):
            await self.assertSame(lambda values=values: Card(values))

    async def test_rendering_twice_gives_the_same_bytes(self):
        """Nothing of a template is changed by rendering it (shallow clones are enough)."""
        first = markup.flatten(None, Card(["a", "b"]))
        self.assertEqual(markup.flatten(None, Card(["a", "b"])), first)
        self.assertEqual(await twisted_bytes(Card(["a", "b"])), first)

    async def test_failures_match(self):
        with self.assertRaises(UnfilledSlot):
            markup.flatten(None, tags.p(slot("nowhere")))
        with self.assertRaises(UnsupportedType):
            markup.flatten(None, tags.p(object()))
        with self.assertRaises(ValueError):
            markup.flatten(None, tags.p(render="orphan"))

    def test_a_deferred_is_not_synchronous(self):
        with self.assertRaises(markup.NotSynchronous):
            markup.flatten(None, Waiting())

    async def test_render_falls_back_to_twisted_for_a_deferred(self):
        """``views.render`` gives a page whose renderer waits what Twisted gives."""
        from imgshare.web.views import Layout, render

        class Request:
            def __init__(self):
                self.headers, self.code = {}, None

            def setHeader(self, name, value):
                self.headers[name] = value

            def setResponseCode(self, code):
                self.code = code

        page = await render(Request(), Layout("Waiting", Waiting()))
        self.assertIn(b"<p><span>arrived</span></p>", page)
        self.assertEqual(page, b"<!DOCTYPE html>\n" + await flattenString(None, Layout("Waiting", Waiting())))


class PagesRenderTests(PagesTestCase):
    """Every page of the site, rendered by ``markup.flatten`` and by Twisted's
    flattener (``markup.flatten`` made to refuse): the same bytes."""

    async def setUp(self):
        await super().setUp()
        await self.make_admin("kitten")
        self.browser = await self.logged_in("kitten")
        token = await self.f.token("kitten")
        for i in range(30):  # two gallery pages, with every kind of card
            size = (300, 200) if i % 3 else (40, 30)
            await self.api_upload(token, image_bytes("PNG", size), filename=f"{HOSTILE}{i}.png",
                                  keep_name="1", expire="3d" if i % 2 else "never")
            self.f.clock.advance(61)
            if i == 20:
                while await self.f.derivations.run_one():
                    pass
        self.last = (await self.api_upload(token, image_bytes("JPEG", (64, 48))))[1]

    async def both(self, fetch):
        """The page ``fetch`` gets, rendered by ``markup.flatten``; its very tree is
        then flattened again by Twisted: the same bytes."""
        rendered = []
        real = markup.flatten

        def recorded(request, root):
            out = real(request, root)
            rendered.append((request, root, out))
            return out

        with mock.patch.object(markup, "flatten", recorded):
            response, body = await fetch()
        self.assertEqual(len(rendered), 1, "the page was rendered by markup.flatten")
        request, root, out = rendered[0]
        self.assertEqual(out, await flattenString(request, root))
        self.assertIn(out.decode(), body)
        return response, body

    async def test_browser_pages(self):
        name = self.last["file"]
        for path in ["/images", "/images?page=2", "/images?q=script", "/images?q=nothing-matches",
                     "/images?page=9", "/images?sort=largest", "/images?done=deleted", "/tokens", "/account",
                     "/account/reset?name=bear", "/no-such-page"]:
            response, body = await self.both(lambda path=path: self.browser.get(path))
            self.assertIn(response.code, (200, 404), path)
        csrf = await self.browser.csrf("/images")
        await self.both(lambda: self.browser.post("/images/delete", {"csrf": csrf, "name": name}))
        await self.both(lambda: self.browser.post(
            "/images/delete-selected", {"csrf": csrf, "name": name, "q": "x", "page": "2"}))
        _, page = await self.both(lambda: self.browser.post(
            "/images/upload", {"csrf": csrf, "keep_name": "1"},
            files={"file": (HOSTILE + ".png", image_bytes("PNG"))}))
        self.assertNotIn(HOSTILE, page)

    async def test_public_pages(self):
        stranger = Browser(self.f)
        for path in ["/login", "/login?next=/tokens", f"/i/kitten/{self.last['file']}", "/i/kitten/missing.png"]:
            await self.both(lambda path=path: stranger.get(path))
        await self.both(lambda: stranger.post("/login", {"csrf": "x", "name": "kitten", "password": PASSWORD}))
        delete_path = self.last["delete_url"].split("img.example", 1)[1]
        _, page = await self.both(lambda: stranger.get(delete_path))
        self.assertIn("Delete", page)
