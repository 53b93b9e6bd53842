"""`intaglio bench throughput`: offline throughput of Intaglio versus HF transformers.

The workload follows nano-vllm's bench: N requests whose prompts are random token ids and
whose input and output lengths are drawn uniformly (seeded); EOS is ignored so every request
produces exactly its output length. Intaglio runs it through `LLM.generate`; HF transformers
runs the same weights in static batches with left padding. The table ends with the machine's
measured limits and the roofline they imply (FLOPs and bytes of the steps captured by the
co-design toolkit, bench/roofline.py), so a number is read next to what is possible, and with
the memory bandwidth it achieved (GB/s) beside its tokens per second.

    intaglio bench throughput --random-config 120m --dtype bfloat16 --single-stream
    intaglio bench throughput --random-config 120m --dtype bfloat16 --num-requests 64 \
        --input-len 128 128 --output-len 128 128 --max-num-seqs 64 --json-out bench.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from intaglio.bench.random_model import RANDOM_CONFIGS, build_random_llama
from intaglio.bench.roofline import model_params, workload_roofline
from intaglio.model.config import ModelConfig
from intaglio.toolkit.machine import MachineLimits, dtype_name, measure_machine

logger = logging.getLogger(__name__)

SINGLE_STREAM_LEN = 128


def add_throughput_flags(parser: argparse.ArgumentParser) -> None:
    """Workload and benchmark flags; --model, --dtype, --seed etc. come from EngineConfig."""
    g = parser.add_argument_group("throughput benchmark")
    g.add_argument(
        "--random-config",
        choices=sorted(RANDOM_CONFIGS),
        help="benchmark a random-weight Llama of this size instead of --model",
    )
    g.add_argument("--num-requests", type=int, default=None, help="requests (default 64)")
    g.add_argument(
        "--input-len",
        type=int,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="prompt lengths, uniform in [LO, HI] (default 64 256)",
    )
    g.add_argument(
        "--output-len",
        type=int,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="output lengths, uniform in [LO, HI] (default 64 256)",
    )
    g.add_argument(
        "--single-stream",
        action="store_true",
        help=f"one request; input and output length {SINGLE_STREAM_LEN} unless given",
    )
    g.add_argument("--skip-hf", action="store_true", help="do not run HF transformers")
    g.add_argument(
        "--hf-batch-size",
        type=int,
        default=None,
        help="HF static batch size (default: min(max_num_seqs, num_requests))",
    )
    g.add_argument("--no-warmup", action="store_true", help="skip the short warm-up runs")
    g.add_argument("--progress", action="store_true", help="show progress bars")
    g.add_argument("--json-out", help="write every number to this JSON file")
    g.add_argument(
        "--bandwidth-mib",
        type=int,
        default=1024,
        help="buffer size of the memory bandwidth measurement (MiB)",
    )
    g.add_argument(
        "--matmul-max-size",
        type=int,
        default=4096,
        help="largest square matmul of the throughput measurement",
    )


@dataclass(frozen=True)
class Workload:
    prompts: list[list[int]]
    output_lens: list[int]

    @property
    def input_lens(self) -> list[int]:
        return [len(p) for p in self.prompts]

    @property
    def num_prompt_tokens(self) -> int:
        return sum(self.input_lens)

    @property
    def num_output_tokens(self) -> int:
        return sum(self.output_lens)


def make_workload(
    num_requests: int,
    input_len: tuple[int, int],
    output_len: tuple[int, int],
    vocab_size: int,
    seed: int,
) -> Workload:
    rng = np.random.default_rng(seed)
    ins = rng.integers(input_len[0], input_len[1] + 1, num_requests)
    outs = rng.integers(output_len[0], output_len[1] + 1, num_requests)
    low = 3 if vocab_size > 3 else 0  # keep clear of <unk>, <s>, </s>
    prompts = [rng.integers(low, vocab_size, int(n)).tolist() for n in ins]
    return Workload(prompts, [int(n) for n in outs])


def _resolve_workload_flags(
    args: argparse.Namespace,
) -> tuple[int, tuple[int, int], tuple[int, int]]:
    if args.single_stream:
        n = 1
        default_len = (SINGLE_STREAM_LEN, SINGLE_STREAM_LEN)
    else:
        n = args.num_requests if args.num_requests is not None else 64
        default_len = (64, 256)
    if args.single_stream and args.num_requests not in (None, 1):
        raise SystemExit("error: --single-stream runs one request; drop --num-requests")
    in_len = tuple(args.input_len) if args.input_len else default_len
    out_len = tuple(args.output_len) if args.output_len else default_len
    if n < 1:
        raise SystemExit("error: --num-requests must be positive")
    for name, (lo, hi) in (("--input-len", in_len), ("--output-len", out_len)):
        if not 1 <= lo <= hi:
            raise SystemExit(f"error: {name} needs 1 <= LO <= HI, got {lo} {hi}")
    return n, in_len, out_len  # type: ignore[return-value]


# ------------------------------------------------------------------------------- intaglio
def run_intaglio(
    path: Path, eargs: dict[str, Any], work: Workload, warmup: bool, progress: bool
) -> tuple[dict[str, Any], int]:
    """Run the workload through LLM.generate; return (results, the engine's max_num_seqs)."""
    from intaglio.api.llm import LLM
    from intaglio.sampling.params import SamplingParams

    def params(n: int) -> SamplingParams:
        return SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=n, detokenize=False)

    llm = LLM(str(path), **eargs)
    max_num_seqs = llm.config.max_num_seqs
    if warmup:
        k = min(len(work.prompts), 4)
        llm.generate([p[:16] for p in work.prompts[:k]], params(4))
    t0 = time.perf_counter()
    outs = llm.generate(work.prompts, [params(n) for n in work.output_lens], use_tqdm=progress)
    elapsed = time.perf_counter() - t0
    for out, want in zip(outs, work.output_lens):
        if out.error is not None:
            raise RuntimeError(f"request {out.request_id} failed: {out.error}")
        got = len(out.outputs[0].token_ids)
        if got != want:
            raise RuntimeError(f"request {out.request_id} produced {got} tokens, asked {want}")
    ttfts = [o.metrics.time_to_first_token or 0.0 for o in outs]
    decode_rates = [
        (want - 1) / o.metrics.decode_time
        for o, want in zip(outs, work.output_lens)
        if want > 1 and o.metrics.decode_time
    ]
    result = {
        "elapsed_s": elapsed,
        "output_tok_s": work.num_output_tokens / elapsed,
        "total_tok_s": (work.num_prompt_tokens + work.num_output_tokens) / elapsed,
        "mean_ttft_s": statistics.fmean(ttfts),
        "mean_decode_time_s": statistics.fmean(o.metrics.decode_time or 0.0 for o in outs),
        # Per stream: (n_out - 1) / decode_time, averaged over requests; with one request this
        # is the single-stream decode speed.
        "decode_tok_s_per_stream": statistics.fmean(decode_rates) if decode_rates else None,
        "num_preemptions": sum(o.metrics.num_preemptions for o in outs),
    }
    del llm, outs
    gc.collect()
    return result, max_num_seqs


