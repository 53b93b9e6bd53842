"""The grouped MoE layer against a per-token brute force of each routing rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from intaglio.model.moe import MoE

HIDDEN, INTER, EXPERTS = 24, 40, 6


def _moe(router: str, top_k: int, norm: bool = False, shared: int = 0) -> MoE:
    torch.manual_seed(0)
    moe = MoE(HIDDEN, INTER, EXPERTS, top_k, router, norm, shared)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0.0, 0.2)
    return moe


def _expert(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    gate_up = x @ moe.experts.gate_up_proj[e]
    return (F.silu(gate_up[:INTER]) * gate_up[INTER:]) @ moe.experts.down_proj[e]


def _brute_force(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """One token at a time, straight from the definitions."""
    rows = []
    for token in x:
        logits = moe.gate.weight @ token
        out = torch.zeros(HIDDEN)
        if moe.router == "softmax":
            probs = logits.softmax(-1)
            top = probs.topk(moe.top_k)
            weights = top.values / top.values.sum() if moe.norm_topk_prob else top.values
            for w, e in zip(weights, top.indices):
                out += w * _expert(moe, int(e), token)
        else:
            top = logits.topk(moe.top_k)
            for logit, e in zip(top.values, top.indices):
                out += _expert(moe, int(e), token * torch.sigmoid(logit))
        if moe.shared_expert is not None:
            out += moe.shared_expert(token[None])[0]
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize(
    "router,top_k,norm,shared",
    [
        ("softmax", 2, True, 0),
        ("softmax", 3, False, 0),
        ("sigmoid", 1, False, 32),
        ("sigmoid", 2, False, 0),
    ],
)
@pytest.mark.parametrize("num_tokens", [1, 7, 50])
def test_grouped_moe_matches_brute_force(router, top_k, norm, shared, num_tokens):
    moe = _moe(router, top_k, norm, shared)
    x = torch.randn(num_tokens, HIDDEN, generator=torch.Generator().manual_seed(num_tokens))
    with torch.no_grad():
        torch.testing.assert_close(moe(x), _brute_force(moe, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_tokens", [1, 40])
def test_half_precision_experts_under_fp32_compute(num_tokens):
    """bf16 expert weights with fp32 activations (CPUs without bf16 units): a row or two per
    expert go through the bf16 GEMV, more widen the expert; both stay close to fp32 math on
    the rounded weights."""
    moe = _moe("softmax", 2, True)
    x = torch.randn(num_tokens, HIDDEN)
    with torch.no_grad():
        rounded = _moe("softmax", 2, True)
        for p_half, p_round in zip(moe.experts.parameters(), rounded.experts.parameters()):
            p_half.data = p_half.data.bfloat16()
            p_round.data = p_half.data.float()
        torch.testing.assert_close(moe(x), rounded(x), rtol=2e-2, atol=2e-2)


def test_bad_routing_settings_are_refused():
    with pytest.raises(ValueError, match="router"):
        MoE(HIDDEN, INTER, EXPERTS, 1, "softplus")
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        MoE(HIDDEN, INTER, EXPERTS, EXPERTS + 1, "softmax")
