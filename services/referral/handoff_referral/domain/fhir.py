"""FHIR R4 (HL7 BSeR-shaped) in and out of the referral: pure mapping, no I/O.

In: a ServiceRequest (the referral request) and a Task (its status carrier, `focus` on the
ServiceRequest), posted one by one or in one transaction Bundle, with the Patient, the
Consent, the requester and the location contained in the ServiceRequest or entries of the
Bundle. Each resource is first validated by `fhir.resources` (its R4B package: cardinality
and types), then by the BSeR rules that library does not check, then mapped to the same
`ReferralRequest` the REST API takes.

Out: the Task as a view of the referral's status and timeline. It carries no patient data.

Every refusal is a `FhirError` listing `Issue`s, each naming the element by a FHIRPath
`expression`, for an OperationOutcome.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from handoff_referral.domain.intake import ReferralRequest, fit_location, storable_text
from handoff_referral.domain.referral import Referral
from handoff_referral.domain.status import Status
from handoff_schemas.vocabulary import CancelReason, Consent, Substance, Urgency

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
BCP47 = "urn:ietf:bcp:47"
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
BSER_BUSINESS_STATUS = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
INTERPRETER_REQUIRED = "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired"
# Handoff's own code systems and extension: URNs, so no web address is implied.
REFERRAL_STATUS_SYSTEM = "urn:handoff:referral-status"
TIMELINE_STEP_SYSTEM = "urn:handoff:timeline-step"
CANCEL_REASON_SYSTEM = "urn:handoff:cancel-reason"
COACH_GENDER_PREFERENCE = "urn:handoff:coach-gender-preference"

# Resources that may come along with the ServiceRequest (contained, or Bundle entries):
# what the referral is built from. Their other content (names, birth dates) is not kept.
SUPPORTING = frozenset(
    {"Patient", "Consent", "PractitionerRole", "Practitioner", "Organization", "Location"}
)

# reasonCode → the referral's substance vocabulary. SNOMED CT codes exactly; ICD-10-CM
# codes by category (the code's start), so F11.20 and F11.23 are both opioids.
SNOMED_SUBSTANCES: Mapping[str, Substance] = {
    "5602001": Substance.OPIOIDS,  # Opioid abuse
    "75544000": Substance.OPIOIDS,  # Opioid dependence
    "15167005": Substance.ALCOHOL,  # Alcohol abuse
    "7200002": Substance.ALCOHOL,  # Alcoholism
    "37344009": Substance.CANNABIS,  # Cannabis abuse
    "85005007": Substance.CANNABIS,  # Cannabis dependence
    "78267003": Substance.STIMULANTS,  # Cocaine abuse
    "66214007": Substance.OTHER,  # Substance abuse
}
ICD10CM_SUBSTANCES: Sequence[tuple[str, Substance]] = (
    ("F10", Substance.ALCOHOL),  # alcohol related disorders
    ("F11", Substance.OPIOIDS),  # opioid related disorders
    ("F12", Substance.CANNABIS),  # cannabis related disorders
    ("F13", Substance.OTHER),  # sedative, hypnotic or anxiolytic related disorders
    ("F14", Substance.STIMULANTS),  # cocaine related disorders
    ("F15", Substance.STIMULANTS),  # other stimulant related disorders
    ("F16", Substance.OTHER),  # hallucinogen related disorders
    ("F18", Substance.OTHER),  # inhalant related disorders
    ("F19", Substance.OTHER),  # other psychoactive substance related disorders
    ("T40.0", Substance.OPIOIDS),  # poisoning by opium
    ("T40.1", Substance.OPIOIDS),  # poisoning by heroin
    ("T40.2", Substance.OPIOIDS),  # poisoning by other opioids
    ("T40.3", Substance.OPIOIDS),  # poisoning by methadone
    ("T40.4", Substance.OPIOIDS),  # poisoning by other synthetic narcotics (fentanyl)
    ("T40.5", Substance.STIMULANTS),  # poisoning by cocaine
    ("T40.7", Substance.CANNABIS),  # poisoning by cannabis
    ("T51.0", Substance.ALCOHOL),  # toxic effect of ethanol
)

PRIORITY_URGENCY: Mapping[str, Urgency] = {
    "routine": Urgency.ROUTINE,
    "urgent": Urgency.URGENT,
    "asap": Urgency.EMERGENT,
    "stat": Urgency.EMERGENT,
}
CONSENT_STATUS: Mapping[str, Consent] = {
    "active": Consent.OBTAINED,
    "proposed": Consent.PENDING,
    "draft": Consent.PENDING,
}


@dataclass(frozen=True)
class TaskState:
    """How a referral status shows on its Task: Task.status, and the BSeR business status
    code and display."""

    task_status: str
    business_code: str
    business_display: str


# The README's business-status table is this one.
TASK_STATES: Mapping[Status, TaskState] = {
    Status.RECEIVED: TaskState("received", "2.0", "Service Request Created"),
    Status.OFFERED: TaskState("received", "2.0", "Service Request Created"),
    Status.WAITING: TaskState("received", "2.0", "Service Request Created"),
    Status.UNASSIGNED: TaskState("received", "2.0", "Service Request Created"),
    Status.ACCEPTED: TaskState("accepted", "3.0", "Service Request Accepted"),
    Status.ARRIVED: TaskState("in-progress", "5.1.1", "Service Request Event Scheduled"),
    Status.COMPLETED: TaskState("completed", "7.0", "Service Request Fulfillment Completed"),
    Status.CANCELLED: TaskState("cancelled", "6.0", "Service Request Fulfillment Cancelled"),
    Status.EXPIRED: TaskState("failed", "4.0", "Service Request Declined"),
}


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome issue: `code` from the FHIR issue-type value set (structure,
    required, value, invariant, business-rule, not-supported…), the element's FHIRPath
    `expression`, and what is wrong in `diagnostics` (never the value sent)."""

    code: str
    expression: str
    diagnostics: str


