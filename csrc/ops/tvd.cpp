// Total variation distance (Liger-Kernel's LigerTVDLoss): loss = 0.5 * |p - q| over [BT, V] probabilities,
// rows whose shift label is ignore_index excluded; reductions none / sum / mean (over non-ignored elements) /
// batchmean (over non-ignored rows). The count of non-ignored rows is taken on the device: no host sync.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/jsd.h"
#include "liger_gen/tvd.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::tvd {

using at::Tensor;
using c10::optional;
using namespace liger::gen::tvd;
namespace jsdk = liger::gen::jsd;  // inv_count_kernel

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("tvd(Tensor p, Tensor q, Tensor? shift_labels=None, str reduction=\"batchmean\", int ignore_index=-100) "
        "-> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("tvd_fwd(Tensor p, Tensor q, Tensor? shift_labels, str reduction, int ignore_index) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("tvd_bwd(Tensor grad, Tensor mult, Tensor p, Tensor q, Tensor? shift_labels, str reduction, "
        "int ignore_index) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Training with a reduced loss: (loss, mult, dp) with dp the gradient for grad_output 1, written in the
  // forward's pass; tvd_scale_ multiplies it by grad_output in place (nothing to do when that is 1).
  m.def("tvd_fwd_grad(Tensor p, Tensor q, Tensor? shift_labels, str reduction, int ignore_index) "
        "-> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("tvd_scale_(Tensor(a!) dp, Tensor grad) -> ()", {at::Tag::pt2_compliant_tag});
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

void check_inputs(const Tensor& p, const Tensor& q, const optional<Tensor>& labels, const char* op) {
  TORCH_CHECK(p.dim() == 2, op, ": p must have shape [BT, V], got ", shape_str(p));
  TORCH_CHECK(is_half_or_float(p.scalar_type()) || (p.scalar_type() == at::kDouble && !p.is_cuda()), op,
              ": p must be float32, bfloat16 or float16 (float64 on CPU), got ", p.scalar_type());
  check_like(q, "q", p, "p", op);
  if (labels.has_value()) {
    const Tensor& l = *labels;
    TORCH_CHECK(l.device() == p.device(), op, ": shift_labels is on ", l.device(), " but p is on ", p.device());
    TORCH_CHECK(l.scalar_type() == at::kLong, op, ": shift_labels must be int64, got ", l.scalar_type());
    TORCH_CHECK(l.dim() == 1, op, ": shift_labels must have shape [BT] = [", p.sym_size(0), "], got ", shape_str(l));
    TORCH_SYM_CHECK(l.sym_size(0).sym_eq(p.sym_size(0)), op, ": shift_labels must have shape [BT] = [",
                    p.sym_size(0), "], got ", shape_str(l));
  }
}

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

// 1 for rows that count, 0 for ignored ones, as [BT, 1] in the accumulation dtype.
Tensor live_rows(const Tensor& p, const optional<Tensor>& labels, int64_t ignore_index) {
  if (!labels.has_value()) return at::ones({p.size(0), 1}, p.options().dtype(acc_dtype(p)));
  return labels->ne(ignore_index).to(acc_dtype(p)).unsqueeze(1);
}

// The factor the summed loss is multiplied by; count = non-ignored rows, 0 replaced by 1.
Tensor multiplier(const Tensor& live, Reduction r, int64_t n_cols) {
  Tensor count = live.sum().clamp_min(1);
  if (r == Reduction::kMean) return (1.0 / (count * static_cast<double>(n_cols))).reshape({1});
  if (r == Reduction::kBatchMean) return (1.0 / count).reshape({1});
  return at::ones({1}, live.options());
}

std::tuple<Tensor, Tensor> fwd_cpu(const Tensor& p, const Tensor& q, const optional<Tensor>& labels,
                                   c10::string_view reduction, int64_t ignore_index) {
  const Reduction r = parse_reduction(reduction, "tvd");
  check_inputs(p, q, labels, "tvd");
  Tensor live = live_rows(p, labels, ignore_index);
  Tensor loss = 0.5 * (p.to(acc_dtype(p)) - q.to(acc_dtype(p))).abs() * live;
  Tensor mult = multiplier(live, r, p.size(1));
  if (r == Reduction::kNone) return {loss.contiguous(), mult};
  return {(loss.sum() * mult).reshape({}), mult};
}

Tensor bwd_cpu(const Tensor& grad, const Tensor& mult, const Tensor& p, const Tensor& q,
               const optional<Tensor>& labels, c10::string_view reduction, int64_t ignore_index) {
  const Reduction r = parse_reduction(reduction, "tvd_bwd");
  check_inputs(p, q, labels, "tvd_bwd");
  Tensor live = live_rows(p, labels, ignore_index);
  Tensor sign = at::where(p.to(acc_dtype(p)) > q.to(acc_dtype(p)), 0.5, -0.5).to(acc_dtype(p));
  Tensor g = r == Reduction::kNone ? grad.to(acc_dtype(p)) : grad.to(acc_dtype(p)) * mult.to(acc_dtype(p));
  return (sign * g * live).to(p.scalar_type()).contiguous();
}

Tensor tvd_cpu(const Tensor& p, const Tensor& q, const optional<Tensor>& labels, c10::string_view reduction,
               int64_t ignore_index) {
  return std::get<0>(fwd_cpu(p, q, labels, reduction, ignore_index));
}

void check_reduced(Reduction r, const char* op) {
  TORCH_CHECK(r != Reduction::kNone, op, ": takes a reduced loss (\"sum\", \"mean\" or \"batchmean\"), got \"none\"");
}

std::tuple<Tensor, Tensor, Tensor> fwd_grad_cpu(const Tensor& p, const Tensor& q, const optional<Tensor>& labels,
                                                c10::string_view reduction, int64_t ignore_index) {
  check_reduced(parse_reduction(reduction, "tvd_fwd_grad"), "tvd_fwd_grad");
  auto [loss, mult] = fwd_cpu(p, q, labels, reduction, ignore_index);
  Tensor dp = bwd_cpu(at::ones({}, loss.options()), mult, p, q, labels, reduction, ignore_index);
  return {loss, mult, dp};
}

void check_scale(const Tensor& dp, const Tensor& grad) {
  TORCH_CHECK(grad.dim() == 0, "tvd_scale_: grad must be 0-d, got ", shape_str(grad));
  TORCH_CHECK(grad.device() == dp.device(), "tvd_scale_: grad is on ", grad.device(), " but dp is on ", dp.device());
  TORCH_CHECK(dp.is_contiguous(), "tvd_scale_: dp must be contiguous");
}

void scale_cpu(const Tensor& dp, const Tensor& grad) {
  check_scale(dp, grad);
  dp.copy_(dp.to(acc_dtype(dp)) * grad.to(acc_dtype(dp)));
}

// ---- Meta (SymInt-clean)

std::tuple<Tensor, Tensor> fwd_meta(const Tensor& p, const Tensor& q, const optional<Tensor>& labels,
                                    c10::string_view reduction, int64_t) {
  const Reduction r = parse_reduction(reduction, "tvd");
  check_inputs(p, q, labels, "tvd");
  auto opts = p.options().dtype(acc_dtype(p));
  Tensor loss = r == Reduction::kNone ? at::empty_symint(p.sym_sizes(), opts) : at::empty({}, opts);
  return {loss, at::empty({1}, opts)};
}

Tensor tvd_meta(const Tensor& p, const Tensor& q, const optional<Tensor>& labels, c10::string_view reduction,
                int64_t ignore_index) {
  return std::get<0>(fwd_meta(p, q, labels, reduction, ignore_index));
}

std::tuple<Tensor, Tensor, Tensor> fwd_grad_meta(const Tensor& p, const Tensor& q, const optional<Tensor>& labels,
                                                 c10::string_view reduction, int64_t ignore_index) {
  check_reduced(parse_reduction(reduction, "tvd_fwd_grad"), "tvd_fwd_grad");
  auto [loss, mult] = fwd_meta(p, q, labels, reduction, ignore_index);
  return {loss, mult, at::empty_symint(p.sym_sizes(), p.options())};
}

void scale_meta(const Tensor& dp, const Tensor& grad) { check_scale(dp, grad); }

void check_grad(const Tensor& grad, const Tensor& mult, const Tensor& p, Reduction r) {
  TORCH_CHECK(grad.device() == p.device() && mult.device() == p.device(),
              "tvd_bwd: grad and mult must be on p's device ", p.device());
  TORCH_CHECK(mult.numel() == 1, "tvd_bwd: mult must have one element, got ", shape_str(mult));
  if (r != Reduction::kNone) {
    TORCH_CHECK(grad.dim() == 0, "tvd_bwd: grad must be 0-d for a reduced loss, got ", shape_str(grad));
    return;
  }
  TORCH_CHECK(grad.dim() == 2, "tvd_bwd: grad must have p's shape ", shape_str(p), ", got ", shape_str(grad));
  for (int64_t i = 0; i < 2; ++i)
    TORCH_SYM_CHECK(grad.sym_size(i).sym_eq(p.sym_size(i)), "tvd_bwd: grad must have p's shape ", shape_str(p),
                    ", got ", shape_str(grad));
}

Tensor bwd_meta(const Tensor& grad, const Tensor& mult, const Tensor& p, const Tensor& q,
                const optional<Tensor>& labels, c10::string_view reduction, int64_t) {
  const Reduction r = parse_reduction(reduction, "tvd_bwd");
  check_inputs(p, q, labels, "tvd_bwd");
  check_grad(grad, mult, p, r);
  return at::empty_symint(p.sym_sizes(), p.options());
}

// ---- CUDA launcher

CUdeviceptr labels_ptr(const optional<Tensor>& labels) { return labels.has_value() ? ptr(*labels) : CUdeviceptr{0}; }

void check_cuda(const Tensor& p, const char* op, int64_t rows, int64_t cols) {
  TORCH_CHECK(is_half_or_float(p.scalar_type()), op, ": the CUDA kernels take float32, bfloat16 or float16, got ",
              p.scalar_type());
  TORCH_CHECK(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 rows and columns are supported, got ", rows, " x ", cols);
}

std::tuple<Tensor, Tensor> fwd_cuda(const Tensor& p_in, const Tensor& q_in, const optional<Tensor>& labels_in,
                                    c10::string_view reduction, int64_t ignore_index) {
  const Reduction r = parse_reduction(reduction, "tvd");
  check_inputs(p_in, q_in, labels_in, "tvd");
  c10::DeviceGuard guard(p_in.device());
  const bool elementwise = r == Reduction::kNone;
  auto f32 = p_in.options().dtype(at::kFloat);
  Tensor loss = elementwise ? at::empty(p_in.sizes(), f32) : at::empty({}, f32);
  Tensor mult = at::empty({1}, f32);
  Rows p = as_rows(p_in);
  Rows q = as_rows(q_in);
  check_cuda(p_in, "tvd", p.rows, p.cols);
  optional<Tensor> labels = labels_in.has_value() ? optional<Tensor>(labels_in->contiguous()) : c10::nullopt;
  const LaunchContext ctx = launch_context(p_in);
  Tensor partial = at::empty({elementwise ? 0 : p.rows}, f32);
  if (p.rows > 0) {
    const int64_t vec = vec_elems(p_in.scalar_type());
    const bool aligned = p.cols % vec == 0 && p.row_stride % vec == 0 && q.row_stride % vec == 0 && aligned16(p.t) &&
                         aligned16(q.t) && aligned16(loss) && aligned16(partial) &&
                         (!labels.has_value() || aligned16(*labels));
    const auto& v = tvd_fwd_kernel_get({aligned, elementwise, p_in.scalar_type()}, ctx.arch_slot);
    tvd_fwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(p.rows)}, ptr(p.t), ptr(q.t), labels_ptr(labels),
                          ptr(loss), ptr(partial), p.cols / v.ALIGN, p.row_stride / v.ALIGN, q.row_stride / v.ALIGN,
                          ignore_index, labels.has_value() ? 1 : 0);
  }
  if (elementwise) {
    mult.fill_(1.0);
  } else {
    const auto& v = tvd_sum_kernel_get({at::kFloat}, ctx.arch_slot);
    const bool use_count = r != Reduction::kSum;
    const double scale = r == Reduction::kMean ? 1.0 / static_cast<double>(p.cols) : 1.0;
    tvd_sum_kernel_launch(v, ctx, Grid{1}, ptr(partial), labels_ptr(labels), ptr(loss), ptr(mult), p.rows,
                           ignore_index, labels.has_value() ? 1 : 0, use_count ? 1 : 0, static_cast<float>(scale));
  }
  return {loss, mult};
}

Tensor tvd_cuda(const Tensor& p, const Tensor& q, const optional<Tensor>& labels, c10::string_view reduction,
                int64_t ignore_index) {
  return std::get<0>(fwd_cuda(p, q, labels, reduction, ignore_index));
}

Tensor bwd_cuda(const Tensor& grad, const Tensor& mult, const Tensor& p_in, const Tensor& q_in,
                const optional<Tensor>& labels_in, c10::string_view reduction, int64_t ignore_index) {
  const Reduction r = parse_reduction(reduction, "tvd_bwd");
  check_inputs(p_in, q_in, labels_in, "tvd_bwd");
  check_grad(grad, mult, p_in, r);
  c10::DeviceGuard guard(p_in.device());
  Tensor dp = at::empty(p_in.sizes(), p_in.options());
  if (p_in.numel() == 0) return dp;
  Rows p = as_rows(p_in);
  Rows q = as_rows(q_in);
  check_cuda(p_in, "tvd_bwd", p.rows, p.cols);
  const bool elementwise = r == Reduction::kNone;
  Rows g = elementwise ? as_rows(grad.to(at::kFloat)) : Rows{grad.to(at::kFloat).reshape({1}), 1, 1, 0};
  Tensor m = mult.to(at::kFloat).contiguous();
  optional<Tensor> labels = labels_in.has_value() ? optional<Tensor>(labels_in->contiguous()) : c10::nullopt;
  const int64_t vec = vec_elems(p_in.scalar_type());
  const bool aligned = p.cols % vec == 0 && p.row_stride % vec == 0 && q.row_stride % vec == 0 &&
                       g.row_stride % vec == 0 && aligned16(p.t) && aligned16(q.t) && aligned16(g.t) &&
                       aligned16(m) && aligned16(dp) && (!labels.has_value() || aligned16(*labels));
  const LaunchContext ctx = launch_context(p_in);
  const auto& v = tvd_bwd_kernel_get({aligned, elementwise, p_in.scalar_type()}, ctx.arch_slot);
  tvd_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(p.rows)}, ptr(g.t), ptr(m), ptr(p.t), ptr(q.t),
                        labels_ptr(labels), ptr(dp), p.cols / v.ALIGN, g.row_stride / v.ALIGN, p.row_stride / v.ALIGN,
                        q.row_stride / v.ALIGN, ignore_index, labels.has_value() ? 1 : 0);
  return dp;
}

