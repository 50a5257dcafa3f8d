"""Static checks of docker-compose.kafka.yml and the files it mounts or builds.

There is no Docker engine on the development machines, so the stack cannot be started here; these
tests pin down the properties that matter (localhost-only ports, a pinned KRaft broker, final topic
partition counts, the worker wired to the broker and scraped by Prometheus) by reading the files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.kafka.yml"

# topic -> final partition count (the default of the env var that kafka-init passes for it).
EXPECTED_TOPICS = {
    "polku.touchpoints": 12,
    "polku.touchpoints.by-customer": 12,
    "polku.identity": 12,
    "polku.deadletter": 3,
    "polku.suppressed": 3,
    "actions.email": 6,
    "actions.sms": 6,
    "actions.push": 6,
    "actions.offer": 6,
    "actions.staff_task": 6,
    "actions.webhook": 6,
}

_DEFAULT_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}$")


def _compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


def _service(name: str) -> dict[str, Any]:
    services = _compose()["services"]
    assert name in services, f"service {name!r} missing"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as a mapping, whichever compose syntax it uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {key: value for key, value in pairs}
    return {str(key): str(value) for key, value in raw.items()}


def _resolve_default(value: str) -> str:
    """`${VAR:-default}` -> `default`; any other value is returned unchanged."""
    match = _DEFAULT_RE.match(value)
    return match.group(1) if match else value


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    assert isinstance(value, list), value
    return [str(item) for item in value]


def _command_text(service: dict[str, Any]) -> str:
    return "\n".join(_as_list(service.get("entrypoint")) + _as_list(service.get("command")))


def _bind_mount_source(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, dest = volume.get("source"), volume.get("target")
        else:
            source, dest = volume.split(":")[:2]
        if dest == target:
            assert isinstance(source, str), volume
            assert source.startswith("."), f"{source} is not a bind mount of a repository path"
            return (REPO_ROOT / source).resolve()
    raise AssertionError(f"nothing mounted at {target}")


def _listeners(value: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {'NAME': 'host:port'}."""
    result: dict[str, str] = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        result[name] = address
    return result


def test_every_published_port_binds_to_localhost() -> None:
    published = 0
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert published >= 3  # kafka host listener, prometheus, grafana


def test_kafka_image_is_a_pinned_apache_kafka() -> None:
    image = _service("kafka")["image"]
    repository, _, tag = image.partition(":")
    assert repository == "apache/kafka"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"kafka image tag must be a pinned version: {image}"


