"""Chat ids the way Whapi writes them, for the simulator's injected events.

Whapi routes some countries' person numbers to a different WhatsApp id than
the plain digits (shared/WHAPI.md, "Country rules"), and inbound chat ids
arrive in that form. The simulator encodes the rules on its own (not through
the outbox's normaliser) so a test can catch the two disagreeing.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PERSON_SUFFIX", "digits_of", "whapi_chat_id"]

PERSON_SUFFIX: Final = "@s.whatsapp.net"

# Brazil: Whapi's id keeps the mobile 9th digit only in these area codes.
BRAZIL_NINE_DIGIT_AREAS: Final = frozenset(
    {"11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28"}
)


def _whapi_digits(digits: str) -> str:
    """Apply Whapi's country rules to international digits (no `+`)."""
    if digits.startswith("52") and len(digits) == 12:  # Mexico: 52 + 10 → 521 + 10
        return "521" + digits[2:]
    if digits.startswith("54") and len(digits) == 12 and digits[2] != "9":  # Argentina
        return "549" + digits[2:]
    if digits.startswith("55") and len(digits) in (12, 13):  # Brazil
        area, subscriber = digits[2:4], digits[4:]
        if area in BRAZIL_NINE_DIGIT_AREAS:
            if len(subscriber) == 8 and subscriber[0] in "6789":  # a mobile without its 9
                return f"55{area}9{subscriber}"
        elif len(subscriber) == 9 and subscriber[0] == "9":
            return f"55{area}{subscriber[1:]}"
    return digits


def whapi_chat_id(value: str, *, country_rules: bool = True) -> str:
    """A phone (`+52 55 1234 5678`, `5255...`) or a chat id → Whapi's chat id.

    Chat ids (anything with `@`) come back unchanged: a test that passes
    `521…@s.whatsapp.net` or `…@lid` gets exactly that.
    """
    if "@" in value:
        return value
    digits = "".join(ch for ch in value if ch.isdigit())
    if country_rules:
        digits = _whapi_digits(digits)
    return digits + PERSON_SUFFIX


def digits_of(chat_id: str) -> str:
    """The part before `@` (a phone, a LID or a group id)."""
    return chat_id.partition("@")[0]
