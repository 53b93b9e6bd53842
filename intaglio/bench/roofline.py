"""Roofline of a benchmark workload on measured machine limits: the fastest it could run.

The work is the co-design toolkit's, not a second count: each step the roofline stands for is
captured from the model code on the `meta` device (toolkit/capture.py), so its FLOPs and bytes
are those of the ops the engine runs: every weight a step multiplies by (for a mixture of
experts, the experts uniform routing would touch), the KV cache read (chunked-attention layers:
their chunk) and written, the activations, and the logits of the sampled rows only. A step
takes at least max(bytes / read bandwidth, FLOPs / matmul throughput) on the limits measured
by toolkit/machine.py. Bytes are counted at the model's dtype; the matmul throughput is the
caller's choice of ceiling (the bench takes the faster of the model dtype and fp32).

The workload's floor is one prefill step over every prompt plus, for the remaining output
tokens, decode steps of the engine's batch at the workload's mean context; the bytes those
steps move, divided by a measured time, give the achieved memory bandwidth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from intaglio.model.config import ModelConfig
from intaglio.toolkit import ops as K
from intaglio.toolkit.capture import capture_step
from intaglio.toolkit.machine import MachineLimits
from intaglio.toolkit.memory import count_parameters
from intaglio.toolkit.ops import Op, SeqShape


@dataclass(frozen=True)
class StepRoofline:
    flops: float
    weight_bytes: float
    kv_bytes: float  # KV cache read and written
    act_bytes: float  # activations read and written (logits of the sampled rows included)
    bytes: float  # all of the above: the step's memory traffic
    memory_time_s: float  # bytes / read bandwidth
    compute_time_s: float  # FLOPs / matmul throughput
    bound: str  # "memory" or "compute"
    time_s: float  # max(memory_time_s, compute_time_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_roofline(ops: list[Op], limits: MachineLimits, tflops: float) -> StepRoofline:
    """The roofline time of one captured step on the measured read bandwidth and `tflops`."""
    flops = K.total(ops, "flops")
    weights = K.total(ops, "weight_bytes")
    kv = K.total(ops, "kv_bytes")
    traffic = K.total(ops, "bytes")
    t_mem = traffic / (limits.read_bandwidth_gbs * 1e9)
    t_compute = flops / (tflops * 1e12)
    return StepRoofline(
        flops=flops,
        weight_bytes=weights,
        kv_bytes=kv,
        act_bytes=traffic - weights - kv,
        bytes=traffic,
        memory_time_s=t_mem,
        compute_time_s=t_compute,
        bound="memory" if t_mem >= t_compute else "compute",
        time_s=max(t_mem, t_compute),
    )


@dataclass(frozen=True)
class DecodeRoofline(StepRoofline):
    batch: int
    context: int  # context of every sequence once the step's token is written
    tokens_per_s: float  # batch / time_s


def decode_roofline(
    cfg: ModelConfig, limits: MachineLimits, tflops: float, batch: int, context: float
) -> DecodeRoofline:
    """One decode step of `batch` sequences, each at `context` (rounded to a token)."""
    ctx = max(1, round(context))
    step = step_roofline(capture_step(cfg, [SeqShape(1, ctx)] * batch), limits, tflops)
    return DecodeRoofline(
        **step.to_dict(), batch=batch, context=ctx, tokens_per_s=batch / step.time_s
    )


def prefill_roofline(
    cfg: ModelConfig, limits: MachineLimits, tflops: float, prompt_lens: list[int]
) -> StepRoofline:
    """Every prompt prefilled in one step (weights read once, causal attention per prompt,
    logits for each prompt's last token)."""
    return step_roofline(capture_step(cfg, [SeqShape(n, n) for n in prompt_lens]), limits, tflops)


@dataclass(frozen=True)
class WorkloadRoofline:
    decode: DecodeRoofline
    prefill: StepRoofline
    num_decode_tokens: int  # output tokens after each request's first (which prefill makes)

    @property
    def decode_floor_s(self) -> float:
        return self.num_decode_tokens / self.decode.tokens_per_s

    @property
    def floor_s(self) -> float:
        return self.prefill.time_s + self.decode_floor_s

    @property
    def bytes(self) -> float:
        """Memory traffic of the floor's steps: the prefill and the decode steps."""
        return self.prefill.bytes + self.num_decode_tokens / self.decode.batch * self.decode.bytes


def workload_roofline(
    cfg: ModelConfig,
    limits: MachineLimits,
    tflops: float,
    prompt_lens: list[int],
    output_lens: list[int],
    batch: int,
) -> WorkloadRoofline:
    """Steady-state decode: `batch` sequences at once, each halfway through its output."""
    n = len(prompt_lens)
    context = (sum(prompt_lens) + sum(output_lens) / 2) / n
    return WorkloadRoofline(
        decode=decode_roofline(cfg, limits, tflops, batch, context),
        prefill=prefill_roofline(cfg, limits, tflops, prompt_lens),
        num_decode_tokens=sum(output_lens) - n,
    )


def model_params(cfg: ModelConfig) -> tuple[int, int]:
    """(every parameter, the parameters one token's forward multiplies by).

    The second is the weights of a one-token step's matrix ops as captured: the layers'
    projections, the routed experts the token reaches and the output head (not the embedding
    table, which is a lookup, nor the norms).
    """
    ops = capture_step(cfg, [SeqShape(1, 1)])
    matmul = sum(o.weight_elems for o in ops if o.kind in K.MATRIX_KINDS)
    return count_parameters(cfg)[0], round(matmul)
