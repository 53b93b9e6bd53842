"""GGUF checkpoints: our loader against HF `transformers` reading the same file, per tensor type
and architecture; the tokenizer and chat template from the metadata; clear errors."""

from __future__ import annotations

import pytest
import torch

from checkpoints import build_checkpoint
from gguf_files import K_QUANTS, QUANTIZABLE, hf_gguf_model, write_gguf
from intaglio import LLM, SamplingParams
from intaglio.model.config import ModelLoadError
from intaglio.model.loader import load_model

# Rows of 256 so every K-quant block fits; 8 heads of 32 so o_proj's input is 256 as well.
SHAPE = dict(hidden_size=256, intermediate_size=256, num_attention_heads=8, num_key_value_heads=4)
PROMPTS = [list(range(5, 5 + n)) for n in (3, 11, 24)]
MAX_TOKENS = 8

CASES = [("llama", t) for t in QUANTIZABLE + K_QUANTS] + [
    ("mistral", "F16"),
    ("qwen2", "Q8_0"),
    ("qwen2", "Q4_K"),
    ("qwen3", "Q4_1"),
    ("qwen3", "Q6_K"),
]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    cache = {}

    def get(family: str):
        if family not in cache:
            folder = tmp_path_factory.mktemp(f"hf-{family}")
            # transformers' GGUF reader ignores qwen3's key_length and assumes head_dim 128.
            kwargs = dict(SHAPE, head_dim=128) if family == "qwen3" else SHAPE
            cache[family] = build_checkpoint(family, folder, **kwargs)
        return cache[family]

    return get


def _reference(path):
    model = hf_gguf_model(path)
    tokens, logprobs = [], []
    with torch.no_grad():
        for p in PROMPTS:
            ids = torch.tensor([p])
            out = model.generate(
                ids, max_new_tokens=MAX_TOKENS, min_new_tokens=MAX_TOKENS, do_sample=False
            )
            tokens.append(out[0, len(p) :].tolist())
            lp = model(ids).logits[0].log_softmax(-1)
            logprobs.append([lp[i, p[i + 1]].item() for i in range(len(p) - 1)])
    return tokens, logprobs


@pytest.mark.parametrize("family,tensor_type", CASES)
def test_greedy_and_prompt_logprobs_match_hf_on_the_same_file(
    family, tensor_type, hf_folder, tmp_path
):
    path = write_gguf(family, hf_folder(family), tmp_path / "model.gguf", tensor_type)
    ref_tokens, ref_logprobs = _reference(path)
    llm = LLM(str(path), dtype="float32")
    params = SamplingParams(
        temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, prompt_logprobs=0
    )
    for out, tokens, logprobs in zip(llm.generate(PROMPTS, params), ref_tokens, ref_logprobs):
        assert out.error is None
        assert out.outputs[0].token_ids == tokens
        ours = [next(iter(e.values())) for e in out.prompt_logprobs[1:]]
        assert ours == pytest.approx(logprobs, abs=1e-4)


def test_unquantized_gguf_holds_exactly_the_hf_weights(hf_folder, tmp_path):
    """Undoing llama.cpp's Q/K row permutation and the name mapping loses nothing."""
    folder = hf_folder("llama")
    path = write_gguf("llama", folder, tmp_path / "m.gguf", "F32")
    ours, theirs = (
        load_model(path, "float32").state_dict(),
        load_model(folder, "float32").state_dict(),
    )
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_dtype_auto_follows_the_file(hf_folder, tmp_path):
    folder = hf_folder("llama")
    for kind, want in (("F32", torch.float32), ("F16", torch.float16), ("Q4_0", torch.bfloat16)):
        path = write_gguf("llama", folder, tmp_path / f"{kind}.gguf", kind)
        assert load_model(path).lm_head.weight.dtype == want
    assert load_model(path, "float32").lm_head.weight.dtype == torch.float32


