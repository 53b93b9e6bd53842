"""Mixture-of-experts feed-forward (Mixtral, Qwen3-MoE, Llama 4).

A router scores every expert for every token and keeps the top k. Execution is grouped: the
(token, expert) assignments are sorted by expert, so each expert multiplies all of its tokens in
one matmul; the loop runs over experts, never over tokens. The families differ only in routing:

- softmax (Mixtral, Qwen3-MoE): softmax over all experts, keep the top k (renormalised to sum
  to one when `norm_topk_prob`), and weight each expert's *output*;
- sigmoid (Llama 4): keep the top k logits, squash each with a sigmoid, and scale each
  expert's *input*; a shared expert sees every token and is added on top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from intaglio.model.layers import GatedMLP
from intaglio.ops.linear import Linear

ROUTERS = ("softmax", "sigmoid")


class Experts(nn.Module):
    """The experts' SwiGLU weights stacked in 3D tensors, [in, out] per expert (x @ W).

    That is Llama 4's stored layout, and the one CPUs without half-precision units multiply
    fastest for a few rows of half-precision weights (see ops/linear.py).
    """

    def __init__(self, num_experts: int, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, hidden, 2 * intermediate))
        self.down_proj = nn.Parameter(torch.empty(num_experts, intermediate, hidden))

    def forward(
        self,
        x: torch.Tensor,  # [num_tokens, hidden]
        weights: torch.Tensor,  # [num_tokens, top_k] routing weights
        expert_ids: torch.Tensor,  # [num_tokens, top_k]
        scale_inputs: bool,  # Llama 4 weights the input of an expert, the others its output
    ) -> torch.Tensor:  # [num_tokens, hidden]: the weighted sum over each token's experts
        top_k = expert_ids.shape[1]
        flat_ids = expert_ids.flatten()
        order = flat_ids.argsort(stable=True)  # assignments grouped by expert, tokens in order
        token_of = order // top_k  # [num_tokens * top_k]: the token row of each assignment
        weight_of = weights.flatten()[order].unsqueeze(1).to(x.dtype)
        counts = torch.bincount(flat_ids, minlength=self.gate_up_proj.shape[0]).tolist()
        xs = x.index_select(0, token_of)
        if scale_inputs:
            xs = xs * weight_of
        ys = torch.empty_like(xs)
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            rows = slice(start, start + count)
            gate, up = _matmul(xs[rows], self.gate_up_proj[e]).chunk(2, dim=-1)
            ys[rows] = _matmul(F.silu(gate) * up, self.down_proj[e])
            start += count
        if not scale_inputs:
            ys = ys * weight_of
        return torch.zeros_like(x).index_add_(0, token_of, ys)


def _matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # [rows, in] @ [in, out]
    if w.dtype == x.dtype:
        return x @ w
    # Half weights under fp32 compute (CPUs without half units): a row or two go through the
    # half GEMV, input rounded as a half model would; more rows widen this one expert to fp32.
    if x.shape[0] <= 2:
        return (x.to(w.dtype) @ w).to(x.dtype)
    return x @ w.to(x.dtype)


class MoE(nn.Module):
    def __init__(
        self,
        hidden: int,
        intermediate: int,
        num_experts: int,
        top_k: int,
        router: str,
        norm_topk_prob: bool = False,
        shared_intermediate: int = 0,
    ) -> None:
        super().__init__()
        if router not in ROUTERS:
            raise ValueError(f"unknown MoE router {router!r}; choose one of {ROUTERS}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"num_experts_per_tok={top_k} must be in [1, {num_experts}]")
        self.top_k, self.router, self.norm_topk_prob = top_k, router, norm_topk_prob
        self.gate = Linear(hidden, num_experts, bias=False)  # the router
        self.experts = Experts(num_experts, hidden, intermediate)
        self.shared_expert = (
            GatedMLP(hidden, shared_intermediate, bias=False) if shared_intermediate else None
        )

    def route(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # ([n, top_k] weights, [n, top_k] expert ids)
        logits = self.gate(x)  # [num_tokens, num_experts]
        if self.router == "sigmoid":
            top, ids = logits.topk(self.top_k, dim=-1)
            return torch.sigmoid(top.float()).to(logits.dtype), ids
        probs = torch.softmax(logits.float(), dim=-1)
        top, ids = probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            top = top / top.sum(dim=-1, keepdim=True)
        return top.to(logits.dtype), ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [num_tokens, hidden]
        weights, ids = self.route(x)
        out = self.experts(x, weights, ids, scale_inputs=self.router == "sigmoid")
        if self.shared_expert is not None:
            out = self.shared_expert(x) + out
        return out
