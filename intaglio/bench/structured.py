"""Structured-decoding benchmark: coverage, compliance, compile and mask times on JSONSchemaBench.

    python -m intaglio.bench.structured --data DIR/jsonschemabench --tokenizer llama3=PATH \\
        --per-folder 5 --steps 64

Each compiled schema is decoded by a random policy (a uniform pick among allowed tokens, as a
random-weight model does), then completed; every output is validated with `jsonschema`.
Mask time is one `fill_next_token_bitmask` call, cold caches included.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from intaglio.structured import GrammarCompiler, StructuredOutput, StructuredOutputError
from intaglio.structured.vocab import TokenizerInfo


def load_vocab(spec: str) -> TokenizerInfo:
    kind, path = spec.split("=", 1)
    p = Path(path)
    if p.name == "tokenizer.model":
        return TokenizerInfo.from_tiktoken(p, num_special=256, eos_token_ids=(128001,))
    if p.name == "vocab.json":
        return TokenizerInfo.from_vocab_json(p, special={"<|endoftext|>": 151643},
                                             eos_token_ids=(151643,))
    return TokenizerInfo.from_tokenizer_json(p)


def run(vocab: TokenizerInfo, paths: list[Path], steps: int, seed: int) -> dict[str, float]:
    import jsonschema

    compiler = GrammarCompiler(vocab, timeout_s=10.0)
    rng = np.random.default_rng(seed)
    compiled = valid = outputs = 0
    compile_ms: list[float] = []
    mask_us: list[float] = []
    bits = np.zeros(-(-vocab.vocab_size // 8), dtype=np.uint8)
    for path in paths:
        schema = json.loads(path.read_text())
        t0 = time.perf_counter()
        try:
            grammar = compiler.compile(StructuredOutput(json_schema=schema))
        except StructuredOutputError:
            continue
        compile_ms.append(1e3 * (time.perf_counter() - t0))
        compiled += 1
        m = grammar.matcher()
        out = b""
        for _ in range(steps):
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(bits)
            mask_us.append(1e6 * (time.perf_counter() - t0))
            ids = np.flatnonzero(np.unpackbits(bits, bitorder="little")[: vocab.vocab_size])
            tok = int(rng.choice(ids))
            m.accept_token(tok)
            out += vocab.token_bytes[tok] or b""  # EOS has no bytes
            if m.is_terminated():
                break
        if not m.is_terminated():
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
        "coverage": compiled / max(len(paths), 1),
        "outputs": outputs,
        "compliance": valid / max(outputs, 1),
        "compile_ms_p50": float(np.median(compile_ms)) if compile_ms else 0.0,
        "mask_us_p50": float(np.percentile(mask, 50)) if mask.size else 0.0,
        "mask_us_p99": float(np.percentile(mask, 99)) if mask.size else 0.0,
        "mask_steps": int(mask.size),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="jsonschemabench folder")
    ap.add_argument("--tokenizer", action="append", required=True, help="name=path")
    ap.add_argument("--per-folder", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    paths: list[Path] = []
    for folder in sorted((Path(args.data) / "data").iterdir()):
        paths += sorted(folder.glob("*.json"))[: args.per_folder]
    for spec in args.tokenizer:
        vocab = load_vocab(spec)
        result = run(vocab, paths, args.steps, args.seed)
        print(json.dumps({"tokenizer": spec.split("=")[0], "vocab": vocab.vocab_size, **result}))


if __name__ == "__main__":
    main()
