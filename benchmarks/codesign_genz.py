"""Step times side by side with GenZ (the genz-llm package), case by case.

    python benchmarks/codesign_genz.py --engine intaglio      # this project's cost model
    /path/to/genz-venv/bin/python benchmarks/codesign_genz.py --engine genz

GenZ is installed in its own virtual environment (`pip install genz-llm`), never into the
project's. Each case is one step: a prefill of `tokens` for each of `batch` sequences, or a
decode of `batch` sequences at context `tokens`, on H100 with `tp` devices. GenZ runs at
system efficiency 1; this project is shown with its shipped efficiency curves and with ideal
ones (every curve 1, no launch overhead), the like-for-like comparison.
"""

from __future__ import annotations

import argparse
import json

# (model preset, GenZ model name, phase, batch, tokens, tp, dtype)
CASES = [
    ("llama-3-8b", "meta-llama/meta-llama-3.1-8b", "prefill", 1, 2048, 1, "bf16"),
    ("llama-3-8b", "meta-llama/meta-llama-3.1-8b", "decode", 64, 2048, 1, "bf16"),
    ("llama-3-70b", "meta-llama/meta-llama-3.1-70b", "prefill", 1, 2048, 8, "bf16"),
    ("llama-3-70b", "meta-llama/meta-llama-3.1-70b", "decode", 64, 2048, 8, "bf16"),
    ("llama-3-70b", "meta-llama/meta-llama-3.1-70b", "prefill", 4, 2048, 8, "fp8"),
    ("llama-3-70b", "meta-llama/meta-llama-3.1-70b", "decode", 256, 2048, 8, "fp8"),
    ("llama-3-405b", "meta-llama/meta-llama-3.1-405b", "decode", 32, 4096, 8, "fp8"),
]
IDEAL = {
    "efficiency": {"matmul": [[1, 1.0]], "vector": [[1, 1.0]], "memory": [[1, 1.0]]},
    "op_overhead_us": 0,
    "step_overhead_us": 0,
}


def genz_ms(case: tuple) -> float:
    from GenZ import decode_moddeling, prefill_moddeling

    _, name, phase, batch, tokens, tp, dtype = case
    if phase == "prefill":
        out = prefill_moddeling(
            model=name,
            batch_size=batch,
            input_tokens=tokens,
            system_name="H100_GPU",
            bits=dtype,
            tensor_parallel=tp,
        )
    else:
        out = decode_moddeling(
            model=name,
            batch_size=batch,
            input_tokens=tokens,
            output_tokens=1,
            system_name="H100_GPU",
            bits=dtype,
            tensor_parallel=tp,
        )
    return float(out["Latency"])


def intaglio_ms(case: tuple, ideal: bool) -> float:
    from intaglio.sim.study import Study, step_cost

    preset, _, phase, batch, tokens, tp, dtype = case
    passes = ",".join(p for p in (f"tp={tp}" if tp > 1 else "", "fuse") if p)
    if dtype == "fp8":
        passes += ",w=fp8,a=fp8,kv=fp8"
    spec = (
        "+".join([f"prefill:{tokens}"] * batch)
        if phase == "prefill"
        else (f"decode:{batch}@{tokens}")
    )
    study = Study(preset, "h100-sxm", passes, hw_overrides=IDEAL if ideal else {})
    return step_cost(study, spec).time_s * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--engine", choices=("genz", "intaglio"), required=True)
    args = p.parse_args()
    rows = []
    for case in CASES:
        row = {"case": f"{case[0]} {case[2]} {case[3]}x{case[4]} TP{case[5]} {case[6]}"}
        if args.engine == "genz":
            row["genz_ms"] = round(genz_ms(case), 3)
        else:
            row["shipped_ms"] = round(intaglio_ms(case, False), 3)
            row["ideal_ms"] = round(intaglio_ms(case, True), 3)
        rows.append(row)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
