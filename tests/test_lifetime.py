"""Tests for imgshare.domain.lifetime: durations, expire values, tiers, tokens."""

from twisted.trial import unittest

from imgshare.domain import errors, lifetime
from imgshare.domain.lifetime import DAY, HOUR, MIB, MINUTE, PERMANENT, WEEK, Tier


class ParseDurationTests(unittest.TestCase):
    """parse_duration understands every documented spelling."""

    def test_spellings(self):
        """Seconds, number+unit and ISO 8601 durations give the right seconds."""
        table = [
            ("3600", 3600),
            ("1", 1),
            ("  7200\n", 7200),
            ("1.5", 1.5),
            ("45s", 45),
            ("90m", 90 * MINUTE),
            ("90M", 90 * MINUTE),
            ("12h", 12 * HOUR),
            ("12H", 12 * HOUR),
            ("30d", 30 * DAY),
            ("2w", 2 * WEEK),
            ("2W", 2 * WEEK),
            ("1.5h", 90 * MINUTE),
            ("1 h", HOUR),
            ("1h30m", 90 * MINUTE),
            ("1d 12h", 36 * HOUR),
            ("10min", 10 * MINUTE),
            ("3 days", 3 * DAY),
            ("1 week", WEEK),
            ("2hours", 2 * HOUR),
            ("PT5M", 5 * MINUTE),
            ("pt5m", 5 * MINUTE),
            ("P3D", 3 * DAY),
            ("P1W", WEEK),
            ("P1DT2H30M", DAY + 2 * HOUR + 30 * MINUTE),
            ("PT1.5H", 90 * MINUTE),
            ("PT1,5H", 90 * MINUTE),
            ("PT30S", 30),
            ("PT1H0M0S", HOUR),
            ("P1M", 30 * DAY),
            ("P1Y", 365 * DAY),
            ("P1Y2M3DT4H5M6S", 365 * DAY + 60 * DAY + 3 * DAY + 4 * HOUR + 5 * MINUTE + 6),
        ]
        for text, expected in table:
            self.assertEqual(lifetime.parse_duration(text), expected, text)

    def test_result_is_float(self):
        """Durations are floats."""
        self.assertIsInstance(lifetime.parse_duration("3600"), float)
        self.assertIsInstance(lifetime.parse_duration("P1D"), float)

    def test_invalid(self):
        """Empty, zero, negative, NaN, infinite, huge and malformed values give None."""
        for text in (
            "",
            "   ",
            "0",
            "0s",
            "PT0S",
            "-5",
            "-5m",
            "+5",
            "nan",
            "NaN",
            "inf",
            "1e5",
            "5x",
            "m",
            "h5",
            "5 m 3",
            "P",
            "PT",
            "P1DT",
            "P-1D",
            "PT5",
            "1D2",
            "P1H",
            "PT1D",
            "5mm",
            "101y",
            "P101Y",
            "9" * 400,
            "9" * 400 + "d",
            "5,5h",
            "never",
            "1h-30m",
            "0x10",
            "٣",
        ):
            self.assertIsNone(lifetime.parse_duration(text), repr(text))

    def test_hundred_years_bound(self):
        """Exactly 100 years (of 365 days) is accepted, a second more is not."""
        limit = 100 * 365 * DAY
        self.assertEqual(lifetime.parse_duration(str(limit)), limit)
        self.assertIsNone(lifetime.parse_duration(str(limit + 1)))


