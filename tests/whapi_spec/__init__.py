"""JSON Schemas of Whapi's requests, responses and webhooks, and a loader.

Written by hand from Whapi's published OpenAPI description (version 1.8.7;
public copy: purelines/whapi-sdk `openapi.yaml`), so that our client, the
simulator and the webhook parser are checked against Whapi's word rather
than against each other. Each file cites the spec schema(s) it was written
from in its top-level "$comment", with any place where it follows
shared/WHAPI.md because the spec is silent.

    from tests.whapi_spec import assert_valid, validator

    assert_valid("webhook_payload", body)            # every webhook body
    assert_valid(REQUEST_SCHEMAS["image"], request)  # POST /messages/image
    assert_valid("sent_message", response_json)      # a send's 2xx body
    validator("status").is_valid(entry)              # a jsonschema Validator
    body = load_payload("messages_post_text")        # tests/whapi_payloads/*.json

A name is a file's stem: `webhook_payload`, `message`, `message_update`,
`status`, `chat`, `contact`, `group`, `health`, `label`, `settings`,
`sent_message`, `error`, `success`, `sender` and `sender_<type>` for
text, image, video, gif, short, document, audio, voice. (`ids` and `props`
only hold definitions the others share.)

The corpus in tests/whapi_payloads/ (one real-shaped webhook body per
situation, see its README) is loaded with `load_payload(name)`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "BASE_URI",
    "PAYLOAD_DIR",
    "REQUEST_SCHEMAS",
    "SCHEMA_DIR",
    "WEBHOOK_SCHEMA",
    "assert_valid",
    "dangling_references",
    "declared_properties",
    "errors",
    "load_payload",
    "payload_names",
    "schema_names",
    "validator",
]

SCHEMA_DIR: Final = Path(__file__).resolve().parent
PAYLOAD_DIR: Final = SCHEMA_DIR.parent / "whapi_payloads"
#: Every file's "$id" is BASE_URI + "<name>.json"; files refer to each other
#: relatively ("message.json#/$defs/MessageAction"). The host is reserved
#: (.invalid): nothing is ever fetched.
BASE_URI: Final = "https://whapi-spec.invalid/1.8.7/"
#: The request schema for each POST /messages/<type> endpoint written here.
REQUEST_SCHEMAS: Final[Mapping[str, str]] = {
    kind: f"sender_{kind}"
    for kind in ("text", "image", "video", "gif", "short", "document", "audio", "voice")
}
#: Every body Whapi POSTs to a webhook URL, whatever its event.
WEBHOOK_SCHEMA: Final = "webhook_payload"
# Files that only hold shared $defs: a validator for them would accept anything.
_DEFINITIONS_ONLY: Final = frozenset({"ids", "props"})
# An error line quotes the offending value; enums and whole messages make
# jsonschema's messages run to pages.
_MAX_MESSAGE_CHARS: Final = 240
_MAX_CONTEXT_LINES: Final = 6


def schema_names() -> list[str]:
    """The names `validator` accepts, sorted."""
    return sorted(
        p.stem for p in SCHEMA_DIR.glob("*.json") if p.stem not in _DEFINITIONS_ONLY
    )


def payload_names() -> list[str]:
    """The corpus files' names (stems), sorted."""
    return sorted(p.stem for p in PAYLOAD_DIR.glob("*.json"))


def load_payload(name: str) -> dict[str, Any]:
    """One corpus webhook body, parsed afresh (callers may change it)."""
    path = PAYLOAD_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no webhook payload named {name!r} in {PAYLOAD_DIR}")
    body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return body


@functools.cache
def _contents() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if schema.get("$id") != f"{BASE_URI}{path.name}":
            raise ValueError(f"{path.name}: $id must be {BASE_URI}{path.name}")
        out[path.stem] = schema
    return out


@functools.cache
def _registry() -> Registry[Any]:
    resources = [
        (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
        for schema in _contents().values()
    ]
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry.crawl()


@functools.cache
def validator(name: str) -> Validator:
    """A draft 2020-12 validator for one schema (cached; `format` is checked)."""
    if name in _DEFINITIONS_ONLY or name not in _contents():
        raise KeyError(f"no Whapi schema named {name!r}; known: {', '.join(schema_names())}")
    return Draft202012Validator(
        _contents()[name],
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def errors(name: str, instance: object) -> list[str]:
    """Every violation as "<json path>: <message>", in document order.

    Errors from anyOf/oneOf/if-then branches are followed by their causes,
    indented, so a payload that matches no alternative says why.
    """
    found = sorted(validator(name).iter_errors(instance), key=_sort_key)
    lines: list[str] = []
    for error in found:
        line = f"{error.json_path}: {_short(error.message)}"
        if lines and lines[-1] == line:  # two schemas of an allOf requiring the same field
            continue
        lines.append(line)
        causes = sorted(_leaf_causes(error), key=_sort_key)
        for cause in causes[:_MAX_CONTEXT_LINES]:
            lines.append(f"    because {cause.json_path}: {_short(cause.message)}")
        if len(causes) > _MAX_CONTEXT_LINES:
            lines.append(f"    ... and {len(causes) - _MAX_CONTEXT_LINES} more")
    return lines


def assert_valid(name: str, instance: object) -> None:
    """Fail with every error path and message when `instance` breaks schema `name`."""
    lines = errors(name, instance)
    if lines:
        raise AssertionError(
            f"{len(lines)} problem line(s) against Whapi schema {name!r}:\n  "
            + "\n  ".join(lines)
        )


def declared_properties(name: str, pointer: str = "") -> frozenset[str]:
    """Property names the schema (or its `pointer`, e.g. "/$defs/SendMedia") declares.

    Follows $ref, allOf, anyOf and oneOf. The schemas leave additional
    properties open, as the spec does, so a field Whapi never declared
    passes validation; compare a body's keys with this set to catch one.
    """
    resolver = _registry().resolver(base_uri=f"{BASE_URI}{name}.json")
    root = resolver.lookup(f"{BASE_URI}{name}.json#{pointer}")
    found: set[str] = set()
    seen: set[int] = set()

    def walk(schema: Any, res: Any) -> None:
        if not isinstance(schema, dict) or id(schema) in seen:
            return
        seen.add(id(schema))
        found.update(schema.get("properties", {}))
        if "$ref" in schema:
            target = res.lookup(schema["$ref"])
            walk(target.contents, target.resolver)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key, ()):
                walk(sub, res)

    walk(root.contents, root.resolver)
    return frozenset(found)


def dangling_references() -> list[str]:
    """Every "$ref" in every file that resolves to nothing, as "file: ref"."""
    registry = _registry()
    bad: list[str] = []

    def walk(node: Any, file: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                try:
                    registry.resolver(base_uri=f"{BASE_URI}{file}").lookup(node["$ref"])
                except Exception:  # referencing's errors differ per failure
                    bad.append(f"{file}: {node['$ref']}")
            for value in node.values():
                walk(value, file)
        elif isinstance(node, list):
            for value in node:
                walk(value, file)

    for stem, schema in _contents().items():
        walk(schema, f"{stem}.json")
    return bad


def _sort_key(error: ValidationError) -> tuple[str, str]:
    return (error.json_path, error.message)


def _leaf_causes(error: ValidationError) -> Iterator[ValidationError]:
    for sub in error.context or ():
        if sub.context:
            yield from _leaf_causes(sub)
        else:
            yield sub


def _short(message: str) -> str:
    message = " ".join(message.split())
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 3] + "..."
