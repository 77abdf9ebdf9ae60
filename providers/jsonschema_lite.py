"""A small JSON-schema checker for the strict structured-output subset we send to models.

OpenAI enforces strict schemas itself, but OPENAI_BASE_URL may point at any compatible
server that does not; checking here turns a malformed answer into a retryable
`bad_response` instead of a crash deep inside an activity. Supports: type (incl. lists),
properties, required, additionalProperties false, items, enum, const, min/maxItems, anyOf.
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def validate(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Return human-readable violations; an empty list means the instance is valid."""
    if "anyOf" in schema:
        return _validate_any_of(instance, schema["anyOf"], path)
    problems = _check_type(instance, schema.get("type"), path)
    if problems:
        return problems
    problems += _check_enum(instance, schema, path)
    if isinstance(instance, dict):
        problems += _check_object(instance, schema, path)
    elif isinstance(instance, list):
        problems += _check_array(instance, schema, path)
    return problems


def _validate_any_of(instance: Any, options: list[dict[str, Any]], path: str) -> list[str]:
    if any(not validate(instance, option, path) for option in options):
        return []
    return [f"{path}: matches none of the allowed alternatives"]


def _check_type(instance: Any, expected: str | list[str] | None, path: str) -> list[str]:
    if expected is None:
        return []
    names = [expected] if isinstance(expected, str) else list(expected)
    for name in names:
        allowed = _TYPES.get(name, ())
        is_bool = isinstance(instance, bool)
        if isinstance(instance, allowed) and (name == "boolean" or not is_bool):
            return []
    return [f"{path}: expected {' or '.join(names)}, got {type(instance).__name__}"]


def _check_enum(instance: Any, schema: dict[str, Any], path: str) -> list[str]:
    if "enum" in schema and instance not in schema["enum"]:
        return [f"{path}: {instance!r} is not one of {schema['enum']!r}"]
    if "const" in schema and instance != schema["const"]:
        return [f"{path}: expected {schema['const']!r}"]
    return []


def _check_object(instance: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    props: dict[str, Any] = schema.get("properties", {})
    problems = [f"{path}: missing '{k}'" for k in schema.get("required", []) if k not in instance]
    if schema.get("additionalProperties") is False:
        problems += [f"{path}: unexpected '{k}'" for k in instance if k not in props]
    for key, sub in props.items():
        if key in instance:
            problems += validate(instance[key], sub, f"{path}.{key}")
    return problems


def _check_array(instance: list[Any], schema: dict[str, Any], path: str) -> list[str]:
    problems: list[str] = []
    if "minItems" in schema and len(instance) < schema["minItems"]:
        problems.append(f"{path}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        problems.append(f"{path}: more than {schema['maxItems']} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(instance):
            problems += validate(item, items, f"{path}[{index}]")
    return problems
