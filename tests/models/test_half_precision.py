"""bf16 / fp16 weights: the CPU fast path computes what an fp32 matmul of those weights computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from checkpoints import build_checkpoint
from intaglio import LLM, SamplingParams
from intaglio.ops.linear import Linear, use_transposed_half_weights


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 5])
def test_transposed_half_linear_matches_fp32_reference(monkeypatch, dtype, rows):
    monkeypatch.setattr("intaglio.ops.linear.cpu_has_half_matmul", lambda: False)
    layer = Linear(48, 80, bias=True).to(dtype)
    monkeypatch.setattr("intaglio.ops.linear._SLAB_ELEMENTS", 48 * 64)  # several slabs
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    assert use_transposed_half_weights(layer) == 1
    assert layer.weight.t().is_contiguous() and torch.equal(layer.weight, weight)
    x = torch.randn(rows, 48)
    # A single row is rounded to the weight dtype first, as a half-precision model would.
    x_in = x.to(dtype).float() if rows == 1 else x
    expected = F.linear(x_in, weight.float(), bias.float())
    # One row comes back rounded to the weight dtype (eps 2**-8 for bf16, 2**-11 for fp16).
    tol = torch.finfo(dtype).eps if rows == 1 else 1e-4
    with torch.inference_mode():  # the engine's setting; the slab path writes into `out`
        actual = layer(x)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def test_bf16_model_tracks_the_reference(tmp_path):
    """Greedy tokens agree until a near-tie; there each side's token is in the other's top 5."""
    import transformers as tf

    folder = build_checkpoint("qwen2", tmp_path / "bf16", dtype="bfloat16")
    hf = tf.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    llm = LLM(str(folder))
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=5)
    prompts = [[5, 9, 30, 31], [100, 7, 7, 200, 3, 3, 41], [17] * 9]
    for prompt, out in zip(prompts, llm.generate(prompts, params)):
        ours = out.outputs[0]
        ids = torch.tensor([prompt + ours.token_ids])
        with torch.no_grad():
            logits = hf(ids).logits[0, len(prompt) - 1 : -1]
        ref_top5 = logits.topk(5, dim=-1).indices.tolist()
        for step, token in enumerate(ours.token_ids):
            ref_token = ref_top5[step][0]
            if token != ref_token:
                assert token in ref_top5[step] and ref_token in ours.logprobs[step]
                break