std::tuple<Tensor, Tensor, Tensor> fwd_grad_cuda(const Tensor& p_in, const Tensor& q_in,
                                                 const optional<Tensor>& labels_in, c10::string_view reduction,
                                                 int64_t ignore_index) {
  const Reduction r = parse_reduction(reduction, "tvd_fwd_grad");
  check_reduced(r, "tvd_fwd_grad");
  check_inputs(p_in, q_in, labels_in, "tvd_fwd_grad");
  c10::DeviceGuard guard(p_in.device());
  auto f32 = p_in.options().dtype(at::kFloat);
  Tensor loss = at::empty({}, f32), mult = at::empty({1}, f32), inv_count = at::empty({1}, f32);
  Tensor dp = at::empty(p_in.sizes(), p_in.options());
  Rows p = as_rows(p_in);
  Rows q = as_rows(q_in);
  check_cuda(p_in, "tvd_fwd_grad", p.rows, p.cols);
  optional<Tensor> labels = labels_in.has_value() ? optional<Tensor>(labels_in->contiguous()) : c10::nullopt;
  const int64_t has_labels = labels.has_value() ? 1 : 0;
  const LaunchContext ctx = launch_context(p_in);
  Tensor partial = at::empty({p.rows}, f32);
  const bool use_count = r != Reduction::kSum;
  const double scale = r == Reduction::kMean ? 1.0 / static_cast<double>(p.cols) : 1.0;
  if (p.rows > 0 && p.cols > 0) {
    if (use_count) {  // 1 / non-ignored rows, before the rows scale their gradient by it
      const auto& cv = jsdk::inv_count_kernel_get({jsdk::SUM_BLOCK}, ctx.arch_slot);
      jsdk::inv_count_kernel_launch(cv, ctx, Grid{1}, labels_ptr(labels), ptr(inv_count), p.rows, ignore_index,
                                    has_labels);
    }
    const int64_t vec = vec_elems(p_in.scalar_type());
    const bool aligned = p.cols % vec == 0 && p.row_stride % vec == 0 && q.row_stride % vec == 0 && aligned16(p.t) &&
                         aligned16(q.t) && aligned16(dp) && aligned16(partial) && aligned16(inv_count) &&
                         (!labels.has_value() || aligned16(*labels));
    const auto& v = tvd_fwd_grad_kernel_get({aligned, p_in.scalar_type()}, ctx.arch_slot);
    tvd_fwd_grad_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(p.rows)}, ptr(p.t), ptr(q.t), labels_ptr(labels),
                               ptr(partial), ptr(dp), ptr(inv_count), p.cols / v.ALIGN, p.row_stride / v.ALIGN,
                               q.row_stride / v.ALIGN, ignore_index, has_labels, static_cast<float>(scale), use_count);
  } else {
    partial.zero_();
  }
  const auto& sv = tvd_sum_kernel_get({at::kFloat}, ctx.arch_slot);
  tvd_sum_kernel_launch(sv, ctx, Grid{1}, ptr(partial), labels_ptr(labels), ptr(loss), ptr(mult), p.rows,
                        ignore_index, has_labels, use_count ? 1 : 0, static_cast<float>(scale));
  return {loss, mult, dp};
}

