"""deploy/k8s: the offline check passes on the overlays, fails on broken ones, and the
Kafka and PostgreSQL resources agree with the event contract and the services' code."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from handoff_matching import CONSUMER_GROUP as MATCHING_GROUP
from handoff_notify import CONSUMER_GROUP as NOTIFY_GROUP
from handoff_platform.kafka import DEFAULT_PARTITIONS, TOPIC_CONFIGS
from handoff_referral import CONSUMER_GROUP as REFERRAL_GROUP
from handoff_reports import CONSUMER_GROUP as REPORTS_GROUP
from handoff_reports.app import CONSUMED_TOPICS as REPORTS_TOPICS
from handoff_schemas import Topic, dead_letter_topic
from handoff_schemas.asyncapi import SERVICE_TOPICS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CHECK = ROOT / "scripts" / "check_k8s.py"
GROUPS = {"referral": REFERRAL_GROUP, "matching": MATCHING_GROUP, "notify": NOTIFY_GROUP}


def _run_check(*overlays: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *map(str, overlays)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _documents(relative: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / relative).read_text()) if doc]


def test_every_overlay_renders_validates_and_keeps_the_policy() -> None:
    done = _run_check()
    assert done.returncode == 0, done.stderr
    assert "dev: " in done.stdout
    assert "production: " in done.stdout


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_a_broken_manifest_fails_the_check_naming_each_problem(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("crds"))
    base = copy / "base"
    _replace(base / "referral/deployment.yaml", "  replicas: 2\n", "  replicas: 2\n  replica: 2\n")
    _replace(base / "notify/deployment.yaml", 'limits: {cpu: "1", memory: 256Mi}', "limits: {}")
    _replace(base / "matching/deployment.yaml", "image: handoff:0.1.0", "image: postgres")
    _replace(base / "matching/deployment.yaml", "runAsNonRoot: true", "runAsNonRoot: false")
    _replace(base / "kafka/topics.yaml", "  partitions: 6\n", "  partitions: 6\n  partition: 6\n")
    _replace(base / "kafka/users.yaml", "type: scram-sha-512", "type: scram-sha-256")
    (base / "platform/secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: leaked}\nstringData: {password: x}\n"
    )
    _replace(base / "platform/kustomization.yaml", "resources:\n", "resources:\n  - secret.yaml\n")

    done = _run_check(copy / "overlays/dev")

    assert done.returncode == 1
    for expected in (
        "Deployment/referral: spec: Additional properties are not allowed ('replica'",
        "Deployment/notify: container notify: no cpu in resources.limits",
        "Deployment/notify: container notify: no memory in resources.limits",
        "Deployment/matching: container matching: image 'postgres' is not pinned to a tag",
        "Deployment/matching: container matching: runAsNonRoot is not true",
        "KafkaTopic/referrals: spec: Additional properties are not allowed ('partition'",
        "KafkaUser/handoff-referral: spec.authentication.type: 'scram-sha-256' is not one of",
        "Secret/leaked: a Secret is rendered",
    ):
        assert expected in done.stderr, done.stderr


def test_an_overlay_that_does_not_render_is_a_failure(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("crds"))
    _replace(copy / "base/kustomization.yaml", "  - notify\n", "  - notify\n  - mllp\n")

    done = _run_check(copy / "overlays/production")

    assert done.returncode == 2
    assert "production: does not render" in done.stderr


def test_a_kafka_topic_per_contract_topic_and_dead_letter_topic() -> None:
    topics = {doc["spec"]["topicName"]: doc["spec"] for doc in _documents("base/kafka/topics.yaml")}
    groups = [*GROUPS.values(), REPORTS_GROUP]
    expected = {*Topic, *(dead_letter_topic(group) for group in groups)}
    assert set(topics) == expected
    for name, spec in topics.items():
        assert spec["partitions"] == DEFAULT_PARTITIONS, name
        assert spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name
        for key, value in TOPIC_CONFIGS.get(name, {}).items():
            assert spec["config"][key] == value, name


def _acls(user: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    return {
        (acl["resource"]["type"], acl["resource"].get("name", "")): set(acl["operations"])
        for acl in user["spec"]["authorization"]["acls"]
    }


@pytest.mark.parametrize("service", sorted(GROUPS))
def test_each_kafka_user_may_write_and_read_exactly_its_topics_and_group(service: str) -> None:
    """The ACLs grant what the AsyncAPI document says the service sends and receives."""
    users = {doc["metadata"]["name"]: doc for doc in _documents("base/kafka/users.yaml")}
    acls = _acls(users[f"handoff-{service}"])
    group = GROUPS[service]
    written = {name for (kind, name), ops in acls.items() if kind == "topic" and "Write" in ops}
    read = {name for (kind, name), ops in acls.items() if kind == "topic" and "Read" in ops}
    assert written == {*SERVICE_TOPICS[service].sends, dead_letter_topic(group)}
    assert read == set(SERVICE_TOPICS[service].receives)
    assert {name for kind, name in acls if kind == "group"} == {group}
    assert all(ops <= {"Read", "Write", "Describe"} for ops in acls.values())


def test_the_reports_user_reads_a_referrals_story_and_writes_only_its_dead_letters() -> None:
    """Issue #16: the read model publishes nothing; it reads what the service consumes."""
    users = {doc["metadata"]["name"]: doc for doc in _documents("base/kafka/users.yaml")}
    acls = _acls(users["handoff-reports"])
    written = {name for (kind, name), ops in acls.items() if kind == "topic" and "Write" in ops}
    read = {name for (kind, name), ops in acls.items() if kind == "topic" and "Read" in ops}
    assert written == {dead_letter_topic(REPORTS_GROUP)}
    assert read == {topic.value for topic in REPORTS_TOPICS}
    assert {name for kind, name in acls if kind == "group"} == {REPORTS_GROUP}
    assert all(ops <= {"Read", "Write", "Describe"} for ops in acls.values())


