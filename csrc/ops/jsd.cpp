// Generalized Jensen-Shannon divergence (Liger-Kernel's LigerJSD) over student (input) and teacher (target)
// log-probabilities [BT, V]: beta * KL(P || M) + (1 - beta) * KL(Q || M), M = beta P + (1 - beta) Q, with
// beta == 0 the forward KL(P || Q) and beta == 1 the reverse KL(Q || P); mean over the rows whose shift label
// is not ignore_index, counted on the device (no host synchronization). Gradient w.r.t. input only.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/jsd.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::jsd {

using at::Tensor;
using c10::optional;
using namespace liger::gen::jsd;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("jsd(Tensor input, Tensor target, Tensor? shift_labels=None, float beta=0.5, int ignore_index=-100) "
        "-> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("jsd_fwd(Tensor input, Tensor target, Tensor? shift_labels, float beta, int ignore_index) "
        "-> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("jsd_bwd(Tensor grad, Tensor mult, Tensor input, Tensor target, Tensor? shift_labels, float beta, "
        "int ignore_index) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

void check_inputs(const Tensor& x, const Tensor& y, const optional<Tensor>& labels, double beta, const char* op) {
  TORCH_CHECK(x.dim() == 2, op, ": input must have shape [BT, V], got ", shape_str(x));
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()), op,
              ": input must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
  check_like(y, "target", x, "input", op);
  TORCH_CHECK(beta >= 0.0 && beta <= 1.0, op, ": beta must be in [0, 1], got ", beta);
  if (labels.has_value()) {
    const Tensor& l = *labels;
    TORCH_CHECK(l.device() == x.device(), op, ": shift_labels is on ", l.device(), " but input is on ", x.device());
    TORCH_CHECK(l.scalar_type() == at::kLong, op, ": shift_labels must be int64, got ", l.scalar_type());
    TORCH_CHECK(l.dim() == 1, op, ": shift_labels must have shape [BT] = [", x.sym_size(0), "], got ", shape_str(l));
    TORCH_SYM_CHECK(l.sym_size(0).sym_eq(x.sym_size(0)), op, ": shift_labels must have shape [BT] = [",
                    x.sym_size(0), "], got ", shape_str(l));
  }
}

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

int64_t beta_mode(double beta) { return beta == 0.0 ? 0 : (beta == 1.0 ? 1 : 2); }

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

// Per-element loss and dloss/dinput in the accumulation dtype.
std::tuple<Tensor, Tensor> terms(const Tensor& input, const Tensor& target, double beta) {
  Tensor x = input.to(acc_dtype(input));
  Tensor y = target.to(acc_dtype(input));
  switch (beta_mode(beta)) {
    case 0: {
      Tensor p = y.exp();
      return {p * (y - x), -p};
    }
    case 1: {
      Tensor q = x.exp();
      Tensor loss = q * (x - y);
      return {loss, loss + q};
    }
    default: {
      Tensor bp = beta * y.exp();
      Tensor bq = (1.0 - beta) * x.exp();
      Tensor m = bp + bq;
      Tensor log_m = m.log();
      return {bp * y + bq * x - m * log_m, bq * (x - log_m)};
    }
  }
}

Tensor live_rows(const Tensor& x, const optional<Tensor>& labels, int64_t ignore_index) {
  if (!labels.has_value()) return at::ones({x.size(0), 1}, x.options().dtype(acc_dtype(x)));
  return labels->ne(ignore_index).to(acc_dtype(x)).unsqueeze(1);
}

std::tuple<Tensor, Tensor> fwd_cpu(const Tensor& input, const Tensor& target, const optional<Tensor>& labels,
                                   double beta, int64_t ignore_index) {
  check_inputs(input, target, labels, beta, "jsd");
  Tensor live = live_rows(input, labels, ignore_index);
  Tensor mult = (1.0 / live.sum().clamp_min(1)).reshape({1});
  // an ignored row contributes 0 even where its terms are not finite
  Tensor loss = at::where(live > 0, std::get<0>(terms(input, target, beta)), 0.0).sum(-1);
  return {(loss.sum() * mult).reshape({}), mult};
}

Tensor bwd_cpu(const Tensor& grad, const Tensor& mult, const Tensor& input, const Tensor& target,
               const optional<Tensor>& labels, double beta, int64_t ignore_index) {
  check_inputs(input, target, labels, beta, "jsd_bwd");
  Tensor live = live_rows(input, labels, ignore_index);
  Tensor scale = grad.to(acc_dtype(input)) * mult.to(acc_dtype(input));
  Tensor dx = at::where(live > 0, std::get<1>(terms(input, target, beta)) * scale, 0.0);
  return dx.to(input.scalar_type()).contiguous();
}

Tensor jsd_cpu(const Tensor& input, const Tensor& target, const optional<Tensor>& labels, double beta,
               int64_t ignore_index) {
  return std::get<0>(fwd_cpu(input, target, labels, beta, ignore_index));
}

// ---- Meta (SymInt-clean)

std::tuple<Tensor, Tensor> fwd_meta(const Tensor& input, const Tensor& target, const optional<Tensor>& labels,
                                    double beta, int64_t) {
  check_inputs(input, target, labels, beta, "jsd");
  auto opts = input.options().dtype(acc_dtype(input));
  return {at::empty({}, opts), at::empty({1}, opts)};
}

Tensor jsd_meta(const Tensor& input, const Tensor& target, const optional<Tensor>& labels, double beta,
                int64_t ignore_index) {
  return std::get<0>(fwd_meta(input, target, labels, beta, ignore_index));
}

void check_grad(const Tensor& grad, const Tensor& mult, const Tensor& input) {
  TORCH_CHECK(grad.device() == input.device() && mult.device() == input.device(),
              "jsd_bwd: grad and mult must be on input's device ", input.device());
  TORCH_CHECK(grad.dim() == 0, "jsd_bwd: grad must be 0-d, got ", shape_str(grad));
  TORCH_CHECK(mult.dim() == 1 && mult.numel() == 1, "jsd_bwd: mult must have shape [1], got ", shape_str(mult));
}

Tensor bwd_meta(const Tensor& grad, const Tensor& mult, const Tensor& input, const Tensor& target,
                const optional<Tensor>& labels, double beta, int64_t) {
  check_inputs(input, target, labels, beta, "jsd_bwd");
  check_grad(grad, mult, input);
  return at::empty_symint(input.sym_sizes(), input.options());
}

// ---- CUDA launcher

CUdeviceptr labels_ptr(const optional<Tensor>& labels) { return labels.has_value() ? ptr(*labels) : CUdeviceptr{0}; }

void check_cuda(const Tensor& x, const char* op, int64_t rows, int64_t cols) {
  TORCH_CHECK(is_half_or_float(x.scalar_type()), op, ": the CUDA kernels take float32, bfloat16 or float16, got ",
              x.scalar_type());
  TORCH_CHECK(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 rows and columns are supported, got ", rows, " x ", cols);
}

std::tuple<Tensor, Tensor> fwd_cuda(const Tensor& input, const Tensor& target, const optional<Tensor>& labels_in,
                                    double beta, int64_t ignore_index) {
  check_inputs(input, target, labels_in, beta, "jsd");
  c10::DeviceGuard guard(input.device());
  auto f32 = input.options().dtype(at::kFloat);
  Tensor loss = at::empty({}, f32);
  Tensor mult = at::empty({1}, f32);
  Rows x = as_rows(input);
  Rows y = as_rows(target);
  check_cuda(input, "jsd", x.rows, x.cols);
  optional<Tensor> labels = labels_in.has_value() ? optional<Tensor>(labels_in->contiguous()) : c10::nullopt;
  const int has_labels = labels.has_value() ? 1 : 0;
  const LaunchContext ctx = launch_context(input);
  Tensor partial = at::empty({x.rows}, f32);
  if (x.rows > 0) {
    const int64_t vec = vec_elems(input.scalar_type());
    const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && y.row_stride % vec == 0 && aligned16(x.t) &&
                         aligned16(y.t) && aligned16(partial) && (!labels.has_value() || aligned16(*labels));
    const auto& v = jsd_fwd_kernel_get({aligned, beta_mode(beta), input.scalar_type()}, ctx.arch_slot);
    jsd_fwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(x.rows)}, ptr(x.t), ptr(y.t), labels_ptr(labels),
                          ptr(partial), x.cols / v.ALIGN, x.row_stride / v.ALIGN, y.row_stride / v.ALIGN,
                          ignore_index, has_labels, static_cast<float>(beta));
  }
  const auto& v = jsd_sum_kernel_get({at::kFloat}, ctx.arch_slot);
  jsd_sum_kernel_launch(v, ctx, Grid{1}, ptr(partial), labels_ptr(labels), ptr(loss), ptr(mult), x.rows,
                         ignore_index, has_labels, 1, 1.0f);
  return {loss, mult};
}

