from __future__ import annotations

import re
import time

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbox.errors import InvalidInput, InvalidPhone
from outbox.phone import Recipient, normalize_recipient

# Whapi's published pattern for `to` (WHAPI.md).
WHAPI_TO = re.compile(r"^[\d-]{9,31}(@[\w\.]{1,})?$")

US = ("+15551234567", "15551234567@s.whatsapp.net", False)
GB = ("+442079460958", "442079460958@s.whatsapp.net", False)
UK_MOBILE = ("+447700900123", "447700900123@s.whatsapp.net", False)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        # E.164 and E.164 with separators
        ("+15551234567", None, US),
        ("+1 555 123 4567", None, US),
        ("+1-555-123-4567", None, US),
        ("+1.555.123.4567", None, US),
        ("+1 (555) 123-4567", None, US),
        ("  +15551234567\n", None, US),
        ("+44 20 7946 0958", None, GB),
        ("+44 (0)20 7946 0958", None, GB),
        ("+31 0 20 123 4567", None, ("+31201234567", "31201234567@s.whatsapp.net", False)),
        # what copying from a page or from WhatsApp brings along
        ("+1\u00a0555\u00a0123\u00a04567", None, US),
        ("\u202a+1 555\u2011123\u20114567\u202c", None, US),
        ("\u200e+1 555 123 4567", None, US),
        # 00 as the international prefix
        ("0015551234567", None, US),
        ("00 44 20 7946 0958", None, GB),
        ("0044 7700 900123", "US", UK_MOBILE),
        # bare digits with a country code
        ("15551234567", None, US),
        ("442079460958", None, GB),
        ("44 7700 900123", None, UK_MOBILE),
        # national formats with a default region
        ("(555) 123-4567", "US", US),
        ("555-123-4567", "US", US),
        ("5551234567", "US", US),
        ("1 (555) 123-4567", "US", US),
        ("15551234567", "US", US),
        ("011 44 20 7946 0958", "US", GB),  # the US exit code
        ("020 7946 0958", "GB", GB),
        ("020 7946 0958", "gb", GB),
        ("07700 900123", "GB", UK_MOBILE),
        ("447700900123", "US", UK_MOBILE),  # not a US number: read as international
        ("+15551234567", "GB", US),  # a + number ignores the region
        ("015112345678", "DE", ("+4915112345678", "4915112345678@s.whatsapp.net", False)),
        ("06 1234 5678", "IT", ("+390612345678", "390612345678@s.whatsapp.net", False)),
        # real, valid numbers
        ("+91 99843 51847", None, ("+919984351847", "919984351847@s.whatsapp.net", False)),
        ("+55 11 98765 4321", None, ("+5511987654321", "5511987654321@s.whatsapp.net", False)),
        ("+800 1234 5678", None, ("+80012345678", "80012345678@s.whatsapp.net", False)),
        # WhatsApp person ids
        ("15551234567@s.whatsapp.net", None, US),
        ("15551234567@S.WhatsApp.Net", None, US),
        ("15551234567@c.us", None, US),
        (
            "919984351847@s.whatsapp.net",
            "US",
            ("+919984351847", "919984351847@s.whatsapp.net", False),
        ),
        # groups: phone is the whole chat id
        (
            "120363025343298765@g.us",
            None,
            ("120363025343298765@g.us", "120363025343298765@g.us", True),
        ),
        (
            " 120363025343298765@G.US ",
            "US",
            ("120363025343298765@g.us", "120363025343298765@g.us", True),
        ),
        (
            "15551234567-1612345678@g.us",
            None,
            ("15551234567-1612345678@g.us", "15551234567-1612345678@g.us", True),
        ),
    ],
)
def test_accepted(raw: str, region: str | None, expected: tuple[str, str, bool]) -> None:
    recipient = normalize_recipient(raw, default_region=region)
    assert (recipient.phone, recipient.wa_chat_id, recipient.is_group) == expected
    assert WHAPI_TO.match(recipient.wa_chat_id)
    assert normalize_recipient(recipient.phone) == recipient
    assert normalize_recipient(recipient.wa_chat_id) == recipient


