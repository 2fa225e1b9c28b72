// Gated MLPs as one op each: swiglu_mlp, y = (silu(x Wg^T) * (x Wu^T)) Wd^T (Llama-style decoders), and geglu_mlp,
// the same with gelu(., approximate) (Gemma); gate_proj, up_proj and down_proj without bias. Their backward
// recomputes the gated product instead of keeping it. up_weight None means gate_weight is Phi-3's / GLM-4's
// gate_up_proj weight, [2 * intermediate, hidden] with the gate's rows first; its gradient is one tensor of that
// shape, written by halves.
//
// Written as three nn.Linear around liger::swiglu, a training step keeps, per token and layer, x, gate, up and
// their product h (down_proj's input), 3 x intermediate + hidden elements. These ops keep x, gate and up: the
// backward computes d h = dy Wd, then one pass of liger::swiglu_bwd_inplace (geglu_bwd_inplace) writes h over d h
// and the gradients of gate and up over gate and up (they are the op's own intermediates, used once), and the
// products follow. The backward then allocates d h and d x only, as the modular form with Liger-Kernel's in-place
// SwiGLU does; the saved activations are smaller by intermediate elements per token and layer (about a fifth of a
// Llama-3 layer's: 4.3 GB of 29.6 at bench_e2e.py's 4 x 4096). The pass costs one extra write of h against the
// modular backward.
//
// A retained graph (retain_graph=True), a double backward (create_graph=True), tensor subclasses and tracing
// (torch.compile, export) take the functional path: the gate's _bwd op into new tensors and h recomputed by its
// forward op, so the saved gate and up stay intact for a second backward.
#include <ATen/ATen.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include "runtime/checks.h"

namespace liger::gated_mlp {

using at::Tensor;
using std::optional;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("swiglu_mlp(Tensor x, Tensor gate_weight, Tensor? up_weight, Tensor down_weight) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("geglu_mlp(Tensor x, Tensor gate_weight, Tensor? up_weight, Tensor down_weight, str approximate=\"tanh\") -> "
        "Tensor", {at::Tag::pt2_compliant_tag});
}

// The gate function: silu (approximate empty: SwiGLU) or gelu with approximate "tanh" or "none" (GeGLU), as the
// elementwise ops that compute it.
struct Gate {
  std::string approximate;

  bool silu() const { return approximate.empty(); }
  const char* op() const { return silu() ? "swiglu_mlp" : "geglu_mlp"; }

  Tensor fwd(const Tensor& gate, const Tensor& up) const {
    static auto swiglu = c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu", "")
                             .typed<Tensor(const Tensor&, const Tensor&)>();
    static auto geglu = c10::Dispatcher::singleton().findSchemaOrThrow("liger::geglu", "")
                            .typed<Tensor(const Tensor&, const Tensor&, c10::string_view)>();
    return silu() ? swiglu.call(gate, up) : geglu.call(gate, up, approximate);
  }

  std::tuple<Tensor, Tensor> bwd(const Tensor& dh, const Tensor& gate, const Tensor& up) const {
    static auto swiglu = c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu_bwd", "")
                             .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&)>();
    static auto geglu =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::geglu_bwd", "")
            .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, c10::string_view)>();
    return silu() ? swiglu.call(dh, gate, up) : geglu.call(dh, gate, up, approximate);
  }

  // dh <- the gated product, gate <- d gate, up <- d up
  void bwd_inplace(const Tensor& dh, const Tensor& gate, const Tensor& up) const {
    static auto swiglu = c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu_bwd_inplace", "")
                             .typed<void(const Tensor&, const Tensor&, const Tensor&)>();
    static auto geglu = c10::Dispatcher::singleton().findSchemaOrThrow("liger::geglu_bwd_inplace", "")
                            .typed<void(const Tensor&, const Tensor&, const Tensor&, c10::string_view)>();
    if (silu()) {
      swiglu.call(dh, gate, up);
    } else {
      geglu.call(dh, gate, up, approximate);
    }
  }
};

// ---- checks

// (gate weight, up weight): the two given, or the halves (views) of a packed gate_up weight.
std::pair<Tensor, Tensor> gate_and_up(const Tensor& gate_weight, const optional<Tensor>& up_weight) {
  if (up_weight) return {gate_weight, *up_weight};
  const c10::SymInt inter = gate_weight.sym_size(0) / 2;
  return {gate_weight.narrow_symint(0, 0, inter), gate_weight.narrow_symint(0, inter, inter)};
}

