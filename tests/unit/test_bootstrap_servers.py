"""KAFKA_BOOTSTRAP_SERVERS is a list, parsed once: what an operator pastes either works or is
refused at startup with the variable and the bad entry named."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from handoff_platform.settings import KafkaSettings, PlatformSettings, parse_bootstrap_servers


@pytest.mark.parametrize(
    ("raw", "servers"),
    [
        ("kafka-1:9092", ("kafka-1:9092",)),
        (
            "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094",
            ("127.0.0.1:9092", "127.0.0.1:9093", "127.0.0.1:9094"),
        ),
        (
            " kafka-1:9092 , kafka-2:9092,kafka-3:9092 ",
            ("kafka-1:9092", "kafka-2:9092", "kafka-3:9092"),
        ),
        ("kafka-1:9092,kafka-2:9092,", ("kafka-1:9092", "kafka-2:9092")),
        ("kafka", ("kafka:9092",)),
        ("[::1]:9093,[fd00::2]", ("[::1]:9093", "[fd00::2]:9092")),
        ("b-1.msk.us-east-1.amazonaws.com:9098", ("b-1.msk.us-east-1.amazonaws.com:9098",)),
        ("kafka-1:9092,kafka-1:9092", ("kafka-1:9092",)),
        (["kafka-1:9092", " kafka-2:9092"], ("kafka-1:9092", "kafka-2:9092")),
    ],
)
def test_a_bootstrap_list_becomes_one_host_port_entry_per_broker(
    raw: str | list[str], servers: tuple[str, ...]
) -> None:
    assert parse_bootstrap_servers(raw) == servers


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("", "is empty"),
        (" , ", "is empty"),
        ("kafka-1:9092,,kafka-2:9092", "empty entry"),
        ("kafka-1:9092,kafka-2:port", "'kafka-2:port'"),
        ("kafka-1:0", "'kafka-1:0'"),
        ("kafka-1:70000", "'kafka-1:70000'"),
        ("kafka 1:9092", "'kafka 1:9092'"),
        ("kafka-1:9092;kafka-2:9092", "'kafka-1:9092;kafka-2:9092'"),
        ("::1:9092", "'::1:9092'"),
        ("[not-v6]:9092", "'[not-v6]:9092'"),
    ],
)
def test_a_malformed_list_is_refused_naming_the_variable_and_the_entry(
    raw: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", raw)
    monkeypatch.setenv("DATABASE_URL", "postgresql://handoff@127.0.0.1/handoff")
    for settings in (KafkaSettings, PlatformSettings):
        with pytest.raises(ValidationError) as refused:
            settings()
        message = str(refused.value)
        assert "KAFKA_BOOTSTRAP_SERVERS" in message
        assert named in message


def test_services_read_the_whole_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092, kafka-2:9092, kafka-3:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://handoff@127.0.0.1/handoff")
    assert PlatformSettings().kafka_bootstrap_servers == (
        "kafka-1:9092",
        "kafka-2:9092",
        "kafka-3:9092",
    )


def test_every_service_in_docker_compose_is_given_a_valid_bootstrap_list() -> None:
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    for name in ("referral", "matching", "notify"):
        configured = compose["services"][name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert parse_bootstrap_servers(configured) == ("kafka:9092",), name
