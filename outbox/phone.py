"""Turn whatever a caller typed, or a chat id Whapi sent, into a WhatsApp recipient.

One function serves both directions: the ``to`` of an outbound message and
the ``chat_id`` of an inbound one. A reply must land in the chat and contact
of the message it answers, so both must normalise to the same `Recipient`.

Accepted:
- E.164 and anything that is E.164 with separators: ``+1 (555) 123-4567``,
  ``+44.20.7946.0958``; ``00`` as the international prefix;
- without a ``default_region``, digits without ``+`` are read as starting with
  a country code: ``15551234567``, ``44 7700 900123``; a trunk ``0`` or an area
  code in parentheses is national format and is rejected (read as
  international, ``(555) 123-4567`` would silently become a Brazilian +55
  number);
- national formats when a ``default_region`` is given: ``(555) 123-4567`` with
  "US", ``020 7946 0958`` with "GB" (with a region, a national reading is
  tried first and the international one second, so ``447700900123`` with
  "US" is still +44);
- WhatsApp person ids ``15551234567@s.whatsapp.net`` (digits checked like a
  phone number; the obsolete ``@c.us`` too) and group ids
  ``120363025343298765@g.us`` or the older ``15551234567-1612345678@g.us``;
- linked ids ``123456789012345@lid``: a person WhatsApp shows us only by an
  opaque id (no phone number). 9 to 20 digits: Whapi's ``to`` needs at least
  9, and the ids seen are 14 to 15 digits long (20 covers any 64-bit number).

Not conversations, refused with `NotAConversation` (an `InvalidPhone`, so
enqueue answers 422 as for any bad recipient, and the webhook parser can tell
"ignore" from "malformed"): channels ``<id>@newsletter``, status updates
(stories) ``status@broadcast``, and broadcast lists ``<id>@broadcast``.
`non_conversation_kind` says the same without raising.

Country rules. WhatsApp does not route every number by its E.164 digits;
Whapi documents the rules ("specifics of sending messages to numbers of
different countries"): Mexico is routed as 52 1 + the 10-digit number;
Argentina with a 9 after 54 (and without the 15 of the national mobile
format); Brazilian mobiles keep their 9th digit only in area codes 11-19, 21,
22, 24, 27 and 28 and drop it elsewhere. So a `Recipient` has two forms:

- ``phone``: the E.164 number a person recognises, the contact's key;
- ``wa_chat_id``: the id Whapi routes, sent as ``to`` and received as
  ``chat_id``.

========================  =========================  ==========================
Number                    ``phone``                  ``wa_chat_id`` (digits)
========================  =========================  ==========================
Mexico, any               +52 + 10 digits            521 + 10 digits
Argentina, geographic     +54 9 + 10 digits          549 + 10 digits
Argentina, 0800 & co.     +54 + the number           same digits
Brazil mobile, DDD in     +55 DDD 9 XXXXXXXX         55 DDD 9 XXXXXXXX
  11-19, 21, 22, 24,
  27, 28
Brazil mobile, other DDD  +55 DDD 9 XXXXXXXX         55 DDD XXXXXXXX
Brazil landline           +55 DDD XXXXXXXX           same digits
Everything else           E.164                      E.164 digits
========================  =========================  ==========================

All of these are read as the same person (X is any digit, [..] the first
digit of the subscriber number):

- Mexico: ``+52 56 3969 1841``, ``+52 1 56 3969 1841`` (the mobile ``1``
  abolished in 2019), ``5215639691841@s.whatsapp.net`` and
  ``525639691841@s.whatsapp.net``;
- Argentina: ``+54 9 11 5874 9895``, ``+54 11 5874 9895`` (Whapi: insert the
  9), ``+54 11 15 5874 9895`` and ``011 15 5874-9895`` with "AR";
- Brazil: ``+55 92 98172 3241``, ``+55 92 8172 3241`` (an 8-digit mobile
  number from before the 9th digit) and ``559281723241@s.whatsapp.net``.

A Brazilian 8-digit subscriber number starting 6-9 is a mobile that lost its
9th digit (landlines start 2-5, mobiles started 6-9 before the 9 was added).
A mobile whose number after the 9 starts 0-5 keeps its 9 in ``wa_chat_id``
even outside the listed area codes: it never had an 8-digit form, and
without the 9 it would read as a landline.

Invariants (tested): ``normalize_recipient(r.phone) == r`` and
``normalize_recipient(r.wa_chat_id) == r`` for every accepted input.

Numbers are checked with `phonenumbers.is_possible_number` (right length for
the country), not `is_valid_number`: the latter also checks number ranges
against allocation tables and rejects the fictional ranges everyone uses in
tests and demos (+1 555 01xx, UK 07700 900xxx), and it goes stale when
regulators open new ranges, which would turn a library upgrade into rejected
messages. WhatsApp itself is the final judge of whether a number exists.

For groups and linked ids, `Recipient.phone` is the whole chat id
(``<id>@g.us``, ``<id>@lid``), not the bare id: a bare id is all digits and
would read as a phone number, and sent on as one it would address someone
else. With the suffix it can't be mistaken, and it stays unique in
`contacts (workspace_id, phone)` next to E.164 numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from outbox.errors import InvalidPhone, NotAConversation

PERSON_SUFFIX = "@s.whatsapp.net"
GROUP_SUFFIX = "@g.us"
LID_SUFFIX = "@lid"
# Older clients and some exports still say c.us for a person.
_LEGACY_PERSON_SUFFIX = "@c.us"
NEWSLETTER_SUFFIX = "@newsletter"
BROADCAST_SUFFIX = "@broadcast"

# The longest sensible input is a 31-character group id plus its suffix, or a
# formatted number; anything longer is rejected before any parsing so a huge
# string costs nothing.
MAX_INPUT_CHARS = 64
E164_MAX_DIGITS = 15
# Whapi's `to` pattern is ^[\d-]{9,31}(@[\w\.]{1,})?$
WHAPI_MIN_DIGITS = 9
WHAPI_MAX_DIGITS = 31
LID_MIN_DIGITS = WHAPI_MIN_DIGITS
LID_MAX_DIGITS = 20
_SHOWN_INPUT_CHARS = 40

_MEXICO = "52"
_ARGENTINA = "54"
_BRAZIL = "55"
# Brazilian area codes (DDD) where WhatsApp ids kept the mobile 9th digit.
_BRAZIL_NINTH_DIGIT_AREAS = frozenset(
    ["11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28"]
)
# First digit of an 8-digit Brazilian mobile number before the 9 was added.
_BRAZIL_OLD_MOBILE_FIRST = frozenset("6789")

# What people put between digits, including what copying from a web page or
# WhatsApp brings along (no-break spaces, typographic dashes, the invisible
# bidi marks WhatsApp wraps around numbers, zero-width spaces).
_SEPARATORS = re.compile(
    r"[ \t\u00a0\u202f\-\u2010-\u2015.()\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_GROUP_ID = re.compile(r"\d+(-\d+)?")
_REASONS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits for its country",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "missing the area code",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}


_PARSE_ERRORS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}


@dataclass(frozen=True)
class Recipient:
    #: E.164 ("+15551234567") for a person; the whole chat id for a group
    #: ("<id>@g.us") or a person known only by a linked id ("<id>@lid").
    phone: str
    #: What Whapi's `to` takes and its `chat_id` says: "15551234567@s.whatsapp.net"
    #: (country rules applied: "5215639691841@s.whatsapp.net" for +52 56 3969 1841),
    #: "<id>@g.us" or "<id>@lid".
    wa_chat_id: str
    is_group: bool


def normalize_recipient(raw: str, *, default_region: str | None = None) -> Recipient:
    """Normalise a phone number or WhatsApp chat id.

    Raises `NotAConversation` for channel, status and broadcast ids, and
    `InvalidPhone` for anything else that is not a recipient.
    """
    if not isinstance(raw, str):
        raise InvalidPhone(f"invalid phone number: expected text, got {type(raw).__name__}")
    if len(raw) > MAX_INPUT_CHARS:
        _reject(raw, f"too long ({len(raw)} characters)")
    text = raw.strip()
    if not text:
        _reject(raw, "empty")
    if _CONTROL.search(text):
        _reject(raw, "contains control characters")
    if default_region is not None and not isinstance(default_region, str):
        raise InvalidPhone("default region must be a two-letter country code like 'US'",
                           field="default_region")
    return _normalize_cached(raw, text, default_region)


def non_conversation_kind(chat_id: str) -> str | None:
    """"newsletter", "status" or "broadcast" for a chat id that is never a
    conversation, else None. Looks at the suffix only and validates nothing:
    `normalize_recipient` raises `NotAConversation` for exactly these ids."""
    local, at, domain = chat_id.strip().partition("@")
    if not at:
        return None
    found = _non_conversation(local, "@" + domain.lower())
    return found[0] if found else None


# libphonenumber is the largest share of a bulk enqueue's CPU; recipients
# repeat and the result is immutable, so remember recent ones. Rejections
# are not cached.
@lru_cache(maxsize=65536)
def _normalize_cached(raw: str, text: str, default_region: str | None) -> Recipient:
    region = _check_region(default_region)
    if "@" in text:
        return _from_chat_id(raw, text)
    return _person(_e164_from_phone(raw, text, region))


def _check_region(default_region: str | None) -> str | None:
    if default_region is None:
        return None
    region = default_region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidPhone(
            f"unknown default region {default_region[:_SHOWN_INPUT_CHARS]!r} "
            "(expected a two-letter country code like 'US')",
            field="default_region",
        )
    return region


def _from_chat_id(raw: str, text: str) -> Recipient:
    local, _, domain = text.partition("@")
    suffix = "@" + domain.lower()
    if suffix == GROUP_SUFFIX:
        if not _GROUP_ID.fullmatch(local):
            _reject(raw, "a group id is digits, optionally one '-' and more digits")
        if not WHAPI_MIN_DIGITS <= len(local) <= WHAPI_MAX_DIGITS:
            _reject(raw, f"a group id has {WHAPI_MIN_DIGITS} to {WHAPI_MAX_DIGITS} characters")
        chat_id = local + GROUP_SUFFIX
        return Recipient(phone=chat_id, wa_chat_id=chat_id, is_group=True)
    if suffix in (PERSON_SUFFIX, _LEGACY_PERSON_SUFFIX):
        if not local.isascii() or not local.isdigit():
            _reject(raw, "a WhatsApp id has only digits before the @")
        return _person(_e164_from_phone(raw, "+" + local, None, exact=True))
    if suffix == LID_SUFFIX:
        if not local.isascii() or not local.isdigit():
            _reject(raw, "a linked id (@lid) has only digits before the @")
        if not LID_MIN_DIGITS <= len(local) <= LID_MAX_DIGITS:
            _reject(raw, f"a linked id (@lid) has {LID_MIN_DIGITS} to {LID_MAX_DIGITS} digits")
        chat_id = local + LID_SUFFIX
        return Recipient(phone=chat_id, wa_chat_id=chat_id, is_group=False)
    found = _non_conversation(local, suffix)
    if found is not None:
        kind, what = found
        raise NotAConversation(
            f'invalid phone number "{_shown(raw)}": {what}, not a conversation', kind=kind)
    _reject(raw, f"unsupported chat id {suffix!r} "
                 f"(use {PERSON_SUFFIX}, {GROUP_SUFFIX} or {LID_SUFFIX})")


def _non_conversation(local: str, suffix: str) -> tuple[str, str] | None:
    """(kind, description) for a chat id that is never a conversation."""
    if suffix == NEWSLETTER_SUFFIX:
        return "newsletter", "a WhatsApp channel (newsletter)"
    if suffix == BROADCAST_SUFFIX:
        if local.lower() == "status":
            return "status", "WhatsApp status updates (stories)"
        return "broadcast", "a broadcast list"
    return None


def _e164_from_phone(raw: str, text: str, region: str | None, *, exact: bool = False) -> str:
    compact = _SEPARATORS.sub("", text)
    international = compact.startswith("+")
    digits = compact[1:] if international else compact
    if not digits:
        _reject(raw, "not a number")
    if not (digits.isascii() and digits.isdigit()):
        if any(c.isalpha() for c in digits):
            _reject(raw, "contains letters")
        if "+" in digits:
            _reject(raw, "'+' is only allowed at the start")
        bad = next(c for c in digits if not (c.isascii() and c.isdigit()))
        _reject(raw, f"unexpected character {bad!r}")
    if not international and digits.startswith("00"):
        international, digits = True, digits[2:]

    candidates: list[tuple[str, str | None]]
    if international:
        candidates = [("+" + digits, None)]
    elif region is not None:
        # National reading first (that's what a default region means), then
        # the number as if it started with a country code.
        candidates = [(digits, region), ("+" + digits, None)]
    elif digits.startswith("0") or "(" in text:
        # A trunk 0 or an area code in parentheses: national format. Read as
        # international, "(555) 123-4567" would become +55 (Brazil).
        _reject(raw, "national number without a country code (start with + and the country code)")
    else:
        candidates = [("+" + digits, None)]

    reason = "not a number"
    for number_text, region_code in candidates:
        try:
            parsed = phonenumbers.parse(number_text, region_code)
        except NumberParseException as exc:
            if reason == "not a number":
                reason = _PARSE_ERRORS.get(exc.error_type, reason)
            continue
        number = _with_country_rules(parsed)
        result = phonenumbers.is_possible_number_with_reason(number)
        if result == ValidationResult.IS_POSSIBLE:
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            if not _is_fixed_point(e164):
                _reject(raw, "not a possible number")
            if len(e164) - 1 > E164_MAX_DIGITS:
                # phonenumbers' metadata allows longer numbers in some
                # regions (German extensions); E.164 and WhatsApp don't.
                _reject(raw, f"too long (E.164 allows at most {E164_MAX_DIGITS} digits)")
            if len(e164) - 1 < WHAPI_MIN_DIGITS:
                _reject(raw, f"too short for WhatsApp (fewer than {WHAPI_MIN_DIGITS} digits)")
            if exact and phonenumbers.format_number(parsed, PhoneNumberFormat.E164) != text:
                # phonenumbers dropped a trunk prefix after the country code; in a
                # WhatsApp id the digits are exact, so this isn't one.
                _reject(raw, "not a WhatsApp id (the digits are not an international number)")
            return e164
        if reason == "not a number":  # report why the first reading failed
            reason = _REASONS.get(result, "not a possible number")
    _reject(raw, reason)


def _with_country_rules(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber:
    """The number in its canonical national form (see the module docstring)."""
    country = str(number.country_code)
    if country not in (_MEXICO, _ARGENTINA, _BRAZIL):
        return number
    national = phonenumbers.national_significant_number(number)
    canonical = _canonical_national(country, national)
    if canonical == national:
        return number
    return phonenumbers.PhoneNumber(country_code=number.country_code,
                                    national_number=int(canonical))


def _canonical_national(country: str, national: str) -> str:
    # Mexico: the mobile "1" after 52, gone from dialling since 2019 but kept
    # in WhatsApp ids; Mexican area codes never start with 1.
    if country == _MEXICO and len(national) == 11 and national[0] == "1":
        return national[1:]
    # Argentina: geographic numbers (area codes start 1-3) are mobiles to
    # WhatsApp, and Whapi routes every one with the 9.
    if country == _ARGENTINA and len(national) == 10 and national[0] in "123":
        return "9" + national
    # Brazil: an 8-digit mobile number from before the 9th digit.
    if (country == _BRAZIL and len(national) == 10 and _is_brazil_area(national)
            and national[2] in _BRAZIL_OLD_MOBILE_FIRST):
        return national[:2] + "9" + national[2:]
    return national


def _is_brazil_area(national: str) -> bool:
    # Brazilian area codes are two digits 1-9; 0300/0800/4004-style
    # non-geographic numbers don't look like one.
    return national[0] != "0" and national[1] != "0"


def _routed_digits(e164: str) -> str:
    """The digits Whapi routes for a canonical E.164 number."""
    country, national = e164[1:3], e164[3:]
    # (Mexican numbers never start with 0 or 1: a "1" before one of those
    # would not read back as the same number.)
    if country == _MEXICO and len(national) == 10 and national[0] not in "01":
        return _MEXICO + "1" + national
    if (country == _BRAZIL and len(national) == 11 and national[2] == "9"
            and _is_brazil_area(national)
            and national[:2] not in _BRAZIL_NINTH_DIGIT_AREAS
            and national[3] in _BRAZIL_OLD_MOBILE_FIRST):
        return _BRAZIL + national[:2] + national[3:]
    return e164[1:]


def _is_fixed_point(e164: str) -> bool:
    # A trunk prefix after the country code is dropped ("+44 (0)20 ..."), so
    # "+31 0 0..." loses a 0 on every pass. Only outputs that normalise to
    # themselves are kept: the stored phone must mean the same thing tomorrow.
    again = _with_country_rules(phonenumbers.parse(e164, None))
    return phonenumbers.format_number(again, PhoneNumberFormat.E164) == e164 and (
        phonenumbers.is_possible_number(again)
    )


def _person(e164: str) -> Recipient:
    return Recipient(phone=e164, wa_chat_id=_routed_digits(e164) + PERSON_SUFFIX, is_group=False)


def _shown(raw: str) -> str:
    shown = raw if len(raw) <= _SHOWN_INPUT_CHARS else raw[:_SHOWN_INPUT_CHARS] + "…"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)


def _reject(raw: str, reason: str) -> NoReturn:
    raise InvalidPhone(f'invalid phone number "{_shown(raw)}": {reason}')