void check_inputs(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                  const Tensor& down_weight, const Gate& gate) {
  const char* kOp = gate.op();
  TORCH_CHECK(gate.silu() || gate.approximate == "tanh" || gate.approximate == "none", kOp,
              ": approximate must be 'tanh' or 'none', got '", gate.approximate, "'");
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()), kOp,
              ": x must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1, kOp, ": x must have at least one dimension (the hidden size), got a 0-dim tensor");
  std::vector<std::pair<const Tensor*, const char*>> weights{{&gate_weight, "gate_weight"}, {&down_weight,
                                                                                              "down_weight"}};
  if (up_weight) weights.emplace_back(&*up_weight, "up_weight");
  for (const auto& [w, name] : weights) {
    TORCH_CHECK(w->device() == x.device(), kOp, ": ", name, " is on ", w->device(), " but x is on ", x.device(),
                "; all must be on the same device");
    TORCH_CHECK(w->scalar_type() == x.scalar_type(), kOp, ": ", name, " must have x's dtype ", x.scalar_type(),
                ", got ", w->scalar_type(), " (under torch.autocast the op casts them itself)");
    TORCH_CHECK(w->dim() == 2, kOp, ": ", name, " must be 2-D (an nn.Linear weight), got ", shape_str(*w));
  }
  if (up_weight) {
    check_like(*up_weight, "up_weight", gate_weight, "gate_weight", kOp);
  } else {
    TORCH_SYM_CHECK((gate_weight.sym_size(0) % 2).sym_eq(0), kOp,
                    ": with up_weight None, gate_weight is a packed gate_up weight [2 * intermediate, hidden] (gate "
                    "rows first), so its row count must be even, got ", shape_str(gate_weight));
  }
  const c10::SymInt inter = up_weight ? gate_weight.sym_size(0) : gate_weight.sym_size(0) / 2;
  TORCH_SYM_CHECK(gate_weight.sym_size(1).sym_eq(x.sym_size(-1)), kOp,
                  ": gate_weight must be [intermediate, hidden] with hidden = x.size(-1) = ", x.sym_size(-1),
                  ", got ", shape_str(gate_weight));
  TORCH_SYM_CHECK(down_weight.sym_size(1).sym_eq(inter), kOp,
                  ": down_weight must be [out, intermediate] with intermediate = ", inter, ", got ",
                  shape_str(down_weight));
}

// ---- forward on every backend (CPU, CUDA, Meta): ATen's matrix products around the gate's elementwise op

Tensor mlp_forward(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                   const Tensor& down_weight, const Gate& gate) {
  check_inputs(x, gate_weight, up_weight, down_weight, gate);
  auto [wg, wu] = gate_and_up(gate_weight, up_weight);
  return at::linear(gate.fwd(at::linear(x, wg), at::linear(x, wu)), down_weight);
}

Tensor swiglu_mlp_forward(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                          const Tensor& down_weight) {
  return mlp_forward(x, gate_weight, up_weight, down_weight, Gate{});
}

Tensor geglu_mlp_forward(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                         const Tensor& down_weight, c10::string_view approximate) {
  return mlp_forward(x, gate_weight, up_weight, down_weight, Gate{std::string(approximate)});
}

const auto& swiglu_mlp_op() {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::swiglu_mlp", "")
                       .typed<decltype(swiglu_mlp_forward)>();
  return op;
}

const auto& geglu_mlp_op() {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::geglu_mlp", "")
                       .typed<decltype(geglu_mlp_forward)>();
  return op;
}

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

// The backward may overwrite a saved intermediate only when it is a plain dense contiguous tensor (not a subclass,
// a functional or fake tensor under tracing, or a dispatch mode's).
bool overwritable(const Tensor& t) { return !at::isTensorSubclassLike(t) && t.is_contiguous(); }

