// invariant_matmul: fp32 rows times weights [out, in] (fp32, bf16 or fp16) where each output
// element is summed in one fixed order whatever the number of rows: 16 fp32 lanes, lane l
// taking in-features k = l, l + 16, ... in order by fused multiply-add, then one fixed tree
// over the lanes. A row's result therefore does not depend on what else is in the batch
// (torch's GEMMs pick kernels and split K by the number of rows). Weights are widened in
// registers; a tile of weight rows stays in cache while every group of x rows streams past it.
#pragma once

#include "simd.h"

namespace intaglio_cpu {

// The 16 in-features at k of a row, zero past K (a zero lane adds exactly nothing).
template <typename T>
inline __m512 load_tail(const T* p, int64_t count) {
  T buf[16] = {};
  std::copy(p, p + count, buf);
  return load16(buf);
}

// out[m, j] for MR rows of x (from x_rows) and the R weight rows at w_rows; only the first
// `rows` weight rows are stored. Every (row, weight row) pair runs the same instruction
// sequence, so MR and R change speed, never bits.
template <int MR, int R, typename T>
inline void invariant_block(const float* const* x_rows, const T* const* w_rows, int rows,
                            float* const* out_rows, int64_t j, int64_t K) {
  __m512 acc[MR][R];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load16(w_rows[r] + k);
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = _mm512_loadu_ps(x_rows[m] + k);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  if (k < K) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load_tail(w_rows[r] + k, K - k);
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = load_tail(x_rows[m] + k, K - k);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < rows; ++r) out_rows[m][j + r] = _mm512_reduce_add_ps(acc[m][r]);
}

// Rows [m0, m0 + MR) of x against weight rows [j0, j1), into tile[m - b0, j - j0] (ld kTile).
constexpr int64_t kTile = 64;

template <int MR, typename T>
void invariant_rows(const float* x, const T* w, float* tile, int64_t m0, int64_t b0, int64_t K,
                    int64_t j0, int64_t j1) {
  constexpr int R = MR <= 2 ? 8 : 4;  // MR * R accumulators within the 32 registers
  const float* x_rows[MR];
  float* out_rows[MR];
  for (int m = 0; m < MR; ++m) {
    x_rows[m] = x + (m0 + m) * K;
    out_rows[m] = tile + (m0 + m - b0) * kTile - j0;
  }
  for (int64_t j = j0; j < j1; j += R) {
    const int rows = static_cast<int>(std::min<int64_t>(R, j1 - j));
    const T* w_rows[R];
    for (int r = 0; r < R; ++r) w_rows[r] = w + (j + std::min(r, rows - 1)) * K;
    invariant_block<MR, R, T>(x_rows, w_rows, rows, out_rows, j, K);
  }
}

template <typename T>
void invariant_matmul_into(const float* x, const T* w, float* out, int64_t M, int64_t K,
                           int64_t N) {
  // Weight tiles of kTile rows are the parallel tasks; x is taken kRowBlock rows at a time so
  // that block stays in L2 while each tile passes over it. Results gather in a small buffer
  // first: rows of `out` lie N floats apart, often a multiple of 4 KiB, and writing a few
  // floats to each of many such rows would thrash one cache set.
  constexpr int64_t kRowBlock = 128;
  for (int64_t b0 = 0; b0 < M; b0 += kRowBlock) {
    const int64_t b1 = std::min(M, b0 + kRowBlock);
    at::parallel_for(0, (N + kTile - 1) / kTile, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> tile(kRowBlock * kTile);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j0 = t * kTile, j1 = std::min(N, j0 + kTile);
        int64_t m = b0;
        for (; m + 4 <= b1; m += 4) invariant_rows<4, T>(x, w, tile.data(), m, b0, K, j0, j1);
        switch (b1 - m) {
          case 3: invariant_rows<3, T>(x, w, tile.data(), m, b0, K, j0, j1); break;
          case 2: invariant_rows<2, T>(x, w, tile.data(), m, b0, K, j0, j1); break;
          case 1: invariant_rows<1, T>(x, w, tile.data(), m, b0, K, j0, j1); break;
          default: break;
        }
        for (int64_t r = b0; r < b1; ++r)
          std::copy_n(tile.data() + (r - b0) * kTile, j1 - j0, out + r * N + j0);
      }
    });
  }
}

// x [M, in] fp32 @ w [out, in] (fp32, bf16 or fp16) -> [M, out] fp32, any M >= 0.
torch::Tensor invariant_matmul(const torch::Tensor& x, const torch::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "invariant_matmul: shapes");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "invariant_matmul: x must be float32");
  const auto xc = x.contiguous();
  const auto wc = w.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = wc.size(0);
  auto out = torch::empty({M, N}, xc.options());
  const float* xp = xc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  switch (wc.scalar_type()) {
    case at::kFloat: invariant_matmul_into(xp, wc.data_ptr<float>(), op, M, K, N); break;
    case at::kBFloat16: invariant_matmul_into(xp, wc.data_ptr<at::BFloat16>(), op, M, K, N); break;
    case at::kHalf: invariant_matmul_into(xp, wc.data_ptr<at::Half>(), op, M, K, N); break;
    default: TORCH_CHECK(false, "invariant_matmul: w must be float32, bfloat16 or float16");
  }
  return out;
}

}  // namespace intaglio_cpu
