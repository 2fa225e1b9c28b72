// KL divergence with F.kl_div semantics: input holds log-probabilities, target probabilities (log-probabilities
// with log_target); loss = target * (log(max(target, eps)) - input), reduced by none / sum / mean / batchmean.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/kl_div.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::kl_div {

using at::Tensor;
using namespace liger::gen::kl_div;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("kl_div(Tensor input, Tensor target, str reduction=\"batchmean\", bool log_target=False, float eps=1e-10) "
        "-> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("kl_div_bwd(Tensor grad, Tensor target, str reduction, bool log_target) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

enum class Reduction { kNone, kSum, kMean, kBatchMean };

Reduction parse_reduction(c10::string_view r, const char* op) {
  if (r == "none") return Reduction::kNone;
  if (r == "sum") return Reduction::kSum;
  if (r == "mean") return Reduction::kMean;
  if (r == "batchmean") return Reduction::kBatchMean;
  TORCH_CHECK(false, op, ": reduction must be \"none\", \"sum\", \"mean\" or \"batchmean\", got \"", r, "\"");
}

bool float_dtype_ok(const Tensor& t) {
  return is_half_or_float(t.scalar_type()) || (t.scalar_type() == at::kDouble && !t.is_cuda());
}

void check_inputs(const Tensor& input, const Tensor& target) {
  TORCH_CHECK(input.dim() >= 1, "kl_div: input must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(float_dtype_ok(input), "kl_div: input must be float32, bfloat16 or float16 (float64 on CPU), got ",
              input.scalar_type());
  check_like(target, "target", input, "input", "kl_div");
}

void check_backward_inputs(const Tensor& grad, const Tensor& target, Reduction r) {
  TORCH_CHECK(target.dim() >= 1, "kl_div_bwd: target must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(float_dtype_ok(target), "kl_div_bwd: target must be float32, bfloat16 or float16 (float64 on CPU), got ",
              target.scalar_type());
  TORCH_CHECK(grad.device() == target.device(), "kl_div_bwd: grad is on ", grad.device(), " but target is on ",
              target.device());
  TORCH_CHECK(grad.scalar_type() == target.scalar_type(), "kl_div_bwd: grad must have target's dtype ",
              target.scalar_type(), ", got ", grad.scalar_type());
  if (r != Reduction::kNone) {
    TORCH_CHECK(grad.dim() == 0, "kl_div_bwd: grad must be 0-d for a reduced loss, got ", shape_str(grad));
    return;
  }
  TORCH_CHECK(grad.dim() == target.dim(), "kl_div_bwd: grad must have target's shape ", shape_str(target), ", got ",
              shape_str(grad));
  for (int64_t i = 0; i < target.dim(); ++i)
    TORCH_SYM_CHECK(grad.sym_size(i).sym_eq(target.sym_size(i)), "kl_div_bwd: grad must have target's shape ",
                    shape_str(target), ", got ", shape_str(grad));
}

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// The factor the summed loss is multiplied by (PyTorch's definitions: mean over elements, batchmean over dim 0).
double reduction_scale(Reduction r, const Tensor& input) {
  if (r == Reduction::kMean) return 1.0 / static_cast<double>(input.numel());
  if (r == Reduction::kBatchMean) return 1.0 / static_cast<double>(input.size(0));
  return 1.0;
}

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

Tensor pointwise_loss(const Tensor& input, const Tensor& target, bool log_target, double eps) {
  Tensor x = input.to(acc_dtype(input));
  Tensor y = target.to(acc_dtype(input));
  return log_target ? y.exp() * (y - x) : y * (y.clamp_min(eps).log() - x);
}

Tensor kl_div_cpu(const Tensor& input, const Tensor& target, c10::string_view reduction, bool log_target,
                  double eps) {
  const Reduction r = parse_reduction(reduction, "kl_div");
  check_inputs(input, target);
  Tensor loss = pointwise_loss(input, target, log_target, eps);
  if (r == Reduction::kNone) return loss.to(input.scalar_type()).contiguous();
  return (loss.sum() * reduction_scale(r, input)).to(input.scalar_type());
}

Tensor bwd_cpu(const Tensor& grad, const Tensor& target, c10::string_view reduction, bool log_target) {
  const Reduction r = parse_reduction(reduction, "kl_div_bwd");
  check_backward_inputs(grad, target, r);
  Tensor y = target.to(acc_dtype(target));
  if (log_target) y = y.exp();
  Tensor g = grad.to(acc_dtype(target)) * reduction_scale(r, target);
  return (-(g * y)).to(target.scalar_type()).contiguous();
}

// ---- Meta (SymInt-clean)

Tensor kl_div_meta(const Tensor& input, const Tensor& target, c10::string_view reduction, bool, double) {
  const Reduction r = parse_reduction(reduction, "kl_div");
  check_inputs(input, target);
  if (r == Reduction::kNone) return at::empty_symint(input.sym_sizes(), input.options());
  return at::empty({}, input.options());
}

Tensor bwd_meta(const Tensor& grad, const Tensor& target, c10::string_view reduction, bool) {
  check_backward_inputs(grad, target, parse_reduction(reduction, "kl_div_bwd"));
  return at::empty_symint(target.sym_sizes(), target.options());
}

// ---- CUDA launcher

void check_cuda(const Tensor& x, const char* op, int64_t rows, int64_t cols) {
  TORCH_CHECK(is_half_or_float(x.scalar_type()), op, ": the CUDA kernels take float32, bfloat16 or float16, got ",
              x.scalar_type());
  TORCH_CHECK(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 rows and columns are supported, got ", rows, " x ", cols);
}

Tensor kl_div_cuda(const Tensor& input, const Tensor& target, c10::string_view reduction, bool log_target,
                   double eps) {
  const Reduction r = parse_reduction(reduction, "kl_div");
  check_inputs(input, target);
  c10::DeviceGuard guard(input.device());
  const bool elementwise = r == Reduction::kNone;
  Tensor out = elementwise ? at::empty(input.sizes(), input.options()) : at::empty({}, input.options());
  Rows x = as_rows(input);
  Rows y = as_rows(target);
  check_cuda(input, "kl_div", x.rows, x.cols);
  if (elementwise && x.rows == 0) return out;
  const LaunchContext ctx = launch_context(input);
  Tensor partial = at::empty({elementwise ? 0 : x.rows}, input.options().dtype(at::kFloat));
  if (x.rows > 0) {
    const int64_t vec = vec_elems(input.scalar_type());
    const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && y.row_stride % vec == 0 &&
                         aligned16(x.t) && aligned16(y.t) && aligned16(out) && aligned16(partial);
    const auto& v = kl_div_fwd_kernel_get({aligned, elementwise, log_target, input.scalar_type()}, ctx.arch_slot);
    kl_div_fwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(x.rows)}, ptr(x.t), ptr(y.t), ptr(out), ptr(partial),
                             x.cols / v.ALIGN, x.row_stride / v.ALIGN, y.row_stride / v.ALIGN,
                             static_cast<float>(eps));
  }
  if (!elementwise) {
    Tensor mult = at::empty({1}, input.options().dtype(at::kFloat));
    const auto& v = kl_div_sum_kernel_get({input.scalar_type()}, ctx.arch_slot);
    kl_div_sum_kernel_launch(v, ctx, Grid{1}, ptr(partial), CUdeviceptr{0}, ptr(out), ptr(mult), x.rows, 0, 0, 0,
                           static_cast<float>(reduction_scale(r, input)));
  }
  return out;
}

