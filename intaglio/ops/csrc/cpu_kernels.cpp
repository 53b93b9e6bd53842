// Our CPU kernels for decode steps on CPUs without half-precision matrix units (AVX-512), and
// the batch-invariant mode's matmul (model/batch_invariant.py), compiled on first use by
// intaglio/ops/cpu_kernels.py. Each splits its work over torch's intra-op threads
// (at::parallel_for).

#include "decode_attention.h"
#include "gemv.h"
#include "invariant_matmul.h"
#include "pointwise.h"

// How many of torch's intra-op threads a parallel_for over `tasks` items runs on: checks that
// the build really splits work (without OpenMP at::parallel_for silently runs serially).
int64_t threads_used(int64_t tasks) {
  std::vector<int> seen(at::get_num_threads(), 0);
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) { seen[at::get_thread_num()] = 1; });
  return std::count(seen.begin(), seen.end(), 1);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace intaglio_cpu;
  m.def("threads_used", &threads_used, "threads a parallel_for runs on (a build check)");
  m.def("half_gemv", &half_gemv, "fp32 rows @ half-precision weights [out, in]^T");
  m.def("invariant_matmul", &invariant_matmul,
        "fp32 rows @ weights [out, in]^T, each row's result independent of the row count");
  m.def("paged_decode_attention", &paged_decode_attention, "decode attention over a paged cache");
  m.def("rms_norm", &rms_norm, "RMSNorm of fp32 rows");
  m.def("silu_and_mul", &silu_and_mul, "silu(gate) * up of fused gate_up rows");
  m.def("rotary_embedding_", &rotary_embedding_, "RoPE on q and k, in place");
}
