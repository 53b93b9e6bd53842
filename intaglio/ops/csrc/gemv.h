// half_gemv: a few fp32 rows times bf16/fp16 weights [out, in], widening each weight to fp32
// in registers, so the weights stream from memory once at half the bytes and nothing is
// widened to memory first (torch's emulated bf16 GEMV reaches about half the bandwidth).
#pragma once

#include "simd.h"

namespace intaglio_cpu {

// out[m, j] = sum_k x[m, k] * w[j, k] for weight rows j in [j0, j1); M is the number of x rows.
// R weight rows share each pass over x (8 while their accumulators fit the 32 registers), and
// the next R rows are prefetched meanwhile: rows are short (a few KiB), so prefetching ahead
// within a row would mostly land on rows already being read.
template <int M, typename T>
void gemv_tile(const float* x, const T* w, float* out, int64_t K, int64_t N, int64_t j0,
               int64_t j1) {
  constexpr int R = M <= 2 ? 8 : 4;
  for (int64_t j = j0; j < j1; j += R) {
    const int rows = static_cast<int>(std::min<int64_t>(R, j1 - j));
    const T* wr[R];
    for (int r = 0; r < R; ++r) wr[r] = w + (j + std::min(r, rows - 1)) * K;
    __m512 acc[R][M];
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m512 wv[R];
      for (int r = 0; r < R; ++r) {
        // Prefetches never fault, so running past the last row is harmless.
        _mm_prefetch(reinterpret_cast<const char*>(wr[r] + R * K + k), _MM_HINT_T0);
        wv[r] = load16(wr[r] + k);
      }
      for (int m = 0; m < M; ++m) {
        const __m512 xv = _mm512_loadu_ps(x + m * K + k);
        for (int r = 0; r < R; ++r) acc[r][m] = _mm512_fmadd_ps(wv[r], xv, acc[r][m]);
      }
    }
    for (int r = 0; r < rows; ++r) {
      for (int m = 0; m < M; ++m) {
        float s = _mm512_reduce_add_ps(acc[r][m]);
        for (int64_t kk = k; kk < K; ++kk) s += static_cast<float>(wr[r][kk]) * x[m * K + kk];
        out[m * N + j + r] = s;
      }
    }
  }
}

template <int M, typename T>
void gemv(const float* x, const T* w, float* out, int64_t K, int64_t N) {
  // Tiles of 64 rows: enough work per task, and both threads stream their own half.
  constexpr int64_t kGrain = 64;
  at::parallel_for(0, (N + kGrain - 1) / kGrain, 1, [&](int64_t t0, int64_t t1) {
    gemv_tile<M, T>(x, w, out, K, N, t0 * kGrain, std::min(N, t1 * kGrain));
  });
}

// x [M, in] fp32 (M <= 4) @ w [out, in] bf16/fp16 -> [M, out] fp32.
torch::Tensor half_gemv(const torch::Tensor& x, const torch::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "half_gemv: shapes");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "half_gemv: x must be float32");
  TORCH_CHECK(x.size(0) >= 1 && x.size(0) <= 4, "half_gemv: 1 to 4 rows");
  const auto xc = x.contiguous();
  const auto wc = w.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = wc.size(0);
  auto out = torch::empty({M, N}, xc.options());
  const float* xp = xc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  auto run = [&](auto* wp) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(wp)>>;
    switch (M) {
      case 1: gemv<1, T>(xp, wp, op, K, N); break;
      case 2: gemv<2, T>(xp, wp, op, K, N); break;
      case 3: gemv<3, T>(xp, wp, op, K, N); break;
      default: gemv<4, T>(xp, wp, op, K, N); break;
    }
  };
  if (wc.scalar_type() == at::kBFloat16) {
    run(wc.data_ptr<at::BFloat16>());
  } else {
    TORCH_CHECK(wc.scalar_type() == at::kHalf, "half_gemv: w must be bfloat16 or float16");
    run(wc.data_ptr<at::Half>());
  }
  return out;
}

}  // namespace intaglio_cpu
