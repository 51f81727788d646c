"""The deployment files: docker-compose.yml, the Dockerfile, requirements.lock,
the systemd units and the Kubernetes CronJob under deploy/.

No Docker engine (nor systemd, nor Kubernetes) runs on these machines, so
the files are read as data: every service that runs our image runs a real
`outbox` command with flags that command takes and settings our Settings
accept, in the right order (the migration first). The lock pins every
runtime dependency, each version inside pyproject's range, each file by
hash, and the image installs from it. The image's health check asks the
process (a heartbeat), not the database.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


def assert_real_command(name: str, command: list[str]) -> None:
    """`command` is `outbox ...` with a subcommand and flags that exist."""
    assert command[0] == "outbox", name
    words = [w for w in command[1:] if not w.startswith("-")]
    flags = [w for w in command[1:] if w.startswith("--")]
    # The subcommand words come before any value: `db upgrade`, `serve`.
    path = words[: 2 if command[1] in ("db", "channel") else 1]
    help_ = subprocess.run([sys.executable, "-m", "outbox", *path, "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0, (name, help_.stderr)
    for flag in flags:
        assert flag in help_.stdout, f"{name}: `outbox {' '.join(path)}` takes no {flag}"


def assert_known_settings(name: str, env: dict[str, str]) -> None:
    """Every OUTBOX_ variable in `env` is a setting, and the values are valid."""
    from outbox.settings import ENV_PREFIX, Settings

    known = {ENV_PREFIX + f.upper() for f in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    assert unknown == [], f"{name}: settings that don't exist: {unknown}"
    fields = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if v != ""}
    Settings(_env_file=None, **fields)  # type: ignore[call-arg]  # raises if invalid


@pytest.mark.slow
def test_every_service_of_ours_runs_a_real_command_with_flags_it_takes(
        compose: dict[str, Any]) -> None:
    ours = _ours(compose)
    assert set(ours) == {"migrate", "api", "dispatcher", "simulator"}
    for name, svc in ours.items():
        assert_real_command(name, svc["command"])


def test_every_service_of_ours_has_settings_we_accept(compose: dict[str, Any]) -> None:
    for name, svc in _ours(compose).items():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        assert_known_settings(name, env)
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


def _dry_run_doc() -> tuple[list[dict[str, str]], str, list[str]]:
    """docs/docker.md's dry run: the variables each of its `docker compose
    --profile dry-run up` lines sets, and its `outbox channel add` command
    with the base URL it gives."""
    text = (REPO / "docs" / "docker.md").read_text().replace("\\\n", " ")
    ups = [line for line in text.splitlines() if "docker compose --profile dry-run up" in line]
    envs = [{k: v for k, v in re.findall(r"(\w+)=(\S+)", up.split("docker compose")[0])
             if v != "..."} for up in ups]
    (add,) = [line for line in text.splitlines() if "outbox channel add" in line]
    command = shlex.split(add[add.index("outbox channel add"):])
    return envs, command[command.index("--base-url") + 1], command


def test_the_dry_run_base_url_passes_with_the_documented_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels of the dry run point at the simulator over plain http: the
    `api` service (where channels are added) accepts that with the
    environment the documented commands give, and only then."""
    from outbox.admin.channels import check_base_url
    from outbox.errors import InvalidInput
    from outbox.settings import ENV_PREFIX, Settings

    monkeypatch.delenv("OUTBOX_ALLOW_HTTP_BASE_URL", raising=False)
    envs, base_url, add = _dry_run_doc()
    compose_text = (REPO / "docker-compose.yml").read_text()
    raw = yaml.safe_load(compose_text)
    assert f"--base-url {base_url}" in compose_text  # its header says the same
    simulator = raw["services"]["simulator"]["command"]
    assert base_url == f"http://simulator:{simulator[simulator.index('--port') + 1]}"
    assert_real_command("docs/docker.md", add)

    def api_settings(deploy_env: dict[str, str]) -> Settings:
        api = _interpolate(raw, deploy_env)["services"]["api"]["environment"]
        fields = {k.removeprefix(ENV_PREFIX).lower(): str(v) for k, v in api.items()
                  if k.startswith(ENV_PREFIX) and v != ""}
        return Settings(_env_file=None, **fields)  # type: ignore[call-arg]

    assert envs
    for env in envs:
        dry_run = api_settings(DEPLOY_ENV | env)
        assert check_base_url(base_url, allow_http=dry_run.allow_http_base_url) == base_url
    production = api_settings(DEPLOY_ENV)
    with pytest.raises(InvalidInput, match="OUTBOX_ALLOW_HTTP_BASE_URL"):
        check_base_url(base_url, allow_http=production.allow_http_base_url)


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


# The least version of each dependency with no published advisory that
# concerns us, and the advisory (the latest fixed) its floor avoids.
# pyproject's comment on the dependency names the same advisory.
MIN_SAFE = {
    "aiohttp": ("3.14.3", "GHSA-cq5v-8q36-5273"),  # C response parser: out-of-bounds read
    "cryptography": ("50.0.0", "GHSA-g6cj-pr64-35w5"),  # PKCS#7 decryption oracle
    "starlette": ("1.3.1", "CVE-2026-54283"),  # urlencoded form limits ignored (DoS)
    "tqdm": ("4.66.3", "GHSA-g7vv-2v7x-gj9p"),  # CLI arguments passed to eval
    "h11": ("0.16.0", "GHSA-vqfr-h8mv-ghfj"),  # chunked-body request smuggling
    "jinja2": ("3.1.6", "GHSA-cpwx-vrp4-4pq7"),  # sandbox breakout through |attr
}


def _pyproject_dependencies() -> dict[str, tuple[Requirement, str]]:
    """name -> (requirement, the comment lines above it and on its line)."""
    text = (REPO / "pyproject.toml").read_text()
    block = text[text.index("dependencies = ["):]
    block = block[:block.index("\n]")]
    out: dict[str, tuple[Requirement, str]] = {}
    comment: list[str] = []
    for line in block.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        m = re.match(r'"([^"]+)",\s*(#.*)?$', stripped)
        if m:
            req = Requirement(m.group(1))
            out[canonicalize_name(req.name)] = (req, " ".join([*comment, m.group(2) or ""]))
        comment = []
    return out


def _floor(req: Requirement) -> Version | None:
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


@pytest.mark.parametrize("name", sorted(MIN_SAFE))
def test_dependency_floors_and_pins_stay_above_the_advisories(name: str) -> None:
    safe, advisory = MIN_SAFE[name]
    deps = _pyproject_dependencies()
    assert name in deps, f"{name} is no longer a dependency: drop it from MIN_SAFE"
    req, comment = deps[name]
    floor = _floor(req)
    assert floor is not None and floor >= Version(safe), (
        f"pyproject allows {req}: below {safe}, which fixes {advisory}")
    assert advisory in comment, f"pyproject's comment on {name} should name {advisory}"
    version, _ = _lock()[name]
    assert Version(version) >= Version(safe), (
        f"requirements.lock pins {name}=={version}: below {safe}, which fixes {advisory}")


def test_the_image_installs_the_lock_with_hashes_then_the_package_alone() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    installs = [line for line in lines if "pip install" in line]
    assert len(installs) == 2
    assert "--require-hashes -r requirements.lock" in installs[0]
    assert installs[1].endswith("--no-deps .")
    assert lines.index("COPY requirements.lock ./") < lines.index(
        next(line for line in lines if line.startswith("COPY outbox")))
    assert Path(REPO / "requirements.lock").stat().st_size > 0


# --- health check ------------------------------------------------------------------------------


def _dockerfile_instruction(name: str) -> str:
    """One instruction of the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return line


def test_the_image_checks_the_process_not_the_database() -> None:
    check = _dockerfile_instruction("HEALTHCHECK")
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command == ["outbox", "alive"]
    assert "db" not in command  # a database outage must not restart every container
    assert_real_command("HEALTHCHECK", command)
    env = dict(re.findall(r"(\w+)=(\S+)", _dockerfile_instruction("ENV")))
    assert env["OUTBOX_HEARTBEAT_FILE"].startswith("/tmp/")  # writable by the image's user
    assert_known_settings("Dockerfile", {k: v for k, v in env.items() if k.startswith("OUTBOX_")})


def test_one_shot_services_do_not_run_the_health_check(compose: dict[str, Any]) -> None:
    """They write no heartbeat: the check would call them unhealthy."""
    for name in ("migrate", "simulator"):
        assert compose["services"][name]["healthcheck"] == {"disable": True}
    for name in ("api", "dispatcher"):  # the image's check applies
        assert "healthcheck" not in compose["services"][name]


# --- systemd ---------------------------------------------------------------------------------


def _unit(name: str) -> configparser.RawConfigParser:
    # systemd allows a key more than once (Environment=): keep the last
    # value each, and read every Environment= line separately below.
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((REPO / "deploy" / "systemd" / name).read_text())
    return unit


def _unit_environment(name: str) -> dict[str, str]:
    lines = (REPO / "deploy" / "systemd" / name).read_text().splitlines()
    return dict(line.removeprefix("Environment=").split("=", 1)
                for line in lines if line.startswith("Environment="))


@pytest.mark.parametrize(("name", "command", "stop_within"), [
    ("outbox-run.service", ["outbox", "run"], 60 + 10),  # the lease, plus a margin
    ("outbox-serve.service", ["outbox", "serve"], 30 + 10),  # the request grace
])
def test_systemd_units_run_a_real_command_and_stop_cleanly(
        name: str, command: list[str], stop_within: int) -> None:
    unit = _unit(name)
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/bin/outbox") and argv[0].startswith("/")  # systemd wants a path
    assert ["outbox", *argv[1:]] == command
    assert_real_command(name, ["outbox", *argv[1:]])
    assert_known_settings(name, _unit_environment(name))
    assert service["EnvironmentFile"].startswith("/etc/")  # secrets stay out of the unit
    assert "OUTBOX_DATABASE_URL" not in _unit_environment(name)
    assert "OUTBOX_ENCRYPTION_KEY" not in _unit_environment(name)
    assert service["KillSignal"] == "SIGTERM"  # a graceful stop, exit 0
    assert int(service["TimeoutStopSec"]) >= stop_within
    assert service["Restart"] == "on-failure"
    assert service["User"] != "root"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert _unit_environment(name)["OUTBOX_METRICS_HOST"] == "127.0.0.1"


# --- Kubernetes --------------------------------------------------------------------------------


def test_the_cronjob_runs_one_pass_a_minute_that_ends_in_time() -> None:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "dispatch-cronjob.yaml")
                                   .read_text()))
    (job,) = [d for d in docs if d and d["kind"] == "CronJob"]
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["schedule"] == "* * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"  # never two passes at once
    template = spec["jobTemplate"]["spec"]
    pod = template["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:3] == ["outbox", "dispatch", "--once"]
    assert_real_command("cronjob", command)
    max_seconds = float(command[command.index("--max-seconds") + 1])
    assert max_seconds < 60  # done before the next minute's pass is due
    assert template["activeDeadlineSeconds"] > max_seconds + 60  # the lease of the last claim
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert container["envFrom"] == [{"secretRef": {"name": "whapi-outbox"}}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
