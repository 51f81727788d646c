"""MkDocs hook: the HTTP reference page, written from the app's own OpenAPI description.

The page is made at build time and never checked in, so it can't drift from
the routes. It is plain Markdown (no Swagger UI or other script from a CDN):
the site renders offline like every other page.
"""

from __future__ import annotations

import json
from typing import Any

PAGE = "reference/http.md"
# Building the app opens nothing: the engine connects on first use, and the
# reference never uses it. An explicit URL keeps the embedded server from starting.
_PLACEHOLDER_URL = "postgresql+psycopg://docs@127.0.0.1:1/docs"
_METHODS = ("get", "post", "put", "patch", "delete")


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render(openapi_description())))
    return files


def openapi_description() -> dict[str, Any]:
    """`GET /openapi.json` of `outbox serve`, without serving it."""
    from outbox.api import create_app
    from outbox.settings import Settings

    settings = Settings(_env_file=None, database_url=_PLACEHOLDER_URL)
    return create_app(settings, database_url=_PLACEHOLDER_URL).openapi()


def render(spec: dict[str, Any]) -> str:
    """The whole page: operations grouped by tag, then the shared schemas."""
    info = spec.get("info", {})
    lines = [
        "# HTTP reference",
        "",
        info.get("description", ""),
        "",
        f"Version {info.get('version', '?')}, OpenAPI {spec.get('openapi', '?')}. "
        "This page is generated from the app's OpenAPI description when the site "
        "is built; a running `outbox serve` publishes the same at `/openapi.json` "
        "and browsable docs at `/docs`. How to authenticate, the error codes and "
        "what each webhook does: [HTTP API](../http-api.md).",
        "",
    ]
    for tag, operations in _by_tag(spec).items():
        lines += [f"## {tag.capitalize()}", ""]
        for path, methods, op in operations:
            lines += _operation(path, methods, op)
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name, schema in schemas.items():
            lines += [f"### {name} {{#{_anchor(name)}}}", ""]
            lines += _schema_block(schema)
    return "\n".join(lines).rstrip() + "\n"


def _by_tag(spec: dict[str, Any]) -> dict[str, list[tuple[str, list[str], dict[str, Any]]]]:
    """Operations by their first tag; one path's methods that would read the
    same (Whapi's `method` webhook mode) are shown once."""
    groups: dict[str, list[tuple[str, list[str], dict[str, Any]]]] = {}
    for path, item in spec.get("paths", {}).items():
        shown: list[tuple[list[str], dict[str, Any]]] = []
        for method in _METHODS:
            if method not in item:
                continue
            op = item[method]
            same = [entry for entry in shown
                    if _operation(path, [], entry[1]) == _operation(path, [], op)]
            if same:
                same[0][0].append(method)
            else:
                shown.append(([method], op))
        for methods, op in shown:
            tag = (op.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append((path, methods, op))
    return groups


def _operation(path: str, methods: list[str], op: dict[str, Any]) -> list[str]:
    lines = [f"### `{' | '.join(m.upper() for m in methods)} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            lines.append(_row(f"`{p['name']}`", p.get("in", ""), _type(schema),
                              "yes" if p.get("required") else "no",
                              _describe(p.get("description") or schema.get("description"),
                                        schema)))
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            schema = content.get("schema", {})
            required = "required" if body.get("required") else "optional"
            if "$ref" in schema:
                lines += [f"Request body ({required}, `{media}`): {_type(schema)}", ""]
            else:
                lines += [f"Request body ({required}, `{media}`):", ""]
                lines += _schema_block(schema)
    responses = op.get("responses", {})
    if responses:
        lines += ["| status | meaning | body |", "|---|---|---|"]
        for status, answer in responses.items():
            contents = answer.get("content", {})
            shown = ", ".join(_content(media, c) for media, c in contents.items()) or "-"
            lines.append(_row(status, answer.get("description", ""), shown))
        lines.append("")
    return lines


def _schema_block(schema: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    props = schema.get("properties", {})
    if not props:
        allowed = _describe(None, schema)
        lines += [f"Type: {_type(schema)}" + (f", {allowed}" if allowed else ""), ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in props.items():
        lines.append(_row(f"`{name}`", _type(prop), "yes" if name in required else "no",
                          _describe(prop.get("description"), prop)))
    if schema.get("additionalProperties") is False:
        lines += ["", "Other fields are refused (422)."]
    lines.append("")
    return lines


def _content(media: str, content: dict[str, Any]) -> str:
    schema = content.get("schema")
    if not schema or schema == {}:
        return f"`{media}`"
    return f"{_type(schema)} (`{media}`)"


def _type(schema: dict[str, Any]) -> str:
    """A schema as a short type: `string (uuid)`, `integer or null`, a link to a named schema."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            joiner = " and " if combinator == "allOf" else " or "
            return joiner.join(_type(s) for s in schema[combinator])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if isinstance(kind, list):
        return " or ".join(f"`{k}`" for k in kind)
    if kind is None:
        return "any"
    fmt = schema.get("format")
    return f"`{kind}` ({fmt})" if fmt else f"`{kind}`"


def _describe(text: str | None, schema: dict[str, Any]) -> str:
    """The description, then what the schema adds: allowed values, range, default."""
    parts = [text.strip()] if text else []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"]))
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        parts.append(f"from {low if low is not None else '-∞'} to "
                     f"{high if high is not None else '∞'}")
    if schema.get("maxLength") is not None:
        parts.append(f"at most {schema['maxLength']} characters")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    return "; ".join(parts)


def _row(*cells: str) -> str:
    # A pipe inside a cell would end it (descriptions like "image|video|...").
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _anchor(name: str) -> str:
    return "schema-" + name.lower()