def test_fictional_ranges_are_accepted_though_not_valid() -> None:
    # Why is_possible_number and not is_valid_number (see outbox/phone.py).
    for raw in ("+15551234567", "+15550123456", "+447700900123"):
        assert not phonenumbers.is_valid_number(phonenumbers.parse(raw))
        assert normalize_recipient(raw).phone == raw


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", None, "empty"),
        ("   \t\n", None, "empty"),
        ("abc", None, "contains letters"),
        ("+1 555 CALL NOW", None, "contains letters"),  # no keypad letters
        ("+1 555 123 4567 ext 12", None, "contains letters"),
        ("tel:+15551234567", None, "contains letters"),
        ("+", None, "not a number"),
        ("--", None, "not a number"),
        ("()", None, "not a number"),
        ("1+5551234567", None, "'+' is only allowed at the start"),
        ("++15551234567", None, "'+' is only allowed at the start"),
        ("555#1234567", None, "unexpected character '#'"),
        ("+1/555/1234567", None, "unexpected character '/'"),
        ("+\uff11\uff15\uff15\uff15 123 4567", None, "unexpected character '\uff11'"),
        ("+1555\x00123", None, "contains control characters"),
        ("+1555\n1234567", None, "contains control characters"),
        ("+1555012", None, "too short"),
        ("+44 20 7946 0958 1234 5", None, "too long"),
        ("+1 555 0123", None, "missing the area code"),
        ("555 0123", "US", "missing the area code"),
        ("+0 555 123 4567", None, "unknown country code"),
        ("+999 555 123 4567", None, "unknown country code"),
        ("+290 2123", None, "too short for WhatsApp"),
        (
            "10000000000000",
            "DE",
            "E.164 allows at most 15 digits",
        ),  # possible for phonenumbers  # possible in St Helena, not for Whapi
        # national format without a region
        ("020 7946 0958", None, "national number without a country code"),
        ("(555) 123-4567", None, "national number without a country code"),
        # chat ids
        ("+15551234567@s.whatsapp.net", None, "only digits before the @"),
        ("1555-1234567@s.whatsapp.net", None, "only digits before the @"),
        ("@s.whatsapp.net", None, "only digits before the @"),
        ("123@s.whatsapp.net", None, "too short"),
        # +31 0 20 ... is +31 20 ... as a phone number, but ids are exact
        ("310201234567@s.whatsapp.net", None, "not a WhatsApp id"),
        # would lose another 0 on every normalisation
        ("+310000000000", None, "not a possible number"),
        ("abc@g.us", None, "a group id is digits"),
        ("1-2-3@g.us", None, "a group id is digits"),
        ("12345678@g.us", None, "a group id has 9 to 31 characters"),
        ("1" * 32 + "@g.us", None, "a group id has 9 to 31 characters"),
        ("120363025343298765@newsletter", None, "unsupported chat id '@newsletter'"),
        ("15551234567@lid", None, "unsupported chat id '@lid'"),
        ("15551234567@", None, "unsupported chat id '@'"),
        ("x" * 100_000, None, "too long (100000 characters)"),
        ("1" * 65, None, "too long (65 characters)"),
    ],
)
def test_rejected(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_recipient(raw, default_region=region)
    message = str(info.value)
    assert message.startswith('invalid phone number "')
    assert reason in message
    assert "\n" not in message
    assert "\x00" not in message
    assert len(message) < 200
    assert isinstance(info.value, InvalidInput)
    assert info.value.http_status == 422


def test_bare_digits_without_a_region_are_international() -> None:
    # Documented ambiguity: a US national number given without a region reads
    # as Brazil (+55). Callers holding national numbers pass default_region.
    assert normalize_recipient("5551234567").phone == "+5551234567"
    assert normalize_recipient("5551234567", default_region="US").phone == "+15551234567"


def test_long_input_is_truncated_in_the_message() -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_recipient("9" * 100_000)
    assert '"' + "9" * 40 + '…"' in str(info.value)


def test_huge_inputs_fail_fast() -> None:
    start = time.perf_counter()
    for raw in ("1" * 100_000, "+" + "1" * 100_000, " " * 100_000, "(" * 100_000 + "1@g.us"):
        with pytest.raises(InvalidPhone):
            normalize_recipient(raw, default_region="US")
    assert time.perf_counter() - start < 0.1


def test_unknown_default_region() -> None:
    with pytest.raises(InvalidPhone, match="unknown default region 'XX'") as info:
        normalize_recipient("+15551234567", default_region="XX")
    assert info.value.field == "default_region"


def test_not_a_string() -> None:
    with pytest.raises(InvalidPhone, match="expected text, got int"):
        normalize_recipient(15551234567)  # type: ignore[arg-type]


def test_recipient_is_frozen() -> None:
    recipient = normalize_recipient("+15551234567")
    with pytest.raises(AttributeError):
        recipient.phone = "+1"  # type: ignore[misc]
    assert recipient == Recipient("+15551234567", "15551234567@s.whatsapp.net", False)


# --- properties ------------------------------------------------------------------------

_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
_TYPES: list[int] = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
]


def _check_output(recipient: Recipient) -> None:
    assert WHAPI_TO.match(recipient.wa_chat_id)
    if recipient.is_group:
        assert recipient.phone == recipient.wa_chat_id
    else:
        assert re.fullmatch(r"\+[1-9]\d{8,14}", recipient.phone)
        assert recipient.wa_chat_id == recipient.phone[1:] + "@s.whatsapp.net"
    # idempotent, from either form
    assert normalize_recipient(recipient.phone) == recipient
    assert normalize_recipient(recipient.wa_chat_id) == recipient


@settings(max_examples=300)
@given(region=st.sampled_from(_REGIONS), kind=st.sampled_from(_TYPES), data=st.data())
def test_example_numbers_in_every_format(region: str, kind: int, data: st.DataObject) -> None:
    example = phonenumbers.example_number_for_type(region, kind)
    if example is None:
        return
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    formats = {
        "e164": (e164, None),
        "international": (
            phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
            None,
        ),
        "national": (
            phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL),
            region,
        ),
        "bare": (e164[1:], None),
        "double zero": ("00" + e164[1:], None),
        "chat id": (e164[1:] + "@s.whatsapp.net", None),
    }
    name = data.draw(st.sampled_from(sorted(formats)))
    raw, default_region = formats[name]
    try:
        recipient = normalize_recipient(raw, default_region=default_region)
    except InvalidPhone as exc:
        # Only Whapi's 9-digit minimum may turn a possible number away.
        assert "too short for WhatsApp" in str(exc), (name, raw)
        return
    assert recipient.phone == e164, (name, raw)
    _check_output(recipient)


@settings(max_examples=500)
@given(
    raw=st.one_of(
        st.from_regex(r"\+?[0-9 ().-]{0,25}", fullmatch=True),
        st.from_regex(r"[0-9-]{0,35}@(s\.whatsapp\.net|g\.us|c\.us)", fullmatch=True),
        st.text(max_size=70),
    ),
    region=st.sampled_from([None, "US", "GB", "DE", "IN", "BR"]),
)
def test_any_accepted_input_gives_a_whapi_recipient(raw: str, region: str | None) -> None:
    try:
        recipient = normalize_recipient(raw, default_region=region)
    except InvalidPhone as exc:
        assert "\n" not in str(exc)
        return
    _check_output(recipient)
