"""The console's response form, generated from an escalation's ``response_schema``.

``response_form(schema)`` turns the schema into a tree of ``SchemaField``s that the template
renders with HTML constraints (the browser's first check); ``ResponseForm.parse`` turns a POST back
into the JSON answer, and the answer is then validated for real by ``response_submit`` against the
same schema. Field names are paths (``response.refund.amount``), the same paths
``schemas.answer_errors`` reports, so the service's errors land next to their inputs.

Covered: objects (nested → fieldsets), enums and consts (choices), booleans (yes/no), strings
(length, pattern, a few formats), numbers and integers (bounds, ``multipleOf``). Anything else
(arrays, ``oneOf``, ``$ref``) is a JSON text area, still validated by the service.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

ROOT = "response"
_INPUT_TYPE_BY_FORMAT = {"email": "email", "uri": "url", "date": "date"}


@dataclass
class SchemaField:
    name: str
    label: str
    kind: str  # boolean | choice | text | textarea | number | integer | object | json
    required: bool = False
    description: str = ""
    input_type: str = "text"
    attrs: dict[str, str] = field(default_factory=dict)
    choices: list[tuple[str, str]] = field(default_factory=list)
    choice_values: list[Any] = field(default_factory=list)
    children: list[SchemaField] = field(default_factory=list)
    value: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def dom_id(self) -> str:
        return "f-" + self.name.replace(".", "-")

    def walk(self) -> list[SchemaField]:
        found = [self]
        for child in self.children:
            found += child.walk()
        return found


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), None)
    return kind if isinstance(kind, str) else None


def _number_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _label(key: str) -> str:
    """A property name as a label when the schema gives no title: ``due_date`` → "Due date"."""
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def _field(schema: Any, *, name: str, label: str, required: bool) -> SchemaField:
    if not isinstance(schema, dict):
        return SchemaField(name=name, label=label, kind="json", required=required)
    label = str(schema.get("title") or label)
    description = str(schema.get("description") or "")
    common: dict[str, Any] = {
        "name": name,
        "label": label,
        "required": required,
        "description": description,
    }
    values = schema.get("enum")
    if values is None and "const" in schema:
        values = [schema["const"]]
    if isinstance(values, list) and values:
        return SchemaField(
            kind="choice",
            choices=[
                (str(index), value if isinstance(value, str) else json.dumps(value))
                for index, value in enumerate(values)
            ],
            choice_values=list(values),
            **common,
        )
    kind = _type(schema)
    if kind == "object" and not isinstance(schema.get("properties"), dict) and name == ROOT:
        # ``{"type": "object"}`` (the approval default): the outcome is the whole answer.
        return SchemaField(kind="object", **common)
    if kind == "object" and isinstance(schema.get("properties"), dict):
        needed = set(schema.get("required") or [])
        children = [
            _field(sub, name=f"{name}.{key}", label=_label(key), required=key in needed)
            for key, sub in schema["properties"].items()
        ]
        return SchemaField(kind="object", children=children, **common)
    if kind == "boolean":
        return SchemaField(kind="boolean", **common)
    if kind in ("number", "integer"):
        attrs = {}
        if "minimum" in schema:
            attrs["min"] = _number_text(schema["minimum"])
        if "maximum" in schema:
            attrs["max"] = _number_text(schema["maximum"])
        step = schema.get("multipleOf")
        attrs["step"] = _number_text(step) if step else ("1" if kind == "integer" else "any")
        return SchemaField(kind=kind, input_type="number", attrs=attrs, **common)
    if kind == "string":
        attrs = {}
        if isinstance(schema.get("minLength"), int):
            attrs["minlength"] = str(schema["minLength"])
        if isinstance(schema.get("maxLength"), int):
            attrs["maxlength"] = str(schema["maxLength"])
        if isinstance(schema.get("pattern"), str):
            # HTML patterns are anchored and use the ``v`` flag; a pattern the browser cannot
            # compile is ignored by it, and the server checks the real one either way.
            attrs["pattern"] = schema["pattern"]
        long_text = schema.get("maxLength") is None or schema["maxLength"] > 200
        input_type = _INPUT_TYPE_BY_FORMAT.get(str(schema.get("format")), "text")
        return SchemaField(
            kind="textarea" if long_text and input_type == "text" else "text",
            input_type=input_type,
            attrs=attrs,
            **common,
        )
    return SchemaField(kind="json", **common)


class ResponseForm:
    """The generated form: a root field, submitted values, and errors in place."""

    def __init__(self, schema: Any) -> None:
        self.root = _field(schema, name=ROOT, label="Answer", required=True)
        self.errors: list[str] = []  # errors that belong to no single field

    @property
    def fields(self) -> list[SchemaField]:
        """The top-level inputs (the root object's properties, or the root itself)."""
        if self.root.kind == "object":
            return self.root.children
        return [self.root]

    @property
    def is_yes_no(self) -> bool:
        return self.root.kind == "boolean"

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or any(f.errors for f in self.root.walk())

    def parse(self, data: QueryDict) -> Any:
        """The JSON answer from a POST; fills ``value`` and ``errors`` of the fields."""
        value = self._parse(self.root, data)
        return None if value is _MISSING else value

    def _parse(self, node: SchemaField, data: QueryDict) -> Any:
        if node.kind == "object":
            answer: dict[str, Any] = {}
            for child in node.children:
                value = self._parse(child, data)
                if value is not _MISSING:
                    answer[child.name.rsplit(".", 1)[-1]] = value
            if (
                not node.required
                and node.name != ROOT
                and not any(child.value.strip() for child in node.walk())
            ):
                # An optional object left entirely blank is absent, not missing its parts.
                for child in node.walk():
                    child.errors.clear()
                return _MISSING
            return answer
        raw = data.get(node.name, "")
        node.value = raw
        if raw.strip() == "":
            if node.required:
                node.errors.append("This field is required.")
            return _MISSING
        if node.kind == "choice":
            try:
                return node.choice_values[int(raw)]
            except (ValueError, IndexError):
                node.errors.append("Choose one of the options.")
                return _MISSING
        if node.kind == "boolean":
            if raw not in ("true", "false"):
                node.errors.append("Choose yes or no.")
                return _MISSING
            return raw == "true"
        if node.kind == "integer":
            try:
                return int(raw.strip())
            except ValueError:
                node.errors.append("Enter a whole number.")
                return _MISSING
        if node.kind == "number":
            try:
                number = float(raw.strip())
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                node.errors.append("Enter a number.")
                return _MISSING
            return int(number) if number.is_integer() and "." not in raw else number
        if node.kind == "json":
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                node.errors.append(f"Enter valid JSON ({exc.msg} at line {exc.lineno}).")
                return _MISSING
        return raw

    def add_errors(self, errors: dict[str, list[str]]) -> None:
        """Place the service's field errors (``response.a.b`` paths) on the nearest input."""
        by_name = {node.name: node for node in self.root.walk()}
        for path, messages in errors.items():
            key = path.split("[", 1)[0]
            while key and key not in by_name:
                key = key.rpartition(".")[0]
            target = by_name.get(key)
            if target is None or target.kind == "object":
                self.errors += messages
            else:
                target.errors += messages


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