Tensor jsd_cuda(const Tensor& input, const Tensor& target, const optional<Tensor>& labels, double beta,
                int64_t ignore_index) {
  return std::get<0>(fwd_cuda(input, target, labels, beta, ignore_index));
}

Tensor bwd_cuda(const Tensor& grad, const Tensor& mult, const Tensor& input, const Tensor& target,
                const optional<Tensor>& labels_in, double beta, int64_t ignore_index) {
  check_inputs(input, target, labels_in, beta, "jsd_bwd");
  check_grad(grad, mult, input);
  c10::DeviceGuard guard(input.device());
  Tensor dx = at::empty(input.sizes(), input.options());
  if (input.numel() == 0) return dx;
  Rows x = as_rows(input);
  Rows y = as_rows(target);
  check_cuda(input, "jsd_bwd", x.rows, x.cols);
  Tensor g = grad.to(at::kFloat).reshape({1});
  Tensor m = mult.to(at::kFloat).contiguous();
  optional<Tensor> labels = labels_in.has_value() ? optional<Tensor>(labels_in->contiguous()) : c10::nullopt;
  const int64_t vec = vec_elems(input.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && y.row_stride % vec == 0 && aligned16(x.t) &&
                       aligned16(y.t) && aligned16(g) && aligned16(m) && aligned16(dx) &&
                       (!labels.has_value() || aligned16(*labels));
  const LaunchContext ctx = launch_context(input);
  const auto& v = jsd_bwd_kernel_get({aligned, beta_mode(beta), input.scalar_type()}, ctx.arch_slot);
  jsd_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(x.rows)}, ptr(g), ptr(m), ptr(x.t), ptr(y.t),
                        labels_ptr(labels), ptr(dx), x.cols / v.ALIGN, x.row_stride / v.ALIGN, y.row_stride / v.ALIGN,
                        ignore_index, labels.has_value() ? 1 : 0, static_cast<float>(beta));
  return dx;
}

