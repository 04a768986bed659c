"""The FHIR API of the referral service as its own process, over a real socket: clients made
by the CLI an operator uses, and a property run of broken resources that never gets a 5xx."""

import json
import os
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import handoff_command
from tests.support.fhir import (
    ClientKeys,
    service_request,
    task,
    token_form,
    transaction_bundle,
)
from tests.support.patients import ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 800
FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


class FhirSite:
    """A site and its FHIR client, registered with the CLI, with a token kept fresh."""

    def __init__(self, url: str, database_url: str, tmp: Path) -> None:
        self.url = url
        self.site_id = f"vt-ed-{uuid.uuid4().hex[:8]}"
        handoff_command(
            "referral",
            "site",
            "add",
            "--id",
            self.site_id,
            "--name",
            "Fuzz Hospital",
            "--short-name",
            "Fuzz ED",
            "--state",
            "VT",
            "--time-zone",
            "America/New_York",
            database_url=database_url,
        )
        self.keys = ClientKeys()
        jwks = tmp / "jwks.json"
        jwks.write_text(json.dumps(self.keys.public_jwks()))
        self.client_id = handoff_command(
            "referral",
            "fhir-client",
            "add",
            "--site",
            self.site_id,
            "--jwks",
            str(jwks),
            "--label",
            "Epic Bridges",
            database_url=database_url,
        ).strip()
        self.http = httpx.Client(base_url=url, timeout=30)
        self.refresh()

    def refresh(self) -> None:
        assertion = self.keys.assertion(self.client_id, f"{self.url}/fhir/r4/token")
        response = self.http.post("/fhir/r4/token", data=token_form(assertion))
        assert response.status_code == 200, response.text
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"


@pytest.fixture(scope="module")
def hospital(
    referral_process: str, referral_database: str, tmp_path_factory: pytest.TempPathFactory
) -> FhirSite:
    return FhirSite(referral_process, referral_database, tmp_path_factory.mktemp("fhir"))


