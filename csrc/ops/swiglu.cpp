// SwiGLU: y = silu(gate) * up, elementwise (the activation of Llama-style MLPs).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include "liger_gen/swiglu.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::swiglu {

using at::Tensor;
using namespace liger::gen::swiglu;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("swiglu(Tensor gate, Tensor up) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("swiglu_bwd(Tensor dy, Tensor gate, Tensor up) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  m.def("swiglu_bwd_inplace(Tensor(a!) dy, Tensor(b!) gate, Tensor(c!) up) -> ()", {at::Tag::pt2_compliant_tag});
}

// ---- checks

void check_inputs(const Tensor& gate, const Tensor& up, const char* op = "swiglu") {
  TORCH_CHECK(is_half_or_float(gate.scalar_type()) || (gate.scalar_type() == at::kDouble && !gate.is_cuda()), op,
              ": gate must be float32, bfloat16 or float16 (float64 on CPU), got ", gate.scalar_type());
  check_like(up, "up", gate, "gate", op);
}

void check_backward_inputs(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_inputs(gate, up, "swiglu_bwd");
  check_like(dy, "dy", gate, "gate", "swiglu_bwd");
}

// swiglu_bwd_inplace overwrites its three inputs (dy with silu(gate) * up, gate with d gate, up with d up): the
// backward of liger::swiglu_mlp, which saved gate and up but not their product. They must not share memory.
void check_inplace_inputs(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_backward_inputs(dy, gate, up);
  check_overwritable("swiglu_bwd_inplace", {{&dy, "dy"}, {&gate, "gate"}, {&up, "up"}});
}

c10::ScalarType acc_dtype(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---- CPU reference (ATen ops; the kernels' arithmetic: fp32, rounded once)

Tensor swiglu_cpu(const Tensor& gate, const Tensor& up) {
  check_inputs(gate, up);
  Tensor g = gate.to(acc_dtype(gate));
  return (g * at::sigmoid(g) * up.to(g.scalar_type())).to(gate.scalar_type()).contiguous();
}

std::tuple<Tensor, Tensor> bwd_cpu(const Tensor& dy_in, const Tensor& gate, const Tensor& up) {
  check_backward_inputs(dy_in, gate, up);
  const auto acc = acc_dtype(gate);
  Tensor g = gate.to(acc), u = up.to(acc), dy = dy_in.to(acc);
  Tensor s = at::sigmoid(g);
  Tensor dgate = dy * u * s * (1 + g * (1 - s));
  Tensor dup = dy * (g * s);
  return {dgate.to(gate.scalar_type()).contiguous(), dup.to(gate.scalar_type()).contiguous()};
}

void bwd_inplace_cpu(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_inplace_inputs(dy, gate, up);
  auto [dgate, dup] = bwd_cpu(dy, gate, up);
  Tensor h = swiglu_cpu(gate, up);
  dy.copy_(h);
  gate.copy_(dgate);
  up.copy_(dup);
}

// ---- Meta (SymInt-clean)

Tensor swiglu_meta(const Tensor& gate, const Tensor& up) {
  check_inputs(gate, up);
  return at::empty_symint(gate.sym_sizes(), gate.options());
}

std::tuple<Tensor, Tensor> bwd_meta(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_backward_inputs(dy, gate, up);
  return {at::empty_symint(gate.sym_sizes(), gate.options()), at::empty_symint(gate.sym_sizes(), gate.options())};
}

void bwd_inplace_meta(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_backward_inputs(dy, gate, up);
}

// ---- CUDA launcher
// Inputs are made contiguous (a copy only for strided or expanded ones) and seen as flat arrays.

Tensor swiglu_cuda(const Tensor& gate_in, const Tensor& up_in) {
  check_inputs(gate_in, up_in);
  check_cuda_dtype(gate_in, "swiglu", "gate");
  c10::DeviceGuard guard(gate_in.device());
  Tensor y = at::empty(gate_in.sizes(), gate_in.options());
  const int64_t n = gate_in.numel();
  if (n == 0) return y;
  Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  const LaunchContext ctx = launch_context(gate);
  swiglu_fwd_kernel_key key{aligned16(gate) && aligned16(up), flat_needs_int64(n, MAX_BLOCK), gate.scalar_type()};
  const auto& v = swiglu_fwd_kernel_get(key, ctx.arch_slot);
  swiglu_fwd_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "swiglu"), ptr(gate), ptr(up), ptr(y), n);
  return y;
}

std::tuple<Tensor, Tensor> bwd_cuda(const Tensor& dy_in, const Tensor& gate_in, const Tensor& up_in) {
  check_backward_inputs(dy_in, gate_in, up_in);
  check_cuda_dtype(gate_in, "swiglu_bwd", "gate");
  c10::DeviceGuard guard(gate_in.device());
  Tensor dgate = at::empty(gate_in.sizes(), gate_in.options());
  Tensor dup = at::empty(gate_in.sizes(), gate_in.options());
  const int64_t n = gate_in.numel();
  if (n == 0) return {dgate, dup};
  Tensor dy = dy_in.contiguous(), gate = gate_in.contiguous(), up = up_in.contiguous();
  const LaunchContext ctx = launch_context(gate);
  swiglu_bwd_kernel_key key{aligned16(dy) && aligned16(gate) && aligned16(up), flat_needs_int64(n, MAX_BLOCK), gate.scalar_type()};
  const auto& v = swiglu_bwd_kernel_get(key, ctx.arch_slot);
  swiglu_bwd_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "swiglu_bwd"), ptr(dy), ptr(gate), ptr(up), ptr(dgate),
                           ptr(dup), n);
  return {dgate, dup};
}

