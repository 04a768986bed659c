"""Render each Kustomize overlay of deploy/k8s and check it without a cluster.

Usage: `python scripts/check_k8s.py [OVERLAY_DIR ...]` (default: every deploy/k8s/overlays/*).

Three checks per rendered object, every problem printed as `overlay: Kind/name: what`:
- built-in kinds validate strictly (unknown fields refused) against the Kubernetes
  OpenAPI schemas bundled in the `kubernetes-validate` package, for KUBERNETES_VERSION;
- operator kinds (Strimzi, CloudNativePG, KEDA) validate against the CRD schemas kept in
  deploy/k8s/crds (deploy/k8s/crds/README.md names their source and version), with unknown
  fields refused as `kubectl apply` refuses them (strict field validation);
- policy: pods run as non-root on a read-only root filesystem without privilege escalation,
  every container has CPU and memory requests and limits, images carry a pinned tag (not
  `latest`), Deployments have readiness and liveness probes, and no Secret is rendered
  (secret values never live in the repository).

Exit code 0 when every overlay passes, 1 when any problem is found, 2 when an overlay
cannot be rendered.
"""

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
CACHE = Path(os.environ.get("HANDOFF_CACHE", Path.home() / ".cache" / "handoff"))
KUBERNETES_VERSION = "1.32"
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

Object = dict[str, Any]


def render(overlay: Path) -> list[Object]:
    """`kubectl kustomize` (or a `kustomize` binary) of one overlay, as parsed objects.

    Raises RuntimeError with kustomize's own message when the overlay does not render.
    """
    built = CACHE / "bin" / "kustomize"
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(overlay)]
    elif kustomize := shutil.which("kustomize") or (str(built) if built.exists() else None):
        command = [kustomize, "build", str(overlay)]
    else:
        raise RuntimeError("neither kubectl nor kustomize is here: run scripts/bootstrap.sh")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"{command[0]} exited {done.returncode}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever the API server would refuse them."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
            and "metadata" not in schema["properties"]  # the top level: metadata is ObjectMeta
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def load_crd_schemas(folder: Path = K8S / "crds") -> dict[tuple[str, str], Any]:
    """`(apiVersion, kind)` → the strict JSON Schema of every served version of every CRD kept."""
    schemas: dict[tuple[str, str], Any] = {}
    for path in sorted(folder.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def schema_problems(obj: Object, crds: dict[tuple[str, str], Any]) -> list[str]:
    """What is wrong with one object against its Kubernetes or CRD schema (empty: valid)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in crds:
        validator = jsonschema.Draft7Validator(crds[key])
        return [
            f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        ]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key[0]} {key[1]}: add its CRD to deploy/k8s/crds"]
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(str(p) for p in error.path) or '(top)'}: {error.message}"]
    return []


def _containers(pod: Object) -> Iterator[Object]:
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def policy_problems(obj: Object) -> list[str]:
    """The policy every workload keeps (see the module docstring); empty when it is kept."""
    if obj.get("kind") == "Secret":
        return ["a Secret is rendered: secret values are created by the operator, not committed"]
    if obj.get("kind") not in POD_TEMPLATE_KINDS:
        return []
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    problems = []
    pod_context = pod.get("securityContext", {})
    for container in _containers(pod):
        name = container.get("name", "?")
        context = {**pod_context, **container.get("securityContext", {})}
        if context.get("runAsNonRoot") is not True:
            problems.append(f"container {name}: runAsNonRoot is not true")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"container {name}: readOnlyRootFilesystem is not true")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation is not false")
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(bound, {}):
                    problems.append(f"container {name}: no {resource} in resources.{bound}")
        image = container.get("image", "")
        tag = image.rpartition("/")[2].partition("@")[0].partition(":")[2]
        if "@sha256:" not in image and tag in ("", "latest"):
            problems.append(f"container {name}: image {image!r} is not pinned to a tag")
        if obj["kind"] == "Deployment":
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"container {name}: no {probe}")
    return problems


def check(overlay: Path, crds: dict[tuple[str, str], Any]) -> tuple[int, list[str]]:
    """(objects rendered, problems) for one overlay. Raises RuntimeError if it does not render."""
    objects = render(overlay)
    problems = []
    for obj in objects:
        where = f"{overlay.name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        problems += [f"{where}: {p}" for p in schema_problems(obj, crds) + policy_problems(obj)]
    return len(objects), problems


def main(argv: list[str]) -> int:
    overlays = [Path(a) for a in argv] or sorted(p for p in (K8S / "overlays").iterdir())
    crds = load_crd_schemas()
    failed = False
    for overlay in overlays:
        try:
            count, problems = check(overlay, crds)
        except RuntimeError as error:
            print(f"{overlay.name}: does not render: {error}", file=sys.stderr)
            return 2
        for problem in problems:
            print(problem, file=sys.stderr)
        failed = failed or bool(problems)
        verdict = f"{len(problems)} problem(s)" if problems else "valid, policy kept"
        print(f"{overlay.name}: {count} objects, {verdict} (Kubernetes {KUBERNETES_VERSION})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
