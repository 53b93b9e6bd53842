"""Engine end to end: constrained and free requests share batches; bad grammars fail alone."""

from __future__ import annotations

import json
import re

import pytest

from intaglio import LLM, SamplingParams
from intaglio.model.checkpoint import EMBEDDED_MODEL
from intaglio.structured import StructuredOutput

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "n", "ok"],
}


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(str(EMBEDDED_MODEL))  # the tiny model, fast


def test_mixed_batch(llm: LLM) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    params = [
        SamplingParams(max_tokens=80, seed=i, structured=StructuredOutput(json_schema=SCHEMA))
        for i in range(4)
    ]
    params += [
        SamplingParams(max_tokens=12, seed=7),
        SamplingParams(max_tokens=30, seed=1, structured={"regex": r"(yes|no): [a-z]{2,6}\."}),
        SamplingParams(max_tokens=30, seed=2, structured={"choice": ["red", "green", "blue"]}),
        SamplingParams(
            max_tokens=40, seed=3, structured={"grammar": 'root ::= "x" | "(" root "+" root ")"'}
        ),
    ]
    outs = llm.generate(["def f(x):"] * len(params), params)
    for out in outs[:4]:
        c = out.outputs[0]
        assert c.finish_reason == "stop", c.text  # finished as soon as the object closed
        jsonschema.validate(json.loads(c.text), SCHEMA)
    assert outs[4].outputs[0].finish_reason == "length"  # the free request is untouched
    assert re.fullmatch(r"(yes|no): [a-z]{2,6}\.", outs[5].outputs[0].text)
    assert outs[6].outputs[0].text in ("red", "green", "blue")
    expr = outs[7].outputs[0]
    if expr.finish_reason == "stop":
        assert re.fullmatch(r"[x()+]+", expr.text) and expr.text.count("(") == expr.text.count(")")


def test_free_request_unchanged_by_constrained_neighbour(llm: LLM) -> None:
    free = SamplingParams(max_tokens=16, temperature=0.0)
    alone = llm.generate(["import os"], free)[0].outputs[0].token_ids
    mixed = llm.generate(
        ["import os", "x = "],
        [free, SamplingParams(max_tokens=16, structured={"regex": r"[0-9]{1,5}"})],
    )
    assert mixed[0].outputs[0].token_ids == alone


def test_bad_grammar_fails_that_request_alone(llm: LLM) -> None:
    outs = llm.generate(
        ["a", "b"],
        [
            SamplingParams(
                max_tokens=5, structured={"json_schema": {"type": "array", "contains": {}}}
            ),
            SamplingParams(max_tokens=5),
        ],
    )
    assert outs[0].error is not None and "'contains' is not supported" in outs[0].error
    assert outs[1].error is None and len(outs[1].outputs[0].token_ids) == 5


def test_structured_params_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SamplingParams(structured={"regex": "a", "choice": ["b"]})
    p = SamplingParams(structured={"json_schema": SCHEMA})
    assert isinstance(p.structured, StructuredOutput) and p.structured.kind == "json_schema"
    # JSON text, as the CLI flag passes it.
    assert SamplingParams(structured='{"regex": "[0-9]+"}').structured.regex == "[0-9]+"
    with pytest.raises(ValueError, match="not JSON"):
        SamplingParams(structured="[0-9]+")


def test_structured_samples_and_forks_keep_their_grammar(llm: LLM) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    structured = StructuredOutput(json_schema=SCHEMA)
    # n > 1: the siblings fork from the first sample after the prompt, each with its matcher.
    out = llm.generate(
        ["def f(x):"], SamplingParams(n=3, seed=4, max_tokens=80, structured=structured)
    )
    for c in out[0].outputs:
        jsonschema.validate(json.loads(c.text), SCHEMA)
    # A fork mid-object inherits the tokens so far and its matcher replays them.
    engine = llm.engine
    params = SamplingParams(seed=5, max_tokens=80, structured=structured)
    engine.add_request("parent", "def f(x):", params)
    while not engine.scheduler.running or len(engine.scheduler.running[0].output_token_ids) < 3:
        engine.step()
    engine.fork("parent", "child", SamplingParams(seed=6, max_tokens=80, structured=structured))
    outs = {}
    while engine.has_unfinished():
        for o in engine.step():
            if o.finished:
                outs[o.request_id] = o
    for rid in ("parent", "child"):
        jsonschema.validate(json.loads(outs[rid].outputs[0].text), SCHEMA)
    # A fork whose grammar cannot continue the inherited tokens is refused.
    engine.add_request("free", "def f(x):", SamplingParams(seed=1, max_tokens=20, ignore_eos=True))
    while not engine.scheduler.running or len(engine.scheduler.running[0].output_token_ids) < 3:
        engine.step()
    choice = SamplingParams(structured={"choice": ["\u2603"]}, max_tokens=20)
    with pytest.raises(ValueError, match="do not fit"):
        engine.fork("free", "bad", choice)
    while engine.has_unfinished():
        engine.step()