void scale_cuda(const Tensor& dp, const Tensor& grad_in) {
  check_scale(dp, grad_in);
  TORCH_CHECK(is_half_or_float(dp.scalar_type()), "tvd_scale_: dp must be float32, bfloat16 or float16, got ",
              dp.scalar_type());
  if (dp.numel() == 0) return;
  c10::DeviceGuard guard(dp.device());
  Tensor g = grad_in.to(at::kFloat);
  if (!aligned16(g)) g = g.clone();
  TORCH_CHECK(aligned16(dp), "tvd_scale_: dp must be 16-byte aligned");
  const LaunchContext ctx = launch_context(dp);
  const auto& v = tvd_scale_kernel_get({dp.scalar_type()}, ctx.arch_slot);
  const int64_t programs = std::min<int64_t>(ceil_div(dp.numel(), v.BLOCK), int64_t(ctx.sm_count) * 4);
  tvd_scale_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(dp), ptr(g), dp.numel());
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("tvd", [](int arch_slot) {
  std::vector<std::string> missing;
  if (!tvd_sum_kernel_find({at::kFloat}, arch_slot)) missing.push_back(tvd_sum_kernel_key{at::kFloat}.str());
  if (!jsdk::inv_count_kernel_find({jsdk::SUM_BLOCK}, arch_slot))
    missing.push_back(jsdk::inv_count_kernel_key{jsdk::SUM_BLOCK}.str());
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    if (!tvd_scale_kernel_find({dt}, arch_slot)) missing.push_back(tvd_scale_kernel_key{dt}.str());
    for (bool aligned : {false, true})
      if (!tvd_fwd_grad_kernel_find({aligned, dt}, arch_slot))
        missing.push_back(tvd_fwd_grad_kernel_key{aligned, dt}.str());
  }
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (bool aligned : {false, true})
      for (bool elementwise : {false, true}) {
        if (!tvd_fwd_kernel_find({aligned, elementwise, dt}, arch_slot))
          missing.push_back(tvd_fwd_kernel_key{aligned, elementwise, dt}.str());
        if (!tvd_bwd_kernel_find({aligned, elementwise, dt}, arch_slot))
          missing.push_back(tvd_bwd_kernel_key{aligned, elementwise, dt}.str());
      }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

using FwdFn = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const optional<Tensor>&, c10::string_view,
                                         int64_t);