# ------------------------------------------------------------------------ HF transformers
def run_hf(
    path: Path, dtype: torch.dtype, work: Workload, batch_size: int, warmup: bool, progress: bool
) -> dict[str, Any]:
    import transformers

    from intaglio.model.checkpoint import hf_pretrained_args

    folder, kwargs = hf_pretrained_args(path)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
        model = model.eval()
        pad = model.config.pad_token_id
        pad = 0 if pad is None else int(pad)

        def generate(prompts: list[list[int]], max_new: int) -> None:
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), pad, dtype=torch.int64)
            mask = torch.zeros((len(prompts), width), dtype=torch.int64)
            for row, p in enumerate(prompts):  # left padding
                ids[row, width - len(p) :] = torch.tensor(p)
                mask[row, width - len(p) :] = 1
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=max_new,
                min_new_tokens=max_new,  # suppresses EOS: every row runs to max_new
                pad_token_id=pad,
            )

        def timed(prompts: list[list[int]], max_new: int) -> float:
            t0 = time.perf_counter()
            generate(prompts, max_new)
            return time.perf_counter() - t0

        if warmup:
            generate([p[:16] for p in work.prompts[: min(len(work.prompts), 4)]], 4)
        batches = [
            range(i, min(i + batch_size, len(work.prompts)))
            for i in range(0, len(work.prompts), batch_size)
        ]
        elapsed = 0.0
        for b in tqdm(batches, disable=not progress, desc="hf batches", unit="batch"):
            prompts = [work.prompts[i] for i in b]
            elapsed += timed(prompts, max(work.output_lens[i] for i in b))
        result: dict[str, Any] = {
            "batch_size": batch_size,
            "elapsed_s": elapsed,
            # Only requested tokens are useful; a row that runs past its length is waste.
            "output_tok_s": work.num_output_tokens / elapsed,
            "total_tok_s": (work.num_prompt_tokens + work.num_output_tokens) / elapsed,
            "decode_tok_s_per_stream": None,
        }
        n = work.output_lens[0]
        if len(work.prompts) == 1 and n > 1:
            # Decode speed without prefill: (n - 1) / (t_generate(n) - t_generate(1)).
            t1 = min(timed(work.prompts, 1) for _ in range(2))
            result["t_generate_1_s"] = t1
            result["decode_tok_s_per_stream"] = (n - 1) / max(elapsed - t1, 1e-9)
    return result


