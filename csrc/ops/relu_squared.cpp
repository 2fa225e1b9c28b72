// ReLU²: y = relu(x)^2, elementwise (Primer; the MLP activation of Nemotron-style models).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/relu_squared.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::relu_squared {

using at::Tensor;
using namespace liger::gen::relu_squared;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("relu_squared(Tensor x) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("relu_squared_bwd(Tensor dy, Tensor x) -> Tensor", {at::Tag::pt2_compliant_tag});
}

// ---- checks

void check_inputs(const Tensor& x, const char* op = "relu_squared") {
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()), op,
              ": x must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
}

void check_backward_inputs(const Tensor& dy, const Tensor& x) {
  check_inputs(x, "relu_squared_bwd");
  check_like(dy, "dy", x, "x", "relu_squared_bwd");
}

c10::ScalarType acc_dtype(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---- CPU reference (ATen ops; the kernels' arithmetic: fp32, rounded once)

Tensor relu_squared_cpu(const Tensor& x) {
  check_inputs(x);
  Tensor r = at::relu(x.to(acc_dtype(x)));
  return (r * r).to(x.scalar_type()).contiguous();
}

Tensor bwd_cpu(const Tensor& dy, const Tensor& x) {
  check_backward_inputs(dy, x);
  const auto acc = acc_dtype(x);
  return (2 * at::relu(x.to(acc)) * dy.to(acc)).to(x.scalar_type()).contiguous();
}

// ---- Meta (SymInt-clean)

Tensor relu_squared_meta(const Tensor& x) {
  check_inputs(x);
  return at::empty_symint(x.sym_sizes(), x.options());
}

Tensor bwd_meta(const Tensor& dy, const Tensor& x) {
  check_backward_inputs(dy, x);
  return at::empty_symint(x.sym_sizes(), x.options());
}

// ---- CUDA launcher
// Inputs are made contiguous (a copy only for strided or expanded ones) and seen as flat arrays.

Tensor relu_squared_cuda(const Tensor& x_in) {
  check_inputs(x_in);
  check_cuda_dtype(x_in, "relu_squared");
  c10::DeviceGuard guard(x_in.device());
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  const int64_t n = x_in.numel();
  if (n == 0) return y;
  Tensor x = x_in.contiguous();
  const LaunchContext ctx = launch_context(x);
  relu_squared_fwd_kernel_key key{aligned16(x), flat_needs_int64(n, MAX_BLOCK), x.scalar_type()};
  const auto& v = relu_squared_fwd_kernel_get(key, ctx.arch_slot);
  relu_squared_fwd_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "relu_squared"), ptr(x), ptr(y), n);
  return y;
}

Tensor bwd_cuda(const Tensor& dy_in, const Tensor& x_in) {
  check_backward_inputs(dy_in, x_in);
  check_cuda_dtype(x_in, "relu_squared_bwd");
  c10::DeviceGuard guard(x_in.device());
  Tensor dx = at::empty(x_in.sizes(), x_in.options());
  const int64_t n = x_in.numel();
  if (n == 0) return dx;
  Tensor dy = dy_in.contiguous(), x = x_in.contiguous();
  const LaunchContext ctx = launch_context(x);
  relu_squared_bwd_kernel_key key{aligned16(dy) && aligned16(x), flat_needs_int64(n, MAX_BLOCK), x.scalar_type()};
  const auto& v = relu_squared_bwd_kernel_get(key, ctx.arch_slot);
  relu_squared_bwd_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "relu_squared_bwd"), ptr(dy), ptr(x), ptr(dx), n);
  return dx;
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("relu_squared", [](int arch_slot) {
  std::vector<std::string> missing;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (bool aligned : {false, true})
      for (int64_t n : {int64_t(1), int64_t(1) << 32}) {
        relu_squared_fwd_kernel_key f{aligned, flat_needs_int64(n, MAX_BLOCK), dt};
        if (!relu_squared_fwd_kernel_find(f, arch_slot)) missing.push_back(f.str());
        relu_squared_bwd_kernel_key b{aligned, flat_needs_int64(n, MAX_BLOCK), dt};
        if (!relu_squared_bwd_kernel_find(b, arch_slot)) missing.push_back(b.str());
      }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

class ReluSquaredBackward : public torch::autograd::Function<ReluSquaredBackward> {
 public:
  static Tensor forward(torch::autograd::AutogradContext*, const Tensor& dy, const Tensor& x) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::relu_squared_bwd", "").typed<decltype(bwd_cpu)>();
    return op.call(dy, x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false,
                "relu_squared: second derivatives are not supported (liger::relu_squared_bwd is not differentiable)");
  }
};

class ReluSquaredForward : public torch::autograd::Function<ReluSquaredForward> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::relu_squared", "").typed<decltype(relu_squared_cpu)>();
    ctx->save_for_backward({x});
    return op.call(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {ReluSquaredBackward::apply(grads[0], ctx->get_saved_variables()[0])};
  }
};

Tensor relu_squared_autograd(const Tensor& x) {
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::relu_squared", "").typed<decltype(relu_squared_cpu)>();
    return op.call(x);
  }
  return ReluSquaredForward::apply(x);
}

Tensor bwd_autograd(const Tensor& dy, const Tensor& x) { return ReluSquaredBackward::apply(dy, x); }

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("relu_squared", &relu_squared_cpu);
  m.impl("relu_squared_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("relu_squared", &relu_squared_meta);
  m.impl("relu_squared_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("relu_squared", &relu_squared_cuda);
  m.impl("relu_squared_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("relu_squared", &relu_squared_autograd);
  m.impl("relu_squared_bwd", &bwd_autograd);
}

}  // namespace liger::relu_squared
