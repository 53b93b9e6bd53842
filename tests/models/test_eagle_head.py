"""EagleHead: the paged path the executor runs equals the dense path training runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from intaglio.attention.metadata import AttentionMetadata, PrefillChunk
from intaglio.model.config import ModelConfig, ModelLoadError
from intaglio.model.eagle_head import EagleHead

HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 97,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_theta": 10000.0,
    "torch_dtype": "float32",
}


def random_head(seed: int = 0) -> EagleHead:
    torch.manual_seed(seed)
    head = EagleHead(ModelConfig.from_hf(HF_CONFIG))
    with torch.no_grad():
        for name, p in head.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.08)
    return head.eval()


def inputs(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 64, generator=g), torch.randn(n, 64, generator=g)


def test_paged_prefill_chunks_and_decodes_equal_the_dense_path() -> None:
    head = random_head()
    lens = [9, 13]
    embeds, feats = inputs(sum(lens))
    starts = [0, lens[0]]
    with torch.no_grad():
        dense = head.forward_dense(embeds, feats, lens)

        block_size, num_blocks = 4, 16
        cache = tuple(torch.zeros(num_blocks, block_size, 2, 16) for _ in range(2))
        # Scattered, distinct blocks per sequence, as a block manager hands them out.
        tables = [torch.tensor([7, 2, 11]), torch.tensor([5, 14, 0, 9])]

        def slots(seq: int, positions: range) -> list[int]:
            return [
                int(tables[seq][p // block_size]) * block_size + p % block_size for p in positions
            ]

        paged = torch.empty_like(dense)

        def run(steps: list[tuple[int, range]], decodes: int) -> None:
            """One step: `decodes` single-row sequences first, then prefill chunks."""
            rows = [starts[s] + p for s, span in steps for p in span]
            positions = torch.tensor([p for _, span in steps for p in span])
            chunks, at = [], 0
            for s, span in steps:
                if at >= decodes:
                    chunks.append(PrefillChunk(at, len(span), span.stop, tables[s]))
                at += len(span)
            dec = steps[:decodes]
            meta = AttentionMetadata(
                slot_mapping=torch.tensor([x for s, span in steps for x in slots(s, span)]),
                num_decode_tokens=decodes,
                decode_block_tables=torch.nn.utils.rnn.pad_sequence(
                    [tables[s] for s, _ in dec], True
                )
                if decodes
                else None,
                decode_key_range=torch.tensor([[0, span.stop] for _, span in dec])
                if decodes
                else None,
                prefills=chunks,
            )
            paged[rows] = head(embeds[rows], feats[rows], positions, cache, meta)

        run([(0, range(0, 3)), (1, range(0, 5))], decodes=0)  # two prompts
        run([(0, range(3, 4)), (1, range(5, 8))], decodes=1)  # a decode beside a later chunk
        for p in range(8, 13):  # then single-row decodes of both (the first stops at 9)
            steps = [(1, range(p, p + 1))]
            if p - 4 < lens[0]:
                steps.insert(0, (0, range(p - 4, p - 3)))
            run(steps, decodes=len(steps))
    torch.testing.assert_close(paged, dense, rtol=1e-5, atol=1e-5)


def test_gradients_match_a_float64_reference() -> None:
    """Training runs through autograd: the fp32 path (where the CPU kernels would otherwise
    run, without a backward) gives the gradients of the pure-torch float64 path."""
    lens = [6, 4]
    embeds, feats = inputs(sum(lens))
    grads = []
    for dtype in (torch.float32, torch.float64):
        head = random_head().to(dtype).train()
        out = head.forward_dense(embeds.to(dtype), feats.to(dtype), lens)
        out.pow(2).sum().backward()
        grads.append({n: p.grad for n, p in head.named_parameters()})
    for name, g32 in grads[0].items():
        assert g32 is not None, name
        torch.testing.assert_close(g32, grads[1][name].float(), rtol=1e-3, atol=1e-4)


def test_save_load_round_trip(tmp_path) -> None:
    head = random_head()
    head.save(tmp_path, {"recipe": "test"})
    loaded = EagleHead.load(tmp_path, head.target_cfg, torch.float32, "cpu")
    for (name, p), q in zip(head.named_parameters(), loaded.parameters()):
        assert q.dtype == torch.float32
        torch.testing.assert_close(q, p.detach().bfloat16().float(), rtol=0, atol=0, msg=name)
    embeds, feats = inputs(5)
    with torch.no_grad():
        for p in head.parameters():  # the weights as saved (the RoPE table stays fp64)
            p.copy_(p.bfloat16())
        torch.testing.assert_close(
            loaded.forward_dense(embeds, feats, [5]), head.forward_dense(embeds, feats, [5])
        )


def test_metadata_cannot_overwrite_the_target_record(tmp_path) -> None:
    with pytest.raises(ValueError, match="target"):
        random_head().save(tmp_path, {"target": "some checkpoint"})


def test_load_refuses_another_target(tmp_path) -> None:
    head = random_head()
    head.save(tmp_path)
    other = dataclasses.replace(head.target_cfg, vocab_size=98)
    with pytest.raises(ModelLoadError, match="trained for a target"):
        EagleHead.load(tmp_path, other, torch.float32, "cpu")
