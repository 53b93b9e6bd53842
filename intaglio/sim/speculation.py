"""Speculative decoding in the simulator: acceptance profiles and the draft network's cost.

An acceptance profile is `p[i]`, the chance that draft i is accepted when drafts 0..i-1 were
(drafts past the profile's end are rejected). It comes from the real engine, as accepted over
tried per position (`intaglio bench spec --json-out` records both, from SpecStats), or from a
constant `alpha`, the classic model in which a verification of k drafts yields
(1 - alpha**(k + 1)) / (1 - alpha) tokens in expectation.

A lookup proposer (ngram, suffix) drafts only when the context repeats itself; on the
simulator's synthetic tokens it would find a repeat every time, so the simulator replaces it
with `RateProposer`, which drafts in a measured share of decode steps (the draft rate: drafted
verifications over decode steps in the real run). Its drafts cost nothing on the device.

A draft network costs steps, as in executor/drafter.py: each step it runs once over the step's
tokens (filling its own KV cache) and then one batched decode per draft token over the requests
that sampled; EAGLE's head is one dense layer of the target's width read out by the target's
lm_head (its first draft comes from the fill pass's last rows), a draft model is a whole
smaller model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intaglio.model.config import ModelConfig
from intaglio.model.eagle_head import head_config
from intaglio.toolkit.step_model import StepCostModel


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one verification of k drafts yields at constant acceptance alpha."""
    return float(k + 1) if alpha >= 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


def profile_tokens(profile: Sequence[float], k: int) -> float:
    """Tokens one verification of k drafts yields under a per-position profile."""
    total, reach = 1.0, 1.0
    for p in list(profile)[:k]:
        reach *= p
        total += reach
    return total


def profile_from_counts(accepted: Sequence[int], tried: Sequence[int]) -> tuple[float, ...]:
    """Accepted over tried per position, up to the first position never tried."""
    out = []
    for a, t in zip(accepted, tried):
        if t == 0:
            break
        out.append(a / t)
    return tuple(out)


def load_profile(
    path: str | Path, method: str | None, workload: str | None
) -> tuple[tuple[float, ...], float]:
    """(acceptance profile, draft rate) in a JSON file: {"acceptance": [p0, p1, ...],
    "draft_rate": r (optional, 1 by default)}, or the output of `intaglio bench spec
    --json-out`, whose rows of `method` (and `workload`, when given) are pooled."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"acceptance profile not found: {path}")
    doc: Any = json.loads(path.read_text())
    if isinstance(doc, dict) and "acceptance" in doc:
        profile = tuple(float(p) for p in doc["acceptance"])
        rate = float(doc.get("draft_rate", 1.0))
        if not all(0 <= p <= 1 for p in (*profile, rate)):
            raise ValueError(f"{path}: acceptance values and draft_rate must lie in [0, 1]")
        return profile, rate
    if not isinstance(doc, dict) or "rows" not in doc:
        raise ValueError(
            f"{path}: expected {{'acceptance': [...]}} or `intaglio bench spec --json-out` output"
        )
    rows = [
        r
        for r in doc["rows"]
        if r.get("method") == method and workload in (None, r.get("workload"))
    ]
    rows = [r for r in rows if "tried_per_position" in r]
    if not rows:
        found = sorted({(r.get("method"), r.get("workload")) for r in doc["rows"]}, key=str)
        raise ValueError(
            f"{path} has no per-position counts for method {method!r}"
            + (f" and workload {workload!r}" if workload else "")
            + f"; it holds (method, workload) {found}"
        )
    width = max(len(r["tried_per_position"]) for r in rows)
    accepted, tried = np.zeros(width), np.zeros(width)
    for r in rows:
        accepted[: len(r["accepted_per_position"])] += r["accepted_per_position"]
        tried[: len(r["tried_per_position"])] += r["tried_per_position"]
    # Each request's decode steps emit its tokens after the first, less the accepted drafts.
    steps = sum(r["output_tokens"] - r["batch"] - r["num_accepted_tokens"] for r in rows)
    rate = sum(r["num_drafts"] for r in rows) / steps if steps > 0 else 1.0
    return profile_from_counts(accepted.tolist(), tried.tolist()), rate


class RateProposer:
    """Drafts `max_tokens` copies of `token` in a share `rate` of the steps it is asked."""

    def __init__(self, rate: float, token: int, seed: int) -> None:
        self.rate, self.token = rate, token
        self._rng = np.random.default_rng(seed)

    def propose(self, key: str, token_ids: Sequence[int], max_tokens: int) -> list[int]:
        return [self.token] * max_tokens if self._rng.random() < self.rate else []

    def finish(self, key: str, output_token_ids: Sequence[int]) -> None:
        pass


@dataclass(frozen=True)
class DraftNetwork:
    """A draft network's step costs and what it takes from the target's memory per device."""

    method: str  # "draft_model" or "eagle"
    model: StepCostModel
    weight_bytes: float
    kv_bytes_per_token: float

    def config(self) -> ModelConfig:
        return self.model.cfg

    def cost(
        self, q: np.ndarray, c: np.ndarray, contexts: np.ndarray, num: int
    ) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of drafting `num` tokens for requests whose contexts after
        this step are `contexts` (the first draft decode feeds the last of them), in a step of
        new tokens q at contexts c."""
        eagle = self.method == "eagle"
        rows = len(contexts) if eagle and num > 0 else 0  # EAGLE's first draft: fill-pass rows
        total = np.array(self.model.estimate(q, c, rows))
        ones = np.ones(len(contexts), dtype=np.int64)
        for j in range(num - 1 if eagle else num):
            total += self.model.estimate(ones, contexts + j, len(contexts))
        return float(total[0]), float(total[1]), float(total[2])


def eagle_config(target: ModelConfig) -> tuple[ModelConfig, ModelConfig]:
    """The EAGLE head's config, and the same with no layer (what it shares with the target:
    embedding and lm_head), so their difference counts the head's own weights."""
    head = head_config(target)
    return head, dataclasses.replace(head, num_layers=0)
