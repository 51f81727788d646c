"""The documentation site's HTTP reference, written from the app's own OpenAPI
description (docs/hooks/http_reference.py): every operation and schema is on
the page, and every link in it lands on a heading of the page.

The whole site is built by `scripts/docs` (mkdocs build --strict), which CI
runs after the tests; these checks need neither MkDocs nor a database.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HOOK = Path(__file__).resolve().parents[1] / "docs" / "hooks" / "http_reference.py"


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("http_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    return _load_hook()


@pytest.fixture(scope="module")
def spec(hook: ModuleType) -> dict[str, Any]:
    description: dict[str, Any] = hook.openapi_description()
    return description


@pytest.fixture(scope="module")
def page(hook: ModuleType, spec: dict[str, Any]) -> str:
    rendered: str = hook.render(spec)
    return rendered


def _headings(page: str) -> list[str]:
    return [line.lstrip("#").strip() for line in page.splitlines() if line.startswith("### ")]


def test_every_operation_has_a_heading(spec: dict[str, Any], page: str) -> None:
    headings = _headings(page)
    assert spec["paths"], "the app describes no paths"
    for path, item in spec["paths"].items():
        for method in ("get", "post", "put", "patch", "delete"):
            if method not in item:
                continue
            shown = [h for h in headings
                     if h.endswith(f" {path}`") and method.upper() in h.strip("`").split(" ")]
            assert shown, f"{method.upper()} {path} is missing from the HTTP reference"


def test_identical_methods_of_a_path_are_shown_once(page: str) -> None:
    # Whapi's `method` webhook mode: one route for four HTTP methods.
    assert "### `POST | PUT | PATCH | DELETE /webhooks/whapi/{channel_id}/{event_type}`" in page


def test_every_schema_and_body_field_is_described(spec: dict[str, Any], page: str) -> None:
    for name, schema in spec["components"]["schemas"].items():
        assert f"### {name} {{#schema-{name.lower()}}}" in page
        for field in schema.get("properties", {}):
            assert f"| `{field}` |" in page, f"{name}.{field} is missing"
    body = spec["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
    for field in body["schema"]["properties"]:
        assert f"| `{field}` |" in page


def test_links_land_on_the_page(page: str) -> None:
    anchors = set(re.findall(r"\{#([a-z0-9-]+)\}", page))
    links = re.findall(r"\]\(#([^)]+)\)", page)
    assert links, "no schema is linked"
    assert set(links) <= anchors


def test_pipes_inside_cells_do_not_split_them(page: str) -> None:
    # "image|video|document|audio" is one description, not four cells.
    row = next(line for line in page.splitlines() if line.startswith("| `media_type` |"))
    assert row.count(" | ") == 3
    assert "image\\|video\\|document\\|audio" in row


# --- every route has an example ------------------------------------------------------

_DOCS = Path(__file__).resolve().parents[1] / "docs"
_CURL_URL = re.compile(r"(?:https?://)?(?:localhost|127\.0\.0\.1|\$[A-Z_]+|[\w.-]+\.example)"
                       r"(?::\d+)?(/[^\s\"'?]*)")


def _curl_examples() -> set[tuple[str, str]]:
    """(method, path) of every curl command in the site's pages; a command
    continued over several lines counts as one."""
    found: set[tuple[str, str]] = set()
    for page in _DOCS.glob("*.md"):
        command = ""
        for line in page.read_text().splitlines():
            command += " " + line.rstrip("\\")
            if line.endswith("\\"):
                continue
            if command.strip().startswith("curl "):
                url = _CURL_URL.search(command)
                forced = re.search(r"-X\s+([A-Z]+)", command)
                sends = re.search(r"\s(-d|--data\S*|--json|-F)\s", command)
                method = forced.group(1) if forced else ("POST" if sends else "GET")
                if url:
                    found.add((method, url.group(1)))
            command = ""
    return found


def test_every_operation_has_a_curl_example_in_the_docs(spec: dict[str, Any]) -> None:
    """docs/http-api.md (or the page of its feature) shows each route once."""
    examples = _curl_examples()
    missing = []
    for path, item in spec["paths"].items():
        if path.startswith("/webhooks/"):
            continue  # Whapi's to call: the Webhooks section says how to point it there
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(path)) + "$")
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item and not any(
                    m == method.upper() and pattern.match(p) for m, p in examples):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"routes without a curl example in docs/: {missing}"


# --- the package map names every module ---------------------------------------

_ROOT = _DOCS.parent
_LINKED = {("outbox", "db"), ("outbox", "providers"), ("outbox", "migrations")}


def _package_map() -> dict[str, set[str]]:
    """Folder -> the modules docs/architecture.md's package map names there:
    a `### \\`folder/\\`` heading, then a table whose rows start with a
    module's name in backticks."""
    text = (_DOCS / "architecture.md").read_text()
    section = text.split("\n## The package map\n", 1)[1].split("\n## ", 1)[0]
    named: dict[str, set[str]] = {}
    folder: str | None = None
    for line in section.splitlines():
        if line.startswith("### "):
            heading = re.match(r"### `([\w/]+/)`", line)
            folder = heading.group(1) if heading else None
            if folder is not None:
                named[folder] = set()
        elif folder is not None and (row := re.match(r"\| `(\w+)` \|", line)):
            named[folder].add(row.group(1))
    return named


def _modules_in_tree() -> dict[str, set[str]]:
    """Folder -> its modules, for outbox/, db/ and providers/ (not the links
    under outbox/ to the last two, nor __init__ and __main__)."""
    found: dict[str, set[str]] = {}
    for top in ("outbox", "db", "providers"):
        for path in (_ROOT / top).rglob("*.py"):
            rel = path.relative_to(_ROOT)
            if rel.parts[:2] in _LINKED or path.name.startswith("__"):
                continue
            found.setdefault(rel.parent.as_posix() + "/", set()).add(path.stem)
    return found


def test_the_package_map_names_every_module_and_only_those() -> None:
    named, found = _package_map(), _modules_in_tree()
    assert "outbox/dispatch/" in found and "db/" in found  # the walk sees the tree
    missing = sorted(f"{folder}{m}" for folder, ms in found.items()
                     for m in ms - named.get(folder, set()))
    stale = sorted(f"{folder}{m}" for folder, ms in named.items()
                   for m in ms - found.get(folder, set()))
    assert not missing, f"modules missing from docs/architecture.md's package map: {missing}"
    assert not stale, f"the package map names modules that do not exist: {stale}"
