"""OpenAI's ``response_format`` on Anthropic's Messages API, which has no such field. Pure.

Anthropic's documented way to get JSON that follows a schema is a tool the model is forced to
call: its ``input_schema`` is the requested schema and its ``input`` is the answer. So:

* ``json_schema`` -> one tool named after ``json_schema.name`` whose ``input_schema`` is the
  schema (``description`` kept), and ``tool_choice: {"type": "tool", "name": ...}``.
* ``json_object`` -> the same with a tool named ``json_object`` taking any object.
* ``text`` (or no ``response_format``) -> nothing changes.
* The answer: that tool's ``input`` becomes the message ``content`` (compact JSON), the finish
  reason is ``stop`` (``length`` when cut), and no tool call is shown; text blocks around it are
  left out (the client asked for JSON only). Streamed, its ``input_json_delta`` fragments are
  the content deltas, byte for byte.

Refused with 400, where no faithful translation exists: ``response_format`` together with the
client's own ``tools``/``functions`` (OpenAI lets the model choose between calling a tool and
answering in the format; a forced tool cannot express that choice, and an optional one would let
a plain-text answer through), a schema whose root is not an object (tool inputs are objects),
and any other ``response_format`` type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ailb.errors import InvalidRequest

JSON_OBJECT_TOOL: Final = "json_object"
_DESCRIPTION: Final = ("Give your answer as this tool's input: a JSON value matching its "
                       "input schema.")


def answer_tool(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The forced tool that carries ``body``'s requested JSON answer, or None. Raises
    InvalidRequest where Anthropic cannot do what was asked."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise InvalidRequest(f"'response_format' type {kind!r} is not supported for Anthropic "
                             "models (use text, json_object or json_schema).",
                             param="response_format.type")
    if body.get("tools") or body.get("functions"):
        raise InvalidRequest("Anthropic models cannot combine 'response_format' with 'tools': "
                             "AILB serves the format as a forced tool call, which leaves no "
                             "choice of your tools. Send one or the other.",
                             param="response_format")
    if kind == "json_object":
        return {"name": JSON_OBJECT_TOOL, "description": _DESCRIPTION,
                "input_schema": {"type": "object"}}
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping) or not spec.get("name"):
        raise InvalidRequest("'response_format.json_schema' with a 'name' is required.",
                             param="response_format.json_schema")
    schema = spec.get("schema")
    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise InvalidRequest("Anthropic models need a JSON schema whose root is an object "
                             "('type': 'object').", param="response_format.json_schema.schema")
    return {"name": str(spec["name"]), "description": str(spec.get("description") or
                                                           _DESCRIPTION),
            "input_schema": schema}


def force(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The request fields that make the model answer through ``tool``."""
    return {"tools": [dict(tool)], "tool_choice": {"type": "tool", "name": tool["name"]}}


def answer_name(body: Mapping[str, Any]) -> str | None:
    """The name of ``body``'s answer tool (None without a JSON format)."""
    tool = answer_tool(body)
    return None if tool is None else str(tool["name"])
