"""What `pip install whapi-outbox` puts into site-packages.

An application that installs the library must not get top-level packages
named `db`, `providers` or `migrations` (its own `db` module would collide):
the wheel holds one package, `outbox`, with the repository's db/, providers/
and migrations/ inside it. Run from the unpacked wheel alone (not this
checkout), the code finds its migrations, upgrades a database and starts the
simulator; users' type checkers see our annotations (py.typed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.dispatch_helpers import REPO

pytestmark = pytest.mark.slow  # builds the wheel

SOURCE_DIRS = ("outbox", "db", "providers", "migrations", "scripts", "tests")
_TOP_LEVEL_IMPORT = re.compile(r"^\s*(?:from|import)\s+(db|providers|migrations)\b", re.M)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools keeps a build/ folder in the source tree,
    # and files left there from an older layout would end up in the wheel.
    source = tmp_path_factory.mktemp("source") / "whapi-outbox"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".outbox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "-w", str(out), str(source)],
                   check=True, timeout=600, capture_output=True)
    (built,) = out.glob("whapi_outbox-*.whl")
    return built


def test_the_wheel_installs_one_package_of_ours(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "outbox"}
    for needed in ("outbox/py.typed", "outbox/migrations/env.py",
                   "outbox/migrations/script.py.mako", "outbox/db/queries.py",
                   "outbox/providers/simulator/__main__.py",
                   # The console works from the wheel alone.
                   "outbox/console/templates/base.html", "outbox/console/templates/inbox.html",
                   "outbox/console/templates/login.html", "outbox/console/templates/ops.html",
                   "outbox/console/static/api.js", "outbox/console/static/inbox.js",
                   "outbox/console/static/live.js", "outbox/console/static/ops.js",
                   "outbox/console/static/login.js", "outbox/console/static/console.css",
                   "outbox/console/static/icon.svg"):
        assert needed in names, needed
    assert any(n.startswith("outbox/migrations/versions/0001") for n in names)


def test_the_unpacked_wheel_runs_on_its_own(wheel: Path, tmp_path: Path,
                                            fresh_database_url: str) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "OUTBOX_DATABASE_URL": fresh_database_url}
    probe = subprocess.run(
        [sys.executable, "-c",
         "import outbox, outbox.migrate, outbox.providers.simulator.app as app; "
         "print(outbox.__file__); print(outbox.migrate.MIGRATIONS_DIR); print(app.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert all(line.startswith(str(site)) for line in probe.stdout.split()), probe.stdout
    upgrade = subprocess.run([sys.executable, "-m", "outbox", "db", "upgrade"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "-> " in upgrade.stdout and "empty ->" in upgrade.stdout
    sim = subprocess.Popen([sys.executable, "-m", "outbox.providers.simulator", "--port", "0"],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        assert sim.stdout.readline().startswith("Whapi simulator listening on http://")
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def test_no_code_imports_the_repository_folders_by_their_own_names() -> None:
    """`import db` works in the checkout only (and would load a second copy
    of every module beside outbox.db): everything says outbox.db."""
    offenders = [
        f"{path.relative_to(REPO)}: {m.group(0).strip()}"
        for folder in SOURCE_DIRS for path in (REPO / folder).rglob("*.py")
        if "outbox/db" not in path.as_posix() and ".venv" not in path.parts
        for m in _TOP_LEVEL_IMPORT.finditer(path.read_text())
    ]
    assert offenders == []
