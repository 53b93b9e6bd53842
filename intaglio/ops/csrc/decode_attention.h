// paged_decode_attention: one query token per sequence against its keys and values, read in
// place from the paged KV cache through its block table; no gathered copy of the context.
#pragma once

#include "simd.h"

namespace intaglio_cpu {

// The `group` query heads q[g * DC * 16 ...] that share one KV head, against `len` keys and
// values given by row pointers (fp32, or half precision widened in registers); DC = head_dim /
// 16. Each key and value row is read once for the whole group. Writes softmax(q . k * scale) . v
// per head to out (same layout as q); `scores` has room for group * stride floats, stride >= len
// rounded up to 16.
template <int DC, typename T>
void attend(const float* q, int64_t group, const T* const* keys, const T* const* values,
            int64_t len, float scale, float* scores, int64_t stride, float* out) {
  constexpr int64_t d = 16 * DC;
  std::vector<float> inv(group);
  for (int64_t g = 0; g < group; ++g) {
    __m512 qv[DC];
    for (int c = 0; c < DC; ++c)
      qv[c] = _mm512_mul_ps(_mm512_loadu_ps(q + g * d + 16 * c), _mm512_set1_ps(scale));
    float* s_g = scores + g * stride;
    __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t p0 = 0; p0 < len; p0 += 16) {
      const int64_t m = std::min<int64_t>(16, len - p0);
      __m512 acc[16];
      for (int j = 0; j < 16; ++j) {
        const T* key = keys[p0 + std::min<int64_t>(j, m - 1)];
        acc[j] = _mm512_mul_ps(qv[0], load16(key));
        for (int c = 1; c < DC; ++c) acc[j] = _mm512_fmadd_ps(qv[c], load16(key + 16 * c), acc[j]);
      }
      const __mmask16 valid = static_cast<__mmask16>((1u << m) - 1);
      const __m512 sums = sum_each(acc);
      _mm512_mask_storeu_ps(s_g + p0, valid, sums);
      mx = _mm512_mask_max_ps(mx, valid, mx, sums);
    }
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 total = _mm512_setzero_ps();
    for (int64_t p0 = 0; p0 < len; p0 += 16) {
      const __mmask16 valid = static_cast<__mmask16>((1u << std::min<int64_t>(16, len - p0)) - 1);
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(valid, s_g + p0), top));
      total = _mm512_add_ps(total, _mm512_maskz_mov_ps(valid, e));
      _mm512_mask_storeu_ps(s_g + p0, valid, e);
    }
    inv[g] = 1.0f / _mm512_reduce_add_ps(total);
  }
  // Values: up to 4 heads' accumulators stay in registers while each value row is read.
  for (int64_t g0 = 0; g0 < group; g0 += 4) {
    const int64_t gn = std::min<int64_t>(4, group - g0);
    __m512 acc[4][DC];
    for (int g = 0; g < 4; ++g)
      for (int c = 0; c < DC; ++c) acc[g][c] = _mm512_setzero_ps();
    for (int64_t p = 0; p < len; ++p) {
      __m512 v[DC];
      for (int c = 0; c < DC; ++c) v[c] = load16(values[p] + 16 * c);
      for (int g = 0; g < gn; ++g) {
        const __m512 w = _mm512_set1_ps(scores[(g0 + g) * stride + p]);
        for (int c = 0; c < DC; ++c) acc[g][c] = _mm512_fmadd_ps(w, v[c], acc[g][c]);
      }
    }
    for (int g = 0; g < gn; ++g) {
      const __m512 scale_g = _mm512_set1_ps(inv[g0 + g]);
      for (int c = 0; c < DC; ++c)
        _mm512_storeu_ps(out + (g0 + g) * d + 16 * c, _mm512_mul_ps(acc[g][c], scale_g));
    }
  }
}

template <typename T>
using AttendFn = void (*)(const float*, int64_t, const T* const*, const T* const*, int64_t, float,
                          float*, int64_t, float*);

template <typename T>
AttendFn<T> attend_for(int64_t head_dim) {
  switch (head_dim) {
    case 16: return attend<1, T>;
    case 32: return attend<2, T>;
    case 64: return attend<4, T>;
    case 128: return attend<8, T>;
    case 256: return attend<16, T>;
    default: return nullptr;
  }
}

