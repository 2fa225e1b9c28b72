// GeGLU: y = gelu(gate, approximate) * up, elementwise (the activation of Gemma-style MLPs).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <cmath>

#include "liger_gen/geglu.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::geglu {

using at::Tensor;
using namespace liger::gen::geglu;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("geglu(Tensor gate, Tensor up, str approximate=\"tanh\") -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("geglu_bwd(Tensor dy, Tensor gate, Tensor up, str approximate) -> (Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  m.def("geglu_bwd_inplace(Tensor(a!) dy, Tensor(b!) gate, Tensor(c!) up, str approximate) -> ()",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

int64_t approx_code(c10::string_view approximate, const char* op) {
  if (approximate == "tanh") return APPROX_TANH;
  if (approximate == "none") return APPROX_NONE;
  TORCH_CHECK(false, op, ": approximate must be 'tanh' or 'none', got '", approximate, "'");
}

void check_inputs(const Tensor& gate, const Tensor& up, c10::string_view approximate, const char* op = "geglu") {
  approx_code(approximate, op);
  TORCH_CHECK(is_half_or_float(gate.scalar_type()) || (gate.scalar_type() == at::kDouble && !gate.is_cuda()), op,
              ": gate must be float32, bfloat16 or float16 (float64 on CPU), got ", gate.scalar_type());
  check_like(up, "up", gate, "gate", op);
}

void check_backward_inputs(const Tensor& dy, const Tensor& gate, const Tensor& up, c10::string_view approximate) {
  check_inputs(gate, up, approximate, "geglu_bwd");
  check_like(dy, "dy", gate, "gate", "geglu_bwd");
}

c10::ScalarType acc_dtype(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---- CPU reference (ATen ops; the kernels' arithmetic: fp32, rounded once)

// gelu(g) and its derivative in g's (fp32 or fp64) precision.
std::pair<Tensor, Tensor> gelu_and_grad(const Tensor& g, int64_t approx) {
  if (approx == APPROX_TANH) {
    const double k = std::sqrt(2.0 / M_PI);
    // 1 + tanh(z) = 2 sigmoid(2z) and 1 - tanh(z)^2 = 1 / cosh(z)^2, free of the cancellation near
    // tanh = -1 and 1 (as triton_src/_activations.py computes them).
    Tensor z = k * (g + 0.044715 * g * g * g);
    Tensor one_plus_t = 2 * at::sigmoid(2 * z);
    Tensor sech2 = at::cosh(z).square().reciprocal();
    return {0.5 * g * one_plus_t, 0.5 * one_plus_t + 0.5 * g * sech2 * k * (1 + 3 * 0.044715 * g * g)};
  }
  Tensor cdf = 0.5 * (1 + at::erf(g * M_SQRT1_2));
  return {g * cdf, cdf + g * at::exp(-0.5 * g * g) / std::sqrt(2 * M_PI)};
}

Tensor geglu_cpu(const Tensor& gate, const Tensor& up, c10::string_view approximate) {
  check_inputs(gate, up, approximate);
  Tensor g = gate.to(acc_dtype(gate));
  Tensor gelu = gelu_and_grad(g, approx_code(approximate, "geglu")).first;
  return (gelu * up.to(g.scalar_type())).to(gate.scalar_type()).contiguous();
}

std::tuple<Tensor, Tensor> bwd_cpu(const Tensor& dy_in, const Tensor& gate, const Tensor& up,
                                   c10::string_view approximate) {
  check_backward_inputs(dy_in, gate, up, approximate);
  const auto acc = acc_dtype(gate);
  Tensor g = gate.to(acc), u = up.to(acc), dy = dy_in.to(acc);
  auto [gelu, grad] = gelu_and_grad(g, approx_code(approximate, "geglu_bwd"));
  Tensor dgate = dy * u * grad;
  Tensor dup = dy * gelu;
  return {dgate.to(gate.scalar_type()).contiguous(), dup.to(gate.scalar_type()).contiguous()};
}

// geglu_bwd_inplace overwrites its three inputs (dy with gelu(gate) * up, gate with d gate, up with d up): the
// backward of liger::geglu_mlp, which saved gate and up but not their product.
void bwd_inplace_cpu(const Tensor& dy, const Tensor& gate, const Tensor& up, c10::string_view approximate) {
  check_backward_inputs(dy, gate, up, approximate);
  check_overwritable("geglu_bwd_inplace", {{&dy, "dy"}, {&gate, "gate"}, {&up, "up"}});
  auto [dgate, dup] = bwd_cpu(dy, gate, up, approximate);
  Tensor h = geglu_cpu(gate, up, approximate);
  dy.copy_(h);
  gate.copy_(dgate);
  up.copy_(dup);
}

// ---- Meta (SymInt-clean)

Tensor geglu_meta(const Tensor& gate, const Tensor& up, c10::string_view approximate) {
  check_inputs(gate, up, approximate);
  return at::empty_symint(gate.sym_sizes(), gate.options());
}

std::tuple<Tensor, Tensor> bwd_meta(const Tensor& dy, const Tensor& gate, const Tensor& up,
                                    c10::string_view approximate) {
  check_backward_inputs(dy, gate, up, approximate);
  return {at::empty_symint(gate.sym_sizes(), gate.options()), at::empty_symint(gate.sym_sizes(), gate.options())};
}

void bwd_inplace_meta(const Tensor& dy, const Tensor& gate, const Tensor& up, c10::string_view approximate) {
  check_backward_inputs(dy, gate, up, approximate);
}

// ---- CUDA launcher
// Inputs are made contiguous (a copy only for strided or expanded ones) and seen as flat arrays.

Tensor geglu_cuda(const Tensor& gate_in, const Tensor& up_in, c10::string_view approximate) {
  check_inputs(gate_in, up_in, approximate);
  check_cuda_dtype(gate_in, "geglu", "gate");
  c10::DeviceGuard guard(gate_in.device());
  Tensor y = at::empty(gate_in.sizes(), gate_in.options());
  const int64_t n = gate_in.numel();
  if (n == 0) return y;
  Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
  const LaunchContext ctx = launch_context(gate);
  geglu_fwd_kernel_key key{aligned16(gate) && aligned16(up), approx_code(approximate, "geglu"), flat_needs_int64(n, MAX_BLOCK),
                           gate.scalar_type()};
  const auto& v = geglu_fwd_kernel_get(key, ctx.arch_slot);
  geglu_fwd_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "geglu"), ptr(gate), ptr(up), ptr(y), n);
  return y;
}

std::tuple<Tensor, Tensor> bwd_cuda(const Tensor& dy_in, const Tensor& gate_in, const Tensor& up_in,
                                    c10::string_view approximate) {
  check_backward_inputs(dy_in, gate_in, up_in, approximate);
  check_cuda_dtype(gate_in, "geglu_bwd", "gate");
  c10::DeviceGuard guard(gate_in.device());
  Tensor dgate = at::empty(gate_in.sizes(), gate_in.options());
  Tensor dup = at::empty(gate_in.sizes(), gate_in.options());
  const int64_t n = gate_in.numel();
  if (n == 0) return {dgate, dup};
  Tensor dy = dy_in.contiguous(), gate = gate_in.contiguous(), up = up_in.contiguous();
  const LaunchContext ctx = launch_context(gate);
  geglu_bwd_kernel_key key{aligned16(dy) && aligned16(gate) && aligned16(up), approx_code(approximate, "geglu_bwd"),
                           flat_needs_int64(n, MAX_BLOCK), gate.scalar_type()};
  const auto& v = geglu_bwd_kernel_get(key, ctx.arch_slot);
  geglu_bwd_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "geglu_bwd"), ptr(dy), ptr(gate), ptr(up), ptr(dgate),
                           ptr(dup), n);
  return {dgate, dup};
}

void bwd_inplace_cuda(const Tensor& dy, const Tensor& gate, const Tensor& up, c10::string_view approximate) {
  check_backward_inputs(dy, gate, up, approximate);
  check_overwritable("geglu_bwd_inplace", {{&dy, "dy"}, {&gate, "gate"}, {&up, "up"}});
  check_cuda_dtype(gate, "geglu_bwd_inplace", "gate");
  for (const Tensor* t : {&dy, &gate, &up})
    TORCH_CHECK(t->is_contiguous(), "geglu_bwd_inplace: dy, gate and up must be contiguous (they are overwritten "
                "as flat arrays), got strides ", t->strides(), " for shape ", shape_str(*t));
  c10::DeviceGuard guard(gate.device());
  const int64_t n = gate.numel();
  if (n == 0) return;
  const LaunchContext ctx = launch_context(gate);
  geglu_bwd_inplace_kernel_key key{aligned16(dy) && aligned16(gate) && aligned16(up),
                                   approx_code(approximate, "geglu_bwd_inplace"), flat_needs_int64(n, MAX_BLOCK),
                                   gate.scalar_type()};
  const auto& v = geglu_bwd_inplace_kernel_get(key, ctx.arch_slot);
  geglu_bwd_inplace_kernel_launch(v, ctx, flat_grid(n, v.BLOCK, "geglu_bwd_inplace"), ptr(dy), ptr(gate), ptr(up),
                                  n);
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("geglu", [](int arch_slot) {
  std::vector<std::string> missing;
  for (int64_t approx : {APPROX_TANH, APPROX_NONE})
    for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
      for (bool aligned : {false, true})
        for (bool int64 : {false, true}) {
          geglu_fwd_kernel_key f{aligned, approx, int64, dt};
          if (!geglu_fwd_kernel_find(f, arch_slot)) missing.push_back(f.str());
          geglu_bwd_kernel_key b{aligned, approx, int64, dt};
          if (!geglu_bwd_kernel_find(b, arch_slot)) missing.push_back(b.str());
          geglu_bwd_inplace_kernel_key i{aligned, approx, int64, dt};
          if (!geglu_bwd_inplace_kernel_find(i, arch_slot)) missing.push_back(i.str());
        }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

class GegluBackward : public torch::autograd::Function<GegluBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy,
                                                const Tensor& gate, const Tensor& up, const std::string& approximate) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::geglu_bwd", "").typed<decltype(bwd_cpu)>();
    auto [dgate, dup] = op.call(dy, gate, up, approximate);
    return {dgate, dup};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "geglu: second derivatives are not supported (liger::geglu_bwd is not differentiable)");
  }
};

