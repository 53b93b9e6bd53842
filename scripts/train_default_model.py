#!/usr/bin/env python
"""Train intaglio's embedded default model (and a 1-layer draft) on the Python stdlib.

Every machine with Python has the standard library's source, so the model, its tokenizer and
its training data need no download. Offline dev script: it uses `transformers` for training;
the engine itself only reads the saved safetensors. Deterministic for a given step count.

    python scripts/train_default_model.py            # full run into intaglio/assets/
    python scripts/train_default_model.py --quick    # smoke test into a temp dir
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

log = logging.getLogger("train_default_model")

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "intaglio" / "assets"
EOT = "<|endoftext|>"
VOCAB = 8192
SEQ = 256
BATCH = 16
PROMPT = "def fibonacci(n):"
# Role-tagged lines read like Python comments, which is what this model knows how to continue.
CHAT_TEMPLATE = (
    "{% for m in messages %}# {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}# assistant:{% endif %}"
)
EXCLUDED_DIRS = {"site-packages", "test", "tests", "idle_test"}
# Measured on one shared core: main ~2.6 s/step, draft ~0.85 s/step -> ~45 min and ~10 min.
DEFAULT_STEPS, DEFAULT_DRAFT_STEPS = 1000, 700


def stdlib_files() -> tuple[list[Path], list[Path]]:
    """Sorted stdlib .py files split into (train, validation); every 33rd file is held out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])
    )
    train = [p for i, p in enumerate(files) if i % 33 != 16]
    val = [p for i, p in enumerate(files) if i % 33 == 16]
    return train, val


def read_texts(paths: list[Path]) -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace") for p in paths]


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(  # full byte alphabet: any input stays encodable
        vocab_size=VOCAB,
        special_tokens=[EOT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # No post-processor: callers decide about BOS; the engine must not get it twice.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1024
    return fast


def save_tokenizer(tok: PreTrainedTokenizerFast, outdir: Path) -> None:
    tok.save_pretrained(outdir)
    # transformers 5 puts the template in chat_template.jinja and names the class
    # "TokenizersBackend"; repeat/rename in tokenizer_config.json so 4.x loaders work too.
    update_json(
        outdir / "tokenizer_config.json",
        chat_template=CHAT_TEMPLATE,
        tokenizer_class="PreTrainedTokenizerFast",
    )


def update_json(path: Path, **items: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **items}, indent=2) + "\n")


