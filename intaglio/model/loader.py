"""Load a local Hugging Face model folder (config.json + *.safetensors) into our modules."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open

from intaglio.model.config import ModelConfig, ModelLoadError
from intaglio.model.decoder import DecoderForCausalLM
from intaglio.model.layers import RMSNorm, RotaryEmbedding
from intaglio.ops.linear import use_transposed_half_weights

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


def load_model(
    folder: str | Path, dtype: str | torch.dtype | None = None, device: str = "cpu"
) -> DecoderForCausalLM:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    cfg = ModelConfig.from_folder(folder, dtype)
    with torch.device("meta"):
        model = DecoderForCausalLM(cfg)
    model = model.to_empty(device=device).to(cfg.dtype)
    model.tie_weights()
    # to_empty leaves buffers uninitialised; the RoPE tables are computed, not loaded.
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.build_tables(device)
    _load_weights(model, cfg, safetensors_files(folder))
    if use_transposed_half_weights(model):
        logger.info("CPU without half-precision units: %s weights, fp32 compute", cfg.dtype)
        model.compute_dtype = torch.float32
        for module in model.modules():
            if isinstance(module, RMSNorm):  # tiny; fp32 gains keep the fused norm kernel
                module.weight.data = module.weight.data.float()
    return model.eval()


def _load_weights(model: DecoderForCausalLM, cfg: ModelConfig, files: list[Path]) -> None:
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    split_sizes = {
        "qkv_proj": [cfg.q_size, cfg.kv_size, cfg.kv_size],
        "gate_up_proj": [cfg.intermediate_size, cfg.intermediate_size],
    }
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                if "rotary_emb.inv_freq" in name:
                    continue  # old checkpoints store RoPE tables; we compute our own
                if name == "lm_head.weight" and cfg.tie_word_embeddings:
                    continue
                target, shard = _target_name(name)
                if target not in params:
                    raise ModelLoadError(f"{file.name}: unexpected weight {name!r}")
                tensor = f.get_tensor(name)
                dest = params[target].data
                if shard is not None:
                    kind = target.split(".")[-2]
                    start = sum(split_sizes[kind][:shard])
                    dest = dest.narrow(0, start, split_sizes[kind][shard])
                if tuple(dest.shape) != tuple(tensor.shape):
                    raise ModelLoadError(
                        f"{file.name}: weight {name!r} has shape {tuple(tensor.shape)}, "
                        f"the config implies {tuple(dest.shape)}"
                    )
                dest.copy_(tensor)
                loaded.add(f"{target}#{shard}")
    expected = set()
    for pname in params:
        kind = pname.split(".")[-2] if pname.count(".") else ""
        shards = range(len(split_sizes[kind])) if kind in split_sizes else [None]
        expected.update(f"{pname}#{s}" for s in shards)
    if cfg.tie_word_embeddings:
        expected.discard("lm_head.weight#None")
    missing = sorted(expected - loaded)
    if missing:
        raise ModelLoadError(f"checkpoint is missing weights: {[m.split('#')[0] for m in missing]}")
    logger.info("loaded %d tensors from %d file(s)", len(loaded), len(files))


def _target_name(hf_name: str) -> tuple[str, int | None]:
    parts = hf_name.split(".")
    if len(parts) >= 2 and parts[-2] in _FUSED:
        fused, shard = _FUSED[parts[-2]]
        return ".".join(parts[:-2] + [fused, parts[-1]]), shard
    return hf_name, None
