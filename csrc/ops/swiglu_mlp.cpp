// SwiGLU MLP: y = (silu(x Wg^T) * (x Wu^T)) Wd^T, the MLP of Llama-style decoders (gate_proj, up_proj, down_proj
// without bias), as one op whose backward recomputes the SwiGLU product instead of keeping it.
//
// Written as three nn.Linear around liger::swiglu, a training step keeps, per token and layer, x, gate, up and
// their product h (down_proj's input), 3 x intermediate + hidden elements. This op keeps x, gate and up: its
// backward computes d h = dy Wd, then one pass of liger::swiglu_bwd_inplace writes h over d h and the gradients of
// gate and up over gate and up (they are this op's own intermediates, used once), and the products follow. The
// backward then allocates d h and d x only, as the modular form with Liger-Kernel's in-place SwiGLU does; the
// saved activations are smaller by intermediate elements per token and layer (a fifth of a Llama-3 layer's).
// The pass costs one extra write of h (16-bit: 2 bytes per intermediate element) against the modular backward.
//
// A retained graph (retain_graph=True), a double backward (create_graph=True), tensor subclasses and tracing
// (torch.compile, export) take the functional path: liger::swiglu_bwd into new tensors and h recomputed by
// liger::swiglu, so the saved gate and up stay intact for a second backward.
#include <ATen/ATen.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include "runtime/checks.h"

namespace liger::swiglu_mlp {

using at::Tensor;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("swiglu_mlp(Tensor x, Tensor gate_weight, Tensor up_weight, Tensor down_weight) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

constexpr const char* kOp = "swiglu_mlp";

// ---- checks

void check_inputs(const Tensor& x, const Tensor& gate_weight, const Tensor& up_weight, const Tensor& down_weight) {
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()), kOp,
              ": x must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1, kOp, ": x must have at least one dimension (the hidden size), got a 0-dim tensor");
  for (const auto& [w, name] : {std::pair<const Tensor&, const char*>{gate_weight, "gate_weight"},
                                {up_weight, "up_weight"}, {down_weight, "down_weight"}}) {
    TORCH_CHECK(w.device() == x.device(), kOp, ": ", name, " is on ", w.device(), " but x is on ", x.device(),
                "; all must be on the same device");
    TORCH_CHECK(w.scalar_type() == x.scalar_type(), kOp, ": ", name, " must have x's dtype ", x.scalar_type(),
                ", got ", w.scalar_type(), " (under torch.autocast the op casts them itself)");
    TORCH_CHECK(w.dim() == 2, kOp, ": ", name, " must be 2-D (an nn.Linear weight), got ", shape_str(w));
  }
  check_like(up_weight, "up_weight", gate_weight, "gate_weight", kOp);
  TORCH_SYM_CHECK(gate_weight.sym_size(1).sym_eq(x.sym_size(-1)), kOp,
                  ": gate_weight must be [intermediate, hidden] with hidden = x.size(-1) = ", x.sym_size(-1),
                  ", got ", shape_str(gate_weight));
  TORCH_SYM_CHECK(down_weight.sym_size(1).sym_eq(gate_weight.sym_size(0)), kOp,
                  ": down_weight must be [out, intermediate] with intermediate = gate_weight.size(0) = ",
                  gate_weight.sym_size(0), ", got ", shape_str(down_weight));
}

const auto& swiglu_op() {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu", "").typed<Tensor(const Tensor&, const Tensor&)>();
  return op;
}

// ---- forward on every backend (CPU, CUDA, Meta): ATen's matrix products around liger::swiglu

Tensor mlp_forward(const Tensor& x, const Tensor& gate_weight, const Tensor& up_weight, const Tensor& down_weight) {
  check_inputs(x, gate_weight, up_weight, down_weight);
  Tensor h = swiglu_op().call(at::linear(x, gate_weight), at::linear(x, up_weight));
  return at::linear(h, down_weight);
}

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

// The backward may overwrite a saved intermediate only when it is a plain dense contiguous tensor (not a subclass,
// a functional or fake tensor under tracing, or a dispatch mode's).
bool overwritable(const Tensor& t) { return !at::isTensorSubclassLike(t) && t.is_contiguous(); }

class SwigluMlpFunction : public torch::autograd::Function<SwigluMlpFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& gate_weight,
                        const Tensor& up_weight, const Tensor& down_weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    check_inputs(x, gate_weight, up_weight, down_weight);
    Tensor gate = at::linear(x, gate_weight), up = at::linear(x, up_weight);
    Tensor y = at::linear(swiglu_op().call(gate, up), down_weight);
    ctx->save_for_backward({x, gate_weight, up_weight, down_weight, gate, up});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto bwd_op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("liger::swiglu_bwd", "")
                             .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&)>();
    static auto inplace_op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("liger::swiglu_bwd_inplace", "")
                                 .typed<void(const Tensor&, const Tensor&, const Tensor&)>();
    auto saved = ctx->get_saved_variables();
    const Tensor x = saved[0], wg = saved[1], wu = saved[2], wd = saved[3];
    const c10::SymInt inter = wg.sym_size(0);
    Tensor gate = saved[4].reshape_symint({-1, inter}), up = saved[5].reshape_symint({-1, inter});
    saved.clear();  // drop the extra references to gate and up before they are overwritten
    Tensor dy = grads[0].reshape_symint({-1, wd.sym_size(0)});
    Tensor dh = at::mm(dy, wd);  // [tokens, intermediate]
    Tensor h, dgate, dup;
    if (!torch::autograd::get_current_graph_task_keep_graph() && !at::GradMode::is_enabled() && overwritable(gate) &&
        overwritable(up) && overwritable(dh)) {
      inplace_op.call(dh, gate, up);  // dh <- h, gate <- d gate, up <- d up
      h = std::move(dh);
      dgate = std::move(gate);
      dup = std::move(up);
    } else {
      std::tie(dgate, dup) = bwd_op.call(dh, gate, up);
      dh.reset();
      if (ctx->needs_input_grad(3)) h = swiglu_op().call(gate, up);
    }
    Tensor dwd = ctx->needs_input_grad(3) ? at::mm(dy.t(), h) : Tensor();
    h.reset();
    Tensor x2 = x.reshape_symint({-1, x.sym_size(-1)});
    Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = at::mm(dgate, wg);
      dx.addmm_(dup, wu);
      dx = dx.view_symint(x.sym_sizes());
    }
    Tensor dwg = ctx->needs_input_grad(1) ? at::mm(dgate.t(), x2) : Tensor();
    Tensor dwu = ctx->needs_input_grad(2) ? at::mm(dup.t(), x2) : Tensor();
    return {dx, dwg, dwu, dwd};
  }
};

