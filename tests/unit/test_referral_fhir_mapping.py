"""BSeR ServiceRequest / Task ↔ the referral: the pure mapping (handoff_referral.domain.fhir)."""

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handoff_referral.domain import fhir
from handoff_referral.domain.fhir import FhirError, References
from handoff_referral.domain.intake import ReferralRequest
from handoff_referral.domain.referral import Referral, TimelineStep
from handoff_referral.domain.status import Status, Step
from handoff_referral.entrypoints.fhir_http import capability
from handoff_schemas.vocabulary import CancelReason, Consent, Substance, Urgency
from tests.support.fhir import PLACER_SYSTEM, service_request, task
from tests.support.patients import NOTES


def _map(resource: dict[str, Any]) -> fhir.IntakeMapping:
    parsed = fhir.parse_resource(resource, "ServiceRequest")
    return fhir.referral_request(parsed, References(parsed.get("contained", [])))


def _expressions(error: pytest.ExceptionInfo[FhirError]) -> set[str]:
    return {issue.expression for issue in error.value.issues}


def test_a_bser_service_request_becomes_the_same_request_the_rest_api_takes() -> None:
    mapping = _map(service_request("ORD-1"))
    assert mapping.identifier_system == PLACER_SYSTEM
    assert mapping.request == ReferralRequest.model_validate(
        {
            "external_id": "ORD-1",
            "urgency": "urgent",
            "location": "ED bay 4",
            "callback_phone": "+14105550100",
            "patient": {
                "preferred_language": "es",
                "interpreter_needed": True,
                "substances": ["opioids", "alcohol"],
                "consent": "obtained",
            },
        }
    )
    # Minimum necessary: the Patient's name and birth date are not taken, nor the note.
    assert mapping.request.patient.initials is None
    assert mapping.request.patient.age_band is None
    assert mapping.request.notes is None
    assert NOTES not in str(mapping)


@pytest.mark.parametrize(
    ("language", "extension", "needed"),
    [
        ("es", None, True),  # as over HL7: a language other than English, no answer
        ("es-MX", None, True),
        ("en-US", None, False),
        ("es", False, False),  # the extension, when there, is the answer
        ("en", True, True),
    ],
)
def test_interpreter_need_is_derived_as_over_hl7(
    language: str, extension: bool | None, needed: bool
) -> None:
    request = service_request("ORD-INTERP")
    patient = request["contained"][0]
    patient["communication"][0]["language"]["coding"][0]["code"] = language
    patient["extension"] = (
        [] if extension is None else [{"url": fhir.INTERPRETER_REQUIRED, "valueBoolean": extension}]
    )
    assert _map(request).request.patient.interpreter_needed is needed


@pytest.mark.parametrize(
    ("system", "code", "substance"),
    [
        (fhir.ICD10CM, "F11.20", Substance.OPIOIDS),
        (fhir.ICD10CM, "f10.239", Substance.ALCOHOL),
        (fhir.ICD10CM, "F12.10", Substance.CANNABIS),
        (fhir.ICD10CM, "F14.20", Substance.STIMULANTS),
        (fhir.ICD10CM, "F15.10", Substance.STIMULANTS),
        (fhir.ICD10CM, "F19.20", Substance.OTHER),
        (fhir.ICD10CM, "T40.411A", Substance.OPIOIDS),
        (fhir.ICD10CM, "T40.5X1A", Substance.STIMULANTS),
        (fhir.ICD10CM, "T51.0X1A", Substance.ALCOHOL),
        (fhir.SNOMED, "5602001", Substance.OPIOIDS),
        (fhir.SNOMED, "7200002", Substance.ALCOHOL),
        (fhir.SNOMED, "37344009", Substance.CANNABIS),
        (fhir.SNOMED, "78267003", Substance.STIMULANTS),
        (fhir.SNOMED, "66214007", Substance.OTHER),
    ],
)
def test_reason_codes_map_to_the_referral_vocabulary(
    system: str, code: str, substance: Substance
) -> None:
    assert fhir.substances_of([{"coding": [{"system": system, "code": code}]}]) == {substance}


def test_codes_of_other_systems_or_unknown_codes_name_no_substance() -> None:
    reasons: list[dict[str, Any]] = [
        {"coding": [{"system": "http://loinc.org", "code": "F11.20"}]},
        {"coding": [{"system": fhir.SNOMED, "code": "F11.20"}]},
        {"coding": [{"system": fhir.ICD10CM, "code": "J45.909"}]},
        {"text": "opioid use disorder"},
    ]
    assert fhir.substances_of(reasons) == frozenset()


@pytest.mark.parametrize(
    ("priority", "urgency"),
    [("routine", Urgency.ROUTINE), ("urgent", Urgency.URGENT), ("asap", Urgency.EMERGENT)],
)
def test_priority_is_the_urgency(priority: str, urgency: Urgency) -> None:
    resource = service_request("ORD-2")
    resource["priority"] = priority
    assert _map(resource).request.urgency is urgency


