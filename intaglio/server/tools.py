"""Function calling: a chat request's `tools` and `tool_choice` -> the prompt's tool part and
the grammar, if any, its output must follow.

- `none` (or no tools): the tools are left out of the prompt; the output is plain text.
- `auto` (the default with tools): the model answers in words or calls; tool_parsers.py finds
  the calls. Free by default (as vLLM); when a tool is `strict` (OpenAI's flag) and the model
  writes Hermes `<tool_call>` blocks, a grammar lets it write text or blocks whose JSON is a
  call of one of the tools, strict tools' arguments following their `parameters` schema.
- `required` / a named function: the output must be calls, enforced by the grammar engine: a
  JSON object `{"name": ..., "arguments": {...}}` whose arguments follow that function's
  `parameters` schema, or with `parallel_tool_calls` (OpenAI's default) a JSON list of one or
  more of them.

A template that does not render tools (or no template) gets them in a system message in the
Hermes format, and earlier calls and results written as Hermes text, so the model still sees
them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from intaglio.api.chat_prompt import template_knows_tools
from intaglio.server.errors import bad_request
from intaglio.server.protocol import ChatCompletionRequest, Tool
from intaglio.server.sampling import structured_param
from intaglio.server.tool_parsers import HERMES_END, HERMES_START
from intaglio.structured.spec import StructuredOutput, TaggedJson


@dataclass(frozen=True)
class ToolPlan:
    tools: list[dict[str, Any]]  # OpenAI tool definitions, as the chat template takes them
    mode: str  # "none", "auto" or "forced"
    structured: StructuredOutput | None  # the grammar of forced calls, or of strict `auto`

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}


def writes_hermes(tokenizer: Any) -> bool:
    """Whether the model is asked for Hermes `<tool_call>` blocks: by our own prompt when its
    template does not render tools, or by a template that shows that format."""
    template = str(getattr(tokenizer, "chat_template", None) or "")
    return not template_knows_tools(tokenizer) or HERMES_START in template


def plan_tools(req: ChatCompletionRequest, hermes: bool) -> ToolPlan | None:
    """The request's function calling, or None without tools; a 400 for what cannot be met.
    `hermes`: whether the model writes Hermes blocks (writes_hermes), which strict `auto`
    can enforce."""
    choice = req.tool_choice
    if not req.tools:
        if choice not in (None, "none"):
            raise bad_request("tool_choice needs tools", "tool_choice")
        return None
    names = [t.function.name for t in req.tools]
    if len(set(names)) != len(names):
        raise bad_request("tool function names must be unique", "tools")
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    if choice == "none":
        return ToolPlan(tools, "none", None)
    parallel = req.parallel_tool_calls is not False
    other = structured_param(req)
    if choice is None or choice == "auto":
        strict = any(t.function.strict for t in req.tools)
        if not (strict and hermes and other is None):
            return ToolPlan(tools, "auto", None)
        blocks = TaggedJson(
            HERMES_START,
            HERMES_END,
            calls_schema(req.tools, False, forced=False),
            None if parallel else 1,
        )
        return ToolPlan(tools, "auto", StructuredOutput(tagged_json=blocks))
    if other is not None:
        raise bad_request(f"a forced tool call cannot also follow {other}", "tool_choice")
    if choice == "required":
        forced = req.tools
    else:
        forced = [t for t in req.tools if t.function.name == choice.function.name]
        if not forced:
            raise bad_request(f"tool_choice names no tool: {choice.function.name!r}", "tool_choice")
    schema = calls_schema(forced, parallel and choice == "required")
    return ToolPlan(tools, "forced", StructuredOutput(json_schema=schema))


def calls_schema(tools: list[Tool], parallel: bool, forced: bool = True) -> dict[str, Any]:
    """The JSON Schema of calls: one call of the given tools, or a list of them.

    Each function's parameters schema is kept whole under `$defs`, its own `#...` references
    rewritten to point inside it, so schemas with `$defs` of their own compose. In `auto`,
    only strict tools' arguments follow their schema; the others' are any JSON object.
    """
    defs: dict[str, Any] = {}
    calls = []
    for i, tool in enumerate(tools):
        key = f"tool{i}"
        params = tool.function.parameters
        if params is None:
            params = _NO_ARGUMENTS
        elif not (forced or tool.function.strict):
            params = _ANY_OBJECT
        defs[key] = _rebase(params, f"#/$defs/{key}")
        calls.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool.function.name},
                    "arguments": {"$ref": f"#/$defs/{key}"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    call: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if parallel:
        return {"$defs": defs, "type": "array", "items": call, "minItems": 1}
    return {"$defs": defs, **call}


_NO_ARGUMENTS = {"type": "object", "properties": {}}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}


def _rebase(schema: Any, base: str) -> Any:
    """`schema` with every local `$ref` ("#", "#/...") made relative to `base`."""
    if isinstance(schema, list):
        return [_rebase(item, base) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _rebase(v, base) for k, v in schema.items()}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        out["$ref"] = base + ref[1:]
    return out


def tool_conversation(
    conversation: list[dict[str, Any]], tools: list[dict[str, Any]] | None, template_has_tools: bool
) -> list[dict[str, Any]]:
    """The conversation as a template without tool support can render it: the tools in a
    system message, earlier calls as `<tool_call>` text, results as `<tool_response>` text."""
    if template_has_tools:
        return conversation
    out = []
    for m in conversation:
        if m.get("tool_calls"):
            calls = "\n".join(
                f"{HERMES_START}\n{json.dumps(c['function'], ensure_ascii=False)}\n{HERMES_END}"
                for c in m["tool_calls"]
            )
            text = f"{m['content']}\n{calls}" if m["content"] else calls
            out.append({"role": m["role"], "content": text})
        elif m["role"] == "tool":
            out.append(
                {"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
            )
        else:
            out.append({k: v for k, v in m.items() if k != "tool_call_id"})
    if tools:
        prompt = _tools_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _tools_prompt(tools: list[dict[str, Any]]) -> str:
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "You may call one or more functions to assist with the user query. The functions "
        f"are listed within <tools></tools> tags:\n<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a JSON object with the function name and arguments "
        f"within {HERMES_START}{HERMES_END} tags:\n{HERMES_START}\n"
        f'{{"name": <function-name>, "arguments": <args-json-object>}}\n{HERMES_END}'
    )
