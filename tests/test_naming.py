"""Tests for imgshare.domain.naming: names, extensions, keys and file references."""

import datetime
import itertools
import string

from twisted.trial import unittest

from imgshare.domain import errors, naming
from imgshare.domain.records import ImageType

JPEG = ImageType(mime="image/jpeg", ext=".jpg", pil_format="JPEG")
PNG = ImageType(mime="image/png", ext=".png", pil_format="PNG")
WEBP = ImageType(mime="image/webp", ext=".webp", pil_format="WEBP")

NAME = "20260214_fountain.jpg"


class AccountNameTests(unittest.TestCase):
    """is_valid_account_name follows the documented pattern and reserved list."""

    def test_valid_names(self):
        """Lowercase letters, digits, "_" and "-" after a letter or digit, up to 32 chars."""
        for name in ("kitten", "a", "0", "k1tt3n", "a_b-c", "a" * 32, "9lives"):
            self.assertTrue(naming.is_valid_account_name(name), name)

    def test_invalid_names(self):
        """Uppercase, leading punctuation, long, empty, slashes and newlines are refused."""
        for name in ("", "Kitten", "_a", "-a", "a" * 33, "a/b", "a.b", "kitten\n", "kät", " a"):
            self.assertFalse(naming.is_valid_account_name(name), repr(name))

    def test_reserved_names(self):
        """Every reserved word is refused although it matches the pattern."""
        self.assertEqual(
            naming.RESERVED_NAMES,
            {
                "api",
                "img",
                "thumb",
                "static",
                "admin",
                "setup",
                "login",
                "logout",
                "register",
                "i",
                "delete",
                "sharexapi",
                "xga",
                "vga",
                "qvga",
            },
        )
        for name in naming.RESERVED_NAMES:
            self.assertFalse(naming.is_valid_account_name(name), name)

    def test_peer_paths_are_reserved(self):
        """The first segments of the viewer pages, the delete links, seed 001's ShareX path and
        /register are reserved (SPEC section 3), while names that only begin like them are not."""
        for name in ("i", "delete", "sharexapi", "register"):
            self.assertFalse(naming.is_valid_account_name(name), name)
        for name in ("ii", "i2", "deleted", "sharex", "registered"):
            self.assertTrue(naming.is_valid_account_name(name), name)

    def test_lookups_allow_reserved_names(self):
        """Looking up an existing account allows reserved names, but never malformed ones
        (a trailing newline included)."""
        for name in naming.RESERVED_NAMES | {"kitten"}:
            self.assertTrue(naming.is_valid_account_name(name, allow_reserved=True), name)
        for name in ("", "Kitten", "_a", "a" * 33, "a/b", "kitten\n", "img\n"):
            self.assertFalse(naming.is_valid_account_name(name, allow_reserved=True), repr(name))


class RandomBaseTests(unittest.TestCase):
    """random_base makes 8-character [a-z0-9] bases."""

    def test_shape(self):
        """Random bases are 8 characters of lowercase letters and digits."""
        allowed = set(string.ascii_lowercase + string.digits)
        for _ in range(50):
            base = naming.random_base()
            self.assertEqual(len(base), 8)
            self.assertLessEqual(set(base), allowed)

    def test_injected_choice(self):
        """The choice function is injectable, for deterministic tests."""
        letters = itertools.cycle("ab")
        self.assertEqual(naming.random_base(lambda alphabet: next(letters)), "abababab")