class GegluForward : public torch::autograd::Function<GegluForward> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& gate, const Tensor& up,
                        const std::string& approximate) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::geglu", "").typed<decltype(geglu_cpu)>();
    ctx->save_for_backward({gate, up});
    ctx->saved_data["approximate"] = approximate;
    return op.call(gate, up, approximate);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto out = GegluBackward::apply(grads[0], saved[0], saved[1], ctx->saved_data["approximate"].toStringRef());
    return {ctx->needs_input_grad(0) ? out[0] : Tensor(), ctx->needs_input_grad(1) ? out[1] : Tensor(), Tensor()};
  }
};

Tensor geglu_autograd(const Tensor& gate, const Tensor& up, c10::string_view approximate) {
  if (!(at::GradMode::is_enabled() && (gate.requires_grad() || up.requires_grad()))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::geglu", "").typed<decltype(geglu_cpu)>();
    return op.call(gate, up, approximate);
  }
  return GegluForward::apply(gate, up, std::string(approximate));
}

std::tuple<Tensor, Tensor> bwd_autograd(const Tensor& dy, const Tensor& gate, const Tensor& up,
                                        c10::string_view approximate) {
  auto out = GegluBackward::apply(dy, gate, up, std::string(approximate));
  return {out[0], out[1]};
}