class ParseExpireTests(unittest.TestCase):
    """parse_expire distinguishes permanent, durations and unset values."""

    def test_permanent_words(self):
        """ "never" and "permanent", in any case and with spaces, give PERMANENT."""
        for text in ("never", "NEVER", "Permanent", " permanent "):
            self.assertIs(lifetime.parse_expire(text), PERMANENT)

    def test_durations(self):
        """Durations give their seconds."""
        self.assertEqual(lifetime.parse_expire("12h"), 12 * HOUR)
        self.assertEqual(lifetime.parse_expire("PT5M"), 5 * MINUTE)

    def test_unset(self):
        """Absent, empty and unparseable values give None."""
        for text in (None, "", "  ", "forever", "-1", "-0"):
            self.assertIsNone(lifetime.parse_expire(text), repr(text))

    def test_zero_is_a_duration(self):
        """A zero duration is a duration (under the minimum), not "unset"."""
        for text in ("0", "0s", "0m", "PT0S", "P0D", "0.0"):
            self.assertEqual(lifetime.parse_expire(text), 0.0, repr(text))

    def test_permanent_is_a_singleton(self):
        """PERMANENT is one enum member, distinct from None and numbers."""
        self.assertIs(lifetime.PERMANENT, lifetime.parse_expire("never"))
        self.assertNotEqual(PERMANENT, None)
        self.assertEqual(repr(PERMANENT), "PERMANENT")


class TierSpecTests(unittest.TestCase):
    """parse_tiers and format_tiers read and write tier tables."""

    def test_default_tiers(self):
        """The default table: 2 MiB permanent, 8 MiB 90 days, 32 MiB 7 days."""
        self.assertEqual(
            lifetime.DEFAULT_TIERS,
            (
                Tier(max_size=2 * MIB, permanent=True, longest=None, default=None),
                Tier(max_size=8 * MIB, permanent=False, longest=90 * DAY, default=90 * DAY),
                Tier(max_size=32 * MIB, permanent=False, longest=7 * DAY, default=7 * DAY),
            ),
        )

    def test_parse_default_spec(self):
        """The documented spec parses to the default tiers."""
        self.assertEqual(
            lifetime.parse_tiers("2MiB:permanent,8MiB:90d,32MiB:7d"), lifetime.DEFAULT_TIERS
        )

    def test_size_units(self):
        """Sizes take B, KiB, MiB, GiB, KB, MB, GB (any case) or no unit."""
        table = [
            ("100", 100),
            ("100B", 100),
            ("4KiB", 4096),
            ("4kib", 4096),
            ("3MiB", 3 * MIB),
            ("1GiB", 1024 * MIB),
            ("5KB", 5000),
            ("5MB", 5_000_000),
            ("2GB", 2_000_000_000),
            (" 7 MiB ", 7 * MIB),
        ]
        for text, expected in table:
            self.assertEqual(lifetime.parse_size(text), expected, text)

    def test_spec_variants(self):
        """Spaces, "never", ISO durations and a single tier are accepted."""
        tiers = lifetime.parse_tiers(" 1MB : never , 10MB:P30D ")
        self.assertEqual(
            tiers,
            (
                Tier(max_size=1_000_000, permanent=True, longest=None, default=None),
                Tier(max_size=10_000_000, permanent=False, longest=30 * DAY, default=30 * DAY),
            ),
        )
        self.assertEqual(len(lifetime.parse_tiers("64MiB:1h")), 1)

    def test_bad_specs(self):
        """Malformed, unordered, out-of-range or empty specs raise ValueError."""
        for spec in (
            "",
            " ",
            ",",
            "2MiB",
            "2MiB:",
            ":7d",
            "2XB:7d",
            "2MiB:soon",
            "8MiB:7d,2MiB:permanent",
            "2MiB:7d,2MiB:1d",
            "0MiB:7d",
            "-1MiB:7d",
            "2MiB:30m",
            "2MiB:366d",
            "2MiB:7d,",
            "2.5MiB:7d",
        ):
            self.assertRaises(ValueError, lifetime.parse_tiers, spec)

    def test_format_round_trip(self):
        """format_tiers writes a spec that parses back to the same tiers."""
        self.assertEqual(
            lifetime.format_tiers(lifetime.DEFAULT_TIERS), "2MiB:permanent,8MiB:90d,32MiB:7d"
        )
        tiers = lifetime.parse_tiers("1000B:permanent,1536KiB:36h,1GiB:90m,2000000001B:3601s")
        self.assertEqual(
            lifetime.format_tiers(tiers), "1000B:permanent,1536KiB:36h,1GiB:90m,2000000001B:3601s"
        )
        self.assertEqual(lifetime.parse_tiers(lifetime.format_tiers(tiers)), tiers)


