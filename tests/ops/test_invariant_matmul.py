"""The batch-invariant mode's matmul: a row's result is the same bits whatever the row count."""

from __future__ import annotations

import pytest
import torch

from intaglio.ops import cpu_kernels as ck

KERNELS = ck.cpu_kernels()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="no AVX-512 CPU kernels here")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(70, 48), (33, 70), (576, 576), (300, 5)])  # (out, in): tails
@pytest.mark.parametrize("threads", [1, 2])
def test_each_row_is_the_same_bits_alone_and_among_64(dtype, shape, threads):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(shape, generator=g).to(dtype)
        x = torch.randn(200, shape[1], generator=g)  # > the kernel's 128-row blocks
        full = KERNELS.invariant_matmul(x, w)
        for r in (0, 1, 5, 63, 130, 199):
            assert torch.equal(KERNELS.invariant_matmul(x[r : r + 1], w)[0], full[r])
        for rows in (2, 3, 4, 5, 7, 64):  # each row-group width the kernel has
            assert torch.equal(KERNELS.invariant_matmul(x[:rows], w), full[:rows])
        assert torch.equal(KERNELS.invariant_matmul(x[64:128], w), full[64:128])
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_close_to_torch_fp32_matmul(dtype):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(150, 83, generator=g).to(dtype)
    x = torch.randn(9, 83, generator=g)
    out = KERNELS.invariant_matmul(x, w)
    torch.testing.assert_close(out, x @ w.float().t(), rtol=1e-5, atol=1e-5)
    assert KERNELS.invariant_matmul(x[:0], w).shape == (0, 150)


def test_rejects_what_it_cannot_multiply():
    with pytest.raises(RuntimeError, match="shapes"):
        KERNELS.invariant_matmul(torch.randn(2, 8), torch.randn(4, 9))
    with pytest.raises(RuntimeError, match="float32"):
        KERNELS.invariant_matmul(torch.randn(2, 8).double(), torch.randn(4, 8))


def test_the_same_bits_on_one_thread_and_two():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(1000, 96, generator=g).bfloat16()
    x = torch.randn(150, 96, generator=g)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = KERNELS.invariant_matmul(x, w)
        torch.set_num_threads(2)
        assert torch.equal(KERNELS.invariant_matmul(x, w), one)
    finally:
        torch.set_num_threads(saved)