class SanitizeBaseTests(unittest.TestCase):
    """sanitize_base turns hostile client names into safe bases."""

    def test_hostile_names(self):
        """A table of hostile and odd client file names gives the expected bases."""
        table = [
            ("fountain.jpg", "fountain"),
            ("My Photo (1).JPG", "My_Photo__1_"),
            ("../../etc/passwd", "passwd"),
            ("..\\..\\windows\\system32\\x.png", "x"),
            ("C:\\Users\\me\\Desktop\\cat.jpeg", "cat"),
            ("/abs/path/dog.webp", "dog"),
            ("a\x00b.png", "a_b"),
            ("<script>.png", "_script_"),
            ("<script>alert(1)</script>.png", "script_"),
            (".png", "png"),
            ("archive.tar.gz", "archive.tar"),
            ("a..b.png", "a.b"),
            ("a....b...c.png", "a.b.c"),
            (".hidden", "hidden"),
            (".hidden.png", "hidden"),
            ("...png", "png"),
            ("name.", "name"),
            ("noext", "noext"),
            ("x%2e%2e%2fy.png", "x_2e_2e_2fy"),
            ("ça va.png", "_a_va"),
            ("line\r\nbreak.png", "line__break"),
            ("semi;colon&amp.png", "semi_colon_amp"),
            ("-dash_.png", "-dash_"),
        ]
        for filename, expected in table:
            self.assertEqual(naming.sanitize_base(filename), expected, repr(filename))

    def test_nothing_usable(self):
        """Names with no letter or digit left give None."""
        for filename in (
            "",
            ".",
            "..",
            "...",
            "/",
            "dir/",
            "\\",
            "___.png",
            "--.jpg",
            "фото.jpg",
            "日本.png",
            "   .png",
            "..\\..\\",
        ):
            self.assertIsNone(naming.sanitize_base(filename), repr(filename))

    def test_cut_to_40(self):
        """Long bases are cut to 40 characters."""
        self.assertEqual(naming.sanitize_base("x" * 100 + ".png"), "x" * 40)

    def test_cut_never_leaves_trailing_dot(self):
        """A cut landing just after a dot drops that dot."""
        self.assertEqual(naming.sanitize_base("a" * 39 + ".bcdef.png"), "a" * 39)

    def test_results_are_always_safe(self):
        """Every result is non-empty, safe, has no "..", and no leading or trailing dot."""
        samples = ["../" * 20 + "x.png", ".." * 30 + "y", "a." * 40 + "png", "..a..", "x.y.z"]
        for filename in samples:
            base = naming.sanitize_base(filename)
            self.assertTrue(base)
            self.assertNotIn("..", base)
            self.assertFalse(base.startswith(".") or base.endswith("."), base)
            self.assertTrue(naming.is_valid_file_name(f"20260214_{base}.png"), base)


class ExtensionTests(unittest.TestCase):
    """choose_extension follows the detected type, keeping a client's .jpeg."""

    def test_jpeg_retention(self):
        """A JPEG named .jpeg (any case) keeps ".jpeg", in lowercase."""
        for filename in ("a.jpeg", "a.JPEG", "dir/a.Jpeg", "a.png.jpeg"):
            self.assertEqual(naming.choose_extension(filename, JPEG), ".jpeg", filename)

    def test_canonical_extension(self):
        """Other client names get the detected type's canonical extension."""
        table = [
            ("a.jpg", JPEG, ".jpg"),
            ("a.JPG", JPEG, ".jpg"),
            ("a.jpe", JPEG, ".jpg"),
            (None, JPEG, ".jpg"),
            ("", JPEG, ".jpg"),
            (".jpeg", JPEG, ".jpg"),
            ("photo.jpg", PNG, ".png"),
            ("photo.jpeg", PNG, ".png"),
            ("photo.gif", WEBP, ".webp"),
            ("jpeg", JPEG, ".jpg"),
        ]
        for filename, image_type, expected in table:
            self.assertEqual(naming.choose_extension(filename, image_type), expected, filename)


