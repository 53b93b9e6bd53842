"""StepCostModel: the time of any engine step, from three captures instead of one per step.

Every op's element counts are affine in the step's token count n and its sampled-row count r
(weights are fixed; activations grow with n; the logits with r), except attention, whose work
depends on each sequence's new tokens and context (toolkit/attention_cost.py), and expert
weights under MoE routing, which grow with the chance an expert is touched. So the model is
captured (and passed through the user's passes) at three probe batches, each op's counts are
solved as base + a * n + b * r after taking out the closed-form attention term, and a step is
then costed with numpy over the op columns: thousands of steps per second on a 405B model.
`tests/toolkit/test_step_model.py` checks the result against a direct capture.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from intaglio.model.config import ModelConfig
from intaglio.toolkit import ops as K
from intaglio.toolkit.attention_cost import attention_work
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.cost import OpTable, kind_scale, op_times, peak_rates
from intaglio.toolkit.fusion import Pass
from intaglio.toolkit.hardware import Hardware
from intaglio.toolkit.ops import DTYPE_BYTES, Op, SeqShape

_FIELDS = (
    "flops",
    "weight_elems",
    "act_in_elems",
    "act_out_elems",
    "kv_read_elems",
    "kv_write_elems",
    "comm_bytes",
    "rows",
)
_ATTN_FIELDS = ("flops", "act_in_elems", "act_out_elems", "kv_read_elems", "kv_write_elems")
_N1, _N2 = 64, 256  # probe token counts


def apply_passes(ops: list[Op], passes: Sequence[Pass]) -> list[Op]:
    for p in passes:
        ops = p(ops)
    return ops


def _probes() -> list[list[SeqShape]]:
    return [
        [SeqShape(_N1, _N1)],  # n = N1, r = 1
        [SeqShape(_N2, _N2)],  # n = N2, r = 1
        [SeqShape(_N1 - 1, _N1 - 1), SeqShape(1, 1)],  # n = N1, r = 2
    ]


class StepCostModel:
    def __init__(
        self,
        cfg: ModelConfig,
        hw: Hardware,
        passes: Sequence[Pass] = (),
        weight_bytes_total: float | None = None,
    ) -> None:
        self.cfg, self.hw = cfg, hw
        captures = [apply_passes(capture_step(cfg, seqs), passes) for seqs in _probes()]
        ref = captures[0]
        for other in captures[1:]:
            if [(o.name, o.kind) for o in other] != [(o.name, o.kind) for o in ref]:
                raise ValueError(
                    "the op sequence changes shape with the batch; a pass "
                    "must keep the same ops for every batch size"
                )
        self.ops = ref  # structure, dtypes and attrs
        self.attn_rows = [i for i, o in enumerate(ref) if o.kind == K.ATTENTION]
        self.attn_groups = self._attention_groups(ref)
        expert = [i for i, o in enumerate(ref) if "num_experts" in o.attrs and o.weight_elems > 0]
        self.expert_rows = np.array(expert, dtype=np.int64)
        vals = []
        for ops, seqs in zip(captures, _probes()):
            v = np.array([[getattr(o, f) for f in _FIELDS] for o in ops], dtype=np.float64)
            v[self.attn_rows] -= self._attention_matrix(seqs)
            vals.append(v)
        a = (vals[1] - vals[0]) / (_N2 - _N1)  # per token
        b = vals[2] - vals[0]  # per sampled row
        self.base = vals[0] - a * _N1 - b
        self.per_token, self.per_row = a, b
        # Ops that run only for sampled rows (lm_head, its gather): a step that samples none
        # (a middle prefill chunk, a draft network's fill pass) skips them, weights included.
        self._sampling_only = (a == 0).all(axis=1) & (b != 0).any(axis=1)
        # A token reaches an expert with probability top_k / E, or its skewed share.
        probs = [
            ref[i].attrs.get("route_probs", [ref[i].attrs["top_k"] / ref[i].attrs["num_experts"]])
            for i in expert
        ]
        starts = np.cumsum([0] + [len(p) for p in probs[:-1]])
        self._route_probs = (np.concatenate(probs) if probs else np.zeros(0), starts)
        self._expert_ref = vals[0][self.expert_rows, 1] if expert else None
        self._bytes = {
            "weight": np.array([DTYPE_BYTES[o.weight_dtype] for o in ref]),
            "act": np.array([DTYPE_BYTES[o.act_dtype] for o in ref]),
            "kv": np.array([DTYPE_BYTES[o.kv_dtype] for o in ref]),
        }
        self._table = OpTable.from_ops(ref)
        self._rates = peak_rates(hw, self._table)
        self._scale = kind_scale(hw, self._table)
        self.weight_bytes_total = (
            float(vals[0][:, 1] @ self._bytes["weight"])
            if weight_bytes_total is None
            else weight_bytes_total
        )

    @staticmethod
    def _attention_groups(ops: list[Op]) -> dict[tuple, list[int]]:
        groups: dict[tuple, list[int]] = {}
        for j, i in enumerate(i for i, o in enumerate(ops) if o.kind == K.ATTENTION):
            a = ops[i].attrs
            key = (
                a["num_heads"],
                a["num_kv_heads"],
                a["head_dim"],
                a.get("window"),
                a.get("chunk"),
                a.get("share", 1.0),  # a data-parallel or micro-batch share of the work
            )
            groups.setdefault(key, []).append(j)
        return groups

    def _attention_matrix(self, seqs: Sequence[SeqShape]) -> np.ndarray:
        q = np.array([s.num_new_tokens for s in seqs])
        c = np.array([s.context_len for s in seqs])
        return self._attention_from_arrays(q, c)

    def _attention_from_arrays(self, q: np.ndarray, c: np.ndarray) -> np.ndarray:
        out = np.zeros((len(self.attn_rows), len(_FIELDS)))
        for (heads, kv, d, window, chunk, share), rows in self.attn_groups.items():
            work = attention_work(q, c, heads, kv, d, window, chunk)
            for f in _ATTN_FIELDS:
                out[rows, _FIELDS.index(f)] = work[f] * share
        return out

    def values(self, q: np.ndarray, c: np.ndarray, num_sampled: int) -> np.ndarray:
        """[num_ops, len(_FIELDS)] counts of a step with new tokens q and contexts c."""
        n = float(np.sum(q))
        v = self.base + self.per_token * n + self.per_row * num_sampled
        if num_sampled == 0:
            v[self._sampling_only] = 0.0
        if self.attn_rows:
            v[self.attn_rows] += self._attention_from_arrays(q, c)
        if self._expert_ref is not None:
            v[self.expert_rows, 1] = self._expert_ref * self._touched(n) / self._touched(_N1)
        return v

    def _touched(self, n: float) -> np.ndarray:
        # A grouped op sums its experts' chances of being touched.
        probs, starts = self._route_probs
        return np.add.reduceat(1.0 - (1.0 - probs) ** n, starts)

    def step_time(self, q: np.ndarray, c: np.ndarray, num_sampled: int) -> float:
        """Seconds for one step: q[i] new tokens of sequence i at context c[i]."""
        return self.estimate(q, c, num_sampled)[0]

    def estimate(
        self, q: np.ndarray, c: np.ndarray, num_sampled: int
    ) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes of memory traffic) of one step."""
        v = self.values(np.asarray(q), np.asarray(c), num_sampled)
        t = self._table
        t.flops = v[:, 0]
        t.weight_bytes = v[:, 1] * self._bytes["weight"]
        t.other_bytes = (v[:, 2] + v[:, 3]) * self._bytes["act"] + (
            v[:, 4] + v[:, 5]
        ) * self._bytes["kv"]
        t.comm_bytes = v[:, 6]
        t.rows = v[:, 7]
        times = op_times(self.hw, t, self.weight_bytes_total, self._rates, self._scale)
        op_s = times.time_s
        if num_sampled == 0:  # the skipped ops' launch overhead too
            op_s = np.where(self._sampling_only, 0.0, op_s)
        traffic = float(t.weight_bytes.sum() + t.other_bytes.sum())
        return float(op_s.sum()) + self.hw.step_overhead_s, float(v[:, 0].sum()), traffic

    @property
    def peak_flops(self) -> float:
        """Matrix peak at the dtype most matrix FLOPs run at (the MFU denominator)."""
        by_dtype: dict[str, float] = {}
        for o in self.ops:
            if o.kind in K.MATRIX_KINDS:
                by_dtype[o.compute_dtype] = by_dtype.get(o.compute_dtype, 0.0) + o.flops
        return self.hw.matmul_rate(max(by_dtype, key=by_dtype.__getitem__))

    def instantiate(self, seqs: Sequence[SeqShape]) -> list[Op]:
        """The op list of a step over `seqs` (for checking against a direct capture)."""
        q = np.array([s.num_new_tokens for s in seqs])
        c = np.array([s.context_len for s in seqs])
        v = self.values(q, c, sum(1 for s in seqs if s.samples))
        fields = _FIELDS[:-1]  # rows is read from the shape
        return [
            o.replace(**{f: float(v[i, j]) for j, f in enumerate(fields)})
            for i, o in enumerate(self.ops)
        ]