def test_a_proposed_consent_is_pending_and_the_placer_identifier_is_preferred() -> None:
    resource = service_request("ORD-3")
    resource["contained"][1]["status"] = "proposed"
    resource["identifier"] = [
        {"system": "urn:filler", "value": "FILL-9"},
        {
            "system": "urn:placer",
            "value": "PLAC-7",
            "type": {"coding": [{"code": "PLAC"}]},
        },
    ]
    mapping = _map(resource)
    assert mapping.request.patient.consent is Consent.PENDING
    assert (mapping.identifier_system, mapping.request.external_id) == ("urn:placer", "PLAC-7")


def test_every_broken_rule_is_named_at_once() -> None:
    resource = service_request("ORD-4")
    resource["status"] = "draft"
    resource["intent"] = "plan"
    resource["priority"] = "stat"
    del resource["code"]
    resource["reasonCode"] = [{"coding": [{"system": fhir.SNOMED, "code": "38341003"}]}]
    resource["contained"][1]["status"] = "rejected"
    resource["contained"][0]["communication"] = []
    with pytest.raises(FhirError) as refused:
        _map(resource)
    assert refused.value.status == 422
    assert _expressions(refused) == {
        "ServiceRequest.status",
        "ServiceRequest.intent",
        "ServiceRequest.code",
        "ServiceRequest.reasonCode",
        "Consent.status",
        "Patient.communication",
    }


def test_references_that_lead_nowhere_are_named() -> None:
    resource = service_request("ORD-5")
    resource["subject"] = {"reference": "Patient/elsewhere"}
    resource["supportingInfo"] = [{"reference": "#requester"}]
    resource["requester"] = {"reference": "#bay"}
    resource["locationReference"] = [{"reference": "#nowhere"}]
    with pytest.raises(FhirError) as refused:
        _map(resource)
    assert _expressions(refused) == {
        "ServiceRequest.subject",
        "ServiceRequest.supportingInfo",
        "ServiceRequest.requester",
        "ServiceRequest.locationReference[0]",
    }


def test_values_the_referral_refuses_name_the_element_they_came_from() -> None:
    resource = service_request("bad id with spaces")
    resource["contained"][2]["telecom"] = [{"system": "phone", "value": "555-0100"}]
    with pytest.raises(FhirError) as refused:
        _map(resource)
    assert _expressions(refused) == {
        "ServiceRequest.identifier[0].value",
        "ServiceRequest.requester",
    }


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"priority": 3}, "ServiceRequest.priority"),
        ({"subject": "Patient/1"}, "ServiceRequest.subject"),
        ({"status": None, "unknownElement": 1}, "ServiceRequest.unknownElement"),
        ({"resourceType": "Task"}, "ServiceRequest.resourceType"),
        ({"contained": [{"resourceType": "Medication", "id": "m"}]}, "ServiceRequest.contained[0]"),
        ({"contained": [7]}, "ServiceRequest.contained[0]"),
    ],
)
def test_structure_errors_are_400_naming_the_element(
    change: dict[str, Any], expression: str
) -> None:
    resource = service_request("ORD-6") | change
    with pytest.raises(FhirError) as refused:
        fhir.parse_resource(resource, "ServiceRequest")
    assert refused.value.status == 400
    assert expression in _expressions(refused)


@pytest.mark.parametrize("element", ["code", "subject"])
def test_an_element_sent_as_a_string_is_named_as_such_not_as_invalid_json(element: str) -> None:
    resource = service_request("ORD-7") | {element: "opioid use"}
    with pytest.raises(FhirError) as refused:
        fhir.parse_resource(resource, "ServiceRequest")
    issues = [i for i in refused.value.issues if i.expression == f"ServiceRequest.{element}"]
    assert issues, refused.value.issues
    assert issues[0].diagnostics == "must be a JSON object (a FHIR element), not a string"


@pytest.mark.parametrize("loose", ["yes", 1, "true"])
def test_a_boolean_must_be_json_true_or_false(loose: object) -> None:
    resource = service_request("ORD-8")
    resource["contained"][0]["extension"][0]["valueBoolean"] = loose
    with pytest.raises(FhirError) as refused:
        fhir.parse_resource(resource, "ServiceRequest")
    assert refused.value.status == 422
    assert _expressions(refused) == {"ServiceRequest.contained[0].extension[0].valueBoolean"}


def test_an_over_long_location_is_cut_to_40_characters_not_refused() -> None:
    resource = service_request("ORD-9")
    resource["contained"][3]["name"] = "EMERGENCY DEPARTMENT NORTH WING ROOM 1234 BED A " * 100
    mapping = _map(resource)
    assert mapping.request.location == "EMERGENCY DEPARTMENT NORTH WING ROOM 1234"[:40].rstrip()
    assert len(mapping.request.location) <= 40
    assert mapping.location_cut is True
    assert _map(service_request("ORD-10")).location_cut is False


def test_a_task_must_be_a_bser_fulfil_request_of_the_service_request() -> None:
    fhir.check_task(task("ServiceRequest/abc"), "ServiceRequest/abc")
    wrong = task("ServiceRequest/other") | {"status": "accepted", "intent": "plan"}
    wrong["code"] = {"coding": [{"code": "approve"}]}
    with pytest.raises(FhirError) as refused:
        fhir.check_task(wrong, "ServiceRequest/abc")
    assert _expressions(refused) == {"Task.status", "Task.intent", "Task.code", "Task.focus"}


