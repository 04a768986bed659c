"""Backward compatibility between two JSON Schemas of one event version.

Backward compatible means: a consumer built on the new schema still reads every
message written under the old one. So the new schema may add optional fields and
widen types; it may not remove a field, make a field required that was not,
or accept fewer values than before (a narrowed type, a dropped enum value, a
shorter maximum length, a new or changed pattern).
"""

from typing import Any

JsonSchema = dict[str, Any]


def breaking_changes(old: JsonSchema, new: JsonSchema) -> list[str]:
    return _compare(old, new, old, new, path="$")


def _resolve(node: JsonSchema, root: JsonSchema) -> JsonSchema:
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        node = {
            **root["$defs"][ref.removeprefix("#/$defs/")],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    return node


def _branches(node: JsonSchema, root: JsonSchema) -> list[JsonSchema]:
    node = _resolve(node, root)
    if "anyOf" in node:
        return [b for branch in node["anyOf"] for b in _branches(branch, root)]
    if "oneOf" in node:
        return [b for branch in node["oneOf"] for b in _branches(branch, root)]
    return [node]


def _kind(node: JsonSchema) -> str:
    if "const" in node:
        return f"const:{node['const']}"
    if "enum" in node:
        return "enum"
    return str(node.get("type", "any"))


def _compare(
    old: JsonSchema, new: JsonSchema, old_root: JsonSchema, new_root: JsonSchema, path: str
) -> list[str]:
    old_branches = _branches(old, old_root)
    new_branches = _branches(new, new_root)
    problems: list[str] = []
    for old_branch in old_branches:
        match = _matching_branch(old_branch, new_branches)
        if match is None:
            problems.append(f"{path}: type narrowed, no longer accepts {_kind(old_branch)}")
            continue
        problems += _compare_same_kind(old_branch, match, old_root, new_root, path)
    return problems


def _matching_branch(old: JsonSchema, candidates: list[JsonSchema]) -> JsonSchema | None:
    old_kind = _kind(old)
    for candidate in candidates:
        if _kind(candidate) == old_kind:
            return candidate
    if old_kind == "enum" or old_kind.startswith("const:"):
        values = old.get("enum", [old.get("const")])
        for candidate in candidates:
            if _kind(candidate) == "enum" and set(values) <= set(candidate["enum"]):
                return candidate
            if "const" not in candidate and "enum" not in candidate:
                return candidate
    if old_kind == "integer":
        return next((c for c in candidates if _kind(c) == "number"), None)
    return next((c for c in candidates if _kind(c) == "any" and "enum" not in c), None)


def _compare_same_kind(
    old: JsonSchema, new: JsonSchema, old_root: JsonSchema, new_root: JsonSchema, path: str
) -> list[str]:
    problems: list[str] = []
    if "enum" in old and "enum" in new:
        dropped = set(old["enum"]) - set(new["enum"])
        if dropped:
            problems.append(f"{path}: enum values removed {sorted(map(str, dropped))}")
    for bound in ("maxLength", "maxItems", "maximum", "exclusiveMaximum"):
        if bound in new and (bound not in old or new[bound] < old[bound]):
            problems.append(f"{path}: {bound} tightened to {new[bound]}")
    for bound in ("minLength", "minItems", "minimum", "exclusiveMinimum"):
        if bound in new and (bound not in old or new[bound] > old[bound]):
            problems.append(f"{path}: {bound} tightened to {new[bound]}")
    if "pattern" in new and new.get("pattern") != old.get("pattern"):
        problems.append(f"{path}: pattern changed to {new['pattern']!r}")
    if "format" in new and new.get("format") != old.get("format"):
        problems.append(f"{path}: format changed to {new['format']!r}")

    old_props: dict[str, JsonSchema] = old.get("properties", {})
    new_props: dict[str, JsonSchema] = new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"{path}.{name}: field removed")
            continue
        problems += _compare(old_prop, new_props[name], old_root, new_root, f"{path}.{name}")
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(newly_required):
        problems.append(f"{path}.{name}: field is now required")
    if "items" in old and "items" in new:
        problems += _compare(old["items"], new["items"], old_root, new_root, f"{path}[]")
    return problems
