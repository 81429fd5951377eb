// The squash op library: every schema of the product lives here, so callers see one contract.
// Implementations register per family (formats_cpu.cpp, gemm_cpu.cpp, ... and cuda/*.cpp).
// Semantics of each op are documented in python/squash_ops/ops/*.py and docs/FORMATS.md.
#include <Python.h>
#include <torch/library.h>

#include "cpu/isa.h"

TORCH_LIBRARY(squash, m) {
  // ---- weight formats (docs/FORMATS.md) ----
  m.def("quantize_int8_weight(Tensor weight) -> (Tensor qweight, Tensor scales)");
  m.def("dequantize_int8_weight(Tensor qweight, Tensor scales) -> Tensor");
  m.def("quantize_int4_weight(Tensor weight, int group_size, bool symmetric) -> (Tensor qweight, Tensor scales, Tensor zeros)");
  m.def("dequantize_int4_weight(Tensor qweight, Tensor scales, Tensor? zeros, int group_size) -> Tensor");
  m.def("pack_int4(Tensor values) -> Tensor");
  m.def("unpack_int4(Tensor packed) -> Tensor");

  // ---- weight-only GEMM: x [..., K] fp16/bf16, weight [N, K] quantized ----
  m.def("w8a16_gemm(Tensor x, Tensor qweight, Tensor scales, Tensor? bias=None) -> Tensor");
  m.def("w4a16_gemm(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, int group_size, Tensor? bias=None) -> Tensor");

  // ---- prepacked weight-only GEMM (small-M tensor-core kernel; layout in docs/FORMATS.md) ----
  // k: the weight's true in_features. The layout pads K to whole tiles, so the packed shape alone
  // cannot tell K=56 from K=64: without k an x of the wrong width would be silently truncated.
  m.def("prepack_int4_weight(Tensor qweight, Tensor scales, Tensor? zeros, int group_size) -> (Tensor packed, Tensor scales_packed, Tensor zeros_packed)");
  m.def("unprepack_int4_weight(Tensor packed, Tensor scales, Tensor? zeros, int k, int group_size) -> (Tensor qweight, Tensor scales, Tensor zeros)");
  m.def("prepack_int8_weight(Tensor qweight, Tensor scales) -> (Tensor packed, Tensor scales_packed)");
  m.def("unprepack_int8_weight(Tensor packed, Tensor scales, int k) -> (Tensor qweight, Tensor scales)");
  m.def("w4a16_gemm_prepacked(Tensor x, Tensor packed, Tensor scales, Tensor? zeros, int k, int group_size, Tensor? bias=None) -> Tensor");
  m.def("w8a16_gemm_prepacked(Tensor x, Tensor packed, Tensor scales, int k, Tensor? bias=None) -> Tensor");

  // ---- CPU prepacked weight-only GEMM (AVX2 / scalar kernels; layout in docs/FORMATS.md) ----
  m.def("cpu_prepack_int4_weight(Tensor qweight, Tensor scales, Tensor? zeros, int group_size) -> (Tensor packed, Tensor scales_packed, Tensor zeros_packed)");
  m.def("cpu_unprepack_int4_weight(Tensor packed, Tensor scales, Tensor? zeros, int n, int k, int group_size) -> (Tensor qweight, Tensor scales, Tensor zeros)");
  m.def("cpu_prepack_int8_weight(Tensor qweight, Tensor scales) -> (Tensor packed, Tensor scales_packed)");
  m.def("cpu_unprepack_int8_weight(Tensor packed, Tensor scales, int n) -> (Tensor qweight, Tensor scales)");
  m.def("w4a16_gemm_cpu_prepacked(Tensor x, Tensor packed, Tensor scales, Tensor? zeros, int n, int group_size, Tensor? bias=None) -> Tensor");
  m.def("w8a16_gemm_cpu_prepacked(Tensor x, Tensor packed, Tensor scales, int n, Tensor? bias=None) -> Tensor");

  // ---- int8 activations and W8A8 ----
  m.def("quantize_activation_int8(Tensor x, Tensor? scale=None) -> (Tensor q, Tensor scales)");
  m.def("quantize_activation_int8_transformed(Tensor x, Tensor? input_mul, int rotation, Tensor? scale=None) -> (Tensor q, Tensor scales)");
  m.def("w8a8_gemm(Tensor x_q, Tensor x_scales, Tensor qweight, Tensor w_scales, Tensor? bias, ScalarType out_dtype) -> Tensor");

  // ---- norms: weight=None is the gamma-migrated form (bias then holds beta/gamma) ----
  m.def("layer_norm(Tensor x, Tensor? weight, Tensor? bias, float eps) -> Tensor");
  m.def("add_layer_norm(Tensor x, Tensor residual, Tensor? weight, Tensor? bias, float eps) -> (Tensor out, Tensor residual_out)");
  m.def("layer_norm_quant(Tensor x, Tensor? weight, Tensor? bias, float eps, Tensor? scale=None) -> (Tensor q, Tensor scales)");
  m.def("add_layer_norm_quant(Tensor x, Tensor residual, Tensor? weight, Tensor? bias, float eps, Tensor? scale=None) -> (Tensor q, Tensor scales, Tensor residual_out)");
  m.def("rms_norm(Tensor x, Tensor? weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor? weight, float eps) -> (Tensor out, Tensor residual_out)");
  m.def("rms_norm_quant(Tensor x, Tensor? weight, float eps, Tensor? scale=None) -> (Tensor q, Tensor scales)");
  m.def("add_rms_norm_quant(Tensor x, Tensor residual, Tensor? weight, float eps, Tensor? scale=None) -> (Tensor q, Tensor scales, Tensor residual_out)");
  // Both outputs of one norm in one pass (a migrated norm feeding int8 consumers and a residual):
  // the float out and the int8 q / scales of the same y; residual added first when given.
  m.def("layer_norm_and_quant(Tensor x, Tensor? residual, Tensor? weight, Tensor? bias, float eps, Tensor? scale=None) -> (Tensor out, Tensor q, Tensor scales)");
  m.def("rms_norm_and_quant(Tensor x, Tensor? residual, Tensor? weight, float eps, Tensor? scale=None) -> (Tensor out, Tensor q, Tensor scales)");

  // ---- attention, FlashAttention layout [batch, seq, heads, head_dim] ----
  m.def("attention(Tensor q, Tensor k, Tensor v, float? softmax_scale=None, bool causal=False) -> (Tensor out, Tensor lse)");
  m.def("attention_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, SymInt max_seqlen_q, SymInt max_seqlen_k, float? softmax_scale=None, bool causal=False) -> (Tensor out, Tensor lse)");
  m.def("attention_decode(Tensor q, Tensor k_cache, Tensor v_cache, Tensor cache_seqlens, float? softmax_scale=None, bool causal=True) -> (Tensor out, Tensor lse)");
}

namespace {

// _C.cpu_isa() -> (active, detected) names of the CPU kernels' ISA path (cpu/isa.h).
PyObject* cpu_isa(PyObject*, PyObject*) {
  using namespace squash::cpu_kernels;
  return Py_BuildValue("(ss)", isa_name(active_isa()), isa_name(detected_isa()));
}

// _C.set_cpu_isa(level) with level 0 scalar, 1 avx2, 2 avx512, -1 back to the detected ISA.
// Returns False when this CPU cannot run that level (nothing changes then).
PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const long level = PyLong_AsLong(arg);
  if (level == -1 && PyErr_Occurred()) return nullptr;
  return PyBool_FromLong(squash::cpu_kernels::set_isa_override(static_cast<int>(level)));
}

PyMethodDef kMethods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "(active, detected) ISA of the CPU kernels"},
    {"set_cpu_isa", set_cpu_isa, METH_O, "force the CPU kernels' ISA level (-1: detected)"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

// `import squash_ops._C` loads this shared object, which runs the registrations above.
extern "C" PyObject* PyInit__C() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "squash_ops native ops (torch.ops.squash)", -1, kMethods};
  return PyModule_Create(&module);
}