using BwdFn = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&,
                     c10::string_view, int64_t);

std::tuple<Tensor, Tensor> call_fwd(const Tensor& p, const Tensor& q, const optional<Tensor>& labels,
                                    c10::string_view reduction, int64_t ignore_index) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::tvd_fwd", "").typed<FwdFn>();
  return op.call(p, q, labels, reduction, ignore_index);
}

class TvdBackward : public torch::autograd::Function<TvdBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& grad,
                                                const Tensor& mult, const Tensor& p, const Tensor& q,
                                                const optional<Tensor>& labels, c10::string_view reduction,
                                                int64_t ignore_index) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::tvd_bwd", "").typed<BwdFn>();
    return {op.call(grad, mult, p, q, labels, reduction, ignore_index)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "tvd: second derivatives are not supported (liger::tvd_bwd is not differentiable)");
  }
};

using FwdGradFn = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const optional<Tensor>&,
                                                      c10::string_view, int64_t);
using ScaleFn = void(const Tensor&, const Tensor&);

const c10::TypedOperatorHandle<ScaleFn>& scale_op();

// fuse (a reduced loss while training): the forward also computes the gradient for grad_output 1 and keeps it
// (memory: one p-sized tensor from forward to backward, the size of the gradient the backward would allocate
// anyway; it becomes p.grad without a copy).
class TvdFunction : public torch::autograd::Function<TvdFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& p,
                                                const Tensor& q, const optional<Tensor>& labels,
                                                c10::string_view reduction, int64_t ignore_index, bool fuse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor loss, mult, dp;
    if (fuse) {
      static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::tvd_fwd_grad", "").typed<FwdGradFn>();
      std::tie(loss, mult, dp) = op.call(p, q, labels, reduction, ignore_index);
    } else {
      std::tie(loss, mult) = call_fwd(p, q, labels, reduction, ignore_index);
    }
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["has_labels"] = labels.has_value();
    ctx->save_for_backward({mult, p, q, labels.has_value() ? *labels : Tensor(), dp});
    return {loss};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    optional<Tensor> labels = ctx->saved_data["has_labels"].toBool() ? optional<Tensor>(saved[3]) : c10::nullopt;
    Tensor dp;
    if (saved[4].defined() && !torch::autograd::get_current_graph_task_keep_graph() && !at::GradMode::is_enabled()) {
      // The graph is freed after this backward: the kept gradient is scaled in place and handed out (a retained
      // graph, or create_graph, takes the general path: a second backward must find the buffer as the forward
      // left it, and a second derivative must raise).
      dp = saved[4];
      scale_op().call(dp, grads[0]);
    } else {
      dp = TvdBackward::apply(grads[0], saved[0], saved[1], saved[2], labels,
                              ctx->saved_data["reduction"].toStringRef(), ctx->saved_data["ignore_index"].toInt())[0];
    }
    // dloss/dq = -dloss/dp (the same subgradient choice at p == q, mirrored)
    Tensor dq = ctx->needs_input_grad(1) ? dp.neg() : Tensor();
    return {ctx->needs_input_grad(0) ? dp : Tensor(), dq, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor tvd_autograd(const Tensor& p, const Tensor& q, const optional<Tensor>& labels, c10::string_view reduction,
                    int64_t ignore_index) {
  if (!(at::GradMode::is_enabled() && (p.requires_grad() || q.requires_grad()))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return std::get<0>(call_fwd(p, q, labels, reduction, ignore_index));
  }
  const bool fuse = parse_reduction(reduction, "tvd") != Reduction::kNone;
  return TvdFunction::apply(p, q, labels, reduction, ignore_index, fuse)[0];
}

std::tuple<Tensor, Tensor> fwd_autograd(const Tensor& p, const Tensor& q, const optional<Tensor>& labels,
                                        c10::string_view reduction, int64_t ignore_index) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (p.requires_grad() || q.requires_grad())),
              "tvd_fwd: not differentiable, call liger::tvd for gradients");
  at::AutoDispatchBelowADInplaceOrView guard;
  return call_fwd(p, q, labels, reduction, ignore_index);
}