def token_stream(tok: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """Documents concatenated, each followed by <|endoftext|> as separator."""
    eot = tok.convert_tokens_to_ids(EOT)
    ids: list[int] = []
    for enc in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def make_config(layers: int, eot: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=768,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )


@torch.no_grad()
def evaluate(model: LlamaForCausalLM, stream: torch.Tensor) -> float:
    """Mean token cross-entropy (nats) over non-overlapping SEQ-token windows of `stream`."""
    model.eval()
    n = (len(stream) - 1) // SEQ
    x = stream[: n * SEQ].view(n, SEQ)
    y = stream[1 : n * SEQ + 1].view(n, SEQ)
    total = 0.0
    for i in range(0, n, 32):
        logits = model(input_ids=x[i : i + 32]).logits.float()
        total += torch.nn.functional.cross_entropy(
            logits.view(-1, VOCAB), y[i : i + 32].reshape(-1), reduction="sum"
        ).item()
    model.train()
    return total / (n * SEQ)


def train(
    name: str, cfg: LlamaConfig, stream: torch.Tensor, steps: int, seed: int, lr: float = 3e-3
) -> tuple[LlamaForCausalLM, float, float]:
    """Train from scratch; returns (model, mean train loss of the last 50 steps, seconds)."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    log.info("%s: %.2fM params, %d steps", name, model.num_parameters() / 1e6, steps)
    groups = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))  # no decay on norm gains
    warmup = max(1, min(200, steps // 10))

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10% of peak
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)  # fixed data order, independent of model init
    offsets = torch.arange(SEQ + 1)
    recent: list[float] = []
    start = time.time()
    bar = tqdm(range(steps), desc=name, mininterval=30, file=sys.stderr)
    for step in bar:
        starts = torch.randint(0, len(stream) - SEQ - 1, (BATCH,), generator=gen)
        chunk = stream[starts[:, None] + offsets]
        # HF shifts labels inside the loss: pass the same window as inputs and labels.
        loss = model(input_ids=chunk, labels=chunk).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-50:]
        if step % 100 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
            log.info(
                "%s step %d/%d loss %.4f (%.2fs/step)",
                name,
                step,
                steps,
                sum(recent) / len(recent),
                (time.time() - start) / (step + 1),
            )
    return model, sum(recent) / len(recent), time.time() - start


def complete(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, n: int = 80) -> str:
    ids = tok(PROMPT, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0], skip_special_tokens=False)


def save_model(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    eot = tok.convert_tokens_to_ids(EOT)
    model.generation_config = GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    model.to(torch.bfloat16).save_pretrained(outdir, safe_serialization=True)
    save_tokenizer(tok, outdir)
    # transformers 5 writes "dtype" and rope_parameters; 4.x readers look for these keys.
    update_json(outdir / "config.json", torch_dtype="bfloat16", rope_theta=10000.0)


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=ASSETS,
        help="writes default_model/ and default_draft_model/ under this dir",
    )
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--draft-steps", type=int, default=DEFAULT_DRAFT_STEPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="few-step smoke test into a temp dir")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(1)  # shared 2-core machine; tokenizers' rayon pool likewise
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.quick:
        args.steps, args.draft_steps = 20, 10
        if args.out_dir == ASSETS:
            args.out_dir = Path(tempfile.mkdtemp(prefix="intaglio_default_model_"))
    t0 = time.time()

    train_files, val_files = stdlib_files()
    train_texts, val_texts = read_texts(train_files), read_texts(val_files)
    log.info(
        "corpus: %d train files (%.1f MB), %d validation files",
        len(train_files),
        sum(map(len, train_texts)) / 1e6,
        len(val_files),
    )
    tok = train_tokenizer(train_texts)
    train_ids, val_ids = token_stream(tok, train_texts), token_stream(tok, val_texts)
    log.info("tokens: %d train, %d validation", len(train_ids), len(val_ids))
    eot = tok.convert_tokens_to_ids(EOT)

    results = {}
    for name, layers, steps, seed_off in (
        ("main", 6, args.steps, 0),
        ("draft", 1, args.draft_steps, 1),
    ):
        model, train_loss, secs = train(
            name, make_config(layers, eot), train_ids, steps, args.seed + seed_off
        )
        val_loss = evaluate(model, val_ids)
        log.info(
            "%s: train loss %.4f, val loss %.4f (ppl %.2f), %.0fs",
            name,
            train_loss,
            val_loss,
            math.exp(val_loss),
            secs,
        )
        outdir = args.out_dir / ("default_model" if name == "main" else "default_draft_model")
        save_model(model, tok, outdir)
        results[name] = dict(
            steps=steps,
            train=train_loss,
            val=val_loss,
            secs=secs,
            params=model.num_parameters(),
            dir=outdir,
        )

    # Sample from the saved bf16 checkpoint, as users will load it.
    main_dir = results["main"]["dir"]
    reloaded = LlamaForCausalLM.from_pretrained(main_dir, dtype=torch.float32)
    sample = complete(reloaded, AutoTokenizer.from_pretrained(main_dir))
    log.info("sample:\n%s", sample)
    write_report(
        args,
        results,
        len(train_files),
        len(val_files),
        len(train_ids),
        len(val_ids),
        sample,
        time.time() - t0,
        eot,
    )
    for r in results.values():
        log.info("%s: %.1f MB", r["dir"], dir_mb(r["dir"]))


def write_report(
    args: argparse.Namespace,
    results: dict,
    n_train: int,
    n_val: int,
    train_tokens: int,
    val_tokens: int,
    sample: str,
    wall: float,
    eot: int,
) -> None:
    cmd = " ".join(["python scripts/train_default_model.py", *sys.argv[1:]])
    rows = "\n".join(
        f"| {k} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['steps'] * BATCH * SEQ:,} | "
        f"{r['train']:.4f} | {r['val']:.4f} | {math.exp(r['val']):.2f} | {r['secs'] / 60:.1f} |"
        for k, r in results.items()
    )
    text = f"""# Default model: training record

Date {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Command: `{cmd}`
(seed {args.seed}, torch {torch.__version__}, 1 CPU thread).

## Corpus and tokenizer

Python {sys.version.split()[0]} standard library `.py` files under
`sysconfig.get_paths()["stdlib"]`, subpackages included, excluding `site-packages` and test
directories (`test`, `tests`, `idle_test`). Paths sorted; every 33rd file (index % 33 == 16)
held out for validation: {n_train} train files ({train_tokens:,} tokens), {n_val} validation
files ({val_tokens:,} tokens). Documents joined with `{EOT}` as separator.
Byte-level BPE (`tokenizers`), vocab {VOCAB}, ByteLevel pre-tokenizer/decoder with
`add_prefix_space=False`, `{EOT}` (id {eot}) as BOS/EOS/PAD, no post-processor (BOS is never
prepended). Chat template: `# role: content` lines, then `# assistant:` as generation prompt.

## Models

Llama architecture: hidden 256, 8 heads, 4 KV heads, intermediate 768, tied embeddings,
rope_theta 10000, max positions 1024, RMSNorm eps 1e-5. Main model 6 layers
(`default_model/`); draft model 1 layer (`default_draft_model/`, for speculative decoding).
Trained in float32, saved as bfloat16 safetensors. Context {SEQ}, batch {BATCH} random
windows (seeded), AdamW (lr 3e-3, betas 0.9/0.95, weight decay 0.1 on matrices), warmup
min(200, steps/10) then cosine to 10% of peak, gradient clip 1.0. Losses in nats; validation
is mean token cross-entropy over non-overlapping {SEQ}-token windows of the held-out files.

| model | params | steps | tokens seen | train loss (last 50) | val loss | val ppl | minutes |
|---|---|---|---|---|---|---|---|
{rows}

Total wall time {wall / 60:.1f} minutes. Greedy completion of `{PROMPT}` (HF `generate`,
80 new tokens, the saved bf16 checkpoint reloaded in float32):

```python
{sample}
```
"""
    (results["main"]["dir"] / "TRAINING.md").write_text(text)


if __name__ == "__main__":
    main()