void bwd_inplace_cuda(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_inplace_inputs(dy, gate, up);
  check_cuda_dtype(gate, "swiglu_bwd_inplace", "gate");
  for (const Tensor* t : {&dy, &gate, &up})
    TORCH_CHECK(t->is_contiguous(), "swiglu_bwd_inplace: dy, gate and up must be contiguous (they are overwritten "
                "as flat arrays), got strides ", t->strides(), " for shape ", shape_str(*t));
  c10::DeviceGuard guard(gate.device());
  const int64_t n = gate.numel();
  if (n == 0) return;
  const LaunchContext ctx = launch_context(gate);
  swiglu_bwd_inplace_kernel_key key{aligned16(dy) && aligned16(gate) && aligned16(up), flat_needs_int64(n, MAX_BLOCK),
                                    gate.scalar_type()};
  const auto& v = swiglu_bwd_inplace_kernel_get(key, ctx.arch_slot);
  swiglu_bwd_inplace_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "swiglu_bwd_inplace"), ptr(dy), ptr(gate), ptr(up),
                                   n);
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("swiglu", [](int arch_slot) {
  std::vector<std::string> missing;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (bool aligned : {false, true})
      for (bool int64 : {false, true}) {
        swiglu_fwd_kernel_key f{aligned, int64, dt};
        if (!swiglu_fwd_kernel_find(f, arch_slot)) missing.push_back(f.str());
        swiglu_bwd_kernel_key b{aligned, int64, dt};
        if (!swiglu_bwd_kernel_find(b, arch_slot)) missing.push_back(b.str());
        swiglu_bwd_inplace_kernel_key i{aligned, int64, dt};
        if (!swiglu_bwd_inplace_kernel_find(i, arch_slot)) missing.push_back(i.str());
      }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

class SwigluBackward : public torch::autograd::Function<SwigluBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy,
                                                const Tensor& gate, const Tensor& up) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu_bwd", "").typed<decltype(bwd_cpu)>();
    auto [dgate, dup] = op.call(dy, gate, up);
    return {dgate, dup};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "swiglu: second derivatives are not supported (liger::swiglu_bwd is not differentiable)");
  }
};

class SwigluForward : public torch::autograd::Function<SwigluForward> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& gate, const Tensor& up) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu", "").typed<decltype(swiglu_cpu)>();
    ctx->save_for_backward({gate, up});
    return op.call(gate, up);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto out = SwigluBackward::apply(grads[0], saved[0], saved[1]);
    return {ctx->needs_input_grad(0) ? out[0] : Tensor(), ctx->needs_input_grad(1) ? out[1] : Tensor()};
  }
};

Tensor swiglu_autograd(const Tensor& gate, const Tensor& up) {
  if (!(at::GradMode::is_enabled() && (gate.requires_grad() || up.requires_grad()))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu", "").typed<decltype(swiglu_cpu)>();
    return op.call(gate, up);
  }
  return SwigluForward::apply(gate, up);
}

std::tuple<Tensor, Tensor> bwd_autograd(const Tensor& dy, const Tensor& gate, const Tensor& up) {
  auto out = SwigluBackward::apply(dy, gate, up);
  return {out[0], out[1]};
}

// Not differentiable (it is a backward); it writes its inputs, so their versions move as ATen's in-place ops' do.
const auto& bwd_inplace_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("liger::swiglu_bwd_inplace", "")
                       .typed<decltype(bwd_inplace_cpu)>();
  return op;
}

void bwd_inplace_autograd(c10::DispatchKeySet ks, const Tensor& dy, const Tensor& gate, const Tensor& up) {
  if (at::GradMode::is_enabled())
    for (const Tensor* t : {&dy, &gate, &up})
      TORCH_CHECK(!t->requires_grad(), "liger::swiglu_bwd_inplace is not differentiable (it is swiglu_mlp's "
                  "backward): call it on tensors that do not require grad");
  bwd_inplace_op().redispatch(ks & c10::after_autograd_keyset, dy, gate, up);
}

void bwd_inplace_ad_inplace(c10::DispatchKeySet ks, const Tensor& dy, const Tensor& gate, const Tensor& up) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    bwd_inplace_op().redispatch(ks & c10::after_ADInplaceOrView_keyset, dy, gate, up);
  }
  for (const Tensor* t : {&dy, &gate, &up}) torch::autograd::impl::bump_version(*t);
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("swiglu", &swiglu_cpu);
  m.impl("swiglu_bwd", &bwd_cpu);
  m.impl("swiglu_bwd_inplace", &bwd_inplace_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("swiglu", &swiglu_meta);
  m.impl("swiglu_bwd", &bwd_meta);
  m.impl("swiglu_bwd_inplace", &bwd_inplace_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("swiglu", &swiglu_cuda);
  m.impl("swiglu_bwd", &bwd_cuda);
  m.impl("swiglu_bwd_inplace", &bwd_inplace_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("swiglu", &swiglu_autograd);
  m.impl("swiglu_bwd", &bwd_autograd);
  m.impl("swiglu_bwd_inplace", &bwd_inplace_autograd);
}

TORCH_LIBRARY_IMPL(liger, ADInplaceOrView, m) { m.impl("swiglu_bwd_inplace", &bwd_inplace_ad_inplace); }

}  // namespace liger::swiglu
