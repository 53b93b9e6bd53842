"""Closed-form work of paged attention over a step's sequences (vectorised over sequences).

A query at position p attends positions max(0, p - window + 1) .. p, or with chunked local
attention (Llama 4) the positions of its own chunk up to p. A sequence with q new tokens and
context c (after writing them) has queries at c - q .. c - 1. QK^T and PV are each 2 FLOPs
per (head, key, head_dim); softmax's few FLOPs per score are left out, as in every published
attention FLOP count. A kernel reads each sequence's K and V once per KV head (flash-attention
style, shared by the query heads of a GQA group) and writes the new tokens' K and V.
"""

from __future__ import annotations

import numpy as np


def _chunked_prefix_sum(n: np.ndarray, chunk: float) -> np.ndarray:
    """Sum over positions p < n of (p mod chunk) + 1: keys seen under chunked attention."""
    full, rest = np.floor(n / chunk), np.mod(n, chunk)
    return full * chunk * (chunk + 1) / 2 + rest * (rest + 1) / 2


def attended_keys(
    q: np.ndarray, c: np.ndarray, window: int | None, chunk: int | None = None
) -> np.ndarray:
    """Sum over a sequence's queries of the keys each attends; q, c: [num_seqs]."""
    q = np.asarray(q, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    if chunk is not None:
        return _chunked_prefix_sum(c, float(chunk)) - _chunked_prefix_sum(c - q, float(chunk))
    lo, hi = c - q + 1, c  # query at position p sees min(p + 1, window) keys; j = p + 1
    if window is None:
        return (lo + hi) * q / 2
    w = float(window)
    top = np.minimum(hi, w)
    below = np.where(top >= lo, (lo + top) * (top - lo + 1) / 2, 0.0)
    above = np.maximum(hi - np.maximum(lo, w + 1) + 1, 0.0) * w
    return below + above


def attention_work(
    q_lens: np.ndarray,
    ctx_lens: np.ndarray,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    window: int | None = None,
    chunk: int | None = None,
) -> dict[str, float]:
    """FLOPs and element counts of one layer's attention over the given sequences."""
    q = np.asarray(q_lens, dtype=np.float64)
    c = np.asarray(ctx_lens, dtype=np.float64)
    keys = attended_keys(q, c, window, chunk)
    if chunk is not None:  # cached tokens touched: from the first query's chunk start
        span = c - np.floor((c - q) / chunk) * chunk
    elif window is not None:
        span = np.minimum(c, window + q - 1)
    else:
        span = c
    tokens = float(q.sum())
    return {
        "flops": float(4.0 * num_heads * head_dim * keys.sum()),
        "kv_read_elems": float(2.0 * num_kv_heads * head_dim * span.sum()),
        "kv_write_elems": 2.0 * num_kv_heads * head_dim * tokens,
        # q in, the new k and v in (to write), the output out
        "act_in_elems": (num_heads + 2 * num_kv_heads) * head_dim * tokens,
        "act_out_elems": num_heads * head_dim * tokens,
    }