Tensor mlp_autograd(const Tensor& x, const Tensor& gate_weight, const Tensor& up_weight, const Tensor& down_weight) {
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || gate_weight.requires_grad() ||
                                                         up_weight.requires_grad() || down_weight.requires_grad());
  if (!needs_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("liger::swiglu_mlp", "")
                         .typed<decltype(mlp_forward)>();
    return op.call(x, gate_weight, up_weight, down_weight);
  }
  return SwigluMlpFunction::apply(x, gate_weight, up_weight, down_weight);
}

// ---- Autocast: the three products in the autocast dtype, as nn.Linear's would be (fp32 master weights under
// torch.autocast(dtype=bfloat16) give a bf16 MLP).

template <c10::DeviceType Device, c10::DispatchKey Key>
Tensor mlp_autocast(const Tensor& x, const Tensor& gate_weight, const Tensor& up_weight, const Tensor& down_weight) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("liger::swiglu_mlp", "")
                       .typed<decltype(mlp_forward)>();
  const auto dt = at::autocast::get_autocast_dtype(Device);
  return op.call(at::autocast::cached_cast(dt, x, Device), at::autocast::cached_cast(dt, gate_weight, Device),
                 at::autocast::cached_cast(dt, up_weight, Device), at::autocast::cached_cast(dt, down_weight, Device));
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CompositeExplicitAutograd, m) { m.impl("swiglu_mlp", &mlp_forward); }

TORCH_LIBRARY_IMPL(liger, Autograd, m) { m.impl("swiglu_mlp", &mlp_autograd); }

TORCH_LIBRARY_IMPL(liger, AutocastCUDA, m) {
  m.impl("swiglu_mlp", &mlp_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
}

TORCH_LIBRARY_IMPL(liger, AutocastCPU, m) {
  m.impl("swiglu_mlp", &mlp_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
}

}  // namespace liger::swiglu_mlp