Tensor bwd_autograd(const Tensor& grad, const Tensor& mult, const Tensor& p, const Tensor& q,
                    const optional<Tensor>& labels, c10::string_view reduction, int64_t ignore_index) {
  return TvdBackward::apply(grad, mult, p, q, labels, reduction, ignore_index)[0];
}

// The fused pieces compute a gradient; they have none themselves.
std::tuple<Tensor, Tensor, Tensor> fwd_grad_autograd(const Tensor& p, const Tensor& q, const optional<Tensor>& labels,
                                                     c10::string_view reduction, int64_t ignore_index) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (p.requires_grad() || q.requires_grad())),
              "tvd_fwd_grad: not differentiable (it computes p's gradient), call liger::tvd for gradients");
  at::AutoDispatchBelowADInplaceOrView guard;
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::tvd_fwd_grad", "").typed<FwdGradFn>();
  return op.call(p, q, labels, reduction, ignore_index);
}

const c10::TypedOperatorHandle<ScaleFn>& scale_op() {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::tvd_scale_", "").typed<ScaleFn>();
  return op;
}

void scale_autograd(c10::DispatchKeySet ks, const Tensor& dp, const Tensor& grad) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (dp.requires_grad() || grad.requires_grad())),
              "liger::tvd_scale_ is not differentiable (it scales p's gradient): call liger::tvd");
  scale_op().redispatch(ks & c10::after_autograd_keyset, dp, grad);
}