// Not differentiable (it is a backward); it writes its inputs, so their versions move as ATen's in-place ops' do.
const auto& bwd_inplace_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("liger::geglu_bwd_inplace", "")
                       .typed<decltype(bwd_inplace_cpu)>();
  return op;
}

void bwd_inplace_autograd(c10::DispatchKeySet ks, const Tensor& dy, const Tensor& gate, const Tensor& up,
                          c10::string_view approximate) {
  if (at::GradMode::is_enabled())
    for (const Tensor* t : {&dy, &gate, &up})
      TORCH_CHECK(!t->requires_grad(), "liger::geglu_bwd_inplace is not differentiable (it is geglu_mlp's "
                  "backward): call it on tensors that do not require grad");
  bwd_inplace_op().redispatch(ks & c10::after_autograd_keyset, dy, gate, up, approximate);
}

void bwd_inplace_ad_inplace(c10::DispatchKeySet ks, const Tensor& dy, const Tensor& gate, const Tensor& up,
                            c10::string_view approximate) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    bwd_inplace_op().redispatch(ks & c10::after_ADInplaceOrView_keyset, dy, gate, up, approximate);
  }
  for (const Tensor* t : {&dy, &gate, &up}) torch::autograd::impl::bump_version(*t);
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("geglu", &geglu_cpu);
  m.impl("geglu_bwd", &bwd_cpu);
  m.impl("geglu_bwd_inplace", &bwd_inplace_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("geglu", &geglu_meta);
  m.impl("geglu_bwd", &bwd_meta);
  m.impl("geglu_bwd_inplace", &bwd_inplace_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("geglu", &geglu_cuda);
  m.impl("geglu_bwd", &bwd_cuda);
  m.impl("geglu_bwd_inplace", &bwd_inplace_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("geglu", &geglu_autograd);
  m.impl("geglu_bwd", &bwd_autograd);
  m.impl("geglu_bwd_inplace", &bwd_inplace_autograd);
}

TORCH_LIBRARY_IMPL(liger, ADInplaceOrView, m) { m.impl("geglu_bwd_inplace", &bwd_inplace_ad_inplace); }

}  // namespace liger::geglu
