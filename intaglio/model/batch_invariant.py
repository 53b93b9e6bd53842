"""The batch-invariant mode: a request's logits do not depend on what else is in the batch.

In a plain run a row's result can depend on its neighbours: torch's matmuls choose kernels and
split the sum over in-features by the number of rows, decode rows use our paged attention
kernel while prompt chunks use SDPA (so prompt logprobs differ from the same tokens' generation
logprobs), and bf16 compute rounds whatever differs. In the mode the model computes in fp32
over its stored weights, every Linear goes through our row-invariant matmul
(ops/csrc/invariant_matmul.h), and every query row through the paged decode-attention kernel
over its own causal context (attention/torch_backend.py). The rest already works row by row in
a fixed order: our RMSNorm, SiLU and RoPE kernels, the embedding lookup, elementwise adds, and
torch's log_softmax and argmax over each row (tests/model/test_batch_invariant.py checks them).
"""

from __future__ import annotations

import torch

from intaglio.model.decoder import DecoderForCausalLM
from intaglio.model.layers import RMSNorm
from intaglio.ops.cpu_kernels import DECODE_ATTENTION_HEAD_DIMS, cpu_kernels
from intaglio.ops.linear import Linear


def make_batch_invariant(model: DecoderForCausalLM) -> None:
    """Switch a loaded model to the mode; a ValueError says why a model or machine cannot."""
    cfg = model.cfg
    if model.lm_head.weight.device.type != "cpu":
        raise ValueError("batch_invariant runs on CPU only")
    if cpu_kernels() is None:
        raise ValueError(
            "batch_invariant needs our AVX-512 CPU kernels (intaglio/ops/cpu_kernels.py), "
            "which this machine cannot build or run (or INTAGLIO_CPU_KERNELS=0)"
        )
    if cfg.moe_layers:
        raise ValueError("batch_invariant does not cover mixture-of-experts models yet")
    if cfg.head_dim not in DECODE_ATTENTION_HEAD_DIMS:
        raise ValueError(
            f"batch_invariant needs head_dim in {DECODE_ATTENTION_HEAD_DIMS}, got {cfg.head_dim}"
        )
    model.compute_dtype = torch.float32
    model.backend.batch_invariant = True
    for module in model.modules():
        if isinstance(module, Linear):
            module.batch_invariant = True
        elif isinstance(module, RMSNorm):  # fp32 weights: the per-row kernel applies
            module.weight.data = module.weight.data.float()