class EffectiveLifetimeTests(unittest.TestCase):
    """effective_lifetime applies the tier table to what a client asked for."""

    def test_tier_edges(self):
        """Sizes at and just above each tier boundary pick the right tier."""
        table = [
            (1, PERMANENT, None),
            (2 * MIB, PERMANENT, None),
            (2 * MIB, None, None),
            (2 * MIB + 1, PERMANENT, 90 * DAY),
            (2 * MIB + 1, None, 90 * DAY),
            (8 * MIB, None, 90 * DAY),
            (8 * MIB + 1, None, 7 * DAY),
            (8 * MIB + 1, PERMANENT, 7 * DAY),
            (32 * MIB, None, 7 * DAY),
        ]
        for size, requested, expected in table:
            self.assertEqual(
                lifetime.effective_lifetime(size, requested, lifetime.DEFAULT_TIERS),
                expected,
                (size, requested),
            )

    def test_above_every_tier(self):
        """A file above the largest tier is TooLarge (413)."""
        exc = self.assertRaises(
            errors.TooLarge,
            lifetime.effective_lifetime,
            32 * MIB + 1,
            None,
            lifetime.DEFAULT_TIERS,
        )
        self.assertEqual(exc.status, 413)

    def test_durations(self):
        """Allowed durations are kept, too long ones give the default, short ones 1 hour."""
        table = [
            (MIB, 30 * DAY, 30 * DAY),
            (MIB, 365 * DAY, 365 * DAY),
            (MIB, 366 * DAY, None),
            (MIB, 5 * MINUTE, HOUR),
            (MIB, 1, HOUR),
            (5 * MIB, 90 * DAY, 90 * DAY),
            (5 * MIB, 91 * DAY, 90 * DAY),
            (5 * MIB, HOUR, HOUR),
            (5 * MIB, 59 * MINUTE, HOUR),
            (20 * MIB, 7 * DAY, 7 * DAY),
            (20 * MIB, 7 * DAY + 1, 7 * DAY),
            (20 * MIB, 2 * DAY, 2 * DAY),
            (20 * MIB, 10, HOUR),
        ]
        for size, requested, expected in table:
            self.assertEqual(
                lifetime.effective_lifetime(size, requested, lifetime.DEFAULT_TIERS),
                expected,
                (size, requested),
            )

    def test_raw_strings(self):
        """A raw expire string is parsed first; unparseable ones give the default."""
        self.assertEqual(lifetime.effective_lifetime(MIB, "12h"), 12 * HOUR)
        self.assertIsNone(lifetime.effective_lifetime(MIB, "never"))
        self.assertEqual(lifetime.effective_lifetime(5 * MIB, "garbage"), 90 * DAY)
        self.assertEqual(lifetime.effective_lifetime(20 * MIB, "P1Y"), 7 * DAY)

    def test_nonsense_values(self):
        """Negative, NaN, infinite values and booleans count as unset."""
        for requested in (-5.0, float("nan"), float("inf"), True):
            self.assertEqual(lifetime.effective_lifetime(5 * MIB, requested), 90 * DAY)

    def test_zero_becomes_the_minimum(self):
        """A zero duration is under an hour, so it becomes an hour (never permanent)."""
        for requested in (0, 0.0, "0", "0s", "PT0S", "P0D"):
            self.assertEqual(lifetime.effective_lifetime(MIB, requested), HOUR, repr(requested))
            self.assertEqual(lifetime.effective_lifetime(5 * MIB, requested), HOUR, repr(requested))

    def test_custom_tiers(self):
        """A custom table applies its own limits."""
        tiers = lifetime.parse_tiers("1MiB:30d,4MiB:permanent")
        self.assertEqual(lifetime.effective_lifetime(MIB, PERMANENT, tiers), 30 * DAY)
        self.assertIsNone(lifetime.effective_lifetime(2 * MIB, PERMANENT, tiers))
        self.assertEqual(lifetime.effective_lifetime(2 * MIB, 400 * DAY, tiers), None)

    def test_bounds(self):
        """The documented bounds: 1 hour and 365 days."""
        self.assertEqual(lifetime.MIN_LIFETIME, 3600)
        self.assertEqual(lifetime.MAX_LIFETIME, 365 * DAY)


