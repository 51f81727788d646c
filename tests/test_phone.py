from __future__ import annotations

import re
import time

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from outbox.errors import InvalidInput, InvalidPhone, NotAConversation
from outbox.phone import Recipient, non_conversation_kind, normalize_recipient

# Whapi's published pattern for `to` (WHAPI.md).
WHAPI_TO = re.compile(r"^[\d-]{9,31}(@[\w\.]{1,})?$")

US = ("+15551234567", "15551234567@s.whatsapp.net", False)
GB = ("+442079460958", "442079460958@s.whatsapp.net", False)
UK_MOBILE = ("+447700900123", "447700900123@s.whatsapp.net", False)
LID = "123456789012345@lid"


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
        # a person known only by a linked id: phone is the whole chat id
        ("123456789012345@lid", None, (LID, LID, False)),
        (" 123456789012345@LID", "US", (LID, LID, False)),
        ("123456789@lid", None, ("123456789@lid", "123456789@lid", False)),
        ("1" * 20 + "@lid", None, ("1" * 20 + "@lid", "1" * 20 + "@lid", False)),
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
        # linked ids: digits only, 9 to 20 of them
        ("12345678@lid", None, "a linked id (@lid) has 9 to 20 digits"),
        ("1" * 21 + "@lid", None, "a linked id (@lid) has 9 to 20 digits"),
        ("@lid", None, "a linked id (@lid) has only digits"),
        ("+123456789012345@lid", None, "a linked id (@lid) has only digits"),
        ("12345-6789012345@lid", None, "a linked id (@lid) has only digits"),
        ("\uff11" * 15 + "@lid", None, "a linked id (@lid) has only digits"),
        # Mexico: 52 1 + 10 digits is the routed id; one more 1 is not
        ("52115639691841@s.whatsapp.net", None, "too long"),
        ("15551234567@x.us", None, "unsupported chat id '@x.us'"),
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


# --- Whapi's country rules ------------------------------------------------------------
# Whapi's support page "specifics of sending messages to numbers of different
# countries": example input -> the chat id Whapi routes. Each row: the person's
# E.164 number, the chat id Whapi sends and takes for them, and inputs that all
# mean that person (outbound forms and the inbound chat id).