// The body of paged_decode_attention for caches of element type T.
template <typename T>
void decode_attention(const float* qp, const T* kp, const T* vp, const int64_t* tp,
                      const int64_t* rp, float* op, int64_t n, int64_t heads, int64_t d,
                      int64_t bs, int64_t kv_heads, int64_t width, float scale) {
  const AttendFn<T> attend_head = attend_for<T>(d);
  TORCH_CHECK(attend_head != nullptr, "paged_decode_attention: unsupported head_dim ", d);
  const int64_t group = heads / kv_heads;
  // One task per (sequence, KV head): its `group` query heads share the key/value rows.
  at::parallel_for(0, n * kv_heads, 1, [&](int64_t t0, int64_t t1) {
    std::vector<const T*> keys, values;
    std::vector<float> scores;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / kv_heads, h = t % kv_heads;
      const int64_t lo = rp[2 * i], hi = std::min(rp[2 * i + 1], width * bs);
      const int64_t len = hi - lo;
      if (len <= 0) continue;
      keys.resize(len);
      values.resize(len);
      const int64_t stride = (len + 15) / 16 * 16;
      scores.resize(group * stride);
      for (int64_t p = lo; p < hi; ++p) {
        const int64_t row = (tp[i * width + p / bs] * bs + p % bs) * kv_heads + h;
        keys[p - lo] = kp + row * d;
        values[p - lo] = vp + row * d;
        // Ask for every row into L2 now: the rows are scattered over blocks, so the hardware
        // prefetcher cannot guess them, and the requests overlap instead of stalling one by one.
        for (int64_t byte = 0; byte < d * static_cast<int64_t>(sizeof(T)); byte += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(keys[p - lo]) + byte, _MM_HINT_T1);
          _mm_prefetch(reinterpret_cast<const char*>(values[p - lo]) + byte, _MM_HINT_T1);
        }
      }
      const int64_t head = i * heads + h * group;
      attend_head(qp + head * d, group, keys.data(), values.data(), len, scale, scores.data(),
                  stride, op + head * d);
    }
  });
}

// q [n, heads, d] fp32, d in {16, 32, 64, 128, 256}; caches [blocks, block_size, kv_heads, d]
// fp32, bf16 or fp16; block_tables [n, width] int64; key_range [n, 2] int64: row i attends to
// the positions [lo, hi) of its table (position p lives in block block_tables[i, p /
// block_size] at offset p % block_size).
torch::Tensor paged_decode_attention(const torch::Tensor& q, const torch::Tensor& k_cache,
                                     const torch::Tensor& v_cache,
                                     const torch::Tensor& block_tables,
                                     const torch::Tensor& key_range, double scale) {
  TORCH_CHECK(q.scalar_type() == at::kFloat, "paged_decode_attention: q must be float32");
  TORCH_CHECK(k_cache.scalar_type() == v_cache.scalar_type() && k_cache.is_contiguous() &&
                  v_cache.is_contiguous(),
              "paged_decode_attention: contiguous caches of one dtype");
  const auto qc = q.contiguous();
  const auto tables = block_tables.contiguous();
  const auto range = key_range.contiguous();
  const int64_t n = qc.size(0), heads = qc.size(1), d = qc.size(2);
  const int64_t bs = k_cache.size(1), kv_heads = k_cache.size(2), width = tables.size(1);
  TORCH_CHECK(heads % kv_heads == 0 && k_cache.size(3) == d, "paged_decode_attention: heads");
  auto out = torch::zeros_like(qc);
  auto run = [&](const auto* kp, const auto* vp) {
    decode_attention(qc.data_ptr<float>(), kp, vp, tables.data_ptr<int64_t>(),
                     range.data_ptr<int64_t>(), out.data_ptr<float>(), n, heads, d, bs, kv_heads,
                     width, static_cast<float>(scale));
  };
  switch (k_cache.scalar_type()) {
    case at::kFloat: run(k_cache.data_ptr<float>(), v_cache.data_ptr<float>()); break;
    case at::kBFloat16:
      run(k_cache.data_ptr<at::BFloat16>(), v_cache.data_ptr<at::BFloat16>());
      break;
    case at::kHalf: run(k_cache.data_ptr<at::Half>(), v_cache.data_ptr<at::Half>()); break;
    default: TORCH_CHECK(false, "paged_decode_attention: cache dtype float32, bfloat16 or float16");
  }
  return out;
}

}  // namespace intaglio_cpu