def _referral(status: Status, steps: list[Step], cancel_reason: str | None = None) -> Referral:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    return Referral(
        referral_id=uuid.UUID(int=7),
        site_id="md-test",
        request=_map(service_request("ORD-7")).request,
        status=status,
        received_at=at,
        updated_at=at + timedelta(minutes=len(steps)),
        timeline=tuple(TimelineStep(s, at + timedelta(minutes=i)) for i, s in enumerate(steps)),
        correlation_id="c",
        cancel_reason=cancel_reason,
    )


@pytest.mark.parametrize(
    ("status", "task_status", "business"),
    [
        (Status.RECEIVED, "received", "2.0"),
        (Status.OFFERED, "received", "2.0"),
        (Status.WAITING, "received", "2.0"),
        (Status.UNASSIGNED, "received", "2.0"),
        (Status.ACCEPTED, "accepted", "3.0"),
        (Status.ARRIVED, "in-progress", "5.1.1"),
        (Status.COMPLETED, "completed", "7.0"),
        (Status.CANCELLED, "cancelled", "6.0"),
        (Status.EXPIRED, "failed", "4.0"),
    ],
)
def test_the_task_shows_the_referral_status_with_bser_business_codes(
    status: Status, task_status: str, business: str
) -> None:
    view = fhir.task_view(_referral(status, [Step.RECEIVED]), PLACER_SYSTEM)
    assert view["status"] == task_status
    bser, own = view["businessStatus"]["coding"]
    assert (bser["system"], bser["code"]) == (fhir.BSER_BUSINESS_STATUS, business)
    assert (own["system"], own["code"]) == (fhir.REFERRAL_STATUS_SYSTEM, status.value)
    # What Handoff answers is itself a valid FHIR R4 Task.
    fhir.parse_resource(view, "Task")


def test_the_task_carries_the_timeline_and_no_patient_data() -> None:
    steps = [Step.RECEIVED, Step.OFFERED, Step.COACH_DECLINED, Step.OFFERED, Step.CANCELLED]
    view = fhir.task_view(_referral(Status.CANCELLED, steps, "patient_left"), "")
    assert [o["type"]["coding"][0]["code"] for o in view["output"]] == [s.value for s in steps]
    assert view["output"][2]["valueDateTime"] == "2026-11-30T12:02:00Z"
    assert view["identifier"] == [{"value": "ORD-7"}]
    assert view["statusReason"]["coding"][0]["code"] == "patient_left"
    text = str(view)
    for phi in ("es", "ED bay 4", "+14105550100", NOTES, "opioids", "alcohol"):
        assert f"'{phi}'" not in text


def test_the_capability_statement_is_valid_fhir() -> None:
    fhir.parse_resource(
        capability("https://h.example/fhir/r4", "2026-11-30T00:00:00Z"), "CapabilityStatement"
    )


def test_a_json_patch_to_cancelled_is_a_cancellation() -> None:
    replace = {"op": "replace", "path": "/status", "value": "cancelled"}
    assert fhir.cancel_reason_of_patch([replace]) is CancelReason.NO_LONGER_NEEDED
    reason = {
        "op": "add",
        "path": "/statusReason",
        "value": {"coding": [{"system": fhir.CANCEL_REASON_SYSTEM, "code": "patient_declined"}]},
    }
    assert fhir.cancel_reason_of_patch([replace, reason]) is CancelReason.PATIENT_DECLINED


@pytest.mark.parametrize(
    ("patch", "expression"),
    [
        ({}, "Patch"),
        ([], "Patch"),
        ([{"op": "remove", "path": "/status"}], "Patch[0].op"),
        ([{"op": "replace", "path": "/status", "value": "completed"}], "Patch[0].value"),
        ([{"op": "replace", "path": "/owner", "value": {}}], "Patch[0].path"),
        ([{"op": "test", "path": "/status", "value": "received"}], "Patch"),
        (
            [
                {"op": "replace", "path": "/status", "value": "cancelled"},
                {"op": "add", "path": "/statusReason", "value": {"text": "left"}},
            ],
            "Patch[1].value",
        ),
        ([7], "Patch[0]"),
    ],
)
def test_any_other_patch_is_refused_naming_the_operation(patch: object, expression: str) -> None:
    with pytest.raises(FhirError) as refused:
        fhir.cancel_reason_of_patch(copy.deepcopy(patch))
    assert _expressions(refused) == {expression}


@pytest.mark.parametrize(
    ("token", "parsed"),
    [
        ("urn:oid:1.2|ORD-1", ("urn:oid:1.2", "ORD-1")),
        ("|ORD-1", ("", "ORD-1")),
        ("ORD-1", (None, "ORD-1")),
    ],
)
def test_identifier_search_tokens(token: str, parsed: tuple[str | None, str]) -> None:
    assert fhir.parse_identifier_search(token) == parsed
