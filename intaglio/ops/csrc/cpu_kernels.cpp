// CPU kernels for the decode step on CPUs without half-precision matrix units (AVX-512).
//
// half_gemv: a few fp32 rows times bf16/fp16 weights [out, in], widening each weight to fp32
//   in registers, so the weights stream from memory once at half the bytes and nothing is
//   widened to memory first (torch's emulated bf16 GEMV reaches about half the bandwidth).
// paged_decode_attention: one query token per sequence against its keys and values read in
//   place from the paged KV cache through its block table; no gathered copy of the context.
// rms_norm, rotary_embedding_, silu_and_mul: the small per-layer steps in one call each instead of the
//   half-dozen torch ops (and their dispatch overhead) apiece.
//
// Both split their work over torch's intra-op threads (at::parallel_for).

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

inline __m512 load16(const at::BFloat16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

inline __m512 load16(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }

constexpr int kRowsPerTile = 4;        // weight rows sharing one pass over x
constexpr int64_t kPrefetchAhead = 512;  // elements (1 KiB of half weights) ahead of the loads

// out[m, j] = sum_k x[m, k] * w[j, k] for weight rows j in [j0, j1); M is the number of x rows.
template <int M, typename T>
void gemv_tile(const float* x, const T* w, float* out, int64_t K, int64_t N, int64_t j0,
               int64_t j1) {
  for (int64_t j = j0; j < j1; j += kRowsPerTile) {
    const int rows = static_cast<int>(std::min<int64_t>(kRowsPerTile, j1 - j));
    const T* wr[kRowsPerTile];
    for (int r = 0; r < kRowsPerTile; ++r) wr[r] = w + (j + std::min(r, rows - 1)) * K;
    __m512 acc[kRowsPerTile][M];
    for (int r = 0; r < kRowsPerTile; ++r)
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      __m512 wv[kRowsPerTile];
      for (int r = 0; r < kRowsPerTile; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(wr[r] + k + kPrefetchAhead), _MM_HINT_T0);
        wv[r] = load16(wr[r] + k);
      }
      for (int m = 0; m < M; ++m) {
        const __m512 xv = _mm512_loadu_ps(x + m * K + k);
        for (int r = 0; r < kRowsPerTile; ++r) acc[r][m] = _mm512_fmadd_ps(wv[r], xv, acc[r][m]);
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

// e^x for x <= 0 (softmax after subtracting the max): 2^n * e^r with |r| <= ln2 / 2 and a
// degree-6 Taylor polynomial for e^r, within 2 ulp; below -87 it flushes towards 0.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);  // ln2 split in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (const float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

// Lane j of the result is the sum of the 16 lanes of a[j].
inline __m512 sum_each(const __m512 a[16]) {
  __m512 quads[4];
  for (int g = 0; g < 4; ++g) {
    const __m512* v = a + 4 * g;
    const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
    const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23));
    quads[g] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));  // per 128-bit lane
  }
  auto fold = [](__m512 x, __m512 y) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  return fold(fold(quads[0], quads[1]), fold(quads[2], quads[3]));
}

// The `group` query heads q[g * DC * 16 ...] that share one KV head, against `len` keys and
// values given by row pointers (fp32, or half precision widened in registers); DC = head_dim /
// 16. Each key and value row is read once for the whole group. Writes softmax(q . k * scale) . v per head to out (same layout as q);
// `scores` has room for group * stride floats, stride >= len rounded up to 16.
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
      }
      const int64_t head = i * heads + h * group;
      attend_head(qp + head * d, group, keys.data(), values.data(), len, scale, scores.data(),
                  stride, op + head * d);
    }
  });
}

}  // namespace

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("half_gemv", &half_gemv, "fp32 rows @ half-precision weights [out, in]^T");
  m.def("paged_decode_attention", &paged_decode_attention, "decode attention over a paged cache");
  m.def("rms_norm", &rms_norm, "RMSNorm of fp32 rows");
  m.def("silu_and_mul", &silu_and_mul, "silu(gate) * up of fused gate_up rows");
  m.def("rotary_embedding_", &rotary_embedding_, "RoPE on q and k, in place");
}