MX_PAGE = ("+525639691841", "5215639691841@s.whatsapp.net")
AR_PAGE = ("+5491158749895", "5491158749895@s.whatsapp.net")
BR_PAGE = ("+5592981723241", "559281723241@s.whatsapp.net")
COUNTRY_TABLE: list[tuple[tuple[str, str], list[tuple[str, str | None]]]] = [
    # Mexico: "insert 1 after country code 52": +52 56 3969 1841 -> 5215639691841
    (MX_PAGE, [
        ("+52 56 3969 1841", None),
        ("+52 1 56 3969 1841", None),  # the old mobile 1, already there: not doubled
        ("525639691841", None),
        ("5215639691841", None),
        ("56 3969 1841", "MX"),
        ("1 56 3969 1841", "MX"),
        ("5215639691841@s.whatsapp.net", None),  # what Whapi sends
        ("525639691841@s.whatsapp.net", None),  # what this package used to send
        ("5215639691841@c.us", None),
    ]),
    # Argentina: "insert 9 after 54, and remove 15": +54 11 5874 9895 -> 5491158749895
    (AR_PAGE, [
        ("+54 11 5874 9895", None),
        ("+54 9 11 5874 9895", None),
        ("+54 11 15 5874 9895", None),
        ("011 15 5874-9895", "AR"),
        ("011 5874-9895", "AR"),
        ("9 11 5874 9895", "AR"),
        ("5491158749895@s.whatsapp.net", None),
        ("541158749895@s.whatsapp.net", None),
    ]),
    # Argentina, another area code length: (0351) 15 123-4567
    (("+5493511234567", "5493511234567@s.whatsapp.net"), [
        ("0351 15 123-4567", "AR"),
        ("+54 351 15 123 4567", None),
        ("+54 351 123 4567", None),
        ("5493511234567@s.whatsapp.net", None),
    ]),
    # Brazil, area code 92 (not in the list): the 9 is removed,
    # +55 92 98172 3241 -> +55 92 8172 3241
    (BR_PAGE, [
        ("+55 92 98172 3241", None),
        ("+55 92 8172 3241", None),  # the number before the 9th digit
        ("(92) 98172-3241", "BR"),
        ("(92) 8172-3241", "BR"),
        ("559281723241@s.whatsapp.net", None),
        ("5592981723241@s.whatsapp.net", None),
    ]),
    # Brazil, area codes 11-19, 21, 22, 24, 27, 28: the 9 is added
    (("+5511987654321", "5511987654321@s.whatsapp.net"), [
        ("+55 11 98765 4321", None),
        ("+55 11 8765 4321", None),
        ("(11) 98765-4321", "BR"),
        ("5511987654321@s.whatsapp.net", None),
        ("551187654321@s.whatsapp.net", None),
    ]),
    (("+5528999887766", "5528999887766@s.whatsapp.net"), [
        ("+55 28 99988 7766", None),
        ("+55 28 9988 7766", None),
        ("552899887766@s.whatsapp.net", None),
    ]),
    (("+5531987654321", "553187654321@s.whatsapp.net"), [
        ("+55 31 98765 4321", None),
        ("553187654321@s.whatsapp.net", None),
    ]),
    # Brazilian landlines (2-5) have no 9th digit anywhere
    (("+551132345678", "551132345678@s.whatsapp.net"), [
        ("+55 11 3234 5678", None),
        ("551132345678@s.whatsapp.net", None),
    ]),
    (("+559232345678", "559232345678@s.whatsapp.net"), [
        ("+55 92 3234 5678", None),
        ("(92) 3234-5678", "BR"),
        ("559232345678@s.whatsapp.net", None),
    ]),
    # A Brazilian mobile that never had an 8-digit number keeps its 9: without
    # it, 5592 3... would be the landline above.
    (("+5592932345678", "5592932345678@s.whatsapp.net"), [
        ("+55 92 93234 5678", None),
        ("5592932345678@s.whatsapp.net", None),
    ]),
    # Non-geographic numbers are left alone
    (("+558001234567", "558001234567@s.whatsapp.net"), [("+55 800 123 4567", None)]),
    (("+548001234567", "548001234567@s.whatsapp.net"), [("0800 123 4567", "AR")]),
]


@pytest.mark.parametrize(
    ("expected", "raw", "region"),
    [(expected, raw, region) for expected, inputs in COUNTRY_TABLE for raw, region in inputs],
)
def test_country_rules(expected: tuple[str, str], raw: str, region: str | None) -> None:
    recipient = normalize_recipient(raw, default_region=region)
    assert (recipient.phone, recipient.wa_chat_id, recipient.is_group) == (*expected, False)
    assert WHAPI_TO.match(recipient.wa_chat_id)
    assert normalize_recipient(recipient.phone) == recipient
    assert normalize_recipient(recipient.wa_chat_id) == recipient


def test_a_reply_from_mexico_lands_in_the_chat_of_the_message_sent() -> None:
    # The bug this module's country rules fix: the reply's chat id was
    # rejected as too long, and the message had been sent to 52....
    sent_to = normalize_recipient("+52 56 3969 1841")
    reply_from = normalize_recipient("5215639691841@s.whatsapp.net")
    assert sent_to == reply_from
    assert sent_to.wa_chat_id == "5215639691841@s.whatsapp.net"


