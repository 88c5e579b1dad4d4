"""Static checks of compose.yaml, the Dockerfile and .dockerignore.

Pure logic, no Docker and no servers: the files are parsed and compared with the
settings tree and the generated-credentials list, so that the compose stack and
the code cannot drift apart unnoticed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from learntrack.config import ENV_NESTED_DELIMITER, ENV_PREFIX, Settings, get_settings
from learntrack.stack.credentials import GENERATED

GRAFANA_PASSWORD = "LEARNTRACK_METRICS__GRAFANA_PASSWORD"

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

STORES = ("kafka", "mongo", "redis", "neo4j", "cassandra")
APP_SERVICES = ("learntrack-stream", "learntrack-api")
API_KEYS = ("LEARNTRACK_API__READ_KEY", "LEARNTRACK_API__WRITE_KEY")
EXPECTED_SERVICES = {
    *STORES,
    "spark-master",
    "spark-worker",
    "grafana",
    "prometheus",
    *APP_SERVICES,
}
LOCALHOST = "127.0.0.1"

# ${NAME}, ${NAME:?msg}, ${NAME:-default}...; "$${...}" is an escaped literal.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}")


# -- helpers ------------------------------------------------------------------
def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "compose.yaml must be a mapping"
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "compose.yaml has no services mapping"
    return found


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML tree, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def interpolated(node: Any) -> set[str]:
    """Names of the variables compose interpolates into ``node``."""
    return {m["name"] for s in strings(node) for m in INTERPOLATION.finditer(s)}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of every published port."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            host_ip = str(entry.get("host_ip", ""))
            host, target = int(entry["published"]), int(entry["target"])
        else:
            # HOST_IP:HOST:CONTAINER, HOST:CONTAINER (all interfaces) or CONTAINER
            # (all interfaces, random host port).
            parts = str(entry).split("/")[0].rsplit(":", 2)
            host_ip = parts[0] if len(parts) == 3 else ""  # noqa: PLR2004
            host = int(parts[-2]) if len(parts) > 1 else 0
            target = int(parts[-1])
        result.append((host_ip, host, target))
    return result


def named_volumes(service: dict[str, Any]) -> list[str]:
    names = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume" and entry.get("source"):
                names.append(str(entry["source"]))
            continue
        source = str(entry).split(":", 1)[0]
        if ":" in str(entry) and not source.startswith((".", "/", "~", "$")):
            names.append(source)
    return names


def image_tag(image: str) -> str | None:
    """The tag of an image reference (registry ports and digests handled)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def settings_field(settings: Settings, variable: str) -> Any:
    """The settings value behind ``LEARNTRACK_A__B``; fails if there is none."""
    assert variable.startswith(ENV_PREFIX), variable
    value: Any = settings
    for part in variable.removeprefix(ENV_PREFIX).lower().split(ENV_NESTED_DELIMITER):
        assert isinstance(value, BaseModel), f"{variable}: {part!r} is not nested"
        assert part in type(value).model_fields, f"{variable}: no field {part!r}"
        value = getattr(value, part)
    return value


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # also inside continuations
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        pairs.append((keyword.upper(), args.strip()))
    return pairs


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No .env, no credentials file, no LEARNTRACK_ variables from the caller."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(f"{ENV_PREFIX}DATA_DIR", str(tmp_path / "d"))
    return monkeypatch


@pytest.fixture
def defaults(clean_env: pytest.MonkeyPatch) -> Settings:
    return get_settings()


# -- services and images --------------------------------------------------------
def test_expected_services_exist() -> None:
    missing = EXPECTED_SERVICES - set(services(load_compose()))
    assert not missing, f"compose.yaml lacks services: {sorted(missing)}"


def test_every_image_is_pinned_to_an_exact_version() -> None:
    problems = []
    for name, service in services(load_compose()).items():
        image = service.get("image")
        if not isinstance(image, str):
            problems.append(f"{name}: no image")
            continue
        tag = image_tag(image)
        if "$" in image:
            problems.append(f"{name}: {image} is interpolated")
        elif tag is None or tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"{name}: {image} is not pinned to a version")
    assert not problems, "\n".join(problems)


def test_image_tag_parsing_rejects_floating_tags() -> None:
    # The helper the pinning test relies on must see these as unpinned.
    assert image_tag("redis") is None
    assert image_tag("localhost:5000/redis") is None
    assert image_tag("grafana/grafana-oss:latest") == "latest"
    assert image_tag("apache/kafka:4.1.1@sha256:" + "0" * 64) == "4.1.1"