def test_kafka_is_a_combined_kraft_node_with_a_healthcheck() -> None:
    kafka = _service("kafka")
    env = _env(kafka)
    roles = {role.strip() for role in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    controller = _listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka{controller}"
    assert _resolve_default(env["CLUSTER_ID"])
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    assert any(
        isinstance(v, str) and v.split(":")[1] == env["KAFKA_LOG_DIRS"]
        for v in kafka.get("volumes", [])
    ), "the kafka log dir must be on a volume"


def test_auto_topic_creation_is_disabled() -> None:
    assert _env(_service("kafka"))["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"


def test_kafka_init_creates_every_topic_with_its_final_partition_count() -> None:
    init = _service("kafka-init")
    assert init["image"] == _service("kafka")["image"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    text = _command_text(init)
    assert "--if-not-exists" in text
    env = _env(init)
    assert _resolve_default(env["REPLICATION_FACTOR"]) == "1"
    created = dict(re.findall(r"^\s*create\s+(\S+)\s+\"\$\$(\w+)\"", text, flags=re.MULTILINE))
    assert set(created) == set(EXPECTED_TOPICS)
    for topic, partitions in EXPECTED_TOPICS.items():
        assert re.search(rf"(?<![\w.]){re.escape(topic)}(?![\w.])", text), topic
        assert int(_resolve_default(env[created[topic]])) == partitions, topic


def test_worker_bootstrap_is_the_advertised_internal_listener() -> None:
    kafka_env = _env(_service("kafka"))
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    bootstrap = _env(_service("worker"))["POLKU_KAFKA_BOOTSTRAP"]
    for server in bootstrap.split(","):
        names = [name for name, address in advertised.items() if address == server]
        assert names, f"{server} is not an advertised listener of kafka: {advertised}"
        host = server.rpartition(":")[0]
        assert host in {"kafka", _service("kafka").get("hostname")}, server
        assert names[0] == kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]


def test_worker_runs_polku_worker_after_topics_exist() -> None:
    worker = _service("worker")
    assert _command_text(worker).split() == ["polku", "worker"]
    assert worker["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert not worker.get("ports"), "the worker's metrics port must not be published"
    env = _env(worker)
    assert env["POLKU_DATA_DIR"] == "/var/lib/polku"
    assert any(str(v).split(":")[1] == env["POLKU_DATA_DIR"] for v in worker["volumes"])


def test_worker_dockerfile_exists() -> None:
    build = _service("worker")["build"]
    dockerfile = (REPO_ROOT / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile.is_file(), dockerfile
    text = dockerfile.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim-bookworm\b", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["polku"]' in text
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users, "the image must set a USER"
    assert users[-1].split(":")[0] not in {"root", "0"}, "must run as non-root"


def test_prometheus_scrapes_the_worker_metrics_port() -> None:
    config_path = _bind_mount_source(_service("prometheus"), "/etc/prometheus/prometheus.yml")
    assert config_path.is_file(), config_path
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    port = _env(_service("worker"))["POLKU_METRICS_PORT"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [
        target
        for static in jobs["polku-worker"].get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"worker:{port}" in targets


def test_grafana_provisions_the_prometheus_datasource() -> None:
    provisioning = _bind_mount_source(_service("grafana"), "/etc/grafana/provisioning")
    datasource_file = provisioning / "datasources" / "prometheus.yml"
    assert datasource_file.is_file(), datasource_file
    datasources = yaml.safe_load(datasource_file.read_text(encoding="utf-8"))["datasources"]
    default = [ds for ds in datasources if ds.get("isDefault")]
    assert len(default) == 1
    assert default[0]["type"] == "prometheus"
    assert default[0]["url"] == "http://prometheus:9090"


def test_worker_partitions_match_the_touchpoints_topic() -> None:
    # the worker refuses to start when POLKU_PARTITIONS differs from the topic's partition count
    worker_env = _env(_service("worker"))
    init_env = _env(_service("kafka-init"))
    assert _resolve_default(worker_env["POLKU_PARTITIONS"]) == _resolve_default(
        init_env["TOUCHPOINTS_PARTITIONS"]
    )


def test_compose_topics_are_the_ones_the_worker_uses() -> None:
    from streams import Settings, polku_topics

    settings = Settings(kafka_bootstrap="kafka:9092")
    assert set(polku_topics(settings)) == set(EXPECTED_TOPICS)


def test_prometheus_loads_the_alert_rules_it_mounts() -> None:
    prometheus = _service("prometheus")
    config_path = _bind_mount_source(prometheus, "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    rules = _bind_mount_source(prometheus, "/etc/prometheus/rules")
    assert rules == (REPO_ROOT / "deploy" / "prometheus" / "rules").resolve()
    assert config["rule_files"] == ["rules/*.yml"]  # relative to /etc/prometheus/prometheus.yml
    assert sorted(rules.glob("*.yml")), "no rule file to load"


def test_grafana_provisions_the_dashboards_it_mounts() -> None:
    grafana = _service("grafana")
    provisioning = _bind_mount_source(grafana, "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards" / "polku.yml").read_text())
    [provider] = providers["providers"]
    dashboards = _bind_mount_source(grafana, provider["options"]["path"])
    assert dashboards == (REPO_ROOT / "deploy" / "grafana" / "dashboards").resolve()
    assert len(sorted(dashboards.glob("*.json"))) == 5


def test_the_collector_runs_polku_collector_and_is_scraped() -> None:
    collector = _service("collector")
    assert _command_text(collector).split() == ["polku", "collector"]
    assert collector["image"] == _service("worker")["image"]
    assert collector["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    env = _env(collector)
    assert env["POLKU_KAFKA_BOOTSTRAP"] == _env(_service("worker"))["POLKU_KAFKA_BOOTSTRAP"]
    assert _resolve_default(env["POLKU_COLLECTOR_API_KEYS"]), "the collector needs a key"
    port = env["POLKU_COLLECTOR_PORT"]
    assert f"127.0.0.1:{port}:{port}" in collector["ports"]
    config_path = _bind_mount_source(_service("prometheus"), "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for static in jobs["polku-collector"]["static_configs"] for t in static["targets"]]
    assert targets == [f"collector:{env['POLKU_METRICS_PORT']}"]
