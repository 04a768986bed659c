"""docker-compose.yml is checked here, since this machine has no compose plugin to ask."""

from pathlib import Path
from typing import Any

import yaml

from handoff_devenv.kafka import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_the_same_kafka_and_postgres_as_the_dev_environment() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"] == "postgres:15"


def test_every_service_is_built_from_the_repo_and_waits_for_its_dependencies() -> None:
    compose = _compose()
    services = compose["services"]
    for name in ("referral", "matching", "notify"):
        service = services[name]
        assert service["build"] == "."
        assert service["command"][0] == name
        assert set(service["depends_on"]) == {"kafka", "postgres"}
        assert "DATABASE_URL" in service["environment"]
        for dependency in service["depends_on"]:
            assert "healthcheck" in services[dependency], dependency
    assert (ROOT / "Dockerfile").exists()


def test_prometheus_scrapes_every_service_port_the_compose_file_publishes() -> None:
    services = _compose()["services"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    for name in ("referral", "matching", "notify"):
        port = services[name]["ports"][0].split(":")[1]
        assert f"{name}:{port}" in targets