def test_app_services_build_the_project_image() -> None:
    version = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"]
    compose = services(load_compose())
    for name in APP_SERVICES:
        service = compose[name]
        build = service.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context == ".", f"{name} must build the Dockerfile of the repo"
        assert service["image"] == f"learntrack:{version}"
        assert service.get("profiles") == ["app"], f"{name} must be opt-in"
    assert compose["learntrack-stream"]["command"] == ["stream"]
    assert compose["learntrack-api"]["command"][:3] == ["api", "--host", "0.0.0.0"]  # noqa: S104


def test_api_service_listens_where_it_is_published(defaults: Settings) -> None:
    api = services(load_compose())["learntrack-api"]
    command = api["command"]
    # `learntrack api` serves on settings.api.port unless --port says otherwise.
    port = int(command[command.index("--port") + 1]) if "--port" in command else None
    assert (port or defaults.api.port) == defaults.api.port
    assert published(api) == [(LOCALHOST, defaults.api.port, defaults.api.port)]
    probe = " ".join(api["healthcheck"]["test"])
    assert f"http://127.0.0.1:{defaults.api.port}/" in probe
    assert set(API_KEYS) <= set(GENERATED)
    assert interpolated(environment(api)) == {
        *API_KEYS,
        "LEARNTRACK_MONGO__PASSWORD",
        "LEARNTRACK_REDIS__PASSWORD",
        "LEARNTRACK_GRAPH__PASSWORD",
        "LEARNTRACK_CASSANDRA__PASSWORD",
    }