# --------------------------------------------------------------------------------- report
def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_report(r: dict[str, Any]) -> str:
    w, m, lim, roof = r["workload"], r["model"], r["machine"], r["roofline"]
    lines = [
        f"model: {m['name']} ({m['num_params'] / 1e6:.1f}M params, {m['dtype']}), "
        f"threads {lim['num_threads']}",
        f"workload: {w['num_requests']} requests, input {w['input_len'][0]}-{w['input_len'][1]} "
        f"(mean {w['mean_input_len']:.1f}), output {w['output_len'][0]}-{w['output_len'][1]} "
        f"(mean {w['mean_output_len']:.1f}), {w['num_prompt_tokens']} + "
        f"{w['num_output_tokens']} tokens, EOS ignored",
        "",
        f"{'':24}{'elapsed s':>10}{'output tok/s':>14}{'total tok/s':>13}{'GB/s':>7}"
        f"{'mean TTFT s':>13}{'decode tok/s':>14}{'GB/s':>7}{'roofline':>10}",
    ]
    rows = [("intaglio", r["intaglio"])]
    if r.get("hf"):
        rows.append((f"hf transformers (bs {r['hf']['batch_size']})", r["hf"]))
    for name, row in rows:
        lines.append(
            f"{name:<24}{row['elapsed_s']:>10.2f}{row['output_tok_s']:>14.1f}"
            f"{row['total_tok_s']:>13.1f}{row['achieved_gbs']:>7.1f}"
            f"{_fmt(row.get('mean_ttft_s'), '.3f'):>13}"
            f"{_fmt(row.get('decode_tok_s_per_stream'), '.1f'):>14}"
            f"{_fmt(row.get('decode_gbs'), '.1f'):>7}{row['roofline_fraction']:>10.1%}"
        )
    if r.get("hf"):
        lines.append(f"intaglio / hf: {r['hf']['elapsed_s'] / r['intaglio']['elapsed_s']:.2f}x")
    lines += [
        "(decode tok/s: per stream, (n_out - 1) / decode time; roofline: floor / elapsed;",
        " GB/s: achieved, the bytes of the floor's steps / elapsed, and one decode step's bytes"
        " x decode tok/s)",
    ]
    tf = ", ".join(
        f"{k} {v:.3f} TFLOP/s (n={lim['matmul_sizes'][k]})" for k, v in lim["matmul_tflops"].items()
    )
    d = roof["decode"]
    lines += [
        "",
        f"machine: read {lim['read_bandwidth_gbs']:.1f} GB/s, copy {lim['copy_bandwidth_gbs']:.1f}"
        f" GB/s; matmul {tf}",
        f"decode roofline (batch {d['batch']}, context {d['context']:.0f}, "
        f"{roof['compute_dtype']} matmuls): "
        f"weights {d['weight_bytes'] / 1e6:.0f} MB + KV {d['kv_bytes'] / 1e6:.0f} MB + "
        f"activations {d['act_bytes'] / 1e6:.0f} MB -> "
        f"{d['memory_time_s'] * 1e3:.2f} ms; {d['flops'] / 1e9:.1f} GFLOP -> "
        f"{d['compute_time_s'] * 1e3:.2f} ms; {d['bound']} bound, "
        f"{d['tokens_per_s']:.1f} tok/s",
        f"workload floor: prefill {roof['prefill_floor_s']:.3f} s + decode "
        f"{roof['decode_floor_s']:.3f} s = {roof['floor_s']:.3f} s, moving "
        f"{roof['floor_bytes'] / 1e9:.2f} GB (FLOPs and bytes: the toolkit's captured steps)",
    ]
    ours = r["intaglio"].get("decode_tok_s_per_stream")
    if w["num_requests"] == 1 and ours:
        lines.append(
            f"single-stream decode: intaglio {ours:.1f} tok/s = "
            f"{ours / d['tokens_per_s']:.1%} of the decode roofline, "
            f"{r['intaglio']['decode_gbs']:.1f} GB/s of {lim['read_bandwidth_gbs']:.1f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- main
def _quiet_transformers() -> None:
    """No warnings or progress bars from transformers (saving, loading, generate)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_throughput_benchmark(args: argparse.Namespace, eargs: dict[str, Any]) -> dict[str, Any]:
    """Run the workload of `args` on Intaglio (with engine settings `eargs`) and on HF."""
    from intaglio.model.checkpoint import read_config, resolve_model_path

    n, in_len, out_len = _resolve_workload_flags(args)
    _quiet_transformers()
    if args.model and args.random_config:
        raise SystemExit("error: give --model or --random-config, not both")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    seed = args.seed if args.seed is not None else 0
    with tempfile.TemporaryDirectory(prefix="intaglio-bench-") as tmp:
        if args.random_config:
            path = build_random_llama(args.random_config, Path(tmp), seed)
            name = f"random-{args.random_config}"
        else:
            path = resolve_model_path(args.model)
            name = str(path)
        cfg = read_config(path, eargs.get("dtype", "auto"))
        if in_len[1] + out_len[1] > cfg.max_position_embeddings:
            raise SystemExit(
                f"error: input + output lengths up to {in_len[1] + out_len[1]} exceed the "
                f"model's max_position_embeddings ({cfg.max_position_embeddings})"
            )
        work = make_workload(n, in_len, out_len, cfg.vocab_size, seed)
        warmup = not args.no_warmup
        ours, max_num_seqs = run_intaglio(path, eargs, work, warmup, args.progress)
        hf = None
        if not args.skip_hf:
            bs = args.hf_batch_size or min(max_num_seqs, n)
            hf = run_hf(path, cfg.dtype, work, bs, warmup, args.progress)

    limits = measure_machine(
        eargs.get("device", "cpu"),
        (torch.float32, cfg.dtype),
        args.bandwidth_mib << 20,
        args.matmul_max_size,
    )
    result = build_result(name, cfg, work, in_len, out_len, eargs, max_num_seqs, ours, hf, limits)
    print(format_report(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def build_result(
    name: str,
    cfg: ModelConfig,
    work: Workload,
    in_len: tuple[int, int],
    out_len: tuple[int, int],
    eargs: dict[str, Any],
    max_num_seqs: int,
    ours: dict[str, Any],
    hf: dict[str, Any] | None,
    limits: MachineLimits,
) -> dict[str, Any]:
    n = len(work.prompts)
    # Half-precision weights can always be widened to fp32 for the multiply, so the compute
    # ceiling is the faster of the model dtype's matmul and fp32's (CPUs without bf16 units
    # run bf16 matmuls several times slower than fp32). Bytes stay at the model's dtype.
    compute_dtype = max(
        dict.fromkeys((dtype_name(cfg.dtype), "float32")), key=lambda k: limits.matmul_tflops[k]
    )
    tflops = limits.matmul_tflops[compute_dtype]
    # Steady-state decode: as many sequences as the engine runs at once, halfway through.
    roof = workload_roofline(
        cfg, limits, tflops, work.input_lens, work.output_lens, min(n, max_num_seqs)
    )
    decode = roof.decode
    for row in (ours, hf):
        if row is not None:
            row["roofline_fraction"] = roof.floor_s / row["elapsed_s"]
            # Achieved bandwidth: the bytes of the floor's steps over the measured time, and
            # gpt-fast's decode figure, bytes of one decode step times decode steps a second.
            row["achieved_gbs"] = roof.bytes / row["elapsed_s"] / 1e9
            rate = row.get("decode_tok_s_per_stream")
            row["decode_gbs"] = rate * decode.bytes / 1e9 if rate else None
    num_params, matmul_params = model_params(cfg)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "model": {
            "name": name,
            "dtype": dtype_name(cfg.dtype),
            "num_params": num_params,
            "matmul_params": matmul_params,
        },
        "engine_args": eargs,
        "workload": {
            "num_requests": n,
            "input_len": list(in_len),
            "output_len": list(out_len),
            "mean_input_len": work.num_prompt_tokens / n,
            "mean_output_len": work.num_output_tokens / n,
            "num_prompt_tokens": work.num_prompt_tokens,
            "num_output_tokens": work.num_output_tokens,
        },
        "intaglio": ours,
        "hf": hf,
        "machine": limits.to_dict(),
        "roofline": {
            "source": "toolkit capture (intaglio/toolkit/capture.py) on the measured limits",
            "decode": decode.to_dict(),
            "prefill": roof.prefill.to_dict(),
            "prefill_floor_s": roof.prefill.time_s,
            "decode_floor_s": roof.decode_floor_s,
            "floor_s": roof.floor_s,
            "floor_bytes": roof.bytes,
            "compute_dtype": compute_dtype,
            "compute_tflops": tflops,
        },
    }
