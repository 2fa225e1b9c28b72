// Input handling shared by every op's CPU, Meta and CUDA paths.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace liger {

// A tensor seen as [rows, cols] over its last dimension with a single row stride. Copies only
// when the last dimension is strided or the leading dimensions cannot share one stride; expanded
// (stride-0) leading dimensions are kept as they are.
struct Rows {
  at::Tensor t;
  int64_t rows;
  int64_t cols;
  int64_t row_stride;
};
Rows as_rows(const at::Tensor& t);

inline bool aligned16(const at::Tensor& t) {
  return !t.defined() || reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

inline bool is_half_or_float(c10::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

inline int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Weight and bias as the norm kernels read them (layer_norm, group_norm): one dtype for both, x's own when both
// have it, else fp32 (exact for 16-bit parameters). Undefined tensors stand for absent parameters.
struct KernelParams {
  at::Tensor w, b;
  c10::ScalarType dtype;
};
KernelParams kernel_params(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias);

// "[4096]" style shape text for error messages (SymInt-safe).
std::string shape_str(const at::Tensor& t);

// t on ref's device with ref's dtype and shape (SymInt-safe), else "<op>: <name> is on cpu but <ref_name> is on
// cuda:0; ...", "<op>: <name> must have <ref_name>'s dtype ...", "<op>: <name> must have <ref_name>'s shape ...".
void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name, const char* op);

// The CUDA kernels' dtypes: "<op>: the CUDA kernels take float32, bfloat16 or float16 <name>, got ...".
void check_cuda_dtype(const at::Tensor& t, const char* op, const char* name = "x");

// Row kernels index rows and columns with 32-bit integers.
void check_row_sizes(int64_t rows, int64_t cols, const char* op);

// Tensors an op writes in place, as (tensor, name): no element of one may overlap another element of it
// ("<op>: <name> is overwritten, so its elements must not overlap ...") or of another ("<op>: ... must not share
// memory (<a> and <b> do)").
void check_overwritable(const char* op, std::initializer_list<std::pair<const at::Tensor*, const char*>> args);

}  // namespace liger