Tensor bwd_cuda(const Tensor& grad, const Tensor& target, c10::string_view reduction, bool log_target) {
  const Reduction r = parse_reduction(reduction, "kl_div_bwd");
  check_backward_inputs(grad, target, r);
  c10::DeviceGuard guard(target.device());
  Tensor dx = at::empty(target.sizes(), target.options());
  if (target.numel() == 0) return dx;
  Rows y = as_rows(target);
  check_cuda(target, "kl_div_bwd", y.rows, y.cols);
  const bool elementwise = r == Reduction::kNone;
  Rows g = elementwise ? as_rows(grad) : Rows{grad.to(at::kFloat).reshape({1}), 1, 1, 0};
  const int64_t vec = vec_elems(target.scalar_type());
  const bool aligned = y.cols % vec == 0 && y.row_stride % vec == 0 && g.row_stride % vec == 0 && aligned16(y.t) &&
                       aligned16(g.t) && aligned16(dx);
  const LaunchContext ctx = launch_context(target);
  const auto& v = kl_div_bwd_kernel_get({aligned, elementwise, log_target, target.scalar_type()}, ctx.arch_slot);
  kl_div_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(y.rows)}, ptr(g.t), ptr(y.t), ptr(dx), y.cols / v.ALIGN,
                           g.row_stride / v.ALIGN, y.row_stride / v.ALIGN,
                           static_cast<float>(reduction_scale(r, target)));
  return dx;
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("kl_div", [](int arch_slot) {
  std::vector<std::string> missing;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    if (!kl_div_sum_kernel_find({dt}, arch_slot)) missing.push_back(kl_div_sum_kernel_key{dt}.str());
    for (bool aligned : {false, true})
      for (bool elementwise : {false, true})
        for (bool log_target : {false, true}) {
          if (!kl_div_fwd_kernel_find({aligned, elementwise, log_target, dt}, arch_slot))
            missing.push_back(kl_div_fwd_kernel_key{aligned, elementwise, log_target, dt}.str());
          if (!kl_div_bwd_kernel_find({aligned, elementwise, log_target, dt}, arch_slot))
            missing.push_back(kl_div_bwd_kernel_key{aligned, elementwise, log_target, dt}.str());
        }
  }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

using FwdFn = Tensor(const Tensor&, const Tensor&, c10::string_view, bool, double);
using BwdFn = Tensor(const Tensor&, const Tensor&, c10::string_view, bool);

Tensor call_fwd(const Tensor& input, const Tensor& target, c10::string_view reduction, bool log_target, double eps) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::kl_div", "").typed<FwdFn>();
  return op.call(input, target, reduction, log_target, eps);
}