class FileNameTests(unittest.TestCase):
    """Candidate names, stems and name validation."""

    def test_clash_suffix_sequence(self):
        """Candidates are the plain name, then _2, _3, ... without end."""
        names = naming.candidate_names(datetime.date(2026, 2, 14), "fountain", ".jpg")
        self.assertEqual(
            list(itertools.islice(names, 5)),
            [
                "20260214_fountain.jpg",
                "20260214_fountain_2.jpg",
                "20260214_fountain_3.jpg",
                "20260214_fountain_4.jpg",
                "20260214_fountain_5.jpg",
            ],
        )

    def test_candidates_far_out(self):
        """The sequence keeps going past small numbers."""
        names = naming.candidate_names(datetime.date(2026, 1, 2), "b", ".png")
        self.assertEqual(next(itertools.islice(names, 99, None)), "20260102_b_100.png")

    def test_name_stem(self):
        """The stem is the text before the last dot."""
        self.assertEqual(naming.name_stem("20260214_fountain.jpg"), "20260214_fountain")
        self.assertEqual(naming.name_stem("20260214_a.b.jpeg"), "20260214_a.b")
        self.assertEqual(naming.name_stem("nodot"), "nodot")
        self.assertEqual(naming.DERIVED_EXT, ".jpg")

    def test_valid_file_names(self):
        """Names of the issued shape are valid, whatever the accepted extension."""
        for name in (
            "20260214_fountain.jpg",
            "20260214_a.jpeg",
            "20260214_x-y_z.png",
            "20260214_a.b.bmp",
            "20260214_" + "a" * 60 + ".webp",
            "20260214_ab12cd34.jpg",
        ):
            self.assertTrue(naming.is_valid_file_name(name), name)

    def test_invalid_file_names(self):
        """Traversal, bad dates, bad extensions, newlines and ".." are refused."""
        for name in (
            "../20260214_a.jpg",
            "20260214_a..jpg",
            "20260214_..jpg",
            "2026021_a.jpg",
            "20260214a.jpg",
            "20260214_.jpg",
            "20260214_a.gif",
            "20260214_a.JPG",
            "20260214_a.jpg\n",
            "20260214_a b.jpg",
            "20260214_a/b.jpg",
            "20260214_" + "a" * 61 + ".jpg",
            "",
            "fountain.jpg",
            "20260214_a.jpg..",
        ):
            self.assertFalse(naming.is_valid_file_name(name), repr(name))


class StorageKeyTests(unittest.TestCase):
    """storage_key builds the documented layout and refuses bad input."""

    def test_layout(self):
        """Original, the three variants and the thumbnail map to the documented keys."""
        self.assertEqual(naming.storage_key("kitten", NAME), "kitten/20260214_fountain.jpg")
        for variant in ("xga", "vga", "qvga", "thumb"):
            self.assertEqual(
                naming.storage_key("kitten", NAME, variant),
                f"kitten/{variant}/20260214_fountain.jpg",
            )

    def test_derived_files_are_jpeg(self):
        """A PNG or .jpeg original's derived files use its stem with .jpg."""
        self.assertEqual(
            naming.storage_key("kitten", "20260214_a.png", "vga"), "kitten/vga/20260214_a.jpg"
        )
        self.assertEqual(
            naming.storage_key("kitten", "20260214_a.jpeg", "thumb"), "kitten/thumb/20260214_a.jpg"
        )
        self.assertEqual(naming.storage_key("kitten", "20260214_a.jpeg"), "kitten/20260214_a.jpeg")

    def test_invalid_input(self):
        """Bad accounts, names and variants raise ValueError."""
        bad = [
            ("Kitten", NAME, None),
            ("img", NAME, None),
            ("kitten/..", NAME, None),
            ("kitten", "../etc/passwd", None),
            ("kitten", "20260214_a..jpg", None),
            ("kitten", NAME, "big"),
            ("kitten", NAME, ""),
        ]
        for account, name, variant in bad:
            self.assertRaises(ValueError, naming.storage_key, account, name, variant)

    def test_variant_tables(self):
        """The public variants and every box are as documented."""
        self.assertEqual(naming.VARIANTS, ("xga", "vga", "qvga"))
        self.assertEqual(
            naming.VARIANT_BOXES,
            {"xga": (1024, 768), "vga": (640, 480), "qvga": (320, 240), "thumb": (160, 160)},
        )