# --- ids that are not conversations ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kind", "says"),
    [
        ("status@broadcast", "status", "WhatsApp status updates (stories)"),
        ("Status@Broadcast", "status", "WhatsApp status updates (stories)"),
        ("1612345678@broadcast", "broadcast", "a broadcast list"),
        ("120363171743427809@newsletter", "newsletter", "a WhatsApp channel (newsletter)"),
        (" 120363171743427809@NEWSLETTER ", "newsletter", "a WhatsApp channel (newsletter)"),
        ("@newsletter", "newsletter", "a WhatsApp channel (newsletter)"),
    ],
)
def test_not_a_conversation(raw: str, kind: str, says: str) -> None:
    assert non_conversation_kind(raw) == kind
    with pytest.raises(NotAConversation) as info:
        normalize_recipient(raw, default_region="US")
    error = info.value
    assert error.kind == kind
    assert str(error) == f'invalid phone number "{raw}": {says}, not a conversation'
    # Enqueue refuses it like any bad recipient.
    assert isinstance(error, InvalidPhone) and error.http_status == 422
    assert error.to_dict()["code"] == "not_a_conversation"


@pytest.mark.parametrize(
    "raw",
    ["+15551234567", "15551234567@s.whatsapp.net", "120363025343298765@g.us", LID,
     "15551234567@x.us", "a@b@newsletter", "newsletter", ""],
)
def test_conversations_and_malformed_ids_are_not_flagged(raw: str) -> None:
    assert non_conversation_kind(raw) is None
    try:
        normalize_recipient(raw)
    except NotAConversation:  # pragma: no cover - the failure being tested for
        pytest.fail(f"{raw!r} raised NotAConversation")
    except InvalidPhone:
        pass


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


# The country rules restated from Whapi's page, independently of outbox/phone.py.
_KEEP_9 = {"11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28"}


def _expected_phone(e164: str) -> str:
    """The canonical phone for an E.164 number as phonenumbers formats it."""
    if m := re.fullmatch(r"\+521(\d{10})", e164):
        return "+52" + m[1]
    if m := re.fullmatch(r"\+54([123]\d{9})", e164):
        return "+549" + m[1]
    if m := re.fullmatch(r"\+55([1-9]{2})([6-9]\d{7})", e164):
        return f"+55{m[1]}9{m[2]}"
    return e164


def _expected_chat_id(phone: str) -> str:
    if m := re.fullmatch(r"\+52([2-9]\d{9})", phone):  # no Mexican number starts 0 or 1
        return f"521{m[1]}@s.whatsapp.net"
    m = re.fullmatch(r"\+55([1-9]{2})9([6-9]\d{7})", phone)
    if m and m[1] not in _KEEP_9:
        return f"55{m[1]}{m[2]}@s.whatsapp.net"
    return phone[1:] + "@s.whatsapp.net"


def _check_output(recipient: Recipient) -> None:
    assert WHAPI_TO.match(recipient.wa_chat_id)
    if recipient.is_group:
        assert recipient.phone == recipient.wa_chat_id
    elif recipient.phone.endswith("@lid"):
        assert re.fullmatch(r"\d{9,20}@lid", recipient.phone)
        assert recipient.wa_chat_id == recipient.phone
    else:
        assert re.fullmatch(r"\+[1-9]\d{8,14}", recipient.phone)
        assert _expected_phone(recipient.phone) == recipient.phone
        assert recipient.wa_chat_id == _expected_chat_id(recipient.phone)
    # idempotent, from either form
    assert normalize_recipient(recipient.phone) == recipient
    assert normalize_recipient(recipient.wa_chat_id) == recipient


@pytest.mark.slow
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
    assert recipient.phone == _expected_phone(e164), (name, raw)
    _check_output(recipient)


