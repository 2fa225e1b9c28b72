// Sparsemax over the last dimension (Martins & Astudillo 2016): y = max(x - tau, 0), the Euclidean projection of
// x onto the probability simplex; tau in fp32 (float64 for float64 x), output in x's dtype.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/sparsemax.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::sparsemax {

using at::Tensor;
using namespace liger::gen::sparsemax;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("sparsemax(Tensor x) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("sparsemax_bwd(Tensor dy, Tensor y) -> Tensor", {at::Tag::pt2_compliant_tag});
}

// ---- checks

void check_x(const Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(x.dim() >= 1, op, ": ", name, " must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()), op, ": ",
              name, " must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
}

void check_backward_inputs(const Tensor& dy, const Tensor& y) {
  check_x(y, "sparsemax_bwd", "y");
  TORCH_CHECK(dy.device() == y.device(), "sparsemax_bwd: dy is on ", dy.device(), " but y is on ", y.device(),
              "; both must be on the same device");
  TORCH_CHECK(dy.scalar_type() == y.scalar_type(), "sparsemax_bwd: dy must have y's dtype ", y.scalar_type(),
              ", got ", dy.scalar_type());
  TORCH_CHECK(dy.dim() == y.dim(), "sparsemax_bwd: dy must have y's shape ", shape_str(y), ", got ", shape_str(dy));
  for (int64_t i = 0; i < y.dim(); ++i)
    TORCH_SYM_CHECK(dy.sym_size(i).sym_eq(y.sym_size(i)), "sparsemax_bwd: dy must have y's shape ", shape_str(y),
                    ", got ", shape_str(dy));
}

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

Tensor sparsemax_cpu(const Tensor& x) {
  check_x(x, "sparsemax", "x");
  if (x.numel() == 0) return at::empty(x.sizes(), x.options());
  // The textbook algorithm (sort, cumulative sums, support size); the kernels find the same tau without a sort.
  Tensor xf = x.to(acc_dtype(x));
  Tensor z = std::get<0>(xf.sort(-1, true));
  Tensor r = at::arange(1, x.size(-1) + 1, xf.options());
  Tensor support = (r * z + 1) > z.cumsum(-1);
  Tensor k = support.sum(-1, true).to(xf.scalar_type());
  Tensor tau = (at::where(support, z, at::zeros({}, xf.options())).sum(-1, true) - 1) / k;
  return (xf - tau).clamp_min(0).to(x.scalar_type()).contiguous();
}

Tensor bwd_cpu(const Tensor& dy, const Tensor& y) {
  check_backward_inputs(dy, y);
  if (y.numel() == 0) return at::empty(y.sizes(), y.options());
  Tensor dyf = dy.to(acc_dtype(y));
  Tensor support = y > 0;
  Tensor zero = at::zeros({}, dyf.options());
  Tensor k = support.sum(-1, true).to(dyf.scalar_type()).clamp_min(1);
  Tensor mean = at::where(support, dyf, zero).sum(-1, true) / k;
  return at::where(support, dyf - mean, zero).to(y.scalar_type()).contiguous();
}

// ---- Meta (SymInt-clean)

Tensor sparsemax_meta(const Tensor& x) {
  check_x(x, "sparsemax", "x");
  return at::empty_symint(x.sym_sizes(), x.options());
}

Tensor bwd_meta(const Tensor& dy, const Tensor& y) {
  check_backward_inputs(dy, y);
  return at::empty_symint(y.sym_sizes(), y.options());
}

// ---- CUDA launcher

void check_cuda(const Tensor& x, const char* op, int64_t rows, int64_t cols) {
  TORCH_CHECK(is_half_or_float(x.scalar_type()), op, ": the CUDA kernels take float32, bfloat16 or float16, got ",
              x.scalar_type());
  TORCH_CHECK(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 rows and columns are supported, got ", rows, " x ", cols);
}

// The variant for a row length: single-block up to max_block (16-byte aligned rows only), looped beyond.
struct Choice {
  bool looped;
  int64_t block_n;
};

Choice choose(int64_t cols, bool aligned, int64_t max_block) {
  return {!aligned || cols > max_block, std::max<int64_t>(MIN_BLOCK_N, next_pow2(cols))};
}

Tensor sparsemax_cuda(const Tensor& x_in) {
  check_x(x_in, "sparsemax", "x");
  c10::DeviceGuard guard(x_in.device());
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  if (x_in.numel() == 0) return y;
  Rows x = as_rows(x_in);
  check_cuda(x_in, "sparsemax", x.rows, x.cols);
  const int64_t vec = vec_elems(x_in.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && aligned16(x.t);
  const LaunchContext ctx = launch_context(x_in);
  const Choice c = choose(x.cols, aligned, FWD_MAX_BLOCK_N);
  if (!c.looped) {
    const auto& v = sparsemax_fwd_kernel_get({c.block_n, x_in.scalar_type()}, ctx.arch_slot);
    // PERSISTENT variants (rows of 16384-32768) stride over the rows: as many programs as are resident
    const int64_t programs =
        v.PERSISTENT ? std::min<int64_t>(x.rows, max_resident_programs(v.image, ctx)) : ceil_div(x.rows, v.BLOCK_M);
    sparsemax_fwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(x.t), ptr(y),
                              x.rows, x.cols / v.ALIGN, x.row_stride / v.ALIGN, x.cols / v.ALIGN);
  } else {
    const auto& v = sparsemax_fwd_looped_kernel_get({aligned, x_in.scalar_type()}, ctx.arch_slot);
    sparsemax_fwd_looped_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(x.rows)}, ptr(x.t), ptr(y), x.rows,
                                     x.cols / v.ALIGN, x.row_stride / v.ALIGN, x.cols / v.ALIGN);
  }
  return y;
}