class FhirError(Exception):
    """A FHIR request Handoff refuses, as an OperationOutcome. `status` is 400 for a
    malformed resource (fails the FHIR structure), 422 for one that breaks a BSeR or
    Handoff rule, 404 for a Task the caller cannot see, 409 for a conflict."""

    def __init__(self, issues: Sequence[Issue], status: int = 422) -> None:
        super().__init__("; ".join(f"{i.expression}: {i.diagnostics}" for i in issues))
        self.issues = tuple(issues)
        self.status = status


def invalid(expression: str, diagnostics: str, code: str = "business-rule") -> FhirError:
    """A one-issue 422."""
    return FhirError([Issue(code, expression, diagnostics)])


@dataclass(frozen=True)
class IntakeMapping:
    """A ServiceRequest read as Handoff's referral request; `identifier_system` is the
    system of the identifier that became `request.external_id` ("" when it had none)."""

    request: ReferralRequest
    identifier_system: str
    location_cut: bool = False  # the location was over MAX_LOCATION_CHARS and was cut


def parse_resource(data: object, resource_type: str, where: str | None = None) -> dict[str, Any]:
    """Validate `data` as a FHIR R4 resource of `resource_type` with `fhir.resources`, and
    return it as FHIR JSON (a dict). `where` prefixes expressions (a Bundle entry's path).

    Raises FhirError (400) naming each element that fails the FHIR structure.
    """
    at = where or resource_type
    if not isinstance(data, dict):
        raise FhirError([Issue("structure", at, "expected a JSON object")], 400)
    if data.get("resourceType") != resource_type:
        raise FhirError(
            [Issue("structure", f"{at}.resourceType", f"expected a {resource_type}")], 400
        )
    loose = list(_loose_booleans(data, at))
    if loose:
        # fhir.resources would read "yes" or 1 as true: FHIR JSON booleans are true or false.
        raise FhirError([Issue("value", path, "must be JSON true or false") for path in loose])
    for index, contained in enumerate(data.get("contained") or []):
        kind = contained.get("resourceType") if isinstance(contained, dict) else None
        if not (isinstance(kind, str) and kind in SUPPORTING):
            raise FhirError(
                [
                    Issue(
                        "not-supported",
                        f"{at}.contained[{index}]",
                        f"a contained resource must be one of {', '.join(sorted(SUPPORTING))}",
                    )
                ],
                400,
            )
    try:
        model = get_fhir_model_class(resource_type).model_validate(data)
    except pydantic.ValidationError as error:
        raise FhirError(list(_structure_issues(at, error)), 400) from None
    except Exception:
        # fhir.resources raises KeyError, TypeError… for some shapes instead of its own
        # ValidationError; they all mean the same: not a valid resource.
        raise FhirError(
            [Issue("structure", at, f"not a valid FHIR R4 {resource_type}")], 400
        ) from None
    resource: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return resource


