// Cross-entropy pieces shared with fused_linear_cross_entropy: options, the CPU reference and the CUDA
// launches of one row block (see triton_src/cross_entropy.py for the math).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace liger::cross_entropy {

enum class Reduction { None = 0, Mean = 1, Sum = 2 };

struct Options {
  int64_t ignore_index;
  double label_smoothing;
  double lse_square_scale;
  std::optional<double> softcap;
  Reduction reduction;
};

// Parses and checks the scalar arguments; errors name the op.
Options make_options(const char* op, int64_t ignore_index, double label_smoothing, double lse_square_scale,
                     std::optional<double> softcap, const std::string& reduction);

// Checks target (int64, shape = logits' leading dims) and the class weight ([V], floating point).
void check_target_and_weight(const char* op, const at::Tensor& target, c10::SymIntArrayRef rows_shape,
                             const c10::SymInt& n_classes, const std::optional<at::Tensor>& weight,
                             const char* weight_name, c10::Device device);

// CPU reference over [N, V] logits and [N] targets: (per-row ce [N], per-row z [N], lse [N],
// stats [D_loss, D_z, sum(w)]) in the accumulation dtype (float64 for float64 logits, else float32).
struct RowsResult {
  at::Tensor ce, z, lse, stats;
};
RowsResult rows_cpu(const at::Tensor& logits2d, const at::Tensor& target1d, const std::optional<at::Tensor>& weight,
                    const Options& o);
// The reduced (loss, z_loss) from per-row values, in dtype; "none" keeps target_shape.
std::pair<at::Tensor, at::Tensor> finalize_cpu(const RowsResult& r, const Options& o, at::ScalarType dtype,
                                               at::IntArrayRef target_shape);
// d loss / d logits for per-row (or scalar) fp32/fp64 grad scales, in the accumulation dtype (no grad_z: 0).
at::Tensor grad_cpu(const at::Tensor& logits2d, const at::Tensor& target1d, const std::optional<at::Tensor>& weight,
                    const at::Tensor& lse, const at::Tensor& stats, const at::Tensor& grad_loss,
                    const std::optional<at::Tensor>& grad_z, const Options& o);

// CUDA: stats [3] fp32 of the whole batch (weight32: fp32 contiguous class weights or undefined).
// sync (int32, optional): zeroed as well (cross_entropy_fwd_grad_kernel's tail counters).
at::Tensor stats_cuda(const at::Tensor& target1d, const at::Tensor& weight32, int64_t n_classes, const Options& o,
                      const at::Tensor& sync = at::Tensor());
// CUDA: per-row ce, z and lse of the rows of x2d (last dim contiguous) into fp32 slices; with store_grad, the
// gradient of the reduced loss for grad_output 1 is written over x2d.
void rows_cuda(const at::Tensor& x2d, int64_t row_stride, const at::Tensor& target1d, const at::Tensor& weight32,
               const at::Tensor& stats, const at::Tensor& ce_row, const at::Tensor& z_row, const at::Tensor& lse,
               const Options& o, bool store_grad);
// CUDA: (loss, z_loss) from the per-row values.
void finalize_cuda(const at::Tensor& ce_row, const at::Tensor& z_row, const at::Tensor& stats, const at::Tensor& loss,
                   const at::Tensor& z_loss, Reduction reduction);

}  // namespace liger::cross_entropy
