// Softmax over the last dimension: y = exp(x - max) / sum(exp(x - max)), fp32 math, output in x's dtype; dx = y (dy -
// sum(dy y)). The checks, launchers, autograd and registrations are row_op.h's (shared with sparsemax).
#include "liger_gen/softmax.h"
#include "ops/row_op.h"

namespace liger::softmax {

using at::Tensor;
using namespace liger::gen::softmax;
using row_op::acc_dtype;

// ---- the op for row_op.h: schema names, generated kernels, CPU reference (ATen ops)

struct Op {
  static constexpr const char* name = "softmax";
  static constexpr const char* bwd_name = "softmax_bwd";
  static constexpr int64_t MIN_BLOCK_N = gen::softmax::MIN_BLOCK_N;
  static constexpr int64_t FWD_MAX_BLOCK_N = gen::softmax::FWD_MAX_BLOCK_N;
  static constexpr int64_t BWD_MAX_BLOCK_N = gen::softmax::BWD_MAX_BLOCK_N;
  using FwdKey = softmax_fwd_kernel_key;
  using FwdLoopedKey = softmax_fwd_looped_kernel_key;
  using BwdKey = softmax_bwd_kernel_key;
  using BwdLoopedKey = softmax_bwd_looped_kernel_key;
  static constexpr auto fwd_find = &softmax_fwd_kernel_find;
  static constexpr auto fwd_get = &softmax_fwd_kernel_get;
  static constexpr auto fwd_launch = &softmax_fwd_kernel_launch;
  static constexpr auto fwd_looped_find = &softmax_fwd_looped_kernel_find;
  static constexpr auto fwd_looped_get = &softmax_fwd_looped_kernel_get;
  static constexpr auto fwd_looped_launch = &softmax_fwd_looped_kernel_launch;
  static constexpr auto bwd_find = &softmax_bwd_kernel_find;
  static constexpr auto bwd_get = &softmax_bwd_kernel_get;
  static constexpr auto bwd_launch = &softmax_bwd_kernel_launch;
  static constexpr auto bwd_looped_find = &softmax_bwd_looped_kernel_find;
  static constexpr auto bwd_looped_get = &softmax_bwd_looped_kernel_get;
  static constexpr auto bwd_looped_launch = &softmax_bwd_looped_kernel_launch;

  static Tensor forward_reference(const Tensor& x) {
    Tensor xf = x.to(acc_dtype(x));
    Tensor e = (xf - xf.amax(-1, true)).exp();
    return e / e.sum(-1, true);
  }

  static Tensor backward_reference(const Tensor& dy, const Tensor& y) {
    Tensor yf = y.to(acc_dtype(y));
    Tensor dyf = dy.to(acc_dtype(y));
    return yf * (dyf - (dyf * yf).sum(-1, true));
  }
};

const VariantCheck variant_check("softmax", row_op::missing_variants<Op>);

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("softmax(Tensor x) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("softmax_bwd(Tensor dy, Tensor y) -> Tensor", {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(liger, CPU, m) { row_op::impl<Op>(m, row_op::Kind::CPU); }
TORCH_LIBRARY_IMPL(liger, Meta, m) { row_op::impl<Op>(m, row_op::Kind::Meta); }
TORCH_LIBRARY_IMPL(liger, CUDA, m) { row_op::impl<Op>(m, row_op::Kind::CUDA); }
TORCH_LIBRARY_IMPL(liger, Autograd, m) { row_op::impl<Op>(m, row_op::Kind::Autograd); }

}  // namespace liger::softmax