class FileReferenceTests(unittest.TestCase):
    """parse_file_reference understands names and the URLs of every version."""

    def test_bare_name(self):
        """A bare name refers to the caller's original of that exact name."""
        self.assertEqual(
            naming.parse_file_reference(NAME, "kitten"), naming.FileRef(account="kitten", name=NAME)
        )
        self.assertEqual(
            naming.parse_file_reference(f"  {NAME}\n", "kitten"),
            naming.FileRef(account="kitten", name=NAME),
        )

    def test_original_urls(self):
        """Absolute and path-only URLs of an original give its owner and name."""
        expected = naming.FileRef(account="tiger", name=NAME)
        for value in (
            f"https://img.example.com/img/tiger/{NAME}",
            f"http://127.0.0.1:8080/img/tiger/{NAME}",
            f"/img/tiger/{NAME}",
            f"img/tiger/{NAME}",
            f"https://example.com/pics/img/tiger/{NAME}",
            f"https://img.example.com/img/tiger/{NAME}?download=1#top",
            "/img/tiger/20260214%5Ffountain.jpg",
            f"HTTPS://IMG.EXAMPLE.COM/img/tiger/{NAME}",
        ):
            self.assertEqual(naming.parse_file_reference(value, "kitten"), expected, value)

    def test_variant_urls(self):
        """URLs of the xga, vga and qvga versions give the stem."""
        expected = naming.FileRef(account="tiger", stem="20260214_fountain")
        for variant in naming.VARIANTS:
            for value in (
                f"https://h.example/img/tiger/{variant}/{NAME}",
                f"/img/tiger/{variant}/{NAME}?x=1",
            ):
                self.assertEqual(naming.parse_file_reference(value, "kitten"), expected, value)

    def test_thumbnail_url(self):
        """The private thumbnail URL gives the stem."""
        self.assertEqual(
            naming.parse_file_reference(f"/thumb/kitten/{NAME}", "kitten"),
            naming.FileRef(account="kitten", stem="20260214_fountain"),
        )

    def test_variant_url_of_non_jpeg_original(self):
        """A variant URL matches a PNG original with the same stem (the library looks an
        original up by its exact name, or by the stem of a derived file's URL)."""

        def matches(ref, name):
            return name == ref.name if ref.name is not None else naming.name_stem(name) == ref.stem

        ref = naming.parse_file_reference("/img/kitten/vga/20260214_a.jpg", "kitten")
        self.assertTrue(matches(ref, "20260214_a.png"))
        self.assertFalse(matches(ref, "20260214_ab.png"))
        self.assertTrue(
            matches(naming.FileRef(account="k", name="20260214_a.png"), "20260214_a.png")
        )
        self.assertFalse(
            matches(naming.FileRef(account="k", name="20260214_a.png"), "20260214_a.jpg")
        )

    def test_percent_decoding_once(self):
        """Percent-escapes are decoded once: a doubly-encoded name stays invalid."""
        self.assertEqual(
            naming.parse_file_reference("/img/kitten/20260214%5Ffountain%2Ejpg", "k").name, NAME
        )
        self.assertRaises(
            errors.BadRequest,
            naming.parse_file_reference,
            "/img/kitten/20260214%255Ffountain.jpg",
            "kitten",
        )

    def test_garbage(self):
        """Unparseable values are BadRequest (400)."""
        garbage = [
            "",
            "   ",
            "fountain.jpg",
            "../20260214_a.jpg",
            "20260214_a.jpg?x=1",
            "kitten/20260214_a.jpg",
            "/img/kitten/thumb/20260214_a.jpg",
            "/img/kitten/xga/20260214_a.png",
            "/img/kitten/big/20260214_a.jpg",
            "/thumb/kitten/20260214_a.png",
            "/img/api/20260214_a.jpg",
            "/img/Kitten/20260214_a.jpg",
            "/img/kitten/20260214_a.jpg/",
            "/img/kitten/",
            "/img/",
            "/",
            "/img/kitten/..%2F20260214_a.jpg",
            "/img/kitten/%2E%2E/20260214_a.jpg",
            "/img/kitten/20260214_a%ff.jpg",
            "/img/kitten/20260214_a%0a.jpg",
            "ftp://example.com/img/kitten/20260214_a.jpg",
            "javascript:alert(1)//img/kitten/20260214_a.jpg",
            "file:///img/kitten/20260214_a.jpg",
            "http://[::1/img/kitten/20260214_a.jpg",
            "/static/kitten/20260214_a.jpg",
        ]
        for value in garbage:
            exc = self.assertRaises(errors.BadRequest, naming.parse_file_reference, value, "kitten")
            self.assertEqual(exc.status, 400, value)

    def test_file_ref_needs_exactly_one(self):
        """A FileRef with both or neither of name and stem cannot be made."""
        self.assertRaises(ValueError, naming.FileRef, account="k")
        self.assertRaises(ValueError, naming.FileRef, account="k", name=NAME, stem="x")