def test_llama3_rope_frequency_factors_give_the_hf_folders_tokens(tmp_path):
    """Llama 3.1-style files store the rope rescaling as a rope_freqs tensor; the HF folder
    (parity-tested against transformers) is the reference, as transformers' GGUF reader drops
    that tensor."""
    folder = build_checkpoint("llama3_scaled", tmp_path / "hf", **SHAPE)
    path = write_gguf("llama", folder, tmp_path / "m.gguf", "F32")
    assert load_model(path, "float32").cfg.rope_scaling["rope_type"] == "freq_factors"
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=0)
    prompts = [list(range(5, 5 + 70))]  # past original_max_position_embeddings (64)
    ours = LLM(str(path), dtype="float32").generate(prompts, params)[0].outputs[0]
    ref = LLM(str(folder), dtype="float32").generate(prompts, params)[0].outputs[0]
    assert ours.token_ids == ref.token_ids
    lp = [next(iter(e.values())) for e in ours.logprobs]
    assert lp == pytest.approx([next(iter(e.values())) for e in ref.logprobs], abs=1e-4)


def test_tokenizer_and_chat_template_come_from_the_metadata(hf_folder, tmp_path):
    from transformers import AutoTokenizer

    folder = hf_folder("llama")
    write_gguf("llama", folder, tmp_path / "m.gguf", "Q8_0")
    llm = LLM(str(tmp_path), dtype="float32")  # a folder holding one GGUF file
    original = AutoTokenizer.from_pretrained(str(folder))
    text = "def fibonacci(n):\n    return n  # Caf\u00e9 \u4e2d\u6587"
    assert llm.tokenizer.encode(text, add_special_tokens=False) == original.encode(
        text, add_special_tokens=False
    )
    conv = [{"role": "user", "content": "hi"}]
    assert llm.tokenizer.decode(llm.chat_prompt(conv)) == "<s>user: hi</s><s>assistant:"
    assert llm.engine.eos_token_ids == (2,)
    out = llm.chat(conv, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))[0]
    assert out.error is None and len(out.outputs[0].token_ids) == 4


def test_a_folder_with_two_gguf_files_asks_which(hf_folder, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        write_gguf("llama", hf_folder("llama"), tmp_path / name, "F32")
    with pytest.raises(ModelLoadError, match="several GGUF files"):
        load_model(tmp_path)
    assert load_model(tmp_path / "b.gguf", "float32") is not None


def test_truncated_or_foreign_files_are_clear_errors(hf_folder, tmp_path):
    good = write_gguf("llama", hf_folder("llama"), tmp_path / "good.gguf", "Q8_0")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated.gguf"):
        load_model(truncated)
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("not a model\n" * 100)
    with pytest.raises(ModelLoadError, match="notes.gguf is not a readable GGUF file"):
        load_model(foreign)
    plain = tmp_path / "weights.bin"
    plain.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match="neither a model folder nor a .gguf file"):
        load_model(plain)


def test_unknown_tensor_type_names_the_tensor_and_type(hf_folder, tmp_path):
    path = write_gguf("llama", hf_folder("llama"), tmp_path / "m.gguf", "IQ4_NL")
    with pytest.raises(ModelLoadError, match=r"m.gguf: tensor 'token_embd.weight' has type IQ4_NL"):
        load_model(path)


def test_shape_disagreeing_with_metadata_names_file_and_field(hf_folder, tmp_path):
    path = write_gguf(
        "llama",
        hf_folder("llama"),
        tmp_path / "m.gguf",
        "F32",
        metadata={"feed_forward_length": 512},
    )
    with pytest.raises(
        ModelLoadError,
        match=r"m.gguf \(blk.0.ffn_\w+.weight, .*llama.feed_forward_length\).*config implies",
    ):
        load_model(path)


def test_unsupported_architecture_is_named(hf_folder, tmp_path):
    path = write_gguf("llama", hf_folder("llama"), tmp_path / "m.gguf", "F32", arch="gpt2")
    with pytest.raises(ModelLoadError, match="unsupported GGUF architecture 'gpt2'"):
        load_model(path)
