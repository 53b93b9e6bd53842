"""Plots for co-design reports (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from intaglio.toolkit.cost import StepCost

Values = Sequence[float] | np.ndarray  # one number per point


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, stem: Path) -> list[Path]:  # noqa: ANN001
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    return paths


def roofline(cost: StepCost, stem: Path, title: str) -> list[Path]:
    """Each op at (FLOPs per byte, achieved FLOP/s) under the hardware's roof; PNG and SVG."""
    plt = _pyplot()
    hw = cost.hw
    peak = hw.matmul_rate(cost.main_dtype)
    bw = hw.main_memory.bandwidth_bytes_s
    ops = [o for o in cost.ops if o.flops > 0 and o.bytes > 0]
    times = {id(o): t for o, t in zip(cost.ops, cost.times.time_s)}
    x = np.array([o.intensity for o in ops])
    y = np.array([o.flops / times[id(o)] for o in ops])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = np.logspace(np.log10(max(x.min() / 2, 1e-2)), np.log10(x.max() * 2), 200)
    ax.plot(xs, np.minimum(peak, xs * bw), "k-", lw=1.5, label="roof (peak, bandwidth)")
    for kind in sorted({o.kind for o in ops}):
        sel = np.array([o.kind == kind for o in ops])
        ax.scatter(x[sel], y[sel], s=14, label=kind, alpha=0.8)
    ax.axvline(peak / bw, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


def breakdown(parts: dict[str, float], stem: Path, title: str) -> list[Path]:
    """Horizontal bars of time per op kind (or role)."""
    plt = _pyplot()
    names = list(parts)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1))
    ax.barh(names, [parts[n] * 1e3 for n in names])
    ax.set_xlabel("ms per step")
    ax.set_title(title, fontsize=9)
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


def series(
    x: Values,
    ys: Mapping[str, Values],
    xlabel: str,
    stem: Path,
    title: str,
    logx: bool = False,
) -> list[Path]:
    """One line per metric against a swept parameter (or time)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(ys), 1, figsize=(6.5, 2.2 * len(ys)), sharex=True, squeeze=False)
    for ax, (name, y) in zip(axes[:, 0], ys.items()):
        ax.plot(x, y, "o-" if len(x) < 40 else "-", ms=3)
        ax.set_ylabel(name, fontsize=8)
        if logx:
            ax.set_xscale("log")
    axes[-1, 0].set_xlabel(xlabel)
    axes[0, 0].set_title(title, fontsize=9)
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


def lines(
    x: Values,
    ys: Mapping[str, Values],
    xlabel: str,
    ylabel: str,
    stem: Path,
    title: str,
    logx: bool = False,
) -> list[Path]:
    """One metric against a swept parameter, one labelled line per value of a second one."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for label, y in ys.items():
        ax.plot(x, y, "o-", ms=3, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


def timeline(
    bars: Sequence[tuple[str, float, float, str]], engines: Sequence[str], stem: Path, title: str
) -> list[Path]:
    """A Gantt chart of instructions: (engine, start s, end s, op kind) per bar, one row per
    engine, coloured by op kind, so overlap of loads, compute and collectives shows."""
    plt = _pyplot()
    kinds = sorted({b[3] for b in bars})
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(engines) + 1.5))
    for engine, start, end, kind in bars:
        row = engines.index(engine)
        ax.barh(row, (end - start) * 1e6, left=start * 1e6, height=0.6, color=colours[kind])
    ax.set_yticks(range(len(engines)), list(engines))
    ax.invert_yaxis()
    ax.set_xlabel("time (µs)")
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in kinds]
    ax.legend(
        handles,
        kinds,
        fontsize=7,
        ncol=min(len(kinds), 5),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
    )
    paths = _save(fig, stem)
    plt.close(fig)
    return paths