def test_a_client_added_by_the_cli_gets_tokens_until_revoked(
    referral_process: str, referral_database: str, tmp_path: Path
) -> None:
    hospital = FhirSite(referral_process, referral_database, tmp_path)
    listed = handoff_command(
        "referral",
        "fhir-client",
        "list",
        "--site",
        hospital.site_id,
        database_url=referral_database,
    )
    assert listed.split("\t")[:3] == [hospital.client_id, hospital.site_id, "Epic Bridges"]
    assert listed.strip().endswith("active")
    bundle = hospital.http.post(
        "/fhir/r4", json=transaction_bundle(f"CLI-{uuid.uuid4().hex[:8]}"), headers=FHIR_JSON
    )
    assert bundle.status_code == 200, bundle.text
    task_id = bundle.json()["entry"][3]["resource"]["id"]
    assert hospital.http.get(f"/fhir/r4/Task/{task_id}").status_code == 200

    revoked = handoff_command(
        "referral", "fhir-client", "revoke", hospital.client_id, database_url=referral_database
    )
    assert revoked.strip() == f"revoked {hospital.client_id}"
    # The token in hand stops working at once, and no new one is issued.
    assert hospital.http.get(f"/fhir/r4/Task/{task_id}").status_code == 401
    assertion = hospital.keys.assertion(hospital.client_id, f"{hospital.url}/fhir/r4/token")
    refused = hospital.http.post("/fhir/r4/token", data=token_form(assertion))
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "",
            "\x00",
            "\ud800",
            "#patient",
            "#consent",
            "Patient/1",
            "F11.20",
            "active",
            "order",
            "2026-02-30",
            "urn:uuid:7f1c5a0e-0000-4000-8000-000000000003",
            "ServiceRequest/x",
        ]
    )
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one to three elements replaced, removed or added."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        value = draw(JSON_VALUES)
        if not path:
            document = value
            continue
        *parents, last = path
        container = document
        for step in parents:
            container = container[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            container[last] = value
        elif action == "remove":
            del container[last]
        elif isinstance(container, dict):
            container[draw(st.text(max_size=8))] = value
        else:
            container.append(value)
    return document


def _requests(known_task: str) -> st.SearchStrategy[tuple[str, str, dict[str, str], Any]]:
    external_id = f"FZ-{uuid.uuid4().hex[:8]}"
    patch = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    form = token_form("x.y.z")
    return st.one_of(
        st.tuples(
            st.just("POST"),
            st.just("/fhir/r4/ServiceRequest"),
            st.just(FHIR_JSON),
            mutated(service_request(external_id)),
        ),
        st.tuples(
            st.just("POST"),
            st.just("/fhir/r4/Task"),
            st.just(FHIR_JSON),
            mutated(task(f"ServiceRequest/{known_task}")),
        ),
        st.tuples(
            st.just("POST"),
            st.just("/fhir/r4"),
            st.just(FHIR_JSON),
            mutated(transaction_bundle(external_id)),
        ),
        st.tuples(
            st.just("PATCH"),
            st.just(f"/fhir/r4/Task/{known_task}"),
            st.just(JSON_PATCH),
            mutated(patch),
        ),
        st.tuples(st.just("GET"), st.just("/fhir/r4/Task"), st.just({}), st.text(max_size=40)),
        st.tuples(st.just("GET"), st.just("/fhir/r4/Task/"), st.just({}), st.text(max_size=40)),
        st.tuples(st.just("POST"), st.just("/fhir/r4/token"), st.just({}), mutated(form)),
    )


def _text(value: object) -> str:
    """As text that can travel in a URL or a form: lone surrogates cannot."""
    return str(value).encode("utf-8", "replace").decode()


def test_no_broken_resource_gets_a_server_error(hospital: FhirSite) -> None:
    """A property run over every FHIR route: valid requests with one to three elements
    broken. Each answer is below 500, and every refusal of a resource is an
    OperationOutcome with an issue; derandomized, so every run sends the same requests."""
    bundle = hospital.http.post(
        "/fhir/r4", json=transaction_bundle(f"FZ-{uuid.uuid4().hex[:8]}"), headers=FHIR_JSON
    )
    known_task = bundle.json()["entry"][3]["resource"]["id"]
    statuses: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_requests(known_task))
    def no_server_error(request: tuple[str, str, dict[str, str], Any]) -> None:
        method, path, headers, body = request
        if path.endswith("/token"):
            form = body if isinstance(body, dict) else {}
            response = hospital.http.post(path, data={_text(k): _text(v) for k, v in form.items()})
        elif method == "GET" and path == "/fhir/r4/Task":
            response = hospital.http.get(path, params={"identifier": _text(body)})
        elif method == "GET":
            response = hospital.http.get(path + urllib.parse.quote(_text(body), safe=""))
        else:
            content = None if body is None else json.dumps(body).encode("utf-8", "surrogatepass")
            response = hospital.http.request(method, path, content=content, headers=headers)
        statuses.append(response.status_code)
        assert response.status_code < 500, (method, path, response.text)
        if response.status_code >= 400 and not path.endswith("/token"):
            assert response.headers["content-type"].startswith("application/fhir+json")
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome", response.text
            assert outcome["issue"], response.text
        if response.status_code == 401 and not path.endswith("/token"):
            hospital.refresh()  # five minutes passed: a new token, as a client would

    no_server_error()
    assert len(statuses) >= EXAMPLES
    assert {200, 400, 404, 422} <= set(statuses)


def test_the_cli_refuses_a_jwks_with_a_private_key(referral_database: str, tmp_path: Path) -> None:
    keys = ClientKeys()
    jwks = tmp_path / "private.json"
    jwks.write_text(json.dumps({"keys": [keys.ec.as_dict(private=True)]}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "handoff_cli",
            "referral",
            "fhir-client",
            "add",
            "--site",
            "any-site",
            "--jwks",
            str(jwks),
        ],
        env={**os.environ, "DATABASE_URL": referral_database},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "private key" in result.stderr
    assert result.stdout == ""


def test_schemathesis_over_the_fhir_openapi_finds_no_server_error(hospital: FhirSite) -> None:
    """schemathesis generates requests from /fhir/r4/openapi.json (bodies there are any
    JSON object: FHIR's own structure is checked by the property run above)."""
    hospital.refresh()  # a token for the whole run: well under its five minutes
    har = ARTIFACTS / "schemathesis-fhir.har"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{hospital.url}/fhir/r4/openapi.json",
            "-H",
            f"Authorization: {hospital.http.headers['Authorization']}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--seed",
            "20261201",
            "--report",
            "har",
            "--report-har-path",
            str(har),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:]
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [entry["response"]["status"] for entry in entries]
    assert len(statuses) >= 300
    assert [status for status in statuses if status >= 500] == []
    assert {entry["request"]["url"].split("/fhir/r4")[1].split("?")[0] for entry in entries} >= {
        "/metadata",
        "/token",
        "/ServiceRequest",
        "/Task",
    }
