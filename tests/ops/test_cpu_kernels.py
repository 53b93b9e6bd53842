"""Our AVX-512 decode kernels against the plain torch computations they replace."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import torch
import torch.nn.functional as F

from intaglio.attention.metadata import AttentionMetadata
from intaglio.attention.torch_backend import TorchAttentionBackend
from intaglio.model.layers import RotaryEmbedding
from intaglio.ops import cpu_kernels as ck

KERNELS = ck.cpu_kernels()
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="no AVX-512 CPU kernels here")


def test_kernels_build_where_the_cpu_supports_them():
    """On an AVX-512 machine with a compiler the kernels must build: no silent fallback."""
    if os.environ.get("INTAGLIO_CPU_KERNELS") == "0":
        pytest.skip("kernels switched off")
    if not {"avx512f", "avx512bw", "f16c"} <= ck.cpu_flags():
        pytest.skip("CPU without AVX-512")
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    assert KERNELS is not None


@needs_kernels
def test_kernels_split_work_over_torch_threads():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core")
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert KERNELS.threads_used(64) == 2
    finally:
        torch.set_num_threads(saved)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(70, 48), (257, 67), (5, 16)])  # tails in both dimensions
def test_half_gemv_matches_fp32_matmul(dtype, rows, shape):
    w = torch.randn(shape, dtype=torch.float32).to(dtype)
    x = torch.randn(rows, shape[1])
    torch.testing.assert_close(KERNELS.half_gemv(x, w), x @ w.float().t(), rtol=1e-5, atol=1e-5)


def _paged_cache(lens: list[int], kv_heads: int, d: int, block: int, seed: int, dtype):
    """Random K/V for sequences of the given lengths, their blocks scattered over the cache."""
    g = torch.Generator().manual_seed(seed)
    per_seq = [-(-n // block) for n in lens]
    num_blocks = sum(per_seq) + 3
    k_cache = torch.randn(num_blocks, block, kv_heads, d, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, block, kv_heads, d, generator=g).to(dtype)
    order = torch.randperm(num_blocks - 1, generator=g) + 1  # block 0 stays unused padding
    width = max(per_seq)
    tables = torch.zeros(len(lens), width, dtype=torch.int64)
    used = 0
    for i, nb in enumerate(per_seq):
        tables[i, :nb] = order[used : used + nb]
        used += nb
    return k_cache, v_cache, tables


@needs_kernels
@pytest.mark.parametrize("d", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (12, 4), (8, 1), (10, 2)])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_paged_decode_attention_matches_torch_backend(monkeypatch, d, heads, kv_heads, cache_dtype):
    block = 16
    lens = [1, 15, 16, 17, 100, 33]
    k_cache, v_cache, tables = _paged_cache(lens, kv_heads, d, block, d + heads, cache_dtype)
    lens_t = torch.tensor(lens)
    # Some rows see a window [lo, hi) of their table, as chunked local attention does.
    lo = torch.tensor([0, 0, 3, 16, 40, 1])
    key_range = torch.stack((lo, lens_t), dim=1)
    q = torch.randn(len(lens), heads, d)
    meta = AttentionMetadata(
        slot_mapping=torch.empty(0, dtype=torch.int64),
        num_decode_tokens=len(lens),
        decode_block_tables=tables,
        decode_key_range=key_range,
        prefills=[],
    )
    scale = d**-0.5
    ours = KERNELS.paged_decode_attention(q, k_cache, v_cache, tables, key_range, scale)
    monkeypatch.setattr("intaglio.attention.torch_backend.cpu_kernels", lambda: None)
    reference = TorchAttentionBackend()._decode(q, k_cache, v_cache, meta, scale)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_rms_norm_matches_torch():
    x = torch.randn(7, 3, 70) * 3
    w = torch.randn(70)
    torch.testing.assert_close(
        KERNELS.rms_norm(x, w, 1e-6), F.rms_norm(x, (70,), w, 1e-6), rtol=1e-5, atol=1e-5
    )


@needs_kernels
@pytest.mark.parametrize("f", [16, 37])
def test_silu_and_mul_matches_torch(f):
    gate_up = torch.randn(5, 2 * f) * 8  # wide range: both sigmoid branches, saturation
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(
        KERNELS.silu_and_mul(gate_up), F.silu(gate) * up, rtol=1e-5, atol=1e-5
    )


@needs_kernels
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_kernel_matches_torch_path_on_strided_views(monkeypatch, interleaved):
    heads, kv_heads, d, n = 4, 2, 32, 9
    rope = RotaryEmbedding(d, 10000.0, None, interleaved=interleaved)
    positions = torch.randint(0, 500, (n,))
    qkv = torch.randn(n, (heads + 2 * kv_heads) * d)
    q = qkv[:, : heads * d].view(n, heads, d)  # views into the fused projection, as in Attention
    k = qkv[:, heads * d : (heads + kv_heads) * d].view(n, kv_heads, d)
    monkeypatch.setattr("intaglio.model.layers.cpu_kernels", lambda: None)
    ref_q, ref_k = rope(positions, q.clone(), k.clone())
    monkeypatch.setattr("intaglio.model.layers.cpu_kernels", lambda: KERNELS)
    v_before = qkv[:, (heads + kv_heads) * d :].clone()
    out_q, out_k = rope(positions, q, k)
    torch.testing.assert_close(out_q, ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_k, ref_k, rtol=1e-5, atol=1e-5)
    assert torch.equal(qkv[:, (heads + kv_heads) * d :], v_before)  # v is left alone


def test_a_build_lock_left_by_a_killed_build_is_removed(tmp_path, monkeypatch) -> None:
    """torch waits forever on a build's lock file; one older than any build is stale."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = tmp_path / "some_extension"
    folder.mkdir()
    lock = folder / "lock"
    lock.touch()
    ck._remove_stale_lock("some_extension")
    assert lock.exists()  # a build may be running
    old = time.time() - 3600
    os.utime(lock, (old, old))
    ck._remove_stale_lock("some_extension")
    assert not lock.exists()