class TokenLifetimeTests(unittest.TestCase):
    """parse_token_lifetime accepts no expiry or any duration from a minute."""

    def test_no_expiry(self):
        """Absent, empty, "never" and "permanent" mean no expiry."""
        for text in (None, "", "  ", "never", "Permanent"):
            self.assertIsNone(lifetime.parse_token_lifetime(text), repr(text))

    def test_durations(self):
        """A minute or more is accepted in any spelling."""
        self.assertEqual(lifetime.parse_token_lifetime("60"), 60)
        self.assertEqual(lifetime.parse_token_lifetime("1m"), 60)
        self.assertEqual(lifetime.parse_token_lifetime("PT1M"), 60)
        self.assertEqual(lifetime.parse_token_lifetime("30d"), 30 * DAY)
        self.assertEqual(lifetime.parse_token_lifetime("P10Y"), 3650 * DAY)

    def test_too_short(self):
        """Under a minute is a BadRequest mentioning the minimum."""
        for text in ("59", "59s", "PT30S"):
            exc = self.assertRaises(errors.BadRequest, lifetime.parse_token_lifetime, text)
            self.assertIn("1 minute", exc.message)

    def test_unparseable(self):
        """Unparseable values are a BadRequest that quotes the value and shows examples."""
        for text in ("soon", "0", "-1h", "1e9"):
            exc = self.assertRaises(errors.BadRequest, lifetime.parse_token_lifetime, text)
            self.assertEqual(exc.status, 400)
            self.assertIn(repr(text), exc.message)
            self.assertIn("30d", exc.message)


class DecisionTests(unittest.TestCase):
    """``decide``: the lifetime a file gets, what it asked for, and why they differ."""

    def test_granted_and_defaults_are_no_change(self):
        for size, asked, got in [(100, "never", None), (100, "30d", 30 * DAY), (3 * MIB, "90d", 90 * DAY),
                                 (3 * MIB, None, 90 * DAY), (3 * MIB, "rubbish", 90 * DAY)]:
            decision = lifetime.decide(size, asked)
            self.assertEqual((decision.lifetime, decision.change), (got, None), (size, asked))

    def test_changes(self):
        """Each way a choice is overruled has its reason."""
        cases = [
            (3 * MIB, "never", 90 * DAY, lifetime.Change.NOT_PERMANENT),
            (3 * MIB, "365d", 90 * DAY, lifetime.Change.OVER_TIER),
            (20 * MIB, "30d", 7 * DAY, lifetime.Change.OVER_TIER),
            (100, "400d", None, lifetime.Change.OVER_MAXIMUM),  # its tier's default is forever
            (3 * MIB, "400d", 90 * DAY, lifetime.Change.OVER_MAXIMUM),
            (100, "10m", HOUR, lifetime.Change.UNDER_MINIMUM),
            (100, "0", HOUR, lifetime.Change.UNDER_MINIMUM),
        ]
        for size, asked, got, change in cases:
            decision = lifetime.decide(size, asked)
            self.assertEqual((decision.lifetime, decision.change), (got, change), (size, asked))
            self.assertEqual(decision.lifetime, lifetime.effective_lifetime(size, asked))

    def test_asked_as_stored(self):
        """What was asked is stored as text that parse_expire reads back the same."""
        for asked in [lifetime.PERMANENT, 3600.0, 5400.5, 0.0]:
            text = lifetime.format_asked(asked)
            self.assertEqual(lifetime.parse_expire(text), asked)
        self.assertIsNone(lifetime.format_asked(None))
