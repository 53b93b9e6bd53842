"""`intaglio codesign`: op tables, rooflines, memory plans, simulations and sweeps.

    intaglio codesign list
    intaglio codesign ops --model llama-3-70b --hardware h100-sxm --passes tp=8,fuse \
        --batch decode:64@2048+prefill:512 --out report/
    intaglio codesign memory --model llama-3-405b --hardware h200 --passes tp=8,w=fp8
    intaglio codesign simulate --model llama-3-8b --hardware h100-sxm --num-requests 1000 \
        --rate 20 --out sim/
    intaglio codesign sweep --model llama-3-8b --hardware h100-sxm --param batch=1,8,64,256
    intaglio codesign sweep --model llama-3-8b --hardware h100-sxm --serve --rate 20 \
        --param hw.memory.1.bandwidth_gbs=2000,3350,5000 --out sweep/
    intaglio codesign sweep --model llama-3-70b --hardware h100-sxm --param batch=1,64,256 \
        --param "passes=tp=4;tp=8;tp=8,fuse_allreduce"
    intaglio codesign calibrate --out my-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from intaglio.cli.args import add_dataclass_flags, collect
from intaglio.config import EngineConfig
from intaglio.toolkit.hardware import HardwareError

OP_COLUMNS = [
    "name",
    "kind",
    "shape",
    "dtype",
    "flops",
    "bytes_read",
    "bytes_written",
    "intensity",
    "time_us",
    "bound",
    "fused",
]


def register(sub: argparse._SubParsersAction) -> None:
    cd = sub.add_parser("codesign", help="operation sequences, cost model and simulator")
    cds = cd.add_subparsers(dest="codesign", required=True)
    cds.add_parser("list", help="model presets and hardware descriptions").set_defaults(
        func=run, action=_list
    )
    ops = cds.add_parser("ops", help="per-op table, breakdown and roofline of one step")
    _study_flags(ops)
    ops.add_argument("--batch", default="decode:64@2048", help="e.g. decode:64@2048+prefill:512")
    ops.add_argument("--top", type=int, default=20, help="ops shown in the terminal")
    ops.add_argument(
        "--allow-overflow",
        action="store_true",
        help="cost a step whose weights, activations and KV do not fit one device (warns)",
    )
    ops.set_defaults(func=run, action=_ops)
    low = cds.add_parser(
        "lower", help="one step as tiled load/compute/collective instructions on the chip"
    )
    _study_flags(low)
    low.add_argument("--batch", default="decode:64@2048", help="e.g. decode:64@2048+prefill:512")
    low.add_argument("--layers", default="0", help="layers kept in the trace and plot, e.g. 0,1")
    low.add_argument("--top", type=int, default=15, help="ops shown in the terminal")
    low.set_defaults(func=run, action=_lower)
    mem = cds.add_parser("memory", help="weights, activations, KV capacity: what fits")
    _study_flags(mem)
    mem.set_defaults(func=run, action=_memory)
    sim = cds.add_parser("simulate", help="serve a workload on the engine's scheduler")
    _study_flags(sim)
    sim.set_defaults(func=run, action=_simulate)
    sw = cds.add_parser("sweep", help="step or serving metrics over one parameter or a grid")
    _study_flags(sw)
    sw.add_argument(
        "--param",
        required=True,
        action="append",
        help="NAME=V1,V2,..: batch, context, rate, chunk, max_num_seqs, policy, interleave, "
        "prefix_caching, tp, ep, passes (lists split by ';'), speculative_method (none, "
        "ngram, ...), spec_alpha, num_speculative_tokens, hw.FIELD.PATH or model.CONFIG_FIELD; "
        "twice for a grid of two",
    )
    sw.add_argument("--batch", default=None, help="step mode: the batch (default decode:64@C)")
    sw.add_argument("--context", type=int, default=2048, help="step mode: decode context")
    sw.add_argument("--serve", action="store_true", help="simulate serving at each value")
    sw.set_defaults(func=run, action=_sweep)
    sol = cds.add_parser(
        "solve", help="the hardware a target needs: each parameter's required value"
    )
    _study_flags(sol)
    sol.add_argument("--target", required=True, help="tok_s=, out_tok_s=, ttft_ms=, tpot_ms=...")
    sol.add_argument(
        "--param",
        default=None,
        help="comma list of hw.FIELD.PATH, scale, chips (default: main-memory bandwidth and "
        "capacity, matrix TFLOP/s, link bandwidth, scale, chips)",
    )
    sol.add_argument("--batch", default=None, help="one step's batch (default: serve the workload)")
    sol.set_defaults(func=run, action=_solve)
    cal = cds.add_parser("calibrate", help="measure this CPU into a hardware description")
    cal.add_argument("--out", required=True, help="JSON file to write")
    cal.add_argument("--num-threads", type=int, default=1)
    cal.set_defaults(func=run, action=_calibrate)


def _study_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="preset name, model folder or config.json")
    p.add_argument("--hardware", required=True, help="shipped description name or JSON path")
    p.add_argument("--passes", default="", help="e.g. tp=8,fuse,w=fp8,kv=fp8")
    p.add_argument("--dtype", default=None, help="model dtype (default: the config's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="hardware override by dotted path, e.g. memory.1.bandwidth_gbs=4000",
    )
    p.add_argument("--out", default=None, help="folder for CSV, markdown and plots")
    # The engine's own flags (as for serve and generate), less those a simulation ignores.
    from intaglio.sim.study import STUDY_SKIPS

    add_dataclass_flags(p, EngineConfig, STUDY_SKIPS)
    p.add_argument("--memory-utilization", type=float, default=0.9)
    w = p.add_argument_group("workload")
    w.add_argument("--num-requests", type=int, default=500)
    w.add_argument("--rate", type=float, default=None, help="Poisson req/s (default: all at 0)")
    w.add_argument("--input-len", default="uniform:128:1024")
    w.add_argument("--output-len", default="uniform:64:512")
    w.add_argument(
        "--length-preset",
        default=None,
        help="both lengths from a preset in place of --input-len/--output-len: sharegpt "
        "(log-normal at ShareGPT's published means)",
    )
    w.add_argument("--num-prefixes", type=int, default=0)
    w.add_argument("--prefix-len", type=int, default=0)
    w.add_argument("--priorities", type=int, default=1)
    w.add_argument("--trace", default=None, help="JSONL/CSV trace instead of a synthetic load")
    w.add_argument("--seed", type=int, default=0)
    sp = p.add_argument_group("speculative decoding (with --speculative-method; one of)")
    sp.add_argument(
        "--spec-acceptance",
        type=float,
        nargs="+",
        default=[],
        metavar="P",
        help="the chance draft i is accepted after the ones before it",
    )
    sp.add_argument("--spec-alpha", type=float, default=None, help="one acceptance for all drafts")
    sp.add_argument(
        "--spec-profile",
        default=None,
        help='JSON: {"acceptance": [...]} or `intaglio bench spec --json-out` output (its '
        "rows of the method pooled)",
    )
    sp.add_argument("--spec-workload", default=None, help="--spec-profile rows of this workload")
    sp.add_argument(
        "--spec-draft-rate",
        type=float,
        default=None,
        help="ngram/suffix: the share of decode steps with a match (default: the profile's, or 1)",
    )
    sp.add_argument(
        "--draft-model",
        default=None,
        help="speculative_method draft_model: the draft's architecture (preset or config.json)",
    )


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _study(args: argparse.Namespace):  # noqa: ANN202
    from intaglio.sim.study import STUDY_SKIPS, Study, study_engine_config

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set needs FIELD=VALUE, got {item!r}")
        overrides[key] = _value(value)
    return Study(
        model=args.model,
        hardware=args.hardware,
        passes=args.passes,
        dtype=args.dtype,
        hw_overrides=overrides,
        engine=study_engine_config(**collect(args, EngineConfig, STUDY_SKIPS)),
        memory_utilization=args.memory_utilization,
        num_requests=args.num_requests,
        rate=args.rate,
        input_len=args.input_len,
        output_len=args.output_len,
        length_preset=args.length_preset,
        num_prefixes=args.num_prefixes,
        prefix_len=args.prefix_len,
        priorities=args.priorities,
        trace=args.trace,
        seed=args.seed,
        spec_acceptance=tuple(args.spec_acceptance),
        spec_alpha=args.spec_alpha,
        spec_profile=args.spec_profile,
        spec_workload=args.spec_workload,
        spec_draft_rate=args.spec_draft_rate,
        draft_model=args.draft_model,
    )


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _list(args: argparse.Namespace) -> int:
    from intaglio.toolkit.hardware import available_hardware
    from intaglio.toolkit.presets import PRESETS

    print("models:  ", ", ".join(sorted(PRESETS)))
    print("hardware:", ", ".join(available_hardware()))
    return 0


def _ops(args: argparse.Namespace) -> int:
    from intaglio.sim.study import step_cost, step_overflow_of
    from intaglio.toolkit import plots
    from intaglio.toolkit.passes import parse_batch
    from intaglio.toolkit.report import markdown_table, text_table, write_csv

    study = _study(args)
    overflow = step_overflow_of(study, args.batch)
    if overflow and not args.allow_overflow:
        raise ValueError(f"{overflow} (--allow-overflow costs it anyway)")
    cost = step_cost(study, args.batch, allow_overflow=True)
    tokens = sum(s.num_new_tokens for s in parse_batch(args.batch))
    summary = {
        "model": args.model,
        "hardware": cost.hw.name,
        "batch": args.batch,
        "passes": args.passes,
        "ops": len(cost.ops),
        "step_ms": cost.time_s * 1e3,
        "tokens_per_s": tokens / cost.time_s,
        "gflop": cost.flops / 1e9,
        "gbytes": cost.bytes / 1e9,
        "mfu": cost.mfu,
        "mbu": cost.mbu,
        "bound": cost.dominant_bound,
        "fits": overflow is None,
        **study.economics(tokens, cost.time_s),
    }
    kinds = cost.breakdown("kind")
    rows = cost.rows()
    top = sorted(rows, key=lambda r: -r["time_us"])[: args.top]
    if args.out:  # written before anything is printed, so a closed pipe cannot skip it
        out = Path(args.out)
        write_csv(rows, out / "ops.csv")
        title = f"{args.model} on {cost.hw.name}: {args.batch} {args.passes}"
        plots.roofline(cost, out / "roofline", title)
        plots.breakdown(kinds, out / "breakdown", title)
        kind_rows = [{"kind": k, "ms": v * 1e3} for k, v in kinds.items()]
        (out / "report.md").write_text(
            f"# One step of {args.model} on {cost.hw.name}\n\n"
            + (f"**Warning:** {overflow}\n\n" if overflow else "")
            + f"{markdown_table([summary])}\n"
            f"## Configuration\n\n{_configuration(args)}\n"
            f"## Time by op kind\n\n{markdown_table(kind_rows)}\n"
            f"## Slowest {args.top} ops\n\n{markdown_table(top, OP_COLUMNS)}\n"
            "![roofline](roofline.png)\n\n![breakdown](breakdown.png)\n"
        )
    if overflow:
        print(f"warning: {overflow}", file=sys.stderr)
    print(" ".join(f"{k}={_short(v)}" for k, v in summary.items()))
    print("\ntime by kind: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in kinds.items()))
    print("\n" + text_table(top, OP_COLUMNS))
    if args.out:
        print(f"\nwrote {args.out}/: ops.csv, report.md, roofline.png/.svg, breakdown.png/.svg")
    return 0


LOWER_COLUMNS = [
    "name",
    "kind",
    "time_us",
    "tile",
    "per_step",
    "steps",
    "weight_mb",
    "act_mb",
    "kv_mb",
    "matrix_util",
    "dma_busy",
    "unit_busy",
    "link_busy",
]


def _lower(args: argparse.Namespace) -> int:
    from intaglio.sim.study import step_overflow_of
    from intaglio.toolkit import plots
    from intaglio.toolkit.capture import capture_step
    from intaglio.toolkit.cost import cost_step
    from intaglio.toolkit.lowering import ENGINES, lower_step
    from intaglio.toolkit.passes import parse_batch, parse_passes
    from intaglio.toolkit.report import markdown_table, text_table, write_csv
    from intaglio.toolkit.step_model import apply_passes

    study = _study(args)
    overflow = step_overflow_of(study, args.batch)
    if overflow:
        raise ValueError(overflow)
    hw, weights = study.hw(), study.plan().weight_bytes
    ops = apply_passes(
        capture_step(study.config(), parse_batch(args.batch)), parse_passes(args.passes)
    )
    layers = {int(x) for x in args.layers.split(",") if x.strip()}
    low = lower_step(ops, hw, weights, layers)
    roof = cost_step(ops, hw, weights)
    res = low.residency
    gib = 2**30
    summary = {
        "step_ms": low.time_s * 1e3,
        "roofline_step_ms": roof.time_s * 1e3,
        "weights_gb": low.bytes_by_class["weights"] / 1e9,
        "activations_gb": low.bytes_by_class["activations"] / 1e9,
        "kv_gb": low.bytes_by_class["kv"] / 1e9,
        "matrix_busy": low.busy["matrix"] / low.time_s,
        "dma_busy": low.busy["dma"] / low.time_s,
        "link_busy": low.busy["link"] / low.time_s,
    }
    residency = (
        f"on-chip {res.capacity_bytes / gib:.3g} GiB: weights {res.resident_weight_bytes / gib:.3g}"
        f" of {res.weight_bytes / gib:.3g} GiB resident ({res.weight_fraction:.1%}), KV "
        f"{res.resident_kv_bytes / gib:.3g} of {res.kv_bytes / gib:.3g} GiB "
        f"({res.kv_fraction:.1%}), {res.free_bytes / gib:.3g} GiB left for activations"
    )
    top = sorted(low.op_rows, key=lambda r: -r["time_us"])[: args.top]
    if args.out:  # written before anything is printed, so a closed pipe cannot skip it
        out = Path(args.out)
        write_csv(low.trace_rows(), out / "trace.csv")
        write_csv(low.op_rows, out / "ops.csv")
        bars = [(i.engine, i.start_s, i.end_s, i.op_kind) for i in low.instructions]
        title = f"{args.model} on {hw.name}: {args.batch} {args.passes}, layers {args.layers}"
        plots.timeline(bars, ENGINES, out / "timeline", title)
        (out / "report.md").write_text(
            f"# Lowered step of {args.model} on {hw.name}\n\n{markdown_table([summary])}\n"
            f"{residency}\n\n## Slowest {args.top} ops\n\n"
            f"{markdown_table(top, LOWER_COLUMNS)}\n![timeline](timeline.png)\n\n"
            f"## Configuration\n\n{_configuration(args)}"
        )
    print(" ".join(f"{k}={_short(v)}" for k, v in summary.items()))
    print(residency)
    print("\n" + text_table(top, LOWER_COLUMNS))
    if args.out:
        print(f"\nwrote {args.out}/: trace.csv, ops.csv, report.md, timeline.png/.svg")
    return 0


def _configuration(args: argparse.Namespace) -> str:
    """Every setting of the run, for the report: a report says how it was made."""
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "action")}
    return "```\n" + json.dumps(settings, indent=1, default=str) + "\n```\n"


def _memory(args: argparse.Namespace) -> int:
    plan = _study(args).plan()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "memory.json").write_text(json.dumps(plan.to_dict(), indent=1) + "\n")
        (out / "report.md").write_text(
            f"# Memory plan: {args.model} on {args.hardware}\n\n{plan.message}\n\n"
            f"## Configuration\n\n{_configuration(args)}"
        )
    for k, v in plan.to_dict().items():
        print(f"{k:>20}: {_short(v)}")
    if args.out:
        print(f"wrote {args.out}/: memory.json, report.md")
    return 0 if plan.fits else 1


def _simulate(args: argparse.Namespace) -> int:
    from intaglio.sim.report import format_summary, summarize, timeline
    from intaglio.sim.study import serve, without_speculation
    from intaglio.toolkit import plots
    from intaglio.toolkit.report import markdown_table, write_csv

    study = _study(args)
    result, plan = serve(study)
    summary = summarize(result)
    span = summary["makespan_s"]
    economics = study.economics(summary["output_throughput"] * span, span)  # output tokens
    summary.update(economics)
    if "speculation" in summary:  # the same workload decoded plainly, for the speedup
        plain = summarize(serve(without_speculation(study))[0])["output_throughput"]
        summary["speculation"]["plain_output_tok_s"] = plain
        summary["speculation"]["speedup"] = summary["output_throughput"] / plain
    if args.out:  # written first, so a closed pipe cannot skip it
        out = Path(args.out)
        tl = timeline(result)
        write_csv([dict(zip(tl, vals)) for vals in zip(*tl.values())], out / "timeline.csv")
        write_csv([_request_row(t) for t in result.timings], out / "requests.csv")
        plots.series(
            tl["time_s"],
            {
                "KV usage": tl["kv_usage"],
                "running": tl["num_running"],
                "waiting": tl["num_waiting"],
                "MFU": tl["mfu"],
                "MBU": tl["mbu"],
            },
            "virtual time (s)",
            out / "timeline",
            f"{args.model} on {study.hw().name}",
        )
        metrics = [{"metric": k, "value": v} for k, v in _flatten(summary).items()]
        (out / "report.md").write_text(
            f"# Simulated serving: {args.model} on {study.hw().name}\n\n{plan.message}\n\n"
            f"{markdown_table(metrics)}\n![timeline](timeline.png)\n\n"
            f"## Configuration\n\n{_configuration(args)}"
        )
    print(plan.message)
    print(format_summary(summary))
    if economics:
        print("output tokens: " + ", ".join(f"{k} {v:.4g}" for k, v in economics.items()))
    if args.out:
        print(f"wrote {args.out}/: timeline.csv, requests.csv, report.md, timeline.png/.svg")
    return 0


def _request_row(t: Any) -> dict[str, Any]:
    r = t.request
    return {
        "request_id": r.request_id,
        "arrival_s": r.arrival_s,
        "input_len": r.prompt_len,
        "output_len": r.output_len,
        "priority": r.priority,
        "ttft_s": t.first_token_s - r.arrival_s,
        "e2e_s": t.finish_s - r.arrival_s,
        "preemptions": t.num_preemptions,
    }


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _sweep(args: argparse.Namespace) -> int:
    from intaglio.sim.sweep import sweep
    from intaglio.toolkit import plots
    from intaglio.toolkit.report import markdown_table, text_table, write_csv

    axes = [_axis(text) for text in args.param]
    rows = sweep(_study(args), axes, args.serve, args.batch, args.context)
    cols = list(rows[0])
    names = [name for name, _ in axes]
    if args.out:  # written first, so a closed pipe cannot skip it
        out = Path(args.out)
        write_csv(rows, out / "sweep.csv")
        x_name = names[0]
        x_values = list(axes[0][1])
        numeric = all(isinstance(v, (int, float)) for v in x_values)
        x = x_values if numeric else list(range(len(x_values)))
        wide = numeric and min(x) > 0 and max(x) / min(x) > 20
        title = f"{args.model} on {args.hardware}: {' x '.join(names)}"
        if len(axes) == 1:
            metrics = [c for c in cols if all(isinstance(r[c], float) for r in rows)]
            ys = {m: [r[m] for r in rows] for m in metrics[:4]}
            plots.series(x, ys, x_name, out / "sweep", title, logx=wide)
        else:  # one line per value of the second parameter, for the main metrics
            metric = "output_tok_s_per_chip" if args.serve else "tokens_per_s_per_chip"
            lines = {
                f"{names[1]}={v}": [r[metric] for r in rows if r[names[1]] == v]
                for v in dict.fromkeys(r[names[1]] for r in rows)
            }
            plots.lines(x, lines, x_name, metric, out / "sweep", title, logx=wide)
        (out / "report.md").write_text(
            f"# Sweep of {' x '.join(names)}: {args.model} on {args.hardware}\n\n"
            f"{markdown_table(rows)}\n![sweep](sweep.png)\n\n"
            f"## Configuration\n\n{_configuration(args)}"
        )
    print(text_table(rows, cols))
    if args.out:
        print(f"wrote {args.out}/: sweep.csv, report.md, sweep.png/.svg")
    return 0


def _axis(text: str) -> tuple[str, list[Any]]:
    """NAME=V1,V2,... (values split at semicolons instead when they hold commas: pass lists)."""
    name, _, values = text.partition("=")
    if not values:
        raise ValueError(f"--param needs NAME=V1,V2,..., got {text!r}")
    return name, [_value(v) for v in values.split(";" if ";" in values else ",")]


def _solve(args: argparse.Namespace) -> int:
    from intaglio.sim.solve import default_params, parse_target, solve
    from intaglio.toolkit.report import markdown_table, text_table, write_csv

    study = _study(args)
    metric, target = parse_target(args.target)
    params = args.param.split(",") if args.param else default_params(study)
    rows = [solve(study, p.strip(), metric, target, args.batch).row() for p in params]
    what = args.batch or "the workload"
    if args.out:  # written first, so a closed pipe cannot skip it
        out = Path(args.out)
        write_csv(rows, out / "solve.csv")
        (out / "report.md").write_text(
            f"# What {args.hardware} needs for {metric} = {target:g}: {args.model}, {what}\n\n"
            f"{markdown_table(rows)}\n## Configuration\n\n{_configuration(args)}"
        )
    print(f"target {metric} = {target:g} for {args.model} on {args.hardware}, {what}:")
    print(text_table(rows, list(rows[0])))
    if args.out:
        print(f"wrote {args.out}/: solve.csv, report.md")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from intaglio.toolkit.calibrate import measure_cpu

    doc = measure_cpu(args.num_threads)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"wrote {args.out}: read {doc['memory'][0]['bandwidth_gbs']:.1f} GB/s, fp32 matmul "
        f"{doc['matmul_tflops']['float32']:.3f} TFLOP/s ({args.num_threads} thread(s)); fit "
        "its overheads to the engine with benchmarks/codesign_validate.py"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; a user error is one line on stderr and exit status 2."""
    try:
        return int(args.action(args))
    except (ValueError, HardwareError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) left early; files under --out were written first.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
