"""``response_schema``: a JSON Schema (2020-12) checked at create; answers are checked against it.

Remote ``$ref`` are never fetched (the ``referencing`` registry has no retriever), so a schema
cannot make the server call out.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, SchemaError

DEFAULT_SCHEMAS: dict[str, dict[str, Any]] = {
    # An approval needs no payload: the outcome is the answer. Extra fields are allowed.
    "approval": {"type": "object"},
    # A question's default answer is free text.
    "question": {
        "type": "object",
        "properties": {"answer": {"type": "string", "minLength": 1}},
        "required": ["answer"],
    },
}


def default_schema(kind: str) -> dict[str, Any]:
    return DEFAULT_SCHEMAS[kind]


def schema_problem(schema: Any) -> str | None:
    """Why this is not a usable JSON Schema, or None when it is."""
    if not isinstance(schema, dict):
        return 'must be a JSON Schema object, e.g. {"type": "object", …}.'
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        return f"is not a valid JSON Schema at {where}: {exc.message}"
    return None


def answer_errors(schema: dict[str, Any], value: Any) -> dict[str, list[str]]:
    """Field-level messages for an answer that does not match ``schema`` (empty when it does)."""
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors: dict[str, list[str]] = {}
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        suffix = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        )
        errors.setdefault(f"response{suffix}", []).append(error.message)
    return errors
