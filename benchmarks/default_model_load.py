"""Load time and memory of a checkpoint (default: the default model, SmolLM2-135M-Instruct).

Each phase runs in a fresh process so peak RSS is its own: the model alone (GGUF read and
dequantize), the tokenizer alone (built from the GGUF metadata by transformers), and the whole
`LLM(...)` (model, tokenizer, KV cache, CPU kernels). Prints one JSON object.

    python benchmarks/default_model_load.py [--model PATH] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PHASE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from intaglio.model.checkpoint import load_tokenizer, resolve_model_path
path = resolve_model_path({model!r})
t_import = time.perf_counter() - t0
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if {phase!r} == "model":
    from intaglio.model.loader import load_model
    load_model(path, {dtype!r})
elif {phase!r} == "tokenizer":
    load_tokenizer(path)
else:
    from intaglio import LLM
    LLM({model!r}, dtype={dtype!r})
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(path=str(path), seconds=elapsed, import_seconds=t_import,
                      peak_rss_mib=peak / 1024, added_rss_mib=(peak - base) / 1024)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    for phase in ("model", "tokenizer", "llm"):
        code = PHASE.format(model=args.model, dtype=args.dtype, phase=phase)
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            results.setdefault(phase, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({"dtype": args.dtype, **results}, indent=2))


if __name__ == "__main__":
    main()
