// Our CPU kernels for decode steps on CPUs without half-precision matrix units (AVX-512),
// compiled on first use by intaglio/ops/cpu_kernels.py. Each splits its work over torch's
// intra-op threads (at::parallel_for).

#include "decode_attention.h"
#include "gemv.h"
#include "pointwise.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace intaglio_cpu;
  m.def("half_gemv", &half_gemv, "fp32 rows @ half-precision weights [out, in]^T");
  m.def("paged_decode_attention", &paged_decode_attention, "decode attention over a paged cache");
  m.def("rms_norm", &rms_norm, "RMSNorm of fp32 rows");
  m.def("silu_and_mul", &silu_and_mul, "silu(gate) * up of fused gate_up rows");
  m.def("rotary_embedding_", &rotary_embedding_, "RoPE on q and k, in place");
}