// Every key the launchers can ask for, per arch slot, must have been built (fused_linear_jsd checks its own).
const VariantCheck variant_check("jsd", [](int arch_slot) {
  std::vector<std::string> missing;
  if (!jsd_sum_kernel_find({at::kFloat}, arch_slot)) missing.push_back(jsd_sum_kernel_key{at::kFloat}.str());
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (bool aligned : {false, true})
      for (double beta : {0.0, 1.0, 0.5}) {
        jsd_fwd_kernel_key fk{aligned, beta_mode(beta), dt};
        if (!jsd_fwd_kernel_find(fk, arch_slot)) missing.push_back(fk.str());
        jsd_bwd_kernel_key bk{aligned, beta_mode(beta), dt};
        if (!jsd_bwd_kernel_find(bk, arch_slot)) missing.push_back(bk.str());
      }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

using FwdFn = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const optional<Tensor>&, double, int64_t);
using BwdFn = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&, double,
                     int64_t);

std::tuple<Tensor, Tensor> call_fwd(const Tensor& input, const Tensor& target, const optional<Tensor>& labels,
                                    double beta, int64_t ignore_index) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::jsd_fwd", "").typed<FwdFn>();
  return op.call(input, target, labels, beta, ignore_index);
}

class JsdBackward : public torch::autograd::Function<JsdBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& grad,
                                                const Tensor& mult, const Tensor& input, const Tensor& target,
                                                const optional<Tensor>& labels, double beta, int64_t ignore_index) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::jsd_bwd", "").typed<BwdFn>();
    return {op.call(grad, mult, input, target, labels, beta, ignore_index)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "jsd: second derivatives are not supported (liger::jsd_bwd is not differentiable)");
  }
};

class JsdFunction : public torch::autograd::Function<JsdFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& input,
                                                const Tensor& target, const optional<Tensor>& labels, double beta,
                                                int64_t ignore_index) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, mult] = call_fwd(input, target, labels, beta, ignore_index);
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["has_labels"] = labels.has_value();
    ctx->save_for_backward({mult, input, target, labels.has_value() ? *labels : Tensor()});
    return {loss};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    optional<Tensor> labels = ctx->saved_data["has_labels"].toBool() ? optional<Tensor>(saved[3]) : c10::nullopt;
    Tensor dx = JsdBackward::apply(grads[0], saved[0], saved[1], saved[2], labels, ctx->saved_data["beta"].toDouble(),
                                   ctx->saved_data["ignore_index"].toInt())[0];
    return {dx, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor jsd_autograd(const Tensor& input, const Tensor& target, const optional<Tensor>& labels, double beta,
                    int64_t ignore_index) {
  const bool grad_mode = at::GradMode::is_enabled();
  TORCH_CHECK(!(grad_mode && target.requires_grad()),
              "jsd: gradients with respect to target (the teacher's log-probabilities) are not supported; "
              "pass target.detach()");
  if (!(grad_mode && input.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return std::get<0>(call_fwd(input, target, labels, beta, ignore_index));
  }
  return JsdFunction::apply(input, target, labels, beta, ignore_index)[0];
}

std::tuple<Tensor, Tensor> fwd_autograd(const Tensor& input, const Tensor& target, const optional<Tensor>& labels,
                                        double beta, int64_t ignore_index) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (input.requires_grad() || target.requires_grad())),
              "jsd_fwd: not differentiable, call liger::jsd for gradients");
  at::AutoDispatchBelowADInplaceOrView guard;
  return call_fwd(input, target, labels, beta, ignore_index);
}

Tensor bwd_autograd(const Tensor& grad, const Tensor& mult, const Tensor& input, const Tensor& target,
                    const optional<Tensor>& labels, double beta, int64_t ignore_index) {
  return JsdBackward::apply(grad, mult, input, target, labels, beta, ignore_index)[0];
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("jsd", &jsd_cpu);
  m.impl("jsd_fwd", &fwd_cpu);
  m.impl("jsd_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("jsd", &jsd_meta);
  m.impl("jsd_fwd", &fwd_meta);
  m.impl("jsd_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("jsd", &jsd_cuda);
  m.impl("jsd_fwd", &fwd_cuda);
  m.impl("jsd_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("jsd", &jsd_autograd);
  m.impl("jsd_fwd", &fwd_autograd);
  m.impl("jsd_bwd", &bwd_autograd);
}

}  // namespace liger::jsd
