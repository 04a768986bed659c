"""A hospital's FHIR client as tests play it: its keys, signed assertions, BSeR resources."""

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from tests.support.patients import NOTES

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES = "system/ServiceRequest.c system/Task.cru system/Task.rs"


@dataclass
class ClientKeys:
    """An RSA and an EC P-384 key pair; only the public halves are registered."""

    rsa: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    )
    ec: ECKey = field(
        default_factory=lambda: ECKey.generate_key("P-384", parameters={"kid": "ec-1"})
    )

    def public_jwks(self) -> dict[str, Any]:
        return dict(KeySet([self.rsa, self.ec]).as_dict(private=False))

    def assertion(
        self,
        client_id: str,
        audience: str,
        alg: str = "RS384",
        expires_in: float = 240,
        jti: str | None = None,
        kid: str | None = None,
    ) -> str:
        key: RSAKey | ECKey = self.rsa if alg == "RS384" else self.ec
        header = {"alg": alg, "kid": kid or str(key.kid), "typ": "JWT"}
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "exp": int(time.time() + expires_in),
            "jti": jti or uuid.uuid4().hex,
        }
        return jwt.encode(header, claims, key, algorithms=["RS384", "ES384"])


def token_form(assertion: str, scope: str = SCOPES) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": scope,
    }


PLACER_SYSTEM = "urn:oid:2.16.840.1.113883.3.42"


def service_request(external_id: str, system: str = PLACER_SYSTEM) -> dict[str, Any]:
    """A BSeR ServiceRequest with its Patient, Consent, requester and location contained.
    The patient's name, birth date and the note are test PHI that must never leak."""
    return {
        "resourceType": "ServiceRequest",
        "contained": [
            {
                "resourceType": "Patient",
                "id": "patient",
                "name": [{"family": "Zebulon", "given": ["Quentin"]}],
                "birthDate": "1961-07-04",
                "communication": [
                    {
                        "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]},
                        "preferred": True,
                    }
                ],
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired",
                        "valueBoolean": True,
                    }
                ],
            },
            {
                "resourceType": "Consent",
                "id": "consent",
                "status": "active",
                "scope": {"coding": [{"code": "treatment"}]},
                "category": [{"coding": [{"code": "59284-0", "system": "http://loinc.org"}]}],
            },
            {
                "resourceType": "PractitionerRole",
                "id": "requester",
                "telecom": [{"system": "phone", "value": "+14105550100"}],
            },
            {"resourceType": "Location", "id": "bay", "name": "ED bay 4"},
        ],
        "identifier": [{"system": system, "value": external_id}],
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "code": {"text": "Peer recovery coach consult"},
        "subject": {"reference": "#patient"},
        "requester": {"reference": "#requester"},
        "locationReference": [{"reference": "#bay"}],
        "reasonCode": [
            {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F11.20"}]},
            {"coding": [{"system": "http://snomed.info/sct", "code": "15167005"}]},
        ],
        "supportingInfo": [{"reference": "#consent"}],
        "note": [{"text": NOTES}],
    }


def task(focus: str) -> dict[str, Any]:
    """The BSeR Task a referral initiator posts, focused on its ServiceRequest."""
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
        },
        "focus": {"reference": focus},
        "authoredOn": "2026-11-30T12:00:00Z",
    }


def transaction_bundle(external_id: str) -> dict[str, Any]:
    """ServiceRequest and Task in one transaction; the Patient and Consent as entries."""
    request = service_request(external_id)
    patient, consent = request["contained"][0], request["contained"][1]
    request["contained"] = request["contained"][2:]
    request["subject"] = {"reference": "urn:uuid:7f1c5a0e-0000-4000-8000-000000000001"}
    request["supportingInfo"] = [{"reference": "urn:uuid:7f1c5a0e-0000-4000-8000-000000000002"}]
    sr_url = "urn:uuid:7f1c5a0e-0000-4000-8000-000000000003"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:7f1c5a0e-0000-4000-8000-000000000001",
                "resource": {k: v for k, v in patient.items() if k != "id"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:7f1c5a0e-0000-4000-8000-000000000002",
                "resource": {k: v for k, v in consent.items() if k != "id"},
                "request": {"method": "POST", "url": "Consent"},
            },
            {
                "fullUrl": sr_url,
                "resource": request,
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "fullUrl": "urn:uuid:7f1c5a0e-0000-4000-8000-000000000004",
                "resource": task(sr_url),
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }
