// What softmax and sparsemax share: an operator y = f(x) over the last dimension whose backward dx = g(dy, y)
// needs only the output. The checks, Meta functions, CUDA launchers (one single-block kernel per power-of-two row
// length up to a limit, a looped kernel beyond it or for rows that are not 16-byte aligned), the check that every
// variant the launchers can ask for was built, the C++ autograd and the registrations, as a template over the
// op's generated kernels and CPU reference. An op file defines a traits struct G with:
//   name, bwd_name                                    the schema names ("softmax", "softmax_bwd")
//   MIN_BLOCK_N, FWD_MAX_BLOCK_N, BWD_MAX_BLOCK_N     from its liger_gen header
//   FwdKey, FwdLoopedKey, BwdKey, BwdLoopedKey        the four kernels' key types: {block_n, dtype}, {aligned, dtype}
//   fwd_find/get/launch, fwd_looped_find/get/launch, bwd_..., bwd_looped_...   the generated functions
//   Tensor forward_reference(const Tensor& x), Tensor backward_reference(const Tensor& dy, const Tensor& y):
//       the CPU math on checked, non-empty inputs, computed in acc_dtype(x)
// and, with its two schemas written out in its own TORCH_LIBRARY_FRAGMENT (the API contract stays in the op's
// file), registers the kernels with impl<G>(m, kind) in its TORCH_LIBRARY_IMPL blocks.
#pragma once
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::row_op {

using at::Tensor;

inline c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_x(const Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(x.dim() >= 1, op, ": ", name, " must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()), op, ": ",
              name, " must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
}

inline void check_backward_inputs(const Tensor& dy, const Tensor& y, const char* op) {
  check_x(y, op, "y");
  check_like(dy, "dy", y, "y", op);
}

inline void check_cuda(const Tensor& x, const char* op, const char* name, int64_t rows, int64_t cols) {
  check_cuda_dtype(x, op, name);
  check_row_sizes(rows, cols, op);
}

// The variant for a row length: single-block up to max_block (16-byte aligned rows only), looped beyond.
struct Choice {
  bool looped;
  int64_t block_n;
};

inline Choice choose(int64_t cols, bool aligned, int64_t min_block, int64_t max_block) {
  return {!aligned || cols > max_block, std::max<int64_t>(min_block, next_pow2(cols))};
}

template <class G>
Tensor forward_cpu(const Tensor& x) {
  check_x(x, G::name, "x");
  if (x.numel() == 0) return at::empty(x.sizes(), x.options());
  return G::forward_reference(x).to(x.scalar_type()).contiguous();
}

template <class G>
Tensor backward_cpu(const Tensor& dy, const Tensor& y) {
  check_backward_inputs(dy, y, G::bwd_name);
  if (y.numel() == 0) return at::empty(y.sizes(), y.options());
  return G::backward_reference(dy, y).to(y.scalar_type()).contiguous();
}

// ---- Meta (SymInt-clean)

template <class G>
Tensor forward_meta(const Tensor& x) {
  check_x(x, G::name, "x");
  return at::empty_symint(x.sym_sizes(), x.options());
}

template <class G>
Tensor backward_meta(const Tensor& dy, const Tensor& y) {
  check_backward_inputs(dy, y, G::bwd_name);
  return at::empty_symint(y.sym_sizes(), y.options());
}

// ---- CUDA launchers

template <class G>
Tensor forward_cuda(const Tensor& x_in) {
  check_x(x_in, G::name, "x");
  c10::DeviceGuard guard(x_in.device());
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  if (x_in.numel() == 0) return y;
  Rows x = as_rows(x_in);
  check_cuda(x_in, G::name, "x", x.rows, x.cols);
  const int64_t vec = vec_elems(x_in.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && aligned16(x.t);
  const LaunchContext ctx = launch_context(x_in);
  const Choice c = choose(x.cols, aligned, G::MIN_BLOCK_N, G::FWD_MAX_BLOCK_N);
  if (!c.looped) {
    const auto& v = G::fwd_get({c.block_n, x_in.scalar_type()}, ctx.arch_slot);
    // PERSISTENT variants (the widest rows) stride over the rows: as many programs as are resident
    const int64_t programs =
        v.PERSISTENT ? std::min<int64_t>(x.rows, max_resident_programs(v.image, ctx)) : ceil_div(x.rows, v.BLOCK_M);
    G::fwd_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(x.t), ptr(y), x.rows, x.cols / v.ALIGN,
                  x.row_stride / v.ALIGN, x.cols / v.ALIGN);
  } else {
    const auto& v = G::fwd_looped_get({aligned, x_in.scalar_type()}, ctx.arch_slot);
    G::fwd_looped_launch(v, ctx, Grid{static_cast<uint32_t>(x.rows)}, ptr(x.t), ptr(y), x.rows, x.cols / v.ALIGN,
                         x.row_stride / v.ALIGN, x.cols / v.ALIGN);
  }
  return y;
}

template <class G>
Tensor backward_cuda(const Tensor& dy_in, const Tensor& y_in) {
  check_backward_inputs(dy_in, y_in, G::bwd_name);
  c10::DeviceGuard guard(y_in.device());
  Tensor dx = at::empty(y_in.sizes(), y_in.options());
  if (y_in.numel() == 0) return dx;
  Rows y = as_rows(y_in);
  Rows dy = as_rows(dy_in);
  check_cuda(y_in, G::bwd_name, "y", y.rows, y.cols);
  const int64_t vec = vec_elems(y_in.scalar_type());
  const bool aligned = y.cols % vec == 0 && y.row_stride % vec == 0 && dy.row_stride % vec == 0 &&
                       aligned16(y.t) && aligned16(dy.t);
  const LaunchContext ctx = launch_context(y_in);
  const Choice c = choose(y.cols, aligned, G::MIN_BLOCK_N, G::BWD_MAX_BLOCK_N);
  if (!c.looped) {
    const auto& v = G::bwd_get({c.block_n, y_in.scalar_type()}, ctx.arch_slot);
    G::bwd_launch(v, ctx, Grid{static_cast<uint32_t>(ceil_div(y.rows, v.BLOCK_M))}, ptr(dy.t), ptr(y.t), ptr(dx),
                  y.rows, y.cols / v.ALIGN, dy.row_stride / v.ALIGN, y.row_stride / v.ALIGN, y.cols / v.ALIGN);
  } else {
    const auto& v = G::bwd_looped_get({aligned, y_in.scalar_type()}, ctx.arch_slot);
    G::bwd_looped_launch(v, ctx, Grid{static_cast<uint32_t>(y.rows)}, ptr(dy.t), ptr(y.t), ptr(dx), y.rows,
                         y.cols / v.ALIGN, dy.row_stride / v.ALIGN, y.row_stride / v.ALIGN, y.cols / v.ALIGN);
  }
  return dx;
}

// Every key the launchers can ask for, in an arch slot, that was not built (for a VariantCheck).
template <class G>
std::vector<std::string> missing_variants(int arch_slot) {
  std::vector<std::string> missing;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (int64_t p = 1; p <= 2 * G::FWD_MAX_BLOCK_N; p *= 2)
      for (int64_t cols : {p - 1, p, p + 1})
        for (bool aligned : {false, true}) {
          if (cols < 1) continue;
          const Choice f = choose(cols, aligned, G::MIN_BLOCK_N, G::FWD_MAX_BLOCK_N);
          const typename G::FwdKey fk{f.block_n, dt};
          const typename G::FwdLoopedKey fl{aligned, dt};
          if (f.looped ? !G::fwd_looped_find(fl, arch_slot) : !G::fwd_find(fk, arch_slot))
            missing.push_back(f.looped ? fl.str() : fk.str());
          const Choice b = choose(cols, aligned, G::MIN_BLOCK_N, G::BWD_MAX_BLOCK_N);
          const typename G::BwdKey bk{b.block_n, dt};
          const typename G::BwdLoopedKey bl{aligned, dt};
          if (b.looped ? !G::bwd_looped_find(bl, arch_slot) : !G::bwd_find(bk, arch_slot))
            missing.push_back(b.looped ? bl.str() : bk.str());
        }
  return missing;
}

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

// The op and its backward through the dispatcher, below autograd (the callers hold the guard).
template <class G>
Tensor call_forward(const Tensor& x) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow(("liger::" + std::string(G::name)).c_str(), "")
                       .template typed<Tensor(const Tensor&)>();
  return op.call(x);
}

template <class G>
Tensor call_backward(const Tensor& dy, const Tensor& y) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow(("liger::" + std::string(G::bwd_name)).c_str(), "")
                       .template typed<Tensor(const Tensor&, const Tensor&)>();
  return op.call(dy, y);
}

template <class G>
class Backward : public torch::autograd::Function<Backward<G>> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy, const Tensor& y) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return {call_backward<G>(dy, y)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, G::name, ": second derivatives are not supported (liger::", G::bwd_name,
                " is not differentiable)");
  }
};

template <class G>
class Forward : public torch::autograd::Function<Forward<G>> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor y = call_forward<G>(x);
    ctx->save_for_backward({y});
    return {y};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {Backward<G>::apply(grads[0], ctx->get_saved_variables()[0])[0]};
  }
};

template <class G>
Tensor forward_autograd(const Tensor& x) {
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_forward<G>(x);
  }
  return Forward<G>::apply(x)[0];
}

template <class G>
Tensor backward_autograd(const Tensor& dy, const Tensor& y) {
  return Backward<G>::apply(dy, y)[0];
}

// ---- registrations

enum class Kind { CPU, Meta, CUDA, Autograd };

template <class G>
void impl(torch::Library& m, Kind kind) {
  switch (kind) {
    case Kind::CPU: m.impl(G::name, &forward_cpu<G>); m.impl(G::bwd_name, &backward_cpu<G>); break;
    case Kind::Meta: m.impl(G::name, &forward_meta<G>); m.impl(G::bwd_name, &backward_meta<G>); break;
    case Kind::CUDA: m.impl(G::name, &forward_cuda<G>); m.impl(G::bwd_name, &backward_cuda<G>); break;
    case Kind::Autograd: m.impl(G::name, &forward_autograd<G>); m.impl(G::bwd_name, &backward_autograd<G>); break;
  }
}

}  // namespace liger::row_op
