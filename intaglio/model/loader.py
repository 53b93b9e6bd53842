"""Load a checkpoint into our modules: a Hugging Face folder (config.json + *.safetensors) or a
GGUF file, whose tensors arrive under their HF names."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open

from intaglio.model.config import ModelConfig, ModelLoadError
from intaglio.model.decoder import DecoderForCausalLM
from intaglio.model.gguf import GGUFCheckpoint, TensorSource, find_gguf
from intaglio.model.layers import RMSNorm, RotaryEmbedding
from intaglio.ops.linear import HALF_DTYPES, cpu_has_half_matmul

logger = logging.getLogger(__name__)

# HF's separate projections -> (our fused parameter, which slice of it).
_FUSED = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelLoadError(f"{folder}: shards named in the index are missing: {missing}")
        return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in model folder {folder}")
    return files


def _safetensors_sources(files: list[Path]) -> Iterator[TensorSource]:
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                yield file.name, name, partial(f.get_tensor, name)


def load_model(
    path: str | Path, dtype: str | torch.dtype | None = None, device: str = "cpu"
) -> DecoderForCausalLM:
    """Build the model of a HF folder, a GGUF file, or a folder holding one GGUF file."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model not found: {path}")
    gguf_file = find_gguf(path)
    if gguf_file is not None:
        checkpoint = GGUFCheckpoint(gguf_file)
        cfg = ModelConfig.from_hf(checkpoint.hf_config(), dtype)
        sources = checkpoint.tensors()
    elif path.is_dir():
        cfg = ModelConfig.from_folder(path, dtype)
        sources = _safetensors_sources(safetensors_files(path))
    else:
        raise ModelLoadError(f"{path} is neither a model folder nor a .gguf file")
    with torch.device("meta"):
        model = DecoderForCausalLM(cfg)
    model = model.to_empty(device=device).to(cfg.dtype)
    model.tie_weights()
    # to_empty leaves buffers uninitialised; the RoPE tables are computed, not loaded.
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.build_tables(device)
    _load_weights(model, cfg, sources)
    if device == "cpu" and cfg.dtype in HALF_DTYPES and not cpu_has_half_matmul():
        logger.info("CPU without half-precision units: %s weights, fp32 compute", cfg.dtype)
        model.compute_dtype = torch.float32
        for module in model.modules():
            if isinstance(module, RMSNorm):  # tiny; fp32 gains keep the fused norm kernel
                module.weight.data = module.weight.data.float()
    return model.eval()


def _load_weights(
    model: DecoderForCausalLM, cfg: ModelConfig, sources: Iterator[TensorSource]
) -> None:
    params = dict(model.named_parameters())
    loaded: dict[str, int] = {}  # parameter -> elements filled so far
    for where, name, read in sources:
        if "rotary_emb.inv_freq" in name:
            continue  # old checkpoints store RoPE tables; we compute our own
        if not name.startswith(cfg.weight_prefix):
            continue  # e.g. Llama 4's vision tower: we serve the text model only
        name_in_model = name[len(cfg.weight_prefix) :]
        if name_in_model == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        target = _target(name_in_model)
        if target.param not in params:
            raise ModelLoadError(f"{where}: unexpected weight {name!r}")
        dest = params[target.param].data
        if target.expert is not None:
            if target.expert >= dest.shape[0]:
                raise ModelLoadError(
                    f"{where}: weight {name!r} is for expert {target.expert}, "
                    f"the config has {dest.shape[0]} experts"
                )
            dest = dest[target.expert]
        if target.shard is not None:
            # Linear weights are [out, in]; experts are stored [in, out].
            dim = 0 if target.expert is None else 1
            sizes = _split_sizes(cfg, target.param, dest.shape[dim])
            dest = dest.narrow(dim, sum(sizes[: target.shard]), sizes[target.shard])
        tensor = read()
        if target.transpose:
            tensor = tensor.transpose(-1, -2)
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ModelLoadError(
                f"{where}: weight {name!r} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(dest.shape)}"
            )
        dest.copy_(tensor)
        loaded[target.param] = loaded.get(target.param, 0) + dest.numel()
    skip = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    missing = sorted(
        n for n, p in params.items() if n not in skip and loaded.get(n, 0) != p.numel()
    )
    if missing:
        raise ModelLoadError(f"checkpoint is missing weights: {missing}")
    logger.info("loaded %d parameters", len(loaded))


def _split_sizes(cfg: ModelConfig, param: str, rows: int) -> list[int]:
    if param.endswith("qkv_proj.weight") or param.endswith("qkv_proj.bias"):
        return [cfg.q_size, cfg.kv_size, cfg.kv_size]
    return [rows // 2, rows // 2]  # gate and up halves


@dataclass(frozen=True)
class _Target:
    param: str  # our parameter
    expert: int | None = None  # which expert of a stacked expert tensor
    shard: int | None = None  # which slice of a fused tensor (q/k/v, gate/up)
    transpose: bool = False  # one expert's [out, in] tensor into our [in, out] layout


def _target(hf_name: str) -> _Target:
    """Where a checkpoint tensor goes in our model; HF module names vary by family."""
    parts = hf_name.split(".")
    # The feed-forward block: Mixtral's block_sparse_moe and Llama 4's feed_forward are our mlp.
    parts = ["mlp" if p in ("block_sparse_moe", "feed_forward") else p for p in parts]
    if "mlp" in parts and parts[-2] == "router":  # Llama 4's router is Mixtral's gate
        parts[-2] = "gate"
    if "experts" in parts:
        at = parts.index("experts")
        base = ".".join(parts[: at + 1])
        if len(parts) == at + 2:  # Llama 4: all experts fused in one [E, in, out] tensor
            return _Target(f"{base}.{parts[-1]}")
        expert, proj = int(parts[at + 1]), parts[at + 2]
        if proj in _EXPERT_PROJ:
            fused, shard = _EXPERT_PROJ[proj]
            return _Target(f"{base}.{fused}", expert=expert, shard=shard, transpose=True)
    if len(parts) >= 2 and parts[-2] in _FUSED:
        fused, shard = _FUSED[parts[-2]]
        return _Target(".".join(parts[:-2] + [fused, parts[-1]]), shard=shard)
    return _Target(".".join(parts))


# One expert's projections (Mixtral's w1/w3/w2, Qwen3-MoE's names) -> our stacked tensors.
_EXPERT_PROJ = {
    "w1": ("gate_up_proj", 0),
    "gate_proj": ("gate_up_proj", 0),
    "w3": ("gate_up_proj", 1),
    "up_proj": ("gate_up_proj", 1),
    "w2": ("down_proj", None),
    "down_proj": ("down_proj", None),
}