@pytest.mark.slow
@settings(max_examples=500)
@given(
    raw=st.one_of(
        st.from_regex(r"\+?[0-9 ().-]{0,25}", fullmatch=True),
        st.from_regex(r"[0-9-]{0,35}@(s\.whatsapp\.net|g\.us|c\.us|lid)", fullmatch=True),
        st.from_regex(r"\+?5[245]1?9?[0-9 ]{8,13}", fullmatch=True),
        st.from_regex(r"5[245]1?9?[0-9]{8,11}@s\.whatsapp\.net", fullmatch=True),
        st.text(max_size=70),
    ),
    region=st.sampled_from([None, "US", "GB", "DE", "IN", "BR", "MX", "AR"]),
)
@example(raw="+520000000000", region=None)  # found by hypothesis: no "1" before a 0
def test_any_accepted_input_gives_a_whapi_recipient(raw: str, region: str | None) -> None:
    try:
        recipient = normalize_recipient(raw, default_region=region)
    except InvalidPhone as exc:
        assert "\n" not in str(exc)
        return
    _check_output(recipient)


# Area codes as Anatel assigns them, in and out of Whapi's list.
_BR_AREAS = ["11", "12", "15", "19", "21", "22", "24", "27", "28",
             "31", "41", "47", "51", "61", "71", "79", "81", "85", "92", "98", "99"]


@pytest.mark.slow
@settings(max_examples=300)
@given(national=st.from_regex(r"[2-9][0-9]{9}", fullmatch=True))
def test_mexico_every_form_is_one_recipient(national: str) -> None:
    expected = Recipient("+52" + national, f"521{national}@s.whatsapp.net", False)
    for raw, region in [
        ("+52" + national, None), (f"+52 1 {national}", None), (national, "MX"),
        (f"521{national}@s.whatsapp.net", None), (f"52{national}@s.whatsapp.net", None),
    ]:
        assert normalize_recipient(raw, default_region=region) == expected, raw
    _check_output(expected)


@pytest.mark.slow
@settings(max_examples=300)
@given(national=st.from_regex(r"[1-3][0-9]{9}", fullmatch=True))
def test_argentina_every_form_is_one_recipient(national: str) -> None:
    expected = Recipient("+549" + national, f"549{national}@s.whatsapp.net", False)
    for raw in ["+549" + national, "+54" + national, f"549{national}@s.whatsapp.net",
                f"54{national}@s.whatsapp.net"]:
        assert normalize_recipient(raw) == expected, raw
    _check_output(expected)


@pytest.mark.slow
@settings(max_examples=500)
@given(area=st.sampled_from(_BR_AREAS), subscriber=st.from_regex(r"[6-9][0-9]{7}",
                                                                   fullmatch=True))
def test_brazil_mobile_every_form_is_one_recipient(area: str, subscriber: str) -> None:
    routed = f"55{area}9{subscriber}" if area in _KEEP_9 else f"55{area}{subscriber}"
    expected = Recipient(f"+55{area}9{subscriber}", routed + "@s.whatsapp.net", False)
    for raw, region in [
        (f"+55 {area} 9{subscriber}", None), (f"+55 {area} {subscriber}", None),
        (f"({area}) 9{subscriber}", "BR"), (f"({area}) {subscriber}", "BR"),
        (f"55{area}9{subscriber}@s.whatsapp.net", None),
        (f"55{area}{subscriber}@s.whatsapp.net", None),
    ]:
        assert normalize_recipient(raw, default_region=region) == expected, raw
    _check_output(expected)


@settings(max_examples=200)
@given(area=st.sampled_from(_BR_AREAS), subscriber=st.from_regex(r"[2-5][0-9]{7}",
                                                                   fullmatch=True))
def test_brazil_landline_is_left_alone(area: str, subscriber: str) -> None:
    expected = Recipient(f"+55{area}{subscriber}", f"55{area}{subscriber}@s.whatsapp.net", False)
    assert normalize_recipient(f"+55 {area} {subscriber}") == expected
    assert normalize_recipient(f"55{area}{subscriber}@s.whatsapp.net") == expected
    _check_output(expected)


@settings(max_examples=200)
@given(lid=st.from_regex(r"[0-9]{9,20}", fullmatch=True))
def test_linked_ids_are_their_own_key(lid: str) -> None:
    recipient = normalize_recipient(lid + "@lid")
    assert recipient == Recipient(lid + "@lid", lid + "@lid", False)
    _check_output(recipient)
