"""bf16 / fp16 weights: the CPU fast path computes what an fp32 matmul of those weights computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from checkpoints import build_checkpoint
from intaglio import LLM, SamplingParams
from intaglio.ops.cpu_kernels import cpu_kernels
from intaglio.ops.linear import Linear, cache_fp32_weights


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("path", ["kernels", "fp32_copy", "slabs"])
def test_half_linear_computes_the_fp32_matmul(monkeypatch, dtype, rows, path):
    """Half weights with fp32 inputs: our GEMV kernel (few rows), else the fp32 GEMM over a
    cached fp32 copy or over slabs widened on the fly."""
    if path == "kernels" and cpu_kernels() is None:
        pytest.skip("no AVX-512 CPU kernels here")
    if path != "kernels":
        monkeypatch.setattr("intaglio.ops.linear.cpu_kernels", lambda: None)
    monkeypatch.setattr("intaglio.ops.linear._SLAB_ELEMENTS", 48 * 16)  # several slabs
    layer = Linear(48, 80, bias=True).to(dtype)
    if path == "fp32_copy":
        assert cache_fp32_weights(layer, budget_bytes=48 * 80 * 4) == 48 * 80 * 4
    weight, bias = layer.weight.detach().float(), layer.bias.detach().float()
    x = torch.randn(rows, 48)
    with torch.inference_mode():  # the engine's setting; the slab path writes into `out`
        actual = layer(x)
    torch.testing.assert_close(actual, F.linear(x, weight, bias), rtol=1e-4, atol=1e-4)


def test_fp32_weight_copies_stay_within_their_budget():
    model = torch.nn.Sequential(Linear(16, 32), Linear(32, 16), Linear(16, 8)).to(torch.bfloat16)
    used = cache_fp32_weights(model, budget_bytes=16 * 32 * 4 + 16 * 8 * 4)
    assert used == 16 * 32 * 4 + 16 * 8 * 4  # the second layer does not fit; the third does
    assert [m.weight_fp32 is not None for m in model] == [True, False, True]


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
