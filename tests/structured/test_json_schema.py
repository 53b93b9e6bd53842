"""JSON Schema: generated outputs validate with `jsonschema`; invalid instances are rejected.

Data: the JSON Schema Test Suite (draft 2020-12) and JSONSchemaBench / MaskBench samples from
the shared data folder (skipped when absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from intaglio.structured import GrammarCompiler, StructuredOutput, StructuredOutputError
from tests.structured.helpers import DATA, accepts, byte_vocab, generate

jsonschema = pytest.importorskip("jsonschema")

SUITE = DATA / "json-schema-test-suite" / "tests" / "draft2020-12"
BENCH = DATA / "jsonschemabench"
_TOKENS = [b'{"', b'":', b'",', b'"}', b"true", b"null", b"12", b'": "', b", "]


def _validator(schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _check_outputs(compiled, schema, rng, count: int) -> int:
    validator = _validator(schema)
    done = 0
    for _ in range(count):
        out = generate(compiled.matcher(), rng, int(rng.integers(0, 30)))
        if out is None:
            continue  # the completion search gave up (deep nesting); not an output
        instance = json.loads(out)
        errors = list(validator.iter_errors(instance))
        assert not errors, (schema, out, errors[0].message)
        done += 1
    return done


@pytest.mark.skipif(not SUITE.is_dir(), reason="JSON Schema Test Suite not available")
@pytest.mark.parametrize(
    "path", sorted(SUITE.glob("*.json")) if SUITE.is_dir() else [], ids=lambda p: p.stem
)
def test_schema_test_suite(path: Path) -> None:
    compiler = GrammarCompiler(byte_vocab(_TOKENS))
    rng = np.random.default_rng(0)
    for group in json.loads(path.read_text()):
        try:
            compiled = compiler.compile(StructuredOutput(json_schema=group["schema"]))
        except StructuredOutputError as e:
            assert str(e).startswith("cannot compile the json schema constraint: ")
            continue  # refused with a reason, never accepted silently
        for case in group["tests"]:
            data = json.dumps(case["data"], separators=(",", ":"), ensure_ascii=False).encode()
            if not case["valid"]:
                assert not accepts(compiled.matcher(), data), (group["description"], data)
        _check_outputs(compiled, group["schema"], rng, 3)


def _bench_schemas(limit_per_folder: int) -> list[Path]:
    if not (BENCH / "data").is_dir():
        return []
    out = []
    for folder in sorted((BENCH / "data").iterdir()):
        out += sorted(folder.glob("*.json"))[:limit_per_folder]
    return out


@pytest.mark.skipif(not (BENCH / "data").is_dir(), reason="JSONSchemaBench not available")
def test_jsonschemabench_sample_outputs_validate() -> None:
    compiler = GrammarCompiler(byte_vocab(_TOKENS), timeout_s=5.0)
    rng = np.random.default_rng(0)
    compiled_count = outputs = 0
    paths = _bench_schemas(4)
    for path in paths:
        schema = json.loads(path.read_text())
        try:
            compiled = compiler.compile(StructuredOutput(json_schema=schema))
        except StructuredOutputError:
            continue
        compiled_count += 1
        outputs += _check_outputs(compiled, schema, rng, 2)
    assert compiled_count >= len(paths) // 2
    assert outputs >= compiled_count


def _canonical(schema, data):
    """Re-serialise an instance with object keys in schema order (our grammar's order)."""
    if isinstance(data, dict) and isinstance(schema, dict):
        props = schema.get("properties", {})
        order = [k for k in props if k in data] + [k for k in data if k not in props]
        return {k: _canonical(props.get(k, {}), data[k]) for k in order}
    if (
        isinstance(data, list)
        and isinstance(schema, dict)
        and isinstance(schema.get("items"), dict)
    ):
        return [_canonical(schema["items"], x) for x in data]
    return data


@pytest.mark.skipif(not (BENCH / "maskbench").is_dir(), reason="MaskBench not available")
def test_maskbench_valid_accepted_invalid_rejected() -> None:
    files = sorted((BENCH / "maskbench" / "data").rglob("*.json"))[::25]
    compiler = GrammarCompiler(byte_vocab(_TOKENS), timeout_s=5.0)
    valid = accepted = 0
    for path in files:
        case = json.loads(path.read_text())
        try:
            compiled = compiler.compile(StructuredOutput(json_schema=case["schema"]))
        except StructuredOutputError:
            continue
        for test in case["tests"]:
            data = json.dumps(_canonical(case["schema"], test["data"]), ensure_ascii=False)
            ok = accepts(compiled.matcher(), data.encode())
            if not test["valid"]:
                assert not ok, (path.name, test["description"])
            else:
                valid += 1
                accepted += ok
    # Valid instances may use extra properties or orders we do not generate; most must pass.
    assert valid and accepted / valid > 0.5, (accepted, valid)
