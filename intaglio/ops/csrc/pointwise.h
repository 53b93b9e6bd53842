// The small per-layer steps (activation, norm, rotary embedding) in one call each, instead of
// the half-dozen torch ops (and their dispatch overhead) apiece.
#pragma once

#include "simd.h"

namespace intaglio_cpu {

// gate_up [n, 2 * f] fp32 -> silu(gate) * up [n, f]: the gated MLP's activation in one pass.
torch::Tensor silu_and_mul(const torch::Tensor& gate_up) {
  TORCH_CHECK(gate_up.scalar_type() == at::kFloat && gate_up.dim() == 2 &&
                  gate_up.size(1) % 2 == 0,
              "silu_and_mul: float32 [n, 2 * f]");
  const auto gu = gate_up.contiguous();
  const int64_t n = gu.size(0), f = gu.size(1) / 2;
  auto out = torch::empty({n, f}, gu.options());
  const float* gp = gu.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const __m512 one = _mm512_set1_ps(1.0f);
  at::parallel_for(0, n, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* gate = gp + r * 2 * f;
      const float* up = gate + f;
      float* o = op + r * f;
      for (int64_t j = 0; j < f; j += 16) {
        const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, f - j)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(m, gate + j);
        // sigmoid(x) from e = exp(-|x|) <= 1: 1 / (1 + e) for x >= 0, e / (1 + e) below.
        const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
        const __m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
        const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
        const __m512 sig = _mm512_mask_mul_ps(inv, neg, inv, e);
        const __m512 y = _mm512_mul_ps(_mm512_mul_ps(x, sig), _mm512_maskz_loadu_ps(m, up + j));
        _mm512_mask_storeu_ps(o + j, m, y);
      }
    }
  });
  return out;
}

// RMSNorm of each row of x [n, h] fp32 times weight [h] fp32, as F.rms_norm computes it.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "rms_norm: float32 only");
  const auto xc = x.contiguous();
  const int64_t h = xc.size(-1), n = xc.numel() / h;
  TORCH_CHECK(weight.numel() == h, "rms_norm: weight size");
  auto out = torch::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  const float* wp = weight.contiguous().data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = xp + r * h;
      __m512 acc = _mm512_setzero_ps();
      int64_t j = 0;
      for (; j + 16 <= h; j += 16) {
        const __m512 v = _mm512_loadu_ps(row + j);
        acc = _mm512_fmadd_ps(v, v, acc);
      }
      float sq = _mm512_reduce_add_ps(acc);
      for (; j < h; ++j) sq += row[j] * row[j];
      const float inv = 1.0f / std::sqrt(sq / h + static_cast<float>(eps));
      for (j = 0; j < h; ++j) op[r * h + j] = row[j] * inv * wp[j];
    }
  });
  return out;
}

// Rotates q [n, heads, d] and k [n, kv_heads, d] in place (rows may be strided views into the
// fused qkv output) by the angles cos/sin [n, d / 2] fp32: pairs (i, i + d/2), or (2i, 2i + 1)
// when interleaved.
void rotary_embedding_(torch::Tensor q, torch::Tensor k, const torch::Tensor& cos,
                       const torch::Tensor& sin, bool interleaved) {
  const auto cc = cos.contiguous(), sc = sin.contiguous();
  const int64_t n = q.size(0), half = cc.size(1);
  const float* cp = cc.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  for (torch::Tensor* x : {&q, &k}) {
    TORCH_CHECK(x->scalar_type() == at::kFloat && x->stride(2) == 1 &&
                    x->stride(1) == x->size(2) && x->size(2) == 2 * half,
                "rotary_embedding_: float32 [n, heads, d] with contiguous heads");
    const int64_t heads = x->size(1), row_stride = x->stride(0), d = x->size(2);
    float* base = x->data_ptr<float>();
    const int64_t step = interleaved ? 2 : 1, partner = interleaved ? 1 : half;
    at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* c = cp + r * half;
        const float* s = sp + r * half;
        for (int64_t hd = 0; hd < heads; ++hd) {
          float* v = base + r * row_stride + hd * d;
          for (int64_t i = 0; i < half; ++i) {
            const float a = v[i * step], b = v[i * step + partner];
            v[i * step] = a * c[i] - b * s[i];
            v[i * step + partner] = b * c[i] + a * s[i];
          }
        }
      }
    });
  }
}

}  // namespace intaglio_cpu