def test_stores_start_without_a_profile_and_gate_the_app() -> None:
    compose = services(load_compose())
    for name in STORES:
        assert not compose[name].get("profiles"), f"{name} must start by default"
    for name in APP_SERVICES:
        depends = compose[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must give conditions"
        for store in STORES:
            assert depends.get(store, {}).get("condition") == "service_healthy", (
                f"{name} must wait for a healthy {store}"
            )


def test_every_service_has_a_healthcheck_and_restarts() -> None:
    problems = []
    for name, service in services(load_compose()).items():
        check = service.get("healthcheck") or {}
        test = check.get("test")
        if check.get("disable") or not test or test in (["NONE"], "NONE"):
            problems.append(f"{name}: no healthcheck")
        if service.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart is {service.get('restart')!r}")
    assert not problems, "\n".join(problems)


def test_named_volumes_are_declared_and_stores_persist_data() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services(compose).items():
        volumes = named_volumes(service)
        undeclared = set(volumes) - declared
        assert not undeclared, f"{name} uses undeclared volumes {sorted(undeclared)}"
        used.update(volumes)
        if name in STORES:
            assert volumes, f"{name} keeps its data in no named volume"
    assert declared == used, f"declared but unused: {sorted(declared - used)}"


def test_named_volume_parsing() -> None:
    service = {"volumes": ["data:/d", "./x:/x:ro", "/abs:/abs", {"source": "v"}]}
    assert named_volumes(service) == ["data", "v"]


# -- ports ----------------------------------------------------------------------
def test_every_published_port_binds_localhost_only() -> None:
    problems = [
        f"{name}: {host_ip or '0.0.0.0'}:{host}->{target}"  # noqa: S104
        for name, service in services(load_compose()).items()
        for host_ip, host, target in published(service)
        if host_ip != LOCALHOST
    ]
    assert not problems, "ports not bound to 127.0.0.1:\n" + "\n".join(problems)


def test_port_parsing_sees_unbound_ports() -> None:
    # The helper the localhost test relies on must report these as unbound.
    assert published({"ports": ["9092:9092"]}) == [("", 9092, 9092)]
    assert published({"ports": ["9092"]}) == [("", 0, 9092)]
    assert published({"ports": ["0.0.0.0:1:2"]}) == [("0.0.0.0", 1, 2)]  # noqa: S104
    assert published({"ports": ["127.0.0.1:1:2/tcp"]}) == [(LOCALHOST, 1, 2)]
    assert published({"ports": [{"target": 2, "published": 1}]}) == [("", 1, 2)]


def test_published_ports_are_the_settings_defaults(defaults: Settings) -> None:
    expected = {
        "kafka": [defaults.kafka.port],
        "mongo": [defaults.mongo.port],
        "redis": [defaults.redis.port],
        "neo4j": [defaults.graph.bolt_port],
        "cassandra": [defaults.cassandra.port],
        "spark-master": [defaults.spark.master_port, defaults.spark.master_webui_port],
        "spark-worker": [defaults.spark.worker_webui_port],
        "learntrack-api": [defaults.api.port],
    }
    compose = services(load_compose())
    for name, ports in expected.items():
        mapped = {(host, target) for _, host, target in published(compose[name])}
        for port in ports:
            # Same number inside and out: advertised addresses and CLI flags
            # (Kafka's localhost:9092, Spark's --port) name the container port.
            assert (port, port) in mapped, f"{name} must publish {port}:{port}"


def test_kafka_advertises_the_host_and_internal_listeners(defaults: Settings) -> None:
    compose = services(load_compose())
    advertised = environment(compose["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    listeners = dict(item.split("://", 1)[::-1] for item in advertised.split(","))
    assert f"localhost:{defaults.kafka.port}" in listeners
    for name in APP_SERVICES:
        bootstrap = environment(compose[name])["LEARNTRACK_KAFKA__BOOTSTRAP_SERVERS"]
        assert bootstrap in listeners, f"{name} bootstraps from {bootstrap}"
        assert bootstrap != f"localhost:{defaults.kafka.port}"


def test_spark_worker_registers_with_the_master(defaults: Settings) -> None:
    compose = services(load_compose())
    master = compose["spark-master"]["command"]
    worker = compose["spark-worker"]["command"]
    assert master[master.index("--port") + 1] == str(defaults.spark.master_port)
    assert master[master.index("--webui-port") + 1] == str(
        defaults.spark.master_webui_port
    )
    assert worker[worker.index("--webui-port") + 1] == str(
        defaults.spark.worker_webui_port
    )
    assert f"spark://spark-master:{defaults.spark.master_port}" in worker


# -- credentials and settings -----------------------------------------------------
def test_interpolation_finds_only_unescaped_variables() -> None:
    node = {"a": "${X:?m}", "b": ["$${Y}", "x${Z}y"], "${K}": 1}
    assert interpolated(node) == {"X", "Z", "K"}


def test_compose_references_exactly_the_generated_credentials(
    defaults: Settings,
) -> None:
    referenced = {
        name for name in interpolated(load_compose()) if name.startswith(ENV_PREFIX)
    }
    assert referenced == set(GENERATED)
    for name in GENERATED:
        # LEARNTRACK_MONGO__PASSWORD -> settings.mongo.password must exist.
        settings_field(defaults, name)
    others = interpolated(load_compose()) - set(GENERATED)
    assert not others, f"compose needs variables nobody generates: {sorted(others)}"


def test_credentials_are_required_not_defaulted() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for match in INTERPOLATION.finditer(text):
        assert match.group(0).startswith(f"${{{match['name']}:?"), (
            f"{match.group(0)} must fail when the credentials file is not passed"
        )


def test_servers_use_the_credentials_and_names_of_the_settings(
    defaults: Settings,
) -> None:
    compose = services(load_compose())
    mongo = environment(compose["mongo"])
    assert mongo["MONGO_INITDB_ROOT_USERNAME"] == defaults.mongo.username
    assert interpolated(mongo["MONGO_INITDB_ROOT_PASSWORD"]) == {
        "LEARNTRACK_MONGO__PASSWORD"
    }
    assert defaults.mongo.auth_source == "admin"
    command = compose["mongo"]["command"]
    assert command[command.index("--replSet") + 1] == defaults.mongo.replica_set
    assert "--keyFile" in command
    check = " ".join(compose["mongo"]["healthcheck"]["test"])
    assert f"_id: '{defaults.mongo.replica_set}'" in check

    redis = compose["redis"]["command"]
    assert interpolated(redis[redis.index("--requirepass") + 1]) == {
        "LEARNTRACK_REDIS__PASSWORD"
    }
    assert redis[redis.index("--appendonly") + 1] == "yes"

    auth = environment(compose["neo4j"])["NEO4J_AUTH"]
    assert auth.startswith("neo4j/")
    assert interpolated(auth) == {"LEARNTRACK_GRAPH__PASSWORD"}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_builds_the_intended_settings(
    name: str, clean_env: pytest.MonkeyPatch, defaults: Settings
) -> None:
    compose = services(load_compose())
    env = environment(compose[name])
    for variable, value in env.items():
        # extra="ignore" would silently drop a misspelt variable.
        settings_field(defaults, variable)
        secret = INTERPOLATION.sub(lambda m: f"secret-{m['name']}", value)
        clean_env.setenv(variable, secret)
    settings = get_settings()

    assert settings.kafka.bootstrap == "kafka:19092"
    for host in (
        settings.mongo.host,
        settings.redis.host,
        settings.graph.host,
        *settings.cassandra.contact_points,
    ):
        assert host in compose, f"{name} points at {host!r}, not a service"
    assert settings.mongo.host == "mongo"
    assert settings.redis.host == "redis"
    assert settings.graph.host == "neo4j"
    assert settings.cassandra.contact_points == ["cassandra"]
    assert settings.graph.username == "neo4j"
    assert settings.graph.database == "neo4j"
    assert settings.cassandra.protocol_version == 5  # noqa: PLR2004
    for variable in GENERATED:
        value = settings_field(settings, variable)
        if variable in API_KEYS and name != "learntrack-api":
            # Least privilege: only the query service holds the API keys.
            assert value is None, f"{name} must not get {variable}"
            continue
        if variable == GRAFANA_PASSWORD and name != "learntrack-stream":
            # Only the stream pushes to Grafana Live.
            assert value is None, f"{name} must not get {variable}"
            continue
        assert value is not None, f"{name} does not pass {variable}"
        assert value.get_secret_value() == f"secret-{variable}"
    uri = settings.mongo.connection_uri()
    assert "@mongo:27017/" in uri
    assert "directConnection=true" in uri


# -- Dockerfile --------------------------------------------------------------------
def test_dockerfile_base_image_is_pinned() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms, "Dockerfile has no FROM"
    stages: set[str] = set()
    for args in froms:
        parts = args.split()
        image = parts[0]
        if image not in stages:
            assert re.fullmatch(
                r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image
            ), f"base image {image} is not an exact python:3.11.N-slim-bookworm"
        if len(parts) == 3 and parts[1].upper() == "AS":  # noqa: PLR2004
            stages.add(parts[2])


def test_dockerfile_installs_the_project_without_the_local_extra() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|;|$)", runs)
    everything = " ".join(args for _, args in instructions)  # comments excluded
    assert not re.search(r"\[[^\]]*\blocal\b", everything), "the [local] extra"
    assert not re.search(r"pip install[^;&]*\.\[", runs), "no extras in the image"
    assert "openjdk-17-jre-headless" in runs
    copies = " ".join(args for keyword, args in instructions if keyword == "COPY")
    assert "pyproject.toml" in copies
    assert "learntrack/" in copies


def test_dockerfile_runs_the_cli_as_an_unprivileged_user() -> None:
    instructions = dockerfile_instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    entrypoints = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints[-1] == '["learntrack"]'


def test_stream_checkpoints_live_in_a_volume_at_the_image_data_dir() -> None:
    envs = " ".join(
        args for keyword, args in dockerfile_instructions() if keyword == "ENV"
    )
    match = re.search(r"LEARNTRACK_DATA_DIR=(\S+)", envs)
    assert match, "the image must set LEARNTRACK_DATA_DIR"
    stream = services(load_compose())["learntrack-stream"]
    targets = [str(v).split(":")[1] for v in stream.get("volumes") or []]
    assert match.group(1) in targets


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".git", ".learntrack", ".learntrack*", ".env"):
        assert required in patterns, f".dockerignore must exclude {required}"
    for needed in ("pyproject.toml", "learntrack", "learntrack/"):
        assert needed not in patterns, f".dockerignore must keep {needed}"


def test_grafana_dashboard_provider_reads_the_mounted_folder() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    dashboards_mount = next(m for m in mounts if m.startswith("./grafana/dashboards:"))
    target = dashboards_mount.split(":")[1]
    provider_file = ROOT / "grafana/provisioning/dashboards/learntrack.yaml"
    provider = yaml.safe_load(provider_file.read_text())
    assert provider["providers"][0]["options"]["path"] == target
    assert (ROOT / "grafana/dashboards").is_dir()


# -- dashboards: Grafana, its data sources, Prometheus ---------------------------------
GRAFANA_DATASOURCES = ROOT / "grafana/provisioning/datasources/learntrack.yaml"


def mounted_file(service: dict[str, Any], target: str) -> Path:
    """The repository file bind-mounted at ``target`` (which must exist)."""
    for entry in service.get("volumes") or []:
        source, _, rest = str(entry).partition(":")
        if rest.split(":")[0] == target and source.startswith("./"):
            path = ROOT / source
            assert path.exists(), f"{source} is mounted but missing"
            return path
    raise AssertionError(f"nothing is mounted at {target}")


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(GRAFANA_DATASOURCES.read_text(encoding="utf-8"))
    return {d["uid"]: d for d in data["datasources"]}


def test_grafana_installs_exactly_the_infinity_plugin_pinned() -> None:
    plugins = environment(services(load_compose())["grafana"])["GF_INSTALL_PLUGINS"]
    entries = [p.strip().split() for p in plugins.split(",")]
    assert [e[0] for e in entries] == ["yesoreyeram-infinity-datasource"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", entries[0][1]), "pin the plugin version"


def test_grafana_mounts_the_datasources_and_the_generated_dashboard() -> None:
    grafana = services(load_compose())["grafana"]
    provisioning = mounted_file(grafana, "/etc/grafana/provisioning")
    assert (provisioning / "datasources" / GRAFANA_DATASOURCES.name).is_file()
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder = mounted_file(grafana, str(Path(home).parent))
    assert (folder / Path(home).name).is_file(), "the home dashboard must exist"


def test_infinity_reads_the_api_service_with_the_read_key_only(
    defaults: Settings,
) -> None:
    from learntrack.api.app import API_KEY_HEADER

    compose = services(load_compose())
    api = provisioned_datasources()["learntrack-api"]
    assert api["type"] == "yesoreyeram-infinity-datasource"
    assert api["url"] == f"http://learntrack-api:{defaults.api.port}"
    assert "learntrack-api" in compose
    # The key goes in the API's header, and only to the API.
    assert api["jsonData"]["auth_method"] == "apiKey"
    assert api["jsonData"]["apiKeyKey"] == API_KEY_HEADER
    assert api["jsonData"]["apiKeyType"] == "header"
    assert api["jsonData"]["allowedHosts"] == [api["url"]]
    assert api["secureJsonData"]["apiKeyValue"] == "$LEARNTRACK_API__READ_KEY"
    # Grafana's environment holds the read key from the credentials file, and
    # never the write key.
    grafana = environment(compose["grafana"])
    assert interpolated(grafana["LEARNTRACK_API__READ_KEY"]) == {
        "LEARNTRACK_API__READ_KEY"
    }
    assert interpolated(grafana) == {
        "LEARNTRACK_API__READ_KEY",
        "LEARNTRACK_METRICS__GRAFANA_PASSWORD",
    }
    assert interpolated(grafana["GF_SECURITY_ADMIN_PASSWORD"]) == {
        "LEARNTRACK_METRICS__GRAFANA_PASSWORD"
    }


def test_prometheus_scrapes_the_api_metrics_route(defaults: Settings) -> None:
    from fastapi.routing import iter_route_contexts

    from learntrack.api.app import create_app

    compose = services(load_compose())
    prometheus = compose["prometheus"]
    assert not prometheus.get("profiles"), "Prometheus starts with the stack"
    config = yaml.safe_load(
        mounted_file(prometheus, "/etc/prometheus/prometheus.yml").read_text()
    )
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [
        {"targets": [f"learntrack-api:{defaults.api.port}"]}
    ]
    app = create_app(get_settings(api={"read_key": "r" * 20, "write_key": "w" * 20}))
    routes = {route.path for route in iter_route_contexts(app.routes)}
    assert job["metrics_path"] in routes
    # Grafana's Prometheus data source is this service, on its published port.
    (_ip, _host, target), *_ = published(prometheus)
    assert provisioned_datasources()["learntrack-prometheus"]["url"] == (
        f"http://prometheus:{target}"
    )


def test_stream_pushes_live_metrics_to_the_grafana_service() -> None:
    compose = services(load_compose())
    env = environment(compose["learntrack-stream"])
    (_ip, _host, target), *_ = published(compose["grafana"])
    assert env["LEARNTRACK_METRICS__GRAFANA_URL"] == f"http://grafana:{target}"
    # Only the stream pushes; the API never needs Grafana.
    assert "LEARNTRACK_METRICS__GRAFANA_URL" not in environment(
        compose["learntrack-api"]
    )
