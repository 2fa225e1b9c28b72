// Sparsemax over the last dimension (Martins & Astudillo 2016): y = max(x - tau, 0), the Euclidean projection of
// x onto the probability simplex; tau in fp32 (float64 for float64 x), output in x's dtype; dx = dy - mean(dy) on
// the support, 0 off it. The checks, launchers, autograd and registrations are row_op.h's (shared with softmax).
#include "liger_gen/sparsemax.h"
#include "ops/row_op.h"

namespace liger::sparsemax {

using at::Tensor;
using namespace liger::gen::sparsemax;
using row_op::acc_dtype;

// ---- the op for row_op.h: schema names, generated kernels, CPU reference (ATen ops)

struct Op {
  static constexpr const char* name = "sparsemax";
  static constexpr const char* bwd_name = "sparsemax_bwd";
  static constexpr int64_t MIN_BLOCK_N = gen::sparsemax::MIN_BLOCK_N;
  static constexpr int64_t FWD_MAX_BLOCK_N = gen::sparsemax::FWD_MAX_BLOCK_N;
  static constexpr int64_t BWD_MAX_BLOCK_N = gen::sparsemax::BWD_MAX_BLOCK_N;
  using FwdKey = sparsemax_fwd_kernel_key;
  using FwdLoopedKey = sparsemax_fwd_looped_kernel_key;
  using BwdKey = sparsemax_bwd_kernel_key;
  using BwdLoopedKey = sparsemax_bwd_looped_kernel_key;
  static constexpr auto fwd_find = &sparsemax_fwd_kernel_find;
  static constexpr auto fwd_get = &sparsemax_fwd_kernel_get;
  static constexpr auto fwd_launch = &sparsemax_fwd_kernel_launch;
  static constexpr auto fwd_looped_find = &sparsemax_fwd_looped_kernel_find;
  static constexpr auto fwd_looped_get = &sparsemax_fwd_looped_kernel_get;
  static constexpr auto fwd_looped_launch = &sparsemax_fwd_looped_kernel_launch;
  static constexpr auto bwd_find = &sparsemax_bwd_kernel_find;
  static constexpr auto bwd_get = &sparsemax_bwd_kernel_get;
  static constexpr auto bwd_launch = &sparsemax_bwd_kernel_launch;
  static constexpr auto bwd_looped_find = &sparsemax_bwd_looped_kernel_find;
  static constexpr auto bwd_looped_get = &sparsemax_bwd_looped_kernel_get;
  static constexpr auto bwd_looped_launch = &sparsemax_bwd_looped_kernel_launch;

  // The textbook algorithm (sort, cumulative sums, support size); the kernels find the same tau without a sort.
  static Tensor forward_reference(const Tensor& x) {
    Tensor xf = x.to(acc_dtype(x));
    Tensor z = std::get<0>(xf.sort(-1, true));
    Tensor r = at::arange(1, x.size(-1) + 1, xf.options());
    Tensor support = (r * z + 1) > z.cumsum(-1);
    Tensor k = support.sum(-1, true).to(xf.scalar_type());
    Tensor tau = (at::where(support, z, at::zeros({}, xf.options())).sum(-1, true) - 1) / k;
    return (xf - tau).clamp_min(0);
  }

  static Tensor backward_reference(const Tensor& dy, const Tensor& y) {
    Tensor dyf = dy.to(acc_dtype(y));
    Tensor support = y > 0;
    Tensor zero = at::zeros({}, dyf.options());
    Tensor k = support.sum(-1, true).to(dyf.scalar_type()).clamp_min(1);
    Tensor mean = at::where(support, dyf, zero).sum(-1, true) / k;
    return at::where(support, dyf - mean, zero);
  }
};

const VariantCheck variant_check("sparsemax", row_op::missing_variants<Op>);

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("sparsemax(Tensor x) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("sparsemax_bwd(Tensor dy, Tensor y) -> Tensor", {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(liger, CPU, m) { row_op::impl<Op>(m, row_op::Kind::CPU); }
TORCH_LIBRARY_IMPL(liger, Meta, m) { row_op::impl<Op>(m, row_op::Kind::Meta); }
TORCH_LIBRARY_IMPL(liger, CUDA, m) { row_op::impl<Op>(m, row_op::Kind::CUDA); }
TORCH_LIBRARY_IMPL(liger, Autograd, m) { row_op::impl<Op>(m, row_op::Kind::Autograd); }

}  // namespace liger::sparsemax

