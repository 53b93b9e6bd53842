"""EagleHead: an EAGLE-style draft head, one decoder layer over the target's own features.

Row q of a step holds the target's token embedding of x_{q+1} and the target's final (normed)
hidden state f_q at position q; the head predicts f^_{q+1}, the hidden state the target would
have at position q + 1. The target's own lm_head turns f^_{q+1} into a distribution over
x_{q+2}, and f^_{q+1} is fed back as the next row's features for k - 1 autoregressive drafts.

The layer is our DecoderLayer (layer 0 of a one-layer copy of the target's config, dense MLP),
so the head attends over a paged KV cache of its own, with the same block tables, slots and
positions as the target: the executor hands it the step's AttentionMetadata unchanged. Training
(scripts/train_eagle_head.py) runs whole sequences through `forward_dense`, one prefill chunk
per sequence over a throwaway cache, so the same code is trained and served.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from intaglio.attention.metadata import AttentionMetadata, PrefillChunk
from intaglio.attention.torch_backend import TorchAttentionBackend
from intaglio.model.config import ModelConfig, ModelLoadError
from intaglio.model.decoder import DecoderLayer
from intaglio.model.layers import RMSNorm, RotaryEmbedding
from intaglio.ops.linear import Linear

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# The target facts a head is tied to; a head saved for one target refuses another.
_TARGET_KEYS = ("vocab_size", "hidden_size", "num_heads", "num_kv_heads", "head_dim")


def head_config(target_cfg: ModelConfig) -> ModelConfig:
    """The target's config cut to one dense, full-attention, RoPE layer."""
    return dataclasses.replace(
        target_cfg,
        num_layers=1,
        num_experts=0,
        num_experts_per_tok=0,
        moe_intermediate_size=0,
        moe_layers=(),
        shared_expert_intermediate_size=0,
        rope_layers=(),
        attention_chunk_size=None,
        attn_temperature_tuning=False,
        sliding_window=None,
        weight_prefix="",
    )


def dense_metadata(seq_lens: list[int], device: str | torch.device = "cpu") -> AttentionMetadata:
    """Sequences laid end to end, each one prefill chunk attending causally to itself alone.

    Slots and block tables count rows (block size 1), so a cache of [rows, 1, kv_heads,
    head_dim] takes the K/V writes; the backend reads the fresh K/V, not the cache.
    """
    chunks, start = [], 0
    for length in seq_lens:
        table = torch.arange(start, start + length, device=device)
        chunks.append(PrefillChunk(start, length, length, table))
        start += length
    return AttentionMetadata(
        slot_mapping=torch.arange(start, device=device),
        num_decode_tokens=0,
        decode_block_tables=None,
        decode_key_range=None,
        prefills=chunks,
    )


class EagleHead(nn.Module):
    def __init__(self, target_cfg: ModelConfig) -> None:
        super().__init__()
        self.target_cfg = target_cfg
        self.cfg = cfg = head_config(target_cfg)
        h = cfg.hidden_size
        self.fc = Linear(2 * h, h, bias=False)
        rotary = RotaryEmbedding(
            cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, interleaved=cfg.rope_interleaved
        )
        self.layer = DecoderLayer(cfg, rotary, 0)
        # Normed like the target's last hidden state, so the target's lm_head reads it as is.
        self.norm = RMSNorm(h, cfg.rms_norm_eps)
        self.backend = TorchAttentionBackend()

    # The executor allocates the head's KV as [num_blocks, block_size, num_kv_heads, head_dim].
    @property
    def num_kv_heads(self) -> int:
        return self.cfg.num_kv_heads

    @property
    def head_dim(self) -> int:
        return self.cfg.head_dim

    def forward(
        self,
        embeds: torch.Tensor,  # [n, hidden]: the target's embeddings of x_{q+1}
        features: torch.Tensor,  # [n, hidden]: the target's normed hidden state at q
        positions: torch.Tensor,  # [n]: q
        kv_cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [n, hidden]: f^_{q+1}
        x = self.fc(torch.cat((embeds, features), dim=-1))
        x = self.layer(positions, x, kv_cache, meta, self.backend)
        return self.norm(x)

    def forward_dense(
        self,
        embeds: torch.Tensor,  # [n, hidden], sequences laid end to end
        features: torch.Tensor,  # [n, hidden]
        seq_lens: list[int],  # rows of each sequence, which starts at position 0
    ) -> torch.Tensor:  # [n, hidden]
        """Whole sequences at once, each attending causally to itself (training, evaluation).

        Each sequence is one prefill chunk whose context is exactly its own rows, so the
        backend attends over the fresh K/V; their write goes to a cache thrown away after.
        """
        n = sum(seq_lens)
        if embeds.shape[0] != n or features.shape[0] != n:
            raise ValueError(f"{embeds.shape[0]} rows for sequences of {n} tokens in all")
        device = embeds.device
        positions = torch.cat([torch.arange(length, device=device) for length in seq_lens])
        shape = (n, 1, self.num_kv_heads, self.head_dim)  # block size 1: a slot per row
        cache = (embeds.new_empty(shape), embeds.new_empty(shape))
        return self(embeds, features, positions, cache, dense_metadata(seq_lens, device))

    def save(self, folder: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """model.safetensors (bf16) and config.json: the target facts, plus `metadata`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            k: v.detach().to(torch.bfloat16).contiguous() for k, v in self.state_dict().items()
        }
        save_file(tensors, str(folder / WEIGHTS_FILE))
        config = {
            "architecture": "EagleHead",
            "target": {k: getattr(self.target_cfg, k) for k in _TARGET_KEYS},
        }
        clash = sorted(config.keys() & (metadata or {}).keys())
        if clash:
            raise ValueError(f"metadata may not set {clash}: the head's own config keys")
        config.update(metadata or {})
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(
        cls,
        folder: str | Path,
        target_cfg: ModelConfig,
        dtype: torch.dtype,
        device: str | torch.device,
    ) -> EagleHead:
        folder = Path(folder)
        config_file, weights_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not config_file.is_file() or not weights_file.is_file():
            raise ModelLoadError(f"no draft head in {folder} (needs {CONFIG_FILE}, {WEIGHTS_FILE})")
        saved = json.loads(config_file.read_text()).get("target", {})
        wanted = {k: getattr(target_cfg, k) for k in _TARGET_KEYS}
        if saved != wanted:
            raise ModelLoadError(
                f"the draft head in {folder} was trained for a target with {saved}; "
                f"this target has {wanted}"
            )
        head = cls(target_cfg)
        try:
            head.load_state_dict(load_file(str(weights_file)))
        except RuntimeError as e:  # missing, unexpected or misshapen tensors
            raise ModelLoadError(f"{weights_file}: {e}") from None
        head = head.to(device=device, dtype=dtype)
        head.layer.self_attn.rotary.build_tables(device)  # fp64 frequencies, not `dtype`
        return head.eval()