Tensor bwd_cuda(const Tensor& dy_in, const Tensor& y_in) {
  check_backward_inputs(dy_in, y_in);
  c10::DeviceGuard guard(y_in.device());
  Tensor dx = at::empty(y_in.sizes(), y_in.options());
  if (y_in.numel() == 0) return dx;
  Rows y = as_rows(y_in);
  Rows dy = as_rows(dy_in);
  check_cuda(y_in, "sparsemax_bwd", y.rows, y.cols);
  const int64_t vec = vec_elems(y_in.scalar_type());
  const bool aligned = y.cols % vec == 0 && y.row_stride % vec == 0 && dy.row_stride % vec == 0 &&
                       aligned16(y.t) && aligned16(dy.t);
  const LaunchContext ctx = launch_context(y_in);
  const Choice c = choose(y.cols, aligned, BWD_MAX_BLOCK_N);
  if (!c.looped) {
    const auto& v = sparsemax_bwd_kernel_get({c.block_n, y_in.scalar_type()}, ctx.arch_slot);
    sparsemax_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(ceil_div(y.rows, v.BLOCK_M))}, ptr(dy.t), ptr(y.t),
                              ptr(dx), y.rows, y.cols / v.ALIGN, dy.row_stride / v.ALIGN, y.row_stride / v.ALIGN,
                              y.cols / v.ALIGN);
  } else {
    const auto& v = sparsemax_bwd_looped_kernel_get({aligned, y_in.scalar_type()}, ctx.arch_slot);
    sparsemax_bwd_looped_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(y.rows)}, ptr(dy.t), ptr(y.t), ptr(dx),
                                     y.rows, y.cols / v.ALIGN, dy.row_stride / v.ALIGN, y.row_stride / v.ALIGN,
                                     y.cols / v.ALIGN);
  }
  return dx;
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("sparsemax", [](int arch_slot) {
  std::vector<std::string> missing;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (int64_t p = 1; p <= 2 * FWD_MAX_BLOCK_N; p *= 2)
      for (int64_t cols : {p - 1, p, p + 1})
        for (bool aligned : {false, true}) {
          if (cols < 1) continue;
          Choice f = choose(cols, aligned, FWD_MAX_BLOCK_N);
          sparsemax_fwd_kernel_key fk{f.block_n, dt};
          sparsemax_fwd_looped_kernel_key fl{aligned, dt};
          if (f.looped ? !sparsemax_fwd_looped_kernel_find(fl, arch_slot) : !sparsemax_fwd_kernel_find(fk, arch_slot))
            missing.push_back(f.looped ? fl.str() : fk.str());
          Choice b = choose(cols, aligned, BWD_MAX_BLOCK_N);
          sparsemax_bwd_kernel_key bk{b.block_n, dt};
          sparsemax_bwd_looped_kernel_key bl{aligned, dt};
          if (b.looped ? !sparsemax_bwd_looped_kernel_find(bl, arch_slot) : !sparsemax_bwd_kernel_find(bk, arch_slot))
            missing.push_back(b.looped ? bl.str() : bk.str());
        }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

class SparsemaxBackward : public torch::autograd::Function<SparsemaxBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy, const Tensor& y) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::sparsemax_bwd", "").typed<decltype(bwd_cpu)>();
    return {op.call(dy, y)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "sparsemax: second derivatives are not supported (liger::sparsemax_bwd is not differentiable)");
  }
};

class SparsemaxForward : public torch::autograd::Function<SparsemaxForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::sparsemax", "").typed<decltype(sparsemax_cpu)>();
    Tensor y = op.call(x);
    ctx->save_for_backward({y});
    return {y};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {SparsemaxBackward::apply(grads[0], ctx->get_saved_variables()[0])[0]};
  }
};

Tensor sparsemax_autograd(const Tensor& x) {
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::sparsemax", "").typed<decltype(sparsemax_cpu)>();
    return op.call(x);
  }
  return SparsemaxForward::apply(x)[0];
}

Tensor bwd_autograd(const Tensor& dy, const Tensor& y) { return SparsemaxBackward::apply(dy, y)[0]; }

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("sparsemax", &sparsemax_cpu);
  m.impl("sparsemax_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("sparsemax", &sparsemax_meta);
  m.impl("sparsemax_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("sparsemax", &sparsemax_cuda);
  m.impl("sparsemax_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("sparsemax", &sparsemax_autograd);
  m.impl("sparsemax_bwd", &bwd_autograd);
}

}  // namespace liger::sparsemax