def _loose_booleans(value: object, path: str, depth: int = 0) -> Iterator[str]:
    """The paths of `valueBoolean` elements in `value` that are not JSON true or false
    (searched 32 levels deep: extensions nest, not that far)."""
    if depth > 32:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "valueBoolean" and not isinstance(item, bool):
                yield f"{path}.{key}"
            else:
                yield from _loose_booleans(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _loose_booleans(item, f"{path}[{index}]", depth + 1)


def _structure_issues(at: str, error: pydantic.ValidationError) -> Iterator[Issue]:
    for item in error.errors()[:20]:
        path = at
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part not in ("root", "resource_type", "__root__"):
                path += f".{part}"
        code = "required" if "missing" in item["type"] else "structure"
        message = str(item["msg"]).split("\n")[0][:300]
        if item["type"] == "json_invalid" or message.startswith("Invalid JSON"):
            # fhir.resources reads a string where an element is due as JSON text: its message
            # is about that text, not about the element.
            sent = type(item.get("input")).__name__
            kind = {"str": "a string", "int": "a number", "float": "a number"}.get(sent, sent)
            message = f"must be a JSON object (a FHIR element), not {kind}"
        yield Issue(code, path, message)


class References:
    """Resolves a Reference among the resources sent with it: `#id` among the contained,
    anything else among the Bundle's entries, by fullUrl or `Type/id`."""

    def __init__(
        self,
        contained: Sequence[dict[str, Any]],
        bundle: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self._contained = {r["id"]: r for r in contained if isinstance(r.get("id"), str)}
        self._bundle = bundle or {}

    def resolve(self, reference: object, resource_type: str, expression: str) -> dict[str, Any]:
        """The referenced resource, which must be a `resource_type`; raises FhirError
        naming `expression` if it is not there or of another type."""
        target = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(target, str):
            raise invalid(expression, f"a reference to a {resource_type} is required", "required")
        if target.startswith("#"):
            found = self._contained.get(target[1:])
        else:
            found = self._bundle.get(target)
        if found is None:
            raise invalid(
                expression,
                f"the {resource_type} must be contained in the resource or an entry of the Bundle",
            )
        if found.get("resourceType") != resource_type:
            raise invalid(expression, f"must reference a {resource_type}")
        return found


def referral_request(service_request: dict[str, Any], references: References) -> IntakeMapping:
    """Read a structurally valid ServiceRequest (FHIR JSON) as Handoff's referral request.

    BSeR rules checked here: `status` active, `intent` order, a placer `identifier` with a
    value, a `code`, a `subject` Patient and a `requester`. Then Handoff's: a substance
    from `reasonCode`, a Consent in `supportingInfo`, the location, the requester's phone,
    the patient's preferred language. Raises FhirError (422) listing every element that
    fails, so the sender can fix them all at once.
    """
    issues: list[Issue] = []

    def check(condition: bool, expression: str, diagnostics: str, code: str) -> None:
        if not condition:
            issues.append(Issue(code, expression, diagnostics))

    sr = service_request
    check(sr.get("status") == "active", "ServiceRequest.status", "must be active", "value")
    check(sr.get("intent") == "order", "ServiceRequest.intent", "must be order", "value")
    check("code" in sr, "ServiceRequest.code", "the service requested is required", "required")
    check("requester" in sr, "ServiceRequest.requester", "is required", "required")
    check(
        sr.get("priority", "routine") in PRIORITY_URGENCY,
        "ServiceRequest.priority",
        "must be routine, urgent, asap or stat",
        "value",
    )
    identifier_index, identifier = _placer_identifier(sr.get("identifier", []))
    check(
        identifier is not None,
        "ServiceRequest.identifier",
        "an identifier with a value (the placer order number) is required",
        "required",
    )
    substances = substances_of(sr.get("reasonCode", []))
    check(
        bool(substances),
        "ServiceRequest.reasonCode",
        "no code maps to a substance (SNOMED CT or ICD-10-CM; see Handoff's table)",
        "code-invalid",
    )
    patient = _subject(issues, references, sr.get("subject"))
    consent = _consent(issues, references, sr.get("supportingInfo", []))
    location = _location(issues, references, sr)
    phone = _collect_phone(issues, references, sr.get("requester"))
    language = _preferred_language(issues, patient)
    system = identifier.get("system", "") if identifier else ""
    check(
        storable_text(system) and len(system) <= 255,
        f"ServiceRequest.identifier[{identifier_index}].system",
        "must be text of at most 255 characters",
        "value",
    )
    if issues:
        raise FhirError(issues)
    assert identifier is not None
    assert patient is not None
    location, location_cut = fit_location(location) if location else ("", False)
    fields = {
        "external_id": identifier.get("value"),
        "urgency": PRIORITY_URGENCY[sr.get("priority", "routine")],
        "location": location,
        "callback_phone": phone,
        "patient": {
            "preferred_language": language,
            "interpreter_needed": _interpreter_needed(patient, language or ""),
            "coach_gender_preference": _extension_code(sr, COACH_GENDER_PREFERENCE),
            "substances": sorted(substances),
            "consent": consent,
        },
        # ServiceRequest.note is not read: free text, where an ED writes names, history and
        # who to call, is more than a coach needs to be sent (minimum necessary).
        "notes": None,
    }
    try:
        request = ReferralRequest.model_validate(fields)
    except pydantic.ValidationError as error:
        raise FhirError(
            [
                Issue("value", _element_of(item["loc"], identifier_index), item["msg"])
                for item in error.errors()
            ]
        ) from None
    return IntakeMapping(request, system, location_cut)


def _element_of(location: tuple[int | str, ...], identifier_index: int) -> str:
    """The ServiceRequest element a field of the referral request came from."""
    top = str(location[0]) if location else ""
    inner = str(location[1]) if len(location) > 1 else ""
    return {
        "external_id": f"ServiceRequest.identifier[{identifier_index}].value",
        "urgency": "ServiceRequest.priority",
        "location": "ServiceRequest.locationReference",
        "callback_phone": "ServiceRequest.requester",
    }.get(top) or {
        "preferred_language": "Patient.communication.language",
        "coach_gender_preference": f"ServiceRequest.extension('{COACH_GENDER_PREFERENCE}')",
        "substances": "ServiceRequest.reasonCode",
    }.get(inner, "ServiceRequest")


def _placer_identifier(identifiers: list[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
    """The placer order number: the identifier typed PLC (v2-0203), else the first one."""
    with_value = [(i, x) for i, x in enumerate(identifiers) if x.get("value")]
    for index, identifier in with_value:
        codings = identifier.get("type", {}).get("coding", [])
        if any(c.get("code") == "PLAC" for c in codings):
            return index, identifier
    return with_value[0] if with_value else (0, None)


def substances_of(reason_codes: list[dict[str, Any]]) -> frozenset[Substance]:
    """The substances named by reasonCode codings Handoff knows; others are ignored."""
    found: set[Substance] = set()
    for concept in reason_codes:
        for coding in concept.get("coding", []):
            code = str(coding.get("code", ""))
            if coding.get("system") == SNOMED and code in SNOMED_SUBSTANCES:
                found.add(SNOMED_SUBSTANCES[code])
            elif coding.get("system") == ICD10CM:
                normalised = code.upper()
                found.update(s for prefix, s in ICD10CM_SUBSTANCES if normalised.startswith(prefix))
    return frozenset(found)


def _subject(
    issues: list[Issue], references: References, reference: object
) -> dict[str, Any] | None:
    try:
        patient = references.resolve(reference, "Patient", "ServiceRequest.subject")
    except FhirError as refused:
        issues.extend(refused.issues)
        return None
    return patient


def _consent(
    issues: list[Issue], references: References, supporting: list[dict[str, Any]]
) -> Consent | None:
    for index, reference in enumerate(supporting):
        try:
            consent = references.resolve(
                reference, "Consent", f"ServiceRequest.supportingInfo[{index}]"
            )
        except FhirError:
            continue  # supportingInfo may carry other things too
        status = consent.get("status")
        if status not in CONSENT_STATUS:
            issues.append(
                Issue("value", "Consent.status", "must be active (obtained) or proposed (pending)")
            )
            return None
        return CONSENT_STATUS[str(status)]
    issues.append(
        Issue(
            "required",
            "ServiceRequest.supportingInfo",
            "a Consent (contained or in the Bundle) is required",
        )
    )
    return None


def _location(issues: list[Issue], references: References, sr: dict[str, Any]) -> str | None:
    for index, reference in enumerate(sr.get("locationReference", [])):
        if isinstance(reference.get("display"), str):
            return str(reference["display"])
        try:
            place = references.resolve(
                reference, "Location", f"ServiceRequest.locationReference[{index}]"
            )
        except FhirError as refused:
            issues.extend(refused.issues)
            return None
        if isinstance(place.get("name"), str):
            return str(place["name"])
    for concept in sr.get("locationCode", []):
        if isinstance(concept.get("text"), str):
            return str(concept["text"])
    issues.append(
        Issue(
            "required",
            "ServiceRequest.locationReference",
            "where the patient is (a Location's name or a display) is required",
        )
    )
    return None


def _collect_phone(issues: list[Issue], references: References, requester: object) -> str | None:
    if requester is None:
        return None  # already reported as missing
    target = requester.get("reference") if isinstance(requester, dict) else None
    kind = target.split("/")[0] if isinstance(target, str) and "/" in target else None
    kinds = ("PractitionerRole", "Practitioner", "Organization")
    for resource_type in [kind] if kind in kinds else kinds:
        assert resource_type is not None
        try:
            who = references.resolve(requester, resource_type, "ServiceRequest.requester")
        except FhirError:
            continue
        for point in who.get("telecom", []):
            if point.get("system") == "phone" and isinstance(point.get("value"), str):
                return str(point["value"]).replace(" ", "").replace("-", "")
        break
    issues.append(
        Issue(
            "required",
            "ServiceRequest.requester",
            "the requester (contained or in the Bundle) needs a telecom phone in E.164 "
            "for the coach to call back",
        )
    )
    return None


def _preferred_language(issues: list[Issue], patient: dict[str, Any] | None) -> str | None:
    if patient is None:
        return None
    communications = patient.get("communication", [])
    ordered = sorted(communications, key=lambda c: not c.get("preferred", False))
    for communication in ordered:
        for coding in communication.get("language", {}).get("coding", []):
            if isinstance(coding.get("code"), str):
                return str(coding["code"])
    issues.append(
        Issue("required", "Patient.communication", "the patient's preferred language is required")
    )
    return None


def _interpreter_needed(patient: dict[str, Any], language: str) -> bool:
    """The `patient-interpreterRequired` extension's valueBoolean if the Patient carries one;
    without it, a language other than English means one is needed, as over HL7 v2 without
    an interpreter answer: the same patient gets the same flag whichever way the ED sends."""
    for extension in patient.get("extension", []):
        if extension.get("url") == INTERPRETER_REQUIRED and isinstance(
            extension.get("valueBoolean"), bool
        ):
            return bool(extension["valueBoolean"])
    return not language.lower().startswith("en")


def _extension_code(resource: dict[str, Any], url: str) -> str | None:
    for extension in resource.get("extension", []):
        if extension.get("url") == url:
            code = extension.get("valueCode")
            return str(code) if code is not None else ""
    return None


def check_task(task: dict[str, Any], service_request: str, where: str = "Task") -> None:
    """BSeR rules for a Task a hospital posts: `status` requested, `intent` order, `code`
    fulfill, `focus` the ServiceRequest (`service_request` is the reference it must carry).
    Raises FhirError (422) naming each element that fails."""
    issues: list[Issue] = []
    if task.get("status") != "requested":
        issues.append(Issue("value", f"{where}.status", "a new Task must be requested"))
    if task.get("intent") != "order":
        issues.append(Issue("value", f"{where}.intent", "must be order"))
    codings = task.get("code", {}).get("coding", [])
    if not any(c.get("system") == TASK_CODE_SYSTEM and c.get("code") == "fulfill" for c in codings):
        issues.append(Issue("code-invalid", f"{where}.code", f"must be {TASK_CODE_SYSTEM}|fulfill"))
    if task.get("focus", {}).get("reference") != service_request:
        issues.append(Issue("business-rule", f"{where}.focus", f"must reference {service_request}"))
    if issues:
        raise FhirError(issues)


def focused_service_request(task: dict[str, Any]) -> str:
    """The referral id a posted Task's `focus` names (`ServiceRequest/{id}`); raises
    FhirError when it names something else."""
    reference = task.get("focus", {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("ServiceRequest/"):
        raise invalid("Task.focus", "must reference the ServiceRequest (ServiceRequest/{id})")
    return reference.removeprefix("ServiceRequest/")


TASK_FIELDS = ("identifier", "status", "businessStatus", "authoredOn", "output", "statusReason")
"""What a Task discloses of a referral, for its audit entry (the rest is Handoff's own)."""


def task_view(referral: Referral, identifier_system: str) -> dict[str, Any]:
    """The referral as a BSeR Task (FHIR JSON): status and business status now, and each
    timeline entry as an `output`. Minimum necessary: no patient data, only the
    identifier the hospital gave and what happened when."""
    referral_id = str(referral.referral_id)
    state = TASK_STATES[referral.status]
    identifier = {"value": referral.request.external_id}
    if identifier_system:
        identifier = {"system": identifier_system, **identifier}
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": referral_id,
        "meta": {"lastUpdated": _instant(referral.updated_at)},
        "identifier": [identifier],
        "basedOn": [{"reference": f"ServiceRequest/{referral_id}"}],
        "status": state.task_status,
        "businessStatus": {
            "coding": [
                {
                    "system": BSER_BUSINESS_STATUS,
                    "code": state.business_code,
                    "display": state.business_display,
                },
                {"system": REFERRAL_STATUS_SYSTEM, "code": referral.status.value},
            ],
            "text": referral.status.value,
        },
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{referral_id}"},
        "authoredOn": _instant(referral.received_at),
        "lastModified": _instant(referral.updated_at),
        "output": [
            {
                "type": {"coding": [{"system": TIMELINE_STEP_SYSTEM, "code": step.step.value}]},
                "valueDateTime": _instant(step.at),
            }
            for step in referral.timeline
        ],
    }
    if referral.cancel_reason:
        task["statusReason"] = {
            "coding": [{"system": CANCEL_REASON_SYSTEM, "code": referral.cancel_reason}]
        }
    return task


def service_request_view(referral: Referral, identifier_system: str) -> dict[str, Any]:
    """What Handoff answers a posted ServiceRequest with: its id and identifier, no more."""
    identifier = {"value": referral.request.external_id}
    if identifier_system:
        identifier = {"system": identifier_system, **identifier}
    return {
        "resourceType": "ServiceRequest",
        "id": str(referral.referral_id),
        "identifier": [identifier],
        "status": "active",
        "intent": "order",
    }


def cancel_reason_of_patch(operations: object) -> CancelReason:
    """Read a JSON Patch (RFC 6902) of a Task as a cancellation: `replace` (or `add`)
    `/status` with `cancelled`, and optionally `/statusReason` whose coding is one of
    Handoff's cancel reasons (default `no_longer_needed`). `test` operations are allowed
    and ignored. Raises FhirError naming the operation for anything else."""
    if not isinstance(operations, list) or not operations:
        raise invalid("Patch", "expected a JSON Patch: a non-empty operations array", "structure")
    cancelled = False
    reason = CancelReason.NO_LONGER_NEEDED
    for index, operation in enumerate(operations):
        at = f"Patch[{index}]"
        if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
            raise invalid(at, "an operation is an object with op and path", "structure")
        op, path, value = operation["op"], operation.get("path"), operation.get("value")
        if op == "test":
            continue
        if op not in ("replace", "add"):
            raise invalid(f"{at}.op", "only replace, add or test is supported", "not-supported")
        if path == "/status":
            if value != "cancelled":
                raise invalid(
                    f"{at}.value", "a hospital can only set status to cancelled", "not-supported"
                )
            cancelled = True
        elif path == "/statusReason":
            reason = _cancel_reason(value, f"{at}.value")
        else:
            raise invalid(f"{at}.path", "only /status and /statusReason change", "not-supported")
    if not cancelled:
        raise invalid("Patch", "the patch must set /status to cancelled", "required")
    return reason


def _cancel_reason(value: object, at: str) -> CancelReason:
    codings = value.get("coding", []) if isinstance(value, dict) else []
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and coding.get("system") == CANCEL_REASON_SYSTEM:
            try:
                return CancelReason(str(coding.get("code")))
            except ValueError:
                break
    reasons = ", ".join(r.value for r in CancelReason)
    raise invalid(at, f"statusReason needs a coding of {CANCEL_REASON_SYSTEM}: {reasons}", "value")


def parse_identifier_search(token: str) -> tuple[str | None, str]:
    """A token search `system|value`, `|value` (no system) or `value` (any system), as
    (system or None for any, value)."""
    if "|" in token:
        system, value = token.split("|", 1)
        return system, value
    return None, token


def _instant(moment: Any) -> str:
    text: str = moment.isoformat().replace("+00:00", "Z")
    return text