// dp is written in place: bump its version, as ATen's in-place ops do.
void scale_ad_inplace(c10::DispatchKeySet ks, const Tensor& dp, const Tensor& grad) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    scale_op().redispatch(ks & c10::after_ADInplaceOrView_keyset, dp, grad);
  }
  torch::autograd::impl::bump_version(dp);
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("tvd", &tvd_cpu);
  m.impl("tvd_fwd", &fwd_cpu);
  m.impl("tvd_bwd", &bwd_cpu);
  m.impl("tvd_fwd_grad", &fwd_grad_cpu);
  m.impl("tvd_scale_", &scale_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("tvd", &tvd_meta);
  m.impl("tvd_fwd", &fwd_meta);
  m.impl("tvd_bwd", &bwd_meta);
  m.impl("tvd_fwd_grad", &fwd_grad_meta);
  m.impl("tvd_scale_", &scale_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("tvd", &tvd_cuda);
  m.impl("tvd_fwd", &fwd_cuda);
  m.impl("tvd_bwd", &bwd_cuda);
  m.impl("tvd_fwd_grad", &fwd_grad_cuda);
  m.impl("tvd_scale_", &scale_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("tvd", &tvd_autograd);
  m.impl("tvd_fwd", &fwd_autograd);
  m.impl("tvd_bwd", &bwd_autograd);
  m.impl("tvd_fwd_grad", &fwd_grad_autograd);
  m.impl("tvd_scale_", &scale_autograd);
}

TORCH_LIBRARY_IMPL(liger, ADInplaceOrView, m) { m.impl("tvd_scale_", &scale_ad_inplace); }

}  // namespace liger::tvd
