"""drf-spectacular hooks: the wait endpoint (served by an ASGI consumer) and strict bodies."""

from __future__ import annotations

from typing import Any

# Request bodies whose serializers refuse unknown fields (StrictFieldsMixin): say so in the spec.
STRICT_REQUEST_COMPONENTS = ("EscalationCreateRequest", "ActionRequest", "ResponseCreateRequest")


# A question cannot be approved when it times out (there is nothing to approve).
QUESTION_NOT_APPROVED_ON_TIMEOUT = {
    "not": {
        "type": "object",
        "properties": {"kind": {"enum": ["question"]}, "on_timeout": {"enum": ["approve"]}},
        "required": ["kind", "on_timeout"],
    }
}


def forbid_unknown_fields(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """Say in the spec what the serializers enforce beyond single fields."""
    schemas = result.get("components", {}).get("schemas", {})
    for name in STRICT_REQUEST_COMPONENTS:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    if "EscalationCreateRequest" in schemas:
        schemas["EscalationCreateRequest"].setdefault("allOf", []).append(
            QUESTION_NOT_APPROVED_ON_TIMEOUT
        )
    return result


def add_wait_operation(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    problem = {"description": "Problem details (RFC 9457, application/problem+json)"}
    result["paths"]["/api/v1/escalations/{public_id}/wait"] = {
        "get": {
            "operationId": "escalations_wait",
            "summary": "Wait for the decision (long-poll)",
            "description": (
                "Returns as soon as the escalation is terminal, or its current state after "
                "`timeout` seconds (0–60, default 60). Holds no server thread or database "
                "connection while waiting; loop on it (the SDK does) to wait longer."
            ),
            "tags": ["escalations"],
            "parameters": [
                {
                    "name": "public_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                {
                    "name": "timeout",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "number", "minimum": 0, "maximum": 60},
                },
            ],
            "security": [{"ApiKey": []}],
            "responses": {
                "200": {
                    "description": "The escalation, terminal or as it stands at the timeout.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Escalation"}}
                    },
                },
                **{code: problem for code in ("400", "401", "403", "404", "405", "429")},
            },
        }
    }
    return result
