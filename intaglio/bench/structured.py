"""Structured-decoding benchmark: coverage, compliance, compile and mask times on JSONSchemaBench.

    python -m intaglio.bench.structured --data DIR/jsonschemabench --tokenizer llama3=PATH \\
        --per-folder 5 --steps 64
    python -m intaglio.bench.structured --slow --data DIR/jsonschemabench --tokenizer ...

Each compiled schema is decoded by a random policy (a uniform pick among allowed tokens, as a
random-weight model does), then completed; every output is validated with `jsonschema`.
Mask time is one `fill_next_token_bitmask` call, cold caches included.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from intaglio.structured import (
    GrammarCompiler,
    StructuredOutput,
    StructuredOutputError,
    TokenizerInfo,
)

logger = logging.getLogger(__name__)


def load_vocab(spec: str) -> TokenizerInfo:
    kind, path = spec.split("=", 1)
    p = Path(path)
    if p.name == "tokenizer.model":
        return TokenizerInfo.from_tiktoken(p, num_special=256, eos_token_ids=(128001,))
    if p.name == "vocab.json":
        return TokenizerInfo.from_vocab_json(
            p, special={"<|endoftext|>": 151643}, eos_token_ids=(151643,)
        )
    return TokenizerInfo.from_tokenizer_json(p)


class _Ours:
    name = "intaglio"

    def __init__(self, vocab: TokenizerInfo) -> None:
        self.compiler = GrammarCompiler(vocab, timeout_s=10.0)

    def compile(self, schema: Any) -> Any:
        try:
            return self.compiler.compile(StructuredOutput(json_schema=schema))
        except StructuredOutputError:
            return None

    def matcher(self, compiled: Any) -> Any:
        return compiled.matcher()

    def fill(self, m: Any, bits: np.ndarray) -> None:
        m.fill_next_token_bitmask(bits)

    def accept(self, m: Any, tok: int) -> None:
        m.accept_token(tok)

    def done(self, m: Any) -> bool:
        return m.is_terminated()


class _XGrammar:
    name = "xgrammar"

    def __init__(self, vocab: TokenizerInfo) -> None:
        import torch
        import xgrammar as xg

        self.xg, self.torch = xg, torch
        info = xg.TokenizerInfo(
            [b or b"" for b in vocab.token_bytes],
            vocab_type=xg.VocabType.RAW,
            vocab_size=vocab.vocab_size,
            stop_token_ids=list(vocab.eos_token_ids),
        )
        self.compiler = xg.GrammarCompiler(info, max_threads=1)
        self.mask = xg.allocate_token_bitmask(1, vocab.vocab_size)

    def compile(self, schema: Any) -> Any:
        try:
            return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        except Exception:
            return None

    def matcher(self, compiled: Any) -> Any:
        return self.xg.GrammarMatcher(compiled)

    def fill(self, m: Any, bits: np.ndarray) -> None:
        m.fill_next_token_bitmask(self.mask)
        bits[:] = self.mask[0].numpy().view(np.uint8)[: bits.size]

    def accept(self, m: Any, tok: int) -> None:
        m.accept_token(tok)

    def done(self, m: Any) -> bool:
        return m.is_terminated()


class _LLGuidance:
    name = "llguidance"

    def __init__(self, vocab: TokenizerInfo) -> None:
        import llguidance
        import llguidance.numpy as lln

        self.ll, self.lln = llguidance, lln
        by_bytes = {b: i for i, b in enumerate(vocab.token_bytes) if b}

        class _Tok:  # what llguidance's TokenizerWrapper reads; greedy longest-match encode
            eos_token_id = vocab.eos_token_ids[0]
            bos_token_id = None
            tokens = [b or b"" for b in vocab.token_bytes]
            special_token_ids = [i for i, b in enumerate(vocab.token_bytes) if not b]

            def __call__(self, data: bytes) -> list[int]:
                out, i = [], 0
                while i < len(data):
                    j = min(len(data), i + 16)
                    while j > i + 1 and data[i:j] not in by_bytes:
                        j -= 1
                    out.append(by_bytes.get(data[i:j], 0))
                    i = j
                return out

        self.tok = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Tok()))
        self.mask = lln.allocate_token_bitmask(1, vocab.vocab_size)

    def compile(self, schema: Any) -> Any:
        grammar = self.ll.LLMatcher.grammar_from_json_schema(schema)
        m = self.ll.LLMatcher(self.tok, grammar)
        return None if m.is_error() else grammar

    def matcher(self, compiled: Any) -> Any:
        return self.ll.LLMatcher(self.tok, compiled)

    def fill(self, m: Any, bits: np.ndarray) -> None:
        self.lln.fill_next_token_bitmask(m, self.mask, 0)
        bits[:] = self.mask[0].view(np.uint8)[: bits.size]

    def accept(self, m: Any, tok: int) -> None:
        m.consume_token(tok)

    def done(self, m: Any) -> bool:
        return m.is_stopped()


ENGINES = {"intaglio": _Ours, "xgrammar": _XGrammar, "llguidance": _LLGuidance}


def run(
    engine: Any, vocab: TokenizerInfo, paths: list[Path], steps: int, seed: int
) -> dict[str, float]:
    import jsonschema

    rng = np.random.default_rng(seed)
    compiled_n = valid = outputs = 0
    compile_ms: list[float] = []
    mask_us: list[float] = []
    bits = np.zeros(-(-vocab.vocab_size // 32) * 4, dtype=np.uint8)
    for path in paths:
        schema = json.loads(path.read_text())
        t0 = time.perf_counter()
        compiled = engine.compile(schema)
        if compiled is None:
            continue
        m = engine.matcher(compiled)
        compile_ms.append(1e3 * (time.perf_counter() - t0))
        compiled_n += 1
        out = b""
        for _ in range(steps):
            t0 = time.perf_counter()
            engine.fill(m, bits)
            mask_us.append(1e6 * (time.perf_counter() - t0))
            ids = np.flatnonzero(np.unpackbits(bits, bitorder="little")[: vocab.vocab_size])
            if not ids.size:
                break
            tok = int(rng.choice(ids))
            engine.accept(m, tok)
            out += vocab.token_bytes[tok] or b""  # EOS has no bytes
            if engine.done(m):
                break
        if not engine.done(m):
            continue  # unfinished within the step budget: not an output
        outputs += 1
        try:
            cls = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
            cls(schema).validate(json.loads(out))
            valid += 1
        except Exception:
            pass
    mask = np.array(mask_us)
    return {
        "schemas": len(paths),
        "coverage": round(compiled_n / max(len(paths), 1), 3),
        "outputs": outputs,
        "compliance": round(valid / max(outputs, 1), 3),
        "compile_ms_p50": round(float(np.median(compile_ms)), 2) if compile_ms else 0.0,
        "mask_us_p50": round(float(np.percentile(mask, 50)), 1) if mask.size else 0.0,
        "mask_us_p99": round(float(np.percentile(mask, 99)), 1) if mask.size else 0.0,
        "mask_steps": int(mask.size),
    }


THROUGHPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
}


# Needs more than 48 tokens to complete, so every request runs the full max_tokens and the
# tokens per second compare like for like with the free batch.
LONG_SCHEMA = {
    "type": "object",
    "properties": {
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 40}
    },
    "required": ["notes"],
}


def throughput(num_requests: int, max_tokens: int, repeats: int) -> None:
    """Batch of constrained vs unconstrained requests on the embedded default model.

    Tokens per second counts generated tokens; constrained requests may finish early (when
    the grammar completes), so a per-step comparison is reported too.
    """
    from intaglio import LLM, SamplingParams

    llm = LLM(num_threads=1)
    prompts = ["def f(x):"] * num_requests
    specs = {
        "free": None,
        "json": StructuredOutput(json_schema=THROUGHPUT_SCHEMA),
        "json-long": StructuredOutput(json_schema=LONG_SCHEMA),
    }
    for rep in range(repeats):
        for label, spec in specs.items():
            params = [
                SamplingParams(max_tokens=max_tokens, seed=i, ignore_eos=True, structured=spec)
                for i in range(num_requests)
            ]
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            dt = time.perf_counter() - t0
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            stopped = sum(o.outputs[0].finish_reason == "stop" for o in outs)
            print(
                json.dumps(
                    {
                        "repeat": rep,
                        "batch": label,
                        "tokens": tokens,
                        "tok_per_s": round(tokens / dt, 1),
                        "finished_by_grammar": stopped,
                    }
                )
            )


# The compiler's slow paths: a string under both a length bound and a word-count pattern is
# built as a product automaton (minutes before byte classes and per-operand caches; a server
# compiling one served nothing else meanwhile). The synthetic ones isolate the shape; the file
# is where JSONSchemaBench has it (Github_hard, several such strings in one object).
def _words(count: int, max_length: int) -> dict[str, Any]:
    pattern = f"^(?:\\S+\\s+){{0,{count}}}\\S+$"
    return {"type": "string", "maxLength": max_length, "pattern": pattern}


SLOW_SCHEMAS = {
    "words{0,29} maxLength 300": _words(29, 300),
    "words{0,99} maxLength 300": _words(99, 300),
    "words{0,60} maxLength 600": _words(60, 600),
}
SLOW_FILES = ("Github_hard/o21076.json",)


def slow_compiles(vocab: TokenizerInfo, data: str | None, timeout_s: float) -> None:
    """Wall time of each slow schema's compile, in the server's compile worker (a child
    process killed at the limit, so a schema that is still slow cannot hang the benchmark)."""
    import queue

    from intaglio.structured.compile_worker import CompileWorker

    schemas: dict[str, Any] = dict(SLOW_SCHEMAS)
    for name in SLOW_FILES:
        path = Path(data or "") / "data" / name
        if data and path.exists():
            schemas[name] = json.loads(path.read_text())
    worker = CompileWorker(vocab, timeout_s)
    errors: queue.Queue[str | None] = queue.Queue()
    worker.submit(StructuredOutput(regex="a"), lambda _, e: errors.put(e))
    errors.get()  # the child has started: its start-up is not a compile time
    try:
        for name, schema in schemas.items():
            t0 = time.perf_counter()
            worker.submit(StructuredOutput(json_schema=schema), lambda _, e: errors.put(e))
            error = errors.get()
            seconds = round(time.perf_counter() - t0, 2)
            print(json.dumps({"schema": name, "compile_s": seconds, "error": error}))
    finally:
        worker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="jsonschemabench folder")
    ap.add_argument("--tokenizer", action="append", default=[], help="name=path")
    ap.add_argument("--throughput", action="store_true", help="engine batch benchmark instead")
    ap.add_argument("--slow", action="store_true", help="compile times of the slow schemas")
    ap.add_argument("--timeout", type=float, default=120.0, help="--slow: seconds per schema")
    ap.add_argument("--num-requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--per-folder", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", action="append", choices=sorted(ENGINES), help="default: all")
    args = ap.parse_args()
    if args.throughput:
        throughput(args.num_requests, args.max_tokens, args.repeats)
        return
    if args.slow:
        if not args.tokenizer:
            ap.error("--slow needs a --tokenizer")
        slow_compiles(load_vocab(args.tokenizer[0]), args.data, args.timeout)
        return
    if not args.data or not args.tokenizer:
        ap.error("--data and --tokenizer are needed (or --throughput)")
    paths: list[Path] = []
    for folder in sorted((Path(args.data) / "data").iterdir()):
        paths += sorted(folder.glob("*.json"))[: args.per_folder]
    for spec in args.tokenizer:
        vocab = load_vocab(spec)
        for name in args.engine or list(ENGINES):
            try:
                engine = ENGINES[name](vocab)
            except ImportError as e:
                logger.warning("%s is not installed (%s); skipped", name, e)
                continue
            result = run(engine, vocab, paths, args.steps, args.seed)
            row = {"tokenizer": spec.split("=")[0], "vocab": vocab.vocab_size, "engine": name}
            print(json.dumps({**row, **result}))


if __name__ == "__main__":
    main()