class KlDivBackward : public torch::autograd::Function<KlDivBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& grad,
                                                const Tensor& target, c10::string_view reduction, bool log_target) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::kl_div_bwd", "").typed<BwdFn>();
    return {op.call(grad, target, reduction, log_target)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "kl_div: second derivatives are not supported (liger::kl_div_bwd is not differentiable)");
  }
};

class KlDivFunction : public torch::autograd::Function<KlDivFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& input,
                                                const Tensor& target, c10::string_view reduction, bool log_target,
                                                double eps) {
    Tensor loss;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      loss = call_fwd(input, target, reduction, log_target, eps);
    }
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["log_target"] = log_target;
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward({input, target});
    return {loss};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    const bool log_target = ctx->saved_data["log_target"].toBool();
    Tensor dinput, dtarget;
    if (ctx->needs_input_grad(0)) dinput = KlDivBackward::apply(grads[0], saved[1], reduction, log_target)[0];
    if (ctx->needs_input_grad(1)) {
      // d/dtarget, composed of ATen ops on any device (the teacher rarely needs it):
      // target * log(max(target, eps)) - target * input  ->  log(max(target, eps)) + [target > eps] - input
      // exp(t) * (t - input)                             ->  exp(t) * (t - input + 1)
      const Reduction r = parse_reduction(reduction, "kl_div");
      const Tensor x = saved[0].to(acc_dtype(saved[0]));
      const Tensor y = saved[1].to(acc_dtype(saved[0]));
      const double eps = ctx->saved_data["eps"].toDouble();
      Tensor g = grads[0].to(acc_dtype(saved[0])) * reduction_scale(r, saved[0]);
      Tensor local = log_target ? y.exp() * (y - x + 1) : y.clamp_min(eps).log() + (y > eps).to(y.scalar_type()) - x;
      dtarget = (g * local).to(saved[1].scalar_type());
    }
    return {dinput, dtarget, Tensor(), Tensor(), Tensor()};
  }
};

Tensor kl_div_autograd(const Tensor& input, const Tensor& target, c10::string_view reduction, bool log_target,
                       double eps) {
  if (!(at::GradMode::is_enabled() && (input.requires_grad() || target.requires_grad()))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_fwd(input, target, reduction, log_target, eps);
  }
  return KlDivFunction::apply(input, target, reduction, log_target, eps)[0];
}

Tensor bwd_autograd(const Tensor& grad, const Tensor& target, c10::string_view reduction, bool log_target) {
  return KlDivBackward::apply(grad, target, reduction, log_target)[0];
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("kl_div", &kl_div_cpu);
  m.impl("kl_div_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("kl_div", &kl_div_meta);
  m.impl("kl_div_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("kl_div", &kl_div_cuda);
  m.impl("kl_div_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("kl_div", &kl_div_autograd);
  m.impl("kl_div_bwd", &bwd_autograd);
}

}  // namespace liger::kl_div
