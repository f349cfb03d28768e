"""Public image ids: imgshare.domain.ids (PEERS section 0.2) and the derived sizes known early."""

from twisted.trial import unittest

from imgshare.domain import errors, ids, naming


class PublicIdTests(unittest.SynchronousTestCase):
    def test_public_id(self):
        """An id is <account>~<file>, and parses back to the same image."""
        self.assertEqual(ids.public_id("kitten", "20260214_fountain.jpg"), "kitten~20260214_fountain.jpg")
        parsed = ids.parse_id("kitten~20260214_fountain.jpg", "bear")
        self.assertEqual(parsed, ids.ImageId("kitten", "20260214_fountain.jpg"))
        self.assertEqual(str(parsed), "kitten~20260214_fountain.jpg")

    def test_bare_name_is_the_callers(self):
        """A bare file name is resolved in the caller's account only (and needs a caller)."""
        self.assertEqual(ids.parse_id(" 20260214_a.png ", "bear"), ids.ImageId("bear", "20260214_a.png"))
        with self.assertRaises(errors.BadRequest):
            ids.parse_id("20260214_a.png", None)

    def test_reserved_account_names_still_parse(self):
        """An account made before its name was reserved is still named by its ids."""
        self.assertEqual(ids.parse_id("i~20260214_a.jpg", None), ids.ImageId("i", "20260214_a.jpg"))

    def test_refusals(self):
        """Anything that cannot name an image is 400."""
        for value in ["", "~", "kitten~", "~20260214_a.jpg", "Kitten~20260214_a.jpg",
                      "kitten~x.jpg", "kitten~20260214_a.gif", "kitten~~20260214_a.jpg",
                      "kitten/20260214_a.jpg", "../20260214_a.jpg", "kitten ~20260214_a.jpg",
                      "a~b~20260214_a.jpg", "x" * 40 + "~20260214_a.jpg"]:
            with self.assertRaises(errors.BadRequest, msg=value):
                ids.parse_id(value, "kitten")


class VariantSizeTests(unittest.SynchronousTestCase):
    def test_sizes_fit_the_box_and_never_upscale(self):
        """The example image's sizes, a portrait, a tiny image, and an extreme strip."""
        self.assertEqual(naming.variant_size(4000, 3000, "xga"), (1024, 768))
        self.assertEqual(naming.variant_size(4000, 3000, "vga"), (640, 480))
        self.assertEqual(naming.variant_size(4000, 3000, "qvga"), (320, 240))
        self.assertEqual(naming.variant_size(3000, 4000, "vga"), (360, 480))
        self.assertEqual(naming.variant_size(64, 48, "qvga"), (64, 48))
        self.assertEqual(naming.variant_size(65535, 1, "qvga"), (320, 1))