class GatedMlpFunction : public torch::autograd::Function<GatedMlpFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& gate_weight,
                        const optional<Tensor>& up_weight, const Tensor& down_weight, const std::string& approximate) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const Gate g{approximate};
    check_inputs(x, gate_weight, up_weight, down_weight, g);
    auto [wg, wu] = gate_and_up(gate_weight, up_weight);
    Tensor gate = at::linear(x, wg), up = at::linear(x, wu);
    Tensor y = at::linear(g.fwd(gate, up), down_weight);
    ctx->save_for_backward({x, gate_weight, up_weight.value_or(Tensor()), down_weight, gate, up});
    ctx->saved_data["approximate"] = approximate;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const Gate g{ctx->saved_data["approximate"].toStringRef()};
    auto saved = ctx->get_saved_variables();
    const Tensor x = saved[0], packed = saved[1], wd = saved[3];
    const bool is_packed = !saved[2].defined();
    const auto [wg, wu] = gate_and_up(packed, is_packed ? optional<Tensor>() : optional<Tensor>(saved[2]));
    const c10::SymInt inter = wg.sym_size(0);
    // needs_input_grad counts the tensors given: x 0, gate_weight 1, up_weight 2 when given, then down_weight
    const bool need_x = ctx->needs_input_grad(0), need_wg = ctx->needs_input_grad(1);
    const bool need_wu = !is_packed && ctx->needs_input_grad(2), need_wd = ctx->needs_input_grad(is_packed ? 2 : 3);
    Tensor gate = saved[4].reshape_symint({-1, inter}), up = saved[5].reshape_symint({-1, inter});
    saved.clear();  // drop the extra references to gate and up before they are overwritten
    Tensor dy = grads[0].reshape_symint({-1, wd.sym_size(0)});
    Tensor dh = at::mm(dy, wd);  // [tokens, intermediate]
    Tensor h, dgate, dup;
    if (!torch::autograd::get_current_graph_task_keep_graph() && !at::GradMode::is_enabled() && overwritable(gate) &&
        overwritable(up) && overwritable(dh)) {
      g.bwd_inplace(dh, gate, up);  // dh <- h, gate <- d gate, up <- d up
      h = std::move(dh);
      dgate = std::move(gate);
      dup = std::move(up);
    } else {
      std::tie(dgate, dup) = g.bwd(dh, gate, up);
      dh.reset();
      if (need_wd) h = g.fwd(gate, up);
    }
    Tensor dwd = need_wd ? at::mm(dy.t(), h) : Tensor();
    h.reset();
    Tensor x2 = x.reshape_symint({-1, x.sym_size(-1)});
    Tensor dx;
    if (need_x) {
      dx = at::mm(dgate, wg);
      dx.addmm_(dup, wu);
      dx = dx.view_symint(x.sym_sizes());
    }
    Tensor dwg, dwu;
    if (is_packed) {  // one gradient for the packed weight, written by halves
      if (need_wg) {
        dwg = at::empty_symint(packed.sym_sizes(), packed.options());
        Tensor dwg_gate = dwg.narrow_symint(0, 0, inter), dwg_up = dwg.narrow_symint(0, inter, inter);
        at::mm_out(dwg_gate, dgate.t(), x2);
        at::mm_out(dwg_up, dup.t(), x2);
      }
    } else {
      if (need_wg) dwg = at::mm(dgate.t(), x2);
      if (need_wu) dwu = at::mm(dup.t(), x2);
    }
    return {dx, dwg, dwu, dwd, Tensor()};
  }
};

bool needs_grad(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                const Tensor& down_weight) {
  return at::GradMode::is_enabled() && (x.requires_grad() || gate_weight.requires_grad() ||
                                        (up_weight && up_weight->requires_grad()) || down_weight.requires_grad());
}

Tensor swiglu_mlp_autograd(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                           const Tensor& down_weight) {
  if (!needs_grad(x, gate_weight, up_weight, down_weight)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return swiglu_mlp_op().call(x, gate_weight, up_weight, down_weight);
  }
  return GatedMlpFunction::apply(x, gate_weight, up_weight, down_weight, std::string());
}

Tensor geglu_mlp_autograd(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                          const Tensor& down_weight, c10::string_view approximate) {
  if (!needs_grad(x, gate_weight, up_weight, down_weight)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return geglu_mlp_op().call(x, gate_weight, up_weight, down_weight, approximate);
  }
  return GatedMlpFunction::apply(x, gate_weight, up_weight, down_weight, std::string(approximate));
}

// ---- Autocast: the three products in the autocast dtype, as nn.Linear's would be (fp32 master weights under
// torch.autocast(dtype=bfloat16) give a bf16 MLP).

template <c10::DeviceType Device>
Tensor autocast_arg(const Tensor& t) {
  return at::autocast::cached_cast(at::autocast::get_autocast_dtype(Device), t, Device);
}

template <c10::DeviceType Device>
optional<Tensor> autocast_arg(const optional<Tensor>& t) {
  return t ? optional<Tensor>(autocast_arg<Device>(*t)) : optional<Tensor>();
}

template <c10::DeviceType Device, c10::DispatchKey Key>
Tensor swiglu_mlp_autocast(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                           const Tensor& down_weight) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  return swiglu_mlp_op().call(autocast_arg<Device>(x), autocast_arg<Device>(gate_weight),
                              autocast_arg<Device>(up_weight), autocast_arg<Device>(down_weight));
}

template <c10::DeviceType Device, c10::DispatchKey Key>
Tensor geglu_mlp_autocast(const Tensor& x, const Tensor& gate_weight, const optional<Tensor>& up_weight,
                          const Tensor& down_weight, c10::string_view approximate) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  return geglu_mlp_op().call(autocast_arg<Device>(x), autocast_arg<Device>(gate_weight),
                             autocast_arg<Device>(up_weight), autocast_arg<Device>(down_weight), approximate);
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CompositeExplicitAutograd, m) {
  m.impl("swiglu_mlp", &swiglu_mlp_forward);
  m.impl("geglu_mlp", &geglu_mlp_forward);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("swiglu_mlp", &swiglu_mlp_autograd);
  m.impl("geglu_mlp", &geglu_mlp_autograd);
}

TORCH_LIBRARY_IMPL(liger, AutocastCUDA, m) {
  m.impl("swiglu_mlp", &swiglu_mlp_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
  m.impl("geglu_mlp", &geglu_mlp_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
}

TORCH_LIBRARY_IMPL(liger, AutocastCPU, m) {
  m.impl("swiglu_mlp", &swiglu_mlp_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
  m.impl("geglu_mlp", &geglu_mlp_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
}

}  // namespace liger::gated_mlp
