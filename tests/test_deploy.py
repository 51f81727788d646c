"""The deployment files: docker-compose.yml, the Dockerfile and requirements.lock.

No Docker engine runs on these machines, so the compose file is read as
data: every service that runs our image runs a real `outbox` command with
flags that command takes and settings our Settings accept, in the right
order (the migration first). The lock pins every runtime dependency, each
version inside pyproject's range, each file by hash, and the image installs
from it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.dispatch_helpers import REPO

_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
# What a deployment sets (the rest take compose's defaults).
DEPLOY_ENV = {"OUTBOX_ENCRYPTION_KEY": "k" * 44, "POSTGRES_PASSWORD": "pw"}


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if name in env:
            return env[name]
        if op == "?":
            raise AssertionError(f"compose needs {name}: {arg}")
        return arg or ""

    return _VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return dict(_interpolate(raw, DEPLOY_ENV))


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("build") == "."}


@pytest.mark.slow
def test_every_service_of_ours_runs_a_real_command_with_flags_it_takes(
        compose: dict[str, Any]) -> None:
    ours = _ours(compose)
    assert set(ours) == {"migrate", "api", "dispatcher", "simulator"}
    for name, svc in ours.items():
        command = svc["command"]
        assert command[0] == "outbox", name
        words = [w for w in command[1:] if not w.startswith("-")]
        flags = [w for w in command[1:] if w.startswith("--")]
        # The subcommand words come before any value: `db upgrade`, `serve`.
        path = words[: 2 if command[1] == "db" else 1]
        help_ = subprocess.run([sys.executable, "-m", "outbox", *path, "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        assert help_.returncode == 0, (name, help_.stderr)
        for flag in flags:
            assert flag in help_.stdout, f"{name}: `outbox {' '.join(path)}` takes no {flag}"


def test_every_service_of_ours_has_settings_we_accept(compose: dict[str, Any]) -> None:
    from outbox.settings import ENV_PREFIX, Settings

    known = {ENV_PREFIX + f.upper() for f in Settings.model_fields}
    for name, svc in _ours(compose).items():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        assert unknown == [], f"{name}: settings that don't exist: {unknown}"
        fields = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if v != ""}
        Settings(_env_file=None, **fields)  # type: ignore[call-arg]  # raises if invalid
        if name != "simulator":
            assert env["OUTBOX_DATABASE_URL"].startswith("postgresql://outbox:pw@postgres:")
            assert env["OUTBOX_ENCRYPTION_KEY"] == DEPLOY_ENV["OUTBOX_ENCRYPTION_KEY"]


def test_the_migration_runs_once_before_the_rest(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "dispatcher"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}}
    assert "replicas" not in services["dispatcher"].get("deploy", {})  # --scale decides
    assert "ports" not in services["dispatcher"]  # so it can scale on one host


def test_compose_needs_the_encryption_key() -> None:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    with pytest.raises(AssertionError, match="OUTBOX_ENCRYPTION_KEY"):
        _interpolate(raw, {})


def test_prometheus_scrapes_what_compose_serves(compose: dict[str, Any]) -> None:
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    api = compose["services"]["api"]
    api_metrics = api["environment"]["OUTBOX_METRICS_PORT"]
    # The public port serves no metrics; the metrics port is not published.
    assert api_metrics != api["command"][-1]
    assert not any(str(p).endswith(f":{api_metrics}") for p in api["ports"])
    assert jobs["outbox-api"]["static_configs"][0]["targets"] == [f"api:{api_metrics}"]
    dispatcher = compose["services"]["dispatcher"]["environment"]
    (sd,) = jobs["outbox-dispatcher"]["dns_sd_configs"]
    assert sd["names"] == ["dispatcher"] and str(sd["port"]) == dispatcher["OUTBOX_METRICS_PORT"]
    # Inside a container, loopback is unreachable to Prometheus: bind the network.
    for env in (api["environment"], dispatcher):
        assert env["OUTBOX_METRICS_HOST"] == "0.0.0.0"


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from requirements.lock."""
    text = (REPO / "requirements.lock").read_text()
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        m = re.match(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", block)
        if m:
            name = canonicalize_name(m.group(1).split("[")[0])
            pins[name] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_the_lock_pins_every_dependency_in_range_and_by_hash() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _lock()
    assert pins, "requirements.lock is empty"
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock"
        version, _ = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock has {req.name} {version}, outside {req.specifier}")
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash"


def test_the_image_installs_the_lock_with_hashes_then_the_package_alone() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    installs = [line for line in lines if "pip install" in line]
    assert len(installs) == 2
    assert "--require-hashes -r requirements.lock" in installs[0]
    assert installs[1].endswith("--no-deps .")
    assert lines.index("COPY requirements.lock ./") < lines.index(
        next(line for line in lines if line.startswith("COPY outbox")))
    assert Path(REPO / "requirements.lock").stat().st_size > 0