def test_consumers_scale_on_their_own_group_lag_no_further_than_the_partitions() -> None:
    for service, group in GROUPS.items():
        (scaled,) = _documents(f"base/{service}/scaled-object.yaml")
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
        assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
        assert scaled["spec"]["maxReplicaCount"] <= DEFAULT_PARTITIONS


def test_each_service_logs_in_to_postgresql_as_its_own_role_owning_its_own_schema() -> None:
    (cluster,) = _documents("base/postgres/cluster.yaml")
    statements = cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]
    roles = {role["name"]: role for role in cluster["spec"]["managed"]["roles"]}
    for service in [*GROUPS, "reports"]:
        assert f"CREATE SCHEMA {service} AUTHORIZATION {service}" in statements
        assert roles[service]["passwordSecret"] == {"name": f"handoff-db-{service}"}
        (deployment,) = _documents(f"base/{service}/deployment.yaml")
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["DATABASE_URL"]["value"].startswith(f"postgresql://{service}@handoff-db-rw:")


def _container(service: str) -> dict[str, Any]:
    (deployment,) = _documents(f"base/{service}/deployment.yaml")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("service", ["referral", "notify"])
def test_people_facing_services_stay_in_service_through_a_database_outage(service: str) -> None:
    """Decision 0021 §6: they answer 503 + Retry-After (notify spools) themselves, so once
    started their readiness is /healthz; a new replica still waits for /readyz to start."""
    container = _container(service)
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"


def test_matching_leaves_service_while_its_dependencies_are_away() -> None:
    container = _container("matching")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_notify_spools_onto_a_volume_of_its_own() -> None:
    (deployment,) = _documents("base/notify/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    spool = Path(env["NOTIFY_REPORT_SPOOL"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = mounts[str(spool.parent)]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[volume]
    assert str(spool.parent) == "/var/spool/handoff/notify"
