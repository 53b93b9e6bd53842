"""Sampler tests against small independent numpy references (per-row loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from intaglio.sampling.params import SamplingParams
from intaglio.sampling.penalties import apply_penalties_
from intaglio.sampling.sampler import (
    Sampler,
    SamplingMetadata,
    apply_min_p,
    apply_top_k_top_p,
)

# ---------------------------------------------------------------- references (numpy, per row)


def ref_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    out = np.zeros_like(x)
    e = np.exp(x[finite] - x[finite].max())
    out[finite] = e / e.sum()
    return out


def ref_penalize(
    row: np.ndarray, prompt: list[int], output: list[int], rep: float, pres: float, freq: float
) -> np.ndarray:
    out = row.astype(np.float64).copy()
    for tok in set(prompt) | set(output):
        out[tok] = out[tok] / rep if out[tok] > 0 else out[tok] * rep
    for tok in set(output):
        count = output.count(tok)
        out[tok] -= freq * count + pres
    return out


def ref_keep_min_p(row: np.ndarray, min_p: float) -> np.ndarray:
    probs = ref_softmax(row)
    return probs >= min_p * probs.max()


def ref_keep_top_k_top_p(row: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    keep = np.isfinite(row)
    order = np.argsort(-row, kind="stable")
    if top_k < len(row):
        topk = np.zeros_like(keep)
        topk[order[:top_k]] = True
        keep &= topk
    if top_p < 1.0:
        probs = ref_softmax(np.where(keep, row, -np.inf))
        total = 0.0
        kept = np.zeros_like(keep)
        for tok in order:  # walk down until the kept mass reaches top_p
            kept[tok] = True
            total += probs[tok]
            if total >= top_p:
                break
        keep &= kept
    return keep


def ref_distribution(
    row: np.ndarray, temperature: float, top_k: int, top_p: float, min_p: float
) -> np.ndarray:
    z = row.astype(np.float64) / temperature
    z = np.where(ref_keep_min_p(z, min_p), z, -np.inf)
    z = np.where(ref_keep_top_k_top_p(z, top_k, top_p), z, -np.inf)
    return ref_softmax(z)


# ---------------------------------------------------------------- helpers


def build(
    params: list[SamplingParams],
    vocab_size: int,
    prompts: list[list[int]] | None = None,
    outputs: list[list[int]] | None = None,
    generators: dict[int, torch.Generator] | None = None,
    banned: list[list[int]] | None = None,
) -> SamplingMetadata:
    n = len(params)
    return SamplingMetadata.build(
        params,
        prompts if prompts is not None else [[] for _ in range(n)],
        outputs if outputs is not None else [[] for _ in range(n)],
        generators or {},
        banned if banned is not None else [[] for _ in range(n)],
        vocab_size,
        "cpu",
    )


def total_variation(counts: np.ndarray, probs: np.ndarray) -> float:
    return 0.5 * float(np.abs(counts / counts.sum() - probs).sum())


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- greedy and penalties


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_greedy_is_argmax(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    logits = (torch.randn(8, 50) * 3).to(dtype)
    meta = build([SamplingParams(temperature=0.0, top_k=5, top_p=0.5)] * 8, 50)
    assert meta.all_greedy and not meta.all_random
    assert meta.top_k is None and meta.top_p is None  # greedy rows never pay for a sort
    out = Sampler()(logits, meta)
    assert out.token_ids.dtype == torch.int64
    assert torch.equal(out.token_ids, logits.float().argmax(-1))
    assert out.logprobs is None and out.top_logprobs is None and out.top_token_ids is None


def test_penalties_match_reference() -> None:
    rng = np.random.default_rng(1)
    vocab, batch = 40, 6
    logits = rng.normal(0, 2, size=(batch, vocab)).astype(np.float32)
    prompts = [list(rng.integers(0, vocab, size=rng.integers(0, 12))) for _ in range(batch)]
    outputs = [list(rng.integers(0, vocab, size=rng.integers(0, 15))) for _ in range(batch)]
    rep = [1.0, 1.3, 0.7, 2.0, 1.0, 1.5]
    pres = [0.0, 0.5, -0.4, 0.0, 1.2, 0.3]
    freq = [0.0, 0.2, 0.0, -0.6, 0.8, 1.1]
    params = [
        SamplingParams(
            temperature=0.0, repetition_penalty=r, presence_penalty=p, frequency_penalty=f
        )
        for r, p, f in zip(rep, pres, freq, strict=True)
    ]
    meta = build(params, vocab, prompts=prompts, outputs=outputs)
    got = torch.from_numpy(logits.copy())
    apply_penalties_(
        got,
        meta.prompt_token_ids,
        meta.output_token_ids,
        meta.repetition_penalty,
        meta.presence_penalty,
        meta.frequency_penalty,
        table := torch.zeros(batch, vocab + 1),
    )
    assert not table.any()  # the scratch is left zeroed for the next user
    want = np.stack(
        [
            ref_penalize(logits[i], prompts[i], outputs[i], rep[i], pres[i], freq[i])
            for i in range(batch)
        ]
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)
    # And the sampler's greedy choice is the argmax of the penalized logits.
    out = Sampler()(torch.from_numpy(logits), meta)
    assert out.token_ids.tolist() == want.argmax(-1).tolist()


def test_penalty_flips_greedy_choice_and_prompt_only_counts_for_repetition() -> None:
    logits = torch.tensor([[3.0, 2.9, -1.0, 0.0]] * 3)
    params = [
        SamplingParams(temperature=0, frequency_penalty=0.2),  # output token 0: 3.0-0.4 < 2.9
        SamplingParams(temperature=0, presence_penalty=2.0),  # token 0 only in prompt: kept
        SamplingParams(temperature=0, repetition_penalty=1.1),  # prompt token 0: 3.0/1.1
    ]
    meta = build(params, 4, prompts=[[], [0], [0]], outputs=[[0, 0], [], []])
    assert Sampler()(logits, meta).token_ids.tolist() == [1, 0, 1]


def test_penalty_metadata_is_none_when_unused() -> None:
    meta = build([SamplingParams(), SamplingParams(temperature=0)], 10)
    assert meta.repetition_penalty is None and meta.presence_penalty is None
    assert meta.frequency_penalty is None
    assert meta.prompt_token_ids is None and meta.output_token_ids is None


# ---------------------------------------------------------------- truncation masks


def test_min_p_mask_matches_reference() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, size=(32, 60)).astype(np.float32)
    min_p = rng.uniform(0, 0.5, size=32).astype(np.float32)
    min_p[:4] = 0.0
    got = apply_min_p(torch.from_numpy(logits), torch.from_numpy(min_p)).numpy()
    want = np.stack([ref_keep_min_p(logits[i], min_p[i]) for i in range(32)])
    assert want.sum() < want.size  # the references actually drop something
    assert np.array_equal(np.isfinite(got), want)
    np.testing.assert_array_equal(got[want], logits[want])  # kept logits untouched


def test_top_k_top_p_mask_matches_reference() -> None:
    rng = np.random.default_rng(3)
    batch, vocab = 64, 100
    logits = rng.normal(0, 2, size=(batch, vocab)).astype(np.float32)
    logits[5, :50] = -np.inf  # a row already partly masked (as after min_p or bans)
    top_k = rng.integers(1, 30, size=batch)
    top_k[::3] = vocab  # disabled
    top_p = rng.uniform(0.05, 1.0, size=batch).astype(np.float32)
    top_p[::4] = 1.0  # disabled
    got = apply_top_k_top_p(
        torch.from_numpy(logits), torch.from_numpy(top_k), torch.from_numpy(top_p)
    ).numpy()
    want = np.stack(
        [ref_keep_top_k_top_p(logits[i], int(top_k[i]), float(top_p[i])) for i in range(batch)]
    )
    assert np.array_equal(np.isfinite(got), want)
    np.testing.assert_array_equal(got[want], logits[want])
    # top_p alone and top_k alone follow the same reference.
    only_p = apply_top_k_top_p(torch.from_numpy(logits), None, torch.from_numpy(top_p)).numpy()
    want_p = np.stack([ref_keep_top_k_top_p(logits[i], vocab, float(top_p[i])) for i in range(64)])
    assert np.array_equal(np.isfinite(only_p), want_p)
    only_k = apply_top_k_top_p(torch.from_numpy(logits), torch.from_numpy(top_k), None).numpy()
    want_k = np.stack([ref_keep_top_k_top_p(logits[i], int(top_k[i]), 1.0) for i in range(64)])
    assert np.array_equal(np.isfinite(only_k), want_k)


def test_top_p_one_keeps_every_token() -> None:
    # Many tiny-probability tokens: a float32 cumsum reaches 1.0 before the tail.
    logits = torch.cat([torch.tensor([[20.0]]), torch.zeros(1, 5000)], dim=1)
    out = apply_top_k_top_p(logits, None, torch.tensor([1.0]))
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- sampling distribution

ROW = np.array([2.0, 1.5, 1.2, 0.3, 0.0, -0.5, -1.0, 1.9, -2.0, 0.8], dtype=np.float32)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "min_p"),
    [
        (1.0, -1, 1.0, 0.0),
        (0.6, -1, 0.8, 0.0),
        (1.5, 5, 1.0, 0.0),
        (1.0, -1, 1.0, 0.2),
        (1.3, 6, 0.9, 0.15),
    ],
)
def test_sampling_distribution_matches_reference(
    temperature: float, top_k: int, top_p: float, min_p: float
) -> None:
    torch.manual_seed(1234)
    n = 40_000
    params = [SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)]
    meta = build(params * n, len(ROW))
    assert meta.all_random
    tokens = Sampler()(torch.from_numpy(ROW).expand(n, -1), meta).token_ids.numpy()
    counts = np.bincount(tokens, minlength=len(ROW)).astype(np.float64)
    want = ref_distribution(ROW, temperature, top_k if top_k > 0 else len(ROW), top_p, min_p)
    assert np.all(counts[want == 0] == 0)  # truncated tokens never appear
    assert total_variation(counts, want) < 0.01  # expected TV at this n is about 0.004


def test_seeded_rows_follow_the_same_distribution() -> None:
    n = 3000
    params = [SamplingParams(temperature=0.7, top_p=0.85)] * n
    generators = {i: seeded(i) for i in range(n)}
    meta = build(params, len(ROW), generators=generators)
    tokens = Sampler()(torch.from_numpy(ROW).expand(n, -1), meta).token_ids.numpy()
    counts = np.bincount(tokens, minlength=len(ROW)).astype(np.float64)
    want = ref_distribution(ROW, 0.7, len(ROW), 0.85, 0.0)
    assert np.all(counts[want == 0] == 0)
    assert total_variation(counts, want) < 0.03  # expected TV at this n is about 0.012


# ---------------------------------------------------------------- seeds, bans, logprobs, mixing


def test_seed_reproducible_whatever_the_neighbours() -> None:
    vocab, steps = 1000, 12
    torch.manual_seed(5)
    row = torch.randn(vocab)
    others = torch.randn(3, vocab) * 2
    mine = SamplingParams(temperature=0.9, seed=7)

    def run(
        batch_logits: torch.Tensor, params: list[SamplingParams], row_idx: int, seed: int
    ) -> list[int]:
        gens = {
            i: seeded(seed if i == row_idx else 100 + i)
            for i, p in enumerate(params)
            if p.seed is not None
        }
        tokens = []
        for step in range(steps):
            torch.manual_seed(1000 + step * 17 + len(params))  # global RNG differs per batch
            meta = build(params, vocab, generators=gens)
            tokens.append(int(Sampler()(batch_logits, meta).token_ids[row_idx]))
        return tokens

    alone = run(row[None], [mine], 0, seed=7)
    # Neighbours: an unseeded row with top_k/top_p (forces the sort path on every row), another
    # seeded row, and a greedy row.
    neighbours = [
        SamplingParams(temperature=1.0, top_k=50, top_p=0.9),
        SamplingParams(temperature=1.2, seed=3),
        mine,
        SamplingParams(temperature=0.0),
    ]
    batch = torch.stack([others[0], others[1], row, others[2]])
    crowded = run(batch, neighbours, 2, seed=7)
    assert alone == crowded
    assert run(row[None], [mine], 0, seed=8) != alone  # the seed does drive the draws


def test_banned_tokens_never_sampled() -> None:
    torch.manual_seed(0)
    vocab, n = 20, 2000
    logits = torch.zeros(n + 2, vocab)
    logits[:, 3] = 8.0  # dominant token, banned in every row but the last
    logits[:, 11] = 7.0
    params = [SamplingParams(temperature=1.5)] * n + [SamplingParams(temperature=0)] * 2
    banned = [[3, 11] for _ in range(n + 1)] + [[]]
    out = Sampler()(logits, build(params, vocab, banned=banned))
    tokens = out.token_ids.tolist()
    assert 3 not in tokens[:-1] and 11 not in tokens[:-1]
    assert tokens[-1] == 3  # bans are per row
    assert len(set(tokens[:n])) > 10  # the rest is still sampled


def test_logprobs_are_raw_log_softmax_and_sorted() -> None:
    torch.manual_seed(4)
    vocab = 64
    logits = torch.randn(4, vocab, dtype=torch.bfloat16) * 3
    params = [
        SamplingParams(temperature=0.8, logprobs=3, repetition_penalty=1.5),
        SamplingParams(temperature=0.0, logprobs=5, frequency_penalty=1.0),
        SamplingParams(temperature=1.0, top_k=4),
        SamplingParams(temperature=0.0, logprobs=0),
    ]
    meta = build(
        params,
        vocab,
        prompts=[[1, 2, 3]] * 4,
        outputs=[[4, 4, 5]] * 4,
        banned=[[0], [], [7], []],
    )
    assert meta.max_num_logprobs == 5
    out = Sampler()(logits, meta)
    raw = torch.log_softmax(logits.float(), dim=-1).numpy()
    assert out.logprobs is not None and out.top_logprobs is not None
    assert out.top_token_ids is not None
    tokens = out.token_ids.numpy()
    np.testing.assert_allclose(out.logprobs.numpy(), raw[np.arange(4), tokens], atol=1e-6)
    assert out.top_logprobs.shape == (4, 5) and out.top_token_ids.shape == (4, 5)
    want_ids = np.argsort(-raw, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(
        out.top_logprobs.numpy(), np.take_along_axis(raw, want_ids, 1), atol=1e-6
    )
    assert np.all(np.diff(out.top_logprobs.numpy(), axis=1) <= 0)
    np.testing.assert_allclose(
        np.take_along_axis(raw, out.top_token_ids.numpy(), 1), out.top_logprobs.numpy(), atol=1e-6
    )


def test_mixed_batch_greedy_rows_argmax_random_rows_vary() -> None:
    torch.manual_seed(9)
    vocab = 30
    row = torch.randn(vocab)
    top2 = set(row.topk(2).indices.tolist())
    params = [SamplingParams(temperature=0), SamplingParams(temperature=2.0, top_k=2)] * 200
    meta = build(params, vocab)
    assert not meta.all_greedy and not meta.all_random
    tokens = Sampler()(row.expand(400, -1), meta).token_ids
    assert (tokens[0::2] == row.argmax()).all()
    random_tokens = set(tokens[1::2].tolist())
    assert random_tokens == top2  # both of the top 2 appear, nothing else


def test_input_logits_not_modified() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 16)
    before = logits.clone()
    params = [SamplingParams(temperature=0.5, top_p=0.5, repetition_penalty=2.0, min_p=0.1)] * 3
    Sampler()(logits, build(params, 16, outputs=[[1, 2]] * 3, banned=[[0]] * 3))
    assert torch.equal(logits, before)


# ---------------------------------------------------------------- metadata building


def test_build_metadata() -> None:
    vocab = 10
    params = [
        SamplingParams(temperature=0.0, top_k=3, seed=1),
        SamplingParams(temperature=1e-7),  # below eps: greedy, avoids overflow in logits / T
        SamplingParams(temperature=0.5, top_k=50, seed=2, repetition_penalty=1.2, logprobs=2),
        SamplingParams(temperature=1.0, top_k=0, top_p=0.9, min_p=0.2),
    ]
    g0, g2 = seeded(1), seeded(2)
    meta = build(
        params,
        vocab,
        prompts=[[1], [2, 3], [4, 5, 6], []],
        outputs=[[], [7], [], [8, 9]],
        generators={0: g0, 2: g2},
    )
    assert meta.temperature.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0])
    assert meta.top_k is None  # only a greedy row and a k >= vocab ask for it
    assert meta.top_p is not None and meta.top_p.tolist() == pytest.approx([1, 1, 1, 0.9])
    assert meta.min_p is not None and meta.min_p.tolist() == pytest.approx([0, 0, 0, 0.2])
    assert meta.generators == {2: g2}  # greedy rows keep their generator untouched
    assert meta.max_num_logprobs == 2
    assert meta.presence_penalty is None and meta.frequency_penalty is None
    assert meta.prompt_token_ids is not None and meta.output_token_ids is not None
    assert meta.prompt_token_ids.tolist() == [[1, 10, 10], [2, 3, 10], [4, 5, 6], [10, 10, 10]]
    assert meta.output_token_ids.tolist() == [[10, 10], [7, 10], [10, 10], [8, 9]]
    assert meta.prompt_token_ids.dtype == torch.int64
    assert not meta.all_greedy and not meta.all_random
    with_k = build([SamplingParams(top_k=4), SamplingParams()], vocab)
    assert with_k.top_k is not None and with_k.top_k.tolist() == [4, vocab]


def test_logit_bias_adds_to_the_logits_of_its_row_only():
    logits = torch.zeros(3, 10)
    params = [
        SamplingParams(temperature=0.0, logit_bias={7: 5.0, 2: -1.0}),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, logit_bias={4: 100.0}),
    ]
    meta = SamplingMetadata.build(params, [[]] * 3, [[]] * 3, {}, [[]] * 3, 10, "cpu")
    out = Sampler()(logits, meta)
    assert out.token_ids.tolist() == [7, 0, 4]
    assert torch.equal(logits, torch.zeros(3, 10))  # the caller's logits are untouched
