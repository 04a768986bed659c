"""KAFKA_SECURITY_PROTOCOL and friends become the arguments every Kafka client is given."""

import ssl
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from handoff_platform.kafka import client_options
from handoff_platform.settings import KafkaSettings, configuration_problem


def _settings(**values: str) -> KafkaSettings:
    """The settings from these values alone, not from this process's environment."""
    return KafkaSettings.model_validate(values)


def test_plaintext_by_default_adds_nothing() -> None:
    settings = _settings()
    assert settings.kafka_security is None
    assert client_options(settings.kafka_security) == {}


def test_sasl_ssl_logs_in_by_scram_sha_512_and_trusts_the_given_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))

    options = client_options(
        _settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="handoff-notify",
            kafka_sasl_password="pw",
            kafka_ssl_ca_file=str(ca_file),
        ).kafka_security
    )

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "handoff-notify"
    assert options["sasl_plain_password"] == "pw"
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    trusted = context.get_ca_certs(binary_form=True)
    assert ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()) in trusted


def test_sasl_plaintext_and_scram_sha_256() -> None:
    options = client_options(
        _settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        ).kafka_security
    )
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["ssl_context"] is None


def test_ssl_alone_uses_tls_without_a_login() -> None:
    options = client_options(_settings(kafka_security_protocol="SSL").kafka_security)
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_ca_file": __file__},
            "KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": __file__},
            "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together",
        ),
        (
            {"kafka_sasl_mechanism": "PLAIN"},
            "KAFKA_SASL_MECHANISM: Input should be 'SCRAM-SHA-512' or 'SCRAM-SHA-256'",
        ),
    ],
)
def test_an_incomplete_setting_is_named_in_one_line(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _settings(**env)
    problem = configuration_problem(raised.value)
    assert problem.startswith("configuration error: ")
    assert expected in problem
    assert "\n" not in problem
