"""Turn whatever a caller typed into a WhatsApp recipient.

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
  phone number) and group ids ``120363025343298765@g.us`` or the older
  ``15551234567-1612345678@g.us``.

Numbers are checked with `phonenumbers.is_possible_number` (right length for
the country), not `is_valid_number`: the latter also checks number ranges
against allocation tables and rejects the fictional ranges everyone uses in
tests and demos (+1 555 01xx, UK 07700 900xxx), and it goes stale when
regulators open new ranges, which would turn a library upgrade into rejected
messages. WhatsApp itself is the final judge of whether a number exists.

For groups, `Recipient.phone` is the whole chat id (``<id>@g.us``), not the
bare id: a bare group id is all digits and would read as a phone number, and
sent on as one it would address a person. With the suffix it can't be
mistaken, and it stays unique in `contacts (workspace_id, phone)` next to
E.164 numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

from outbox.errors import InvalidPhone

PERSON_SUFFIX = "@s.whatsapp.net"
GROUP_SUFFIX = "@g.us"
# Older clients and some exports still say c.us for a person.
_LEGACY_PERSON_SUFFIX = "@c.us"

# The longest sensible input is a 31-character group id plus its suffix, or a
# formatted number; anything longer is rejected before any parsing so a huge
# string costs nothing.
MAX_INPUT_CHARS = 64
E164_MAX_DIGITS = 15
# Whapi's `to` pattern is ^[\d-]{9,31}(@[\w\.]{1,})?$
WHAPI_MIN_DIGITS = 9
WHAPI_MAX_DIGITS = 31
_SHOWN_INPUT_CHARS = 40

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
    #: E.164 ("+15551234567") for a person; the group chat id ("<id>@g.us")
    #: for a group.
    phone: str
    #: What Whapi's `to` takes: "15551234567@s.whatsapp.net" or "<id>@g.us".
    wa_chat_id: str
    is_group: bool


def normalize_recipient(raw: str, *, default_region: str | None = None) -> Recipient:
    """Normalise a phone number or WhatsApp chat id; raises `InvalidPhone`."""
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


# libphonenumber costs ~45 us a number, the largest share of a bulk enqueue;
# recipients repeat (the same customers, again and again) and the result is
# an immutable value, so remember recent ones. Rejections are not cached.
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
        e164 = _e164_from_phone(raw, "+" + local, None)
        if e164 != "+" + local:
            # phonenumbers dropped a trunk prefix after the country code; in a
            # WhatsApp id the digits are exact, so this isn't one.
            _reject(raw, "not a WhatsApp id (the digits are not an international number)")
        return _person(e164)
    _reject(raw, f"unsupported chat id {suffix!r} (use {PERSON_SUFFIX} or {GROUP_SUFFIX})")


def _e164_from_phone(raw: str, text: str, region: str | None) -> str:
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
            number = phonenumbers.parse(number_text, region_code)
        except NumberParseException as exc:
            if reason == "not a number":
                reason = _PARSE_ERRORS.get(exc.error_type, reason)
            continue
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
            return e164
        if reason == "not a number":  # report why the first reading failed
            reason = _REASONS.get(result, "not a possible number")
    _reject(raw, reason)


def _is_fixed_point(e164: str) -> bool:
    # A trunk prefix after the country code is dropped ("+44 (0)20 ..."), so
    # "+31 0 0..." loses a 0 on every pass. Only outputs that normalise to
    # themselves are kept: the stored phone must mean the same thing tomorrow.
    again = phonenumbers.parse(e164, None)
    return phonenumbers.format_number(again, PhoneNumberFormat.E164) == e164 and (
        phonenumbers.is_possible_number(again)
    )


def _person(e164: str) -> Recipient:
    return Recipient(phone=e164, wa_chat_id=e164[1:] + PERSON_SUFFIX, is_group=False)


def _reject(raw: str, reason: str) -> NoReturn:
    shown = raw if len(raw) <= _SHOWN_INPUT_CHARS else raw[:_SHOWN_INPUT_CHARS] + "…"
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    raise InvalidPhone(f'invalid phone number "{shown}": {reason}')
