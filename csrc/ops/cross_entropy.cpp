// Cross-entropy over the last dimension with F.cross_entropy's class weights, ignore_index, label smoothing and
// reductions, plus a logit soft-cap and the z-loss (math in triton_src/cross_entropy.py). No host synchronization:
// the mean's divisor is computed and used on the device, so the op can be captured in a CUDA graph.
// Training with reduction "mean"/"sum" runs cross_entropy_fwd_grad: the forward also writes the gradient for
// grad_output 1 into a buffer kept until the backward, whose cross_entropy_bwd_into keeps it when the output
// gradients are (1, 0) (checked on the device) and rewrites it otherwise.
#include "ops/cross_entropy.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include "liger_gen/cross_entropy.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::cross_entropy {

using at::Tensor;
using std::optional;
using namespace liger::gen::cross_entropy;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("cross_entropy(Tensor logits, Tensor target, Tensor? weight=None, int ignore_index=-100, float label_smoothing=0.0, float lse_square_scale=0.0, float? softcap=None, str reduction=\"mean\") -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("cross_entropy_fwd(Tensor logits, Tensor target, Tensor? weight, int ignore_index, float label_smoothing, float lse_square_scale, float? softcap, str reduction) -> (Tensor, Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("cross_entropy_bwd(Tensor grad_loss, Tensor? grad_z_loss, Tensor logits, Tensor target, Tensor? weight, Tensor lse, Tensor stats, int ignore_index, float label_smoothing, float lse_square_scale, float? softcap, str reduction) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("cross_entropy_fwd_grad(Tensor logits, Tensor target, Tensor? weight, int ignore_index, float label_smoothing, float lse_square_scale, float? softcap, str reduction) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("cross_entropy_bwd_into(Tensor(a!) grad_logits, Tensor grad_loss, Tensor? grad_z_loss, Tensor logits, Tensor target, Tensor? weight, Tensor lse, Tensor stats, int ignore_index, float label_smoothing, float lse_square_scale, float? softcap, str reduction) -> ()",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

Options make_options(const char* op, int64_t ignore_index, double label_smoothing, double lse_square_scale,
                     optional<double> softcap, const std::string& reduction) {
  Reduction r;
  if (reduction == "mean") {
    r = Reduction::Mean;
  } else if (reduction == "sum") {
    r = Reduction::Sum;
  } else if (reduction == "none") {
    r = Reduction::None;
  } else {
    TORCH_CHECK(false, op, ": reduction must be 'mean', 'sum' or 'none', got '", reduction, "'");
  }
  TORCH_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op, ": label_smoothing must be in [0, 1], got ",
              label_smoothing);
  TORCH_CHECK(lse_square_scale >= 0.0, op, ": lse_square_scale must be >= 0, got ", lse_square_scale);
  TORCH_CHECK(!softcap.has_value() || *softcap > 0.0, op, ": softcap must be > 0 (or None), got ",
              softcap.value_or(0.0));
  return {ignore_index, label_smoothing, lse_square_scale, softcap, r};
}

void check_target_and_weight(const char* op, const Tensor& target, c10::SymIntArrayRef rows_shape,
                             const c10::SymInt& n_classes, const optional<Tensor>& weight, const char* weight_name,
                             c10::Device device) {
  TORCH_CHECK(target.scalar_type() == at::kLong, op, ": target must be int64 class indices, got ",
              target.scalar_type());
  TORCH_CHECK(target.device() == device, op, ": target is on ", target.device(), " but the logits are on ", device);
  bool same = target.dim() == static_cast<int64_t>(rows_shape.size());
  for (int64_t i = 0; same && i < target.dim(); ++i)
    same = target.sym_size(i).sym_eq(rows_shape[i]).guard_bool(__FILE__, __LINE__);
  TORCH_CHECK(same, op, ": target must have shape ", rows_shape, " (the logits' leading dimensions), got ",
              shape_str(target));
  if (!weight.has_value()) return;
  TORCH_CHECK(weight->device() == device, op, ": ", weight_name, " is on ", weight->device(),
              " but the logits are on ", device);
  TORCH_CHECK(at::isFloatingType(weight->scalar_type()), op, ": ", weight_name, " must be floating point, got ",
              weight->scalar_type());
  TORCH_CHECK(weight->dim() == 1, op, ": ", weight_name, " must have shape [", n_classes, "], got ",
              shape_str(*weight));
  TORCH_SYM_CHECK(weight->sym_size(0).sym_eq(n_classes), op, ": ", weight_name, " must have shape [", n_classes,
                  "] (one weight per class), got ", shape_str(*weight));
}

void check_logits(const char* op, const Tensor& logits) {
  TORCH_CHECK(logits.dim() >= 1, op, ": logits must have at least one dimension (the classes), got a 0-d tensor");
  TORCH_CHECK(is_half_or_float(logits.scalar_type()) || (logits.scalar_type() == at::kDouble && !logits.is_cuda()),
              op, ": logits must be float32, bfloat16 or float16 (float64 on CPU), got ", logits.scalar_type());
  TORCH_SYM_CHECK(logits.sym_size(-1).sym_gt(0), op, ": logits must have at least one class (last dimension), got ",
                  shape_str(logits));
}

void check_inputs(const char* op, const Tensor& logits, const Tensor& target, const optional<Tensor>& weight) {
  check_logits(op, logits);
  check_target_and_weight(op, target, logits.sym_sizes().slice(0, logits.dim() - 1), logits.sym_size(-1), weight,
                          "weight", logits.device());
}

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

namespace {

struct Prepared {
  Tensor x;         // soft-capped logits in the accumulation dtype
  Tensor valid;     // target != ignore_index
  Tensor in_range;  // 0 <= target < V
  Tensor t_safe;    // target, 0 where invalid or out of range
  Tensor w;         // class weights (ones without), accumulation dtype
  Tensor w_y;       // weight of the target, NaN out of range
};

Prepared prepare(const Tensor& logits2d, const Tensor& target1d, const optional<Tensor>& weight, const Options& o) {
  Prepared p;
  const int64_t V = logits2d.size(1);
  p.x = logits2d.to(acc_dtype(logits2d));
  if (o.softcap) p.x = (p.x / *o.softcap).tanh() * *o.softcap;
  p.valid = target1d != o.ignore_index;
  p.in_range = (target1d >= 0) & (target1d < V);
  p.t_safe = at::where(p.valid & p.in_range, target1d, at::zeros({}, target1d.options()));
  p.w = weight ? weight->to(p.x.scalar_type()) : at::ones({V}, p.x.options());
  p.w_y = at::where(p.in_range, p.w.index_select(0, p.t_safe), at::full({}, NAN, p.x.options()));
  return p;
}

}  // namespace

RowsResult rows_cpu(const Tensor& logits2d, const Tensor& target1d, const optional<Tensor>& weight, const Options& o) {
  const int64_t V = logits2d.size(1);
  Prepared p = prepare(logits2d, target1d, weight, o);
  Tensor lse = p.x.logsumexp(1);
  Tensor x_y = p.x.gather(1, p.t_safe.unsqueeze(1)).squeeze(1);
  Tensor ce = (1.0 - o.label_smoothing) * p.w_y * (lse - x_y);
  if (o.label_smoothing > 0)
    ce = ce + (o.label_smoothing / V) * (p.w.sum() * lse - at::mv(p.x, p.w));
  Tensor zero = at::zeros({}, p.x.options());
  Tensor z = o.lse_square_scale * lse * lse;
  RowsResult r;
  r.ce = at::where(p.valid, ce, zero);
  r.z = at::where(p.valid, z, zero);
  r.lse = at::where(p.valid, lse, zero);
  Tensor count = p.valid.sum().to(p.x.scalar_type());
  Tensor d_loss = weight ? at::where(p.valid, p.w_y, zero).sum() : count;
  r.stats = at::stack({d_loss, count, p.w.sum()});
  return r;
}

std::pair<Tensor, Tensor> finalize_cpu(const RowsResult& r, const Options& o, at::ScalarType dtype,
                                       at::IntArrayRef target_shape) {
  Tensor ce = r.ce, z = r.z;
  if (o.reduction == Reduction::None)
    return {(ce + z).to(dtype).reshape(target_shape), z.to(dtype).reshape(target_shape)};
  Tensor ce_sum = ce.sum(), z_sum = z.sum();
  if (o.reduction == Reduction::Mean) {
    ce_sum = ce_sum / r.stats[0];
    z_sum = z_sum / r.stats[1];
  }
  return {(ce_sum + z_sum).to(dtype), z_sum.to(dtype)};
}

Tensor grad_cpu(const Tensor& logits2d, const Tensor& target1d, const optional<Tensor>& weight, const Tensor& lse,
                const Tensor& stats, const Tensor& grad_loss, const optional<Tensor>& grad_z, const Options& o) {
  const int64_t V = logits2d.size(1);
  Prepared p = prepare(logits2d, target1d, weight, o);
  const auto acc = p.x.scalar_type();
  Tensor g_loss = grad_loss.to(acc).reshape({-1});
  Tensor g_z = grad_z ? g_loss + grad_z->to(acc).reshape({-1}) : g_loss;  // no z_loss gradient: 0
  Tensor a_loss = g_loss, a_z = g_z;
  if (o.reduction == Reduction::Mean) {
    a_loss = g_loss / stats[0].to(acc);
    a_z = g_z / stats[1].to(acc);
  }
  const double eps = o.label_smoothing / V;
  Tensor coef_p = a_loss * ((1.0 - o.label_smoothing) * p.w_y + eps * p.w.sum()) +
                  a_z * (2.0 * o.lse_square_scale) * lse.to(acc);
  Tensor g = (p.x - lse.to(acc).unsqueeze(1)).exp() * coef_p.unsqueeze(1) - (a_loss * eps).unsqueeze(1) * p.w;
  Tensor onehot = at::zeros_like(g).scatter_(1, p.t_safe.unsqueeze(1), 1.0);
  g = g - onehot * (a_loss * (1.0 - o.label_smoothing) * p.w_y).unsqueeze(1).expand_as(g);
  if (o.softcap) {
    Tensor t = p.x / *o.softcap;
    g = g * (1.0 - t * t);
  }
  return at::where(p.valid.unsqueeze(1), g, at::zeros({}, g.options()));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> fwd_cpu(const Tensor& logits, const Tensor& target,
                                                   const optional<Tensor>& weight, int64_t ignore_index,
                                                   double label_smoothing, double lse_square_scale,
                                                   optional<double> softcap, c10::string_view reduction) {
  check_inputs("cross_entropy", logits, target, weight);
  Options o = make_options("cross_entropy", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  const int64_t V = logits.size(-1);
  RowsResult r = rows_cpu(logits.reshape({-1, V}), target.reshape({-1}), weight, o);
  auto [loss, z] = finalize_cpu(r, o, logits.scalar_type(), target.sizes());
  return {loss, z, r.lse, r.stats};
}

std::tuple<Tensor, Tensor> cross_entropy_cpu(const Tensor& logits, const Tensor& target, const optional<Tensor>& weight,
                                             int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                             optional<double> softcap, c10::string_view reduction) {
  auto [loss, z, lse, stats] =
      fwd_cpu(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
  return {loss, z};
}

void check_backward_inputs(const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                           const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, const Options& o) {
  check_inputs("cross_entropy_bwd", logits, target, weight);
  for (const Tensor* g : {&grad_loss, grad_z ? &*grad_z : &grad_loss}) {
    TORCH_CHECK(g->device() == logits.device(),
                "cross_entropy_bwd: the output gradients must be on the logits' device");
    if (o.reduction == Reduction::None) {
      TORCH_SYM_CHECK(g->sym_numel().sym_eq(target.sym_numel()),
                      "cross_entropy_bwd: with reduction 'none' the output gradients must have target's shape ",
                      shape_str(target), ", got ", shape_str(*g));
    } else {
      TORCH_CHECK(g->dim() == 0, "cross_entropy_bwd: the output gradients of a reduced loss must be 0-d, got ",
                  shape_str(*g));
    }
  }
  TORCH_SYM_CHECK(lse.sym_numel().sym_eq(target.sym_numel()), "cross_entropy_bwd: lse must have one value per row");
  TORCH_CHECK(stats.dim() == 1 && stats.size(0) == 3, "cross_entropy_bwd: stats must have shape [3], got ",
              shape_str(stats));
}

Tensor bwd_cpu(const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
               const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, int64_t ignore_index,
               double label_smoothing, double lse_square_scale, optional<double> softcap, c10::string_view reduction) {
  Options o = make_options("cross_entropy_bwd", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_backward_inputs(grad_loss, grad_z, logits, target, weight, lse, stats, o);
  const int64_t V = logits.size(-1);
  Tensor g = grad_cpu(logits.reshape({-1, V}), target.reshape({-1}), weight, lse.reshape({-1}), stats, grad_loss,
                      grad_z, o);
  return g.to(logits.scalar_type()).reshape(logits.sizes());
}

void check_reduced(const char* op, const Options& o) {
  TORCH_CHECK(o.reduction != Reduction::None, op, ": reduction must be 'mean' or 'sum' (the gradient of 'none' ",
              "depends on a gradient per row), got 'none'");
}

void check_grad_logits(const Tensor& grad_logits, const Tensor& logits) {
  TORCH_CHECK(grad_logits.device() == logits.device() && grad_logits.scalar_type() == logits.scalar_type(),
              "cross_entropy_bwd_into: grad_logits must be ", logits.scalar_type(), " on ", logits.device(),
              " like the logits, got ", grad_logits.scalar_type(), " on ", grad_logits.device());
  bool same = grad_logits.dim() == logits.dim();
  for (int64_t i = 0; same && i < logits.dim(); ++i)
    same = grad_logits.sym_size(i).sym_eq(logits.sym_size(i)).guard_bool(__FILE__, __LINE__);
  TORCH_CHECK(same, "cross_entropy_bwd_into: grad_logits must have the logits' shape ", shape_str(logits), ", got ",
              shape_str(grad_logits));
}

// (loss, z_loss, lse, stats, gradient of loss w.r.t. the logits for grad_loss 1 and grad_z_loss 0).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> fwd_grad_cpu(const Tensor& logits, const Tensor& target,
                                                                const optional<Tensor>& weight, int64_t ignore_index,
                                                                double label_smoothing, double lse_square_scale,
                                                                optional<double> softcap, c10::string_view reduction) {
  Options o = make_options("cross_entropy", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_reduced("cross_entropy_fwd_grad", o);
  auto [loss, z, lse, stats] =
      fwd_cpu(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
  const int64_t V = logits.size(-1);
  Tensor g = grad_cpu(logits.reshape({-1, V}), target.reshape({-1}), weight, lse, stats, at::ones({}, lse.options()),
                      at::zeros({}, lse.options()), o);
  return {loss, z, lse, stats, g.to(logits.scalar_type()).reshape(logits.sizes()).contiguous()};
}

// grad_logits holds the gradient for (grad_loss, grad_z_loss) = (1, 0) (cross_entropy_fwd_grad's); for other
// output gradients it is rewritten with theirs.
void bwd_into_cpu(const Tensor& grad_logits, const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits,
                  const Tensor& target, const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats,
                  int64_t ignore_index, double label_smoothing, double lse_square_scale, optional<double> softcap,
                  c10::string_view reduction) {
  Options o = make_options("cross_entropy_bwd_into", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_reduced("cross_entropy_bwd_into", o);
  check_backward_inputs(grad_loss, grad_z, logits, target, weight, lse, stats, o);
  check_grad_logits(grad_logits, logits);
  if (grad_loss.item<double>() == 1.0 && (!grad_z || grad_z->item<double>() == 0.0)) return;  // a CPU read
  grad_logits.copy_(bwd_cpu(grad_loss, grad_z, logits, target, weight, lse, stats, ignore_index, label_smoothing,
                            lse_square_scale, softcap, reduction));
}

// ---- Meta (SymInt-clean)

std::tuple<Tensor, Tensor, Tensor, Tensor> fwd_meta(const Tensor& logits, const Tensor& target,
                                                    const optional<Tensor>& weight, int64_t ignore_index,
                                                    double label_smoothing, double lse_square_scale,
                                                    optional<double> softcap, c10::string_view reduction) {
  check_inputs("cross_entropy", logits, target, weight);
  Options o = make_options("cross_entropy", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  auto out_shape = o.reduction == Reduction::None ? target.sym_sizes() : c10::SymIntArrayRef{};
  Tensor loss = at::empty_symint(out_shape, logits.options());
  Tensor z = at::empty_symint(out_shape, logits.options());
  auto acc = logits.options().dtype(acc_dtype(logits));
  return {loss, z, at::empty_symint({target.sym_numel()}, acc), at::empty({3}, acc)};
}

std::tuple<Tensor, Tensor> cross_entropy_meta(const Tensor& logits, const Tensor& target,
                                              const optional<Tensor>& weight, int64_t ignore_index,
                                              double label_smoothing, double lse_square_scale,
                                              optional<double> softcap, c10::string_view reduction) {
  auto [loss, z, lse, stats] =
      fwd_meta(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
  return {loss, z};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> fwd_grad_meta(const Tensor& logits, const Tensor& target,
                                                                 const optional<Tensor>& weight, int64_t ignore_index,
                                                                 double label_smoothing, double lse_square_scale,
                                                                 optional<double> softcap,
                                                                 c10::string_view reduction) {
  Options o = make_options("cross_entropy", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_reduced("cross_entropy_fwd_grad", o);
  auto [loss, z, lse, stats] =
      fwd_meta(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
  return {loss, z, lse, stats, at::empty_symint(logits.sym_sizes(), logits.options())};
}

void bwd_into_meta(const Tensor& grad_logits, const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits,
                   const Tensor& target, const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats,
                   int64_t ignore_index, double label_smoothing, double lse_square_scale, optional<double> softcap,
                   c10::string_view reduction) {
  Options o = make_options("cross_entropy_bwd_into", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_reduced("cross_entropy_bwd_into", o);
  check_backward_inputs(grad_loss, grad_z, logits, target, weight, lse, stats, o);
  check_grad_logits(grad_logits, logits);
}

Tensor bwd_meta(const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, int64_t ignore_index,
                double label_smoothing, double lse_square_scale, optional<double> softcap,
                c10::string_view reduction) {
  Options o = make_options("cross_entropy_bwd", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_backward_inputs(grad_loss, grad_z, logits, target, weight, lse, stats, o);
  return at::empty_symint(logits.sym_sizes(), logits.options());
}

// ---- CUDA launcher

namespace {

int64_t row_block(int64_t cols) { return cols <= 1024 ? 1024 : (cols <= 4096 ? 4096 : 8192); }
// The training forward's blocks (triton_src/cross_entropy.py's GRAD_ROW_BLOCKS): FAST variants take 16384 x 32
// warps above 65536 classes and 2048 x 4 (four programs per SM) from 4097 to 65536.
int64_t grad_row_block(int64_t cols, bool fast) {
  if (fast && cols > 65536) return 16384;
  if (fast && cols > 4096) return 2048;
  return row_block(cols);
}

// Resident warps per SM of the fused forward (see fwd_grad_cuda).
constexpr int64_t kFwdGradWarpsPerSm = 16;

void check_cuda_sizes(const char* op, int64_t rows, int64_t cols) {
  TORCH_CHECK(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 rows and classes are supported, got ", rows, " x ", cols);
}

Tensor weight32(const optional<Tensor>& weight) {
  return weight ? weight->to(at::kFloat).contiguous() : Tensor();
}

}  // namespace

Tensor stats_cuda(const Tensor& target1d, const Tensor& w32, int64_t n_classes, const Options& o, const Tensor& sync) {
  Tensor stats = at::empty({3}, target1d.options().dtype(at::kFloat));
  const LaunchContext ctx = launch_context(target1d);
  const auto& v = cross_entropy_stats_kernel_get({}, ctx.arch_slot);
  cross_entropy_stats_kernel_launch(v, ctx, Grid{1}, ptr(target1d), ptr(w32), ptr(stats), ptr(sync),
                                    target1d.numel(), static_cast<int32_t>(n_classes), o.ignore_index, w32.defined(),
                                    sync.defined() ? static_cast<int32_t>(sync.numel()) : 0);
  return stats;
}

void rows_cuda(const Tensor& x2d, int64_t row_stride, const Tensor& target1d, const Tensor& w32, const Tensor& stats,
               const Tensor& ce_row, const Tensor& z_row, const Tensor& lse, const Options& o, bool store_grad) {
  const int64_t rows = target1d.numel(), cols = x2d.size(-1);
  if (rows == 0) return;
  const int64_t vec = vec_elems(x2d.scalar_type());
  // Aligned variants promise 16-byte alignment of every pointer (fused_linear_cross_entropy passes row slices).
  const bool aligned = cols % vec == 0 && row_stride % vec == 0 && aligned16(x2d) && aligned16(target1d) &&
                       aligned16(ce_row) && aligned16(z_row) && aligned16(lse);
  const LaunchContext ctx = launch_context(x2d);
  // FAST variants: no class weight, soft-cap or label smoothing (see fwd_grad_cuda)
  const bool fast = !w32.defined() && !o.softcap.has_value() && o.label_smoothing == 0.0;
  const auto& v = cross_entropy_fwd_kernel_get({aligned, row_block(cols), fast, x2d.scalar_type()}, ctx.arch_slot);
  cross_entropy_fwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(rows)}, ptr(x2d), ptr(target1d), ptr(w32),
                                  ptr(stats), ptr(ce_row), ptr(z_row), ptr(lse), static_cast<int32_t>(cols / v.ALIGN),
                                  row_stride / v.ALIGN, o.ignore_index, static_cast<float>(o.label_smoothing),
                                  static_cast<float>(o.lse_square_scale), static_cast<float>(o.softcap.value_or(1.0)),
                                  w32.defined(), o.softcap.has_value(), store_grad, o.reduction == Reduction::Mean);
}

void finalize_cuda(const Tensor& ce_row, const Tensor& z_row, const Tensor& stats, const Tensor& loss,
                   const Tensor& z_loss, Reduction reduction) {
  const int64_t rows = ce_row.numel();
  const LaunchContext ctx = launch_context(ce_row);
  const auto& v = cross_entropy_finalize_kernel_get({loss.scalar_type()}, ctx.arch_slot);
  const uint32_t grid = reduction == Reduction::None ? static_cast<uint32_t>(ceil_div(rows, v.BLOCK)) : 1;
  if (grid == 0) return;
  cross_entropy_finalize_kernel_launch(v, ctx, Grid{grid}, ptr(ce_row), ptr(z_row), ptr(stats), ptr(loss),
                                       ptr(z_loss), rows, static_cast<int32_t>(reduction));
}

std::tuple<Tensor, Tensor, Tensor, Tensor> fwd_cuda(const Tensor& logits, const Tensor& target,
                                                    const optional<Tensor>& weight, int64_t ignore_index,
                                                    double label_smoothing, double lse_square_scale,
                                                    optional<double> softcap, c10::string_view reduction) {
  check_inputs("cross_entropy", logits, target, weight);
  Options o = make_options("cross_entropy", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  c10::DeviceGuard guard(logits.device());
  Rows x = as_rows(logits);
  check_cuda_sizes("cross_entropy", x.rows, x.cols);
  Tensor t = target.reshape({-1}).contiguous();
  Tensor w32 = weight32(weight);
  auto f32 = logits.options().dtype(at::kFloat);
  Tensor ce_row = at::empty({x.rows}, f32), z_row = at::empty({x.rows}, f32), lse = at::empty({x.rows}, f32);
  Tensor stats = stats_cuda(t, w32, x.cols, o);
  rows_cuda(x.t, x.row_stride, t, w32, stats, ce_row, z_row, lse, o, false);
  auto out_shape = o.reduction == Reduction::None ? target.sizes() : at::IntArrayRef{};
  Tensor loss = at::empty(out_shape, logits.options()), z = at::empty(out_shape, logits.options());
  finalize_cuda(ce_row, z_row, stats, loss, z, o.reduction);
  return {loss, z, lse, stats};
}

std::tuple<Tensor, Tensor> cross_entropy_cuda(const Tensor& logits, const Tensor& target,
                                              const optional<Tensor>& weight, int64_t ignore_index,
                                              double label_smoothing, double lse_square_scale,
                                              optional<double> softcap, c10::string_view reduction) {
  auto [loss, z, lse, stats] =
      fwd_cuda(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
  return {loss, z};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> fwd_grad_cuda(const Tensor& logits, const Tensor& target,
                                                                 const optional<Tensor>& weight, int64_t ignore_index,
                                                                 double label_smoothing, double lse_square_scale,
                                                                 optional<double> softcap,
                                                                 c10::string_view reduction) {
  check_inputs("cross_entropy", logits, target, weight);
  Options o = make_options("cross_entropy", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_reduced("cross_entropy_fwd_grad", o);
  c10::DeviceGuard guard(logits.device());
  Rows x = as_rows(logits);
  check_cuda_sizes("cross_entropy", x.rows, x.cols);
  Tensor t = target.reshape({-1}).contiguous();
  Tensor w32 = weight32(weight);
  auto f32 = logits.options().dtype(at::kFloat);
  Tensor ce_row = at::empty({x.rows}, f32), z_row = at::empty({x.rows}, f32), lse = at::empty({x.rows}, f32);
  Tensor dx = at::empty(logits.sizes(), logits.options());
  const LaunchContext ctx = launch_context(logits);
  const int64_t vec = vec_elems(logits.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && aligned16(x.t) && aligned16(dx) &&
                       aligned16(t) && aligned16(ce_row) && aligned16(z_row) && aligned16(lse);
  // FAST variants: no class weight, soft-cap or label smoothing (about a third of the instructions per logit)
  const bool fast = !w32.defined() && !o.softcap.has_value() && o.label_smoothing == 0.0;
  const auto& v = cross_entropy_fwd_grad_kernel_get({aligned, grad_row_block(x.cols, fast), fast,
                                                     logits.scalar_type()}, ctx.arch_slot);
  // About one row per SM in flight (16 warps): the gradient pass re-reads the row from L2, which holds
  // 132 rows of 256 KB (128256 bf16 classes) but not the 4 per SM that occupancy alone would admit.
  const int64_t per_sm = std::max<int64_t>(1, kFwdGradWarpsPerSm / v.image.num_warps);
  const int64_t programs = std::max<int64_t>(
      1, std::min<int64_t>({x.rows, max_resident_programs(v.image, ctx), int64_t(ctx.sm_count) * per_sm}));
  // TAIL variants split the rows left over after the last full round over the programs: a ticket counter and one
  // counter per left-over row (fewer than the programs), zeroed by the stats kernel, and one partial sum per part.
  Tensor sync, slots;
  if (v.TAIL && x.rows > 0) {
    sync = at::empty({programs + 1}, t.options().dtype(at::kInt));
    slots = at::empty({programs}, f32);
  }
  Tensor stats = stats_cuda(t, w32, x.cols, o, sync);
  if (x.rows > 0) {
    cross_entropy_fwd_grad_kernel_launch(
        v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(x.t), ptr(t), ptr(w32), ptr(stats), ptr(ce_row),
        ptr(z_row), ptr(lse), ptr(dx), ptr(sync), ptr(slots), static_cast<int32_t>(x.rows),
        static_cast<int32_t>(x.cols / v.ALIGN), x.row_stride / v.ALIGN, x.cols / v.ALIGN, o.ignore_index,
        static_cast<float>(o.label_smoothing), static_cast<float>(o.lse_square_scale),
        static_cast<float>(o.softcap.value_or(1.0)), w32.defined(), o.softcap.has_value(),
        o.reduction == Reduction::Mean);
  }
  Tensor loss = at::empty({}, logits.options()), z = at::empty({}, logits.options());
  finalize_cuda(ce_row, z_row, stats, loss, z, o.reduction);
  return {loss, z, lse, stats, dx};
}

namespace {

// The general gradient into dx (contiguous, the logits' shape). skip_unit: dx holds the gradient for output
// gradients (1, 0) already, and each program returns when they are that (a persistent grid of one wave, so the
// skip costs one launch); otherwise one program per row.
void bwd_launch(const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, const Options& o,
                const Tensor& dx, bool skip_unit) {
  Rows x = as_rows(logits);
  if (x.rows == 0) return;
  check_cuda_sizes("cross_entropy_bwd", x.rows, x.cols);
  Tensor t = target.reshape({-1}).contiguous();
  Tensor w32 = weight32(weight);
  Tensor gl = grad_loss.to(logits.scalar_type()).reshape({-1}).contiguous();
  // without a z_loss gradient the kernel reads none: gl stands in as a valid pointer
  Tensor gz = grad_z ? grad_z->to(logits.scalar_type()).reshape({-1}).contiguous() : gl;
  Tensor lse32 = lse.to(at::kFloat).contiguous();
  Tensor st = stats.to(at::kFloat).contiguous();
  const int64_t vec = vec_elems(logits.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && aligned16(x.t) && aligned16(dx) &&
                       aligned16(t) && aligned16(lse32) && aligned16(gl) && aligned16(gz);
  const LaunchContext ctx = launch_context(logits);
  const auto& v = cross_entropy_bwd_kernel_get({aligned, row_block(x.cols), logits.scalar_type()}, ctx.arch_slot);
  const int64_t programs = skip_unit ? std::min<int64_t>(x.rows, max_resident_programs(v.image, ctx)) : x.rows;
  cross_entropy_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(x.t), ptr(t), ptr(w32), ptr(st),
                                  ptr(lse32), ptr(gl), ptr(gz), ptr(dx), static_cast<int32_t>(x.rows),
                                  static_cast<int32_t>(x.cols / v.ALIGN), x.row_stride / v.ALIGN, x.cols / v.ALIGN,
                                  o.reduction == Reduction::None ? 1 : 0, o.ignore_index,
                                  static_cast<float>(o.label_smoothing), static_cast<float>(o.lse_square_scale),
                                  static_cast<float>(o.softcap.value_or(1.0)), w32.defined(), o.softcap.has_value(),
                                  o.reduction == Reduction::Mean, skip_unit, grad_z.has_value());
}

}  // namespace

Tensor bwd_cuda(const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, int64_t ignore_index,
                double label_smoothing, double lse_square_scale, optional<double> softcap,
                c10::string_view reduction) {
  Options o = make_options("cross_entropy_bwd", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_backward_inputs(grad_loss, grad_z, logits, target, weight, lse, stats, o);
  c10::DeviceGuard guard(logits.device());
  Tensor dx = at::empty(logits.sizes(), logits.options());
  bwd_launch(grad_loss, grad_z, logits, target, weight, lse, stats, o, dx, false);
  return dx;
}

void bwd_into_cuda(const Tensor& grad_logits, const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits,
                   const Tensor& target, const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats,
                   int64_t ignore_index, double label_smoothing, double lse_square_scale, optional<double> softcap,
                   c10::string_view reduction) {
  Options o = make_options("cross_entropy_bwd_into", ignore_index, label_smoothing, lse_square_scale, softcap,
                           std::string(reduction));
  check_reduced("cross_entropy_bwd_into", o);
  check_backward_inputs(grad_loss, grad_z, logits, target, weight, lse, stats, o);
  check_grad_logits(grad_logits, logits);
  TORCH_CHECK(grad_logits.is_contiguous(), "cross_entropy_bwd_into: grad_logits must be contiguous");
  c10::DeviceGuard guard(logits.device());
  bwd_launch(grad_loss, grad_z, logits, target, weight, lse, stats, o, grad_logits, true);
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("cross_entropy", [](int arch_slot) {
  std::vector<std::string> missing;
  if (!cross_entropy_stats_kernel_find({}, arch_slot)) missing.push_back(cross_entropy_stats_kernel_key{}.str());
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (int64_t cols : {1, 1024, 1025, 4096, 4097, 262144})
      for (bool aligned : {false, true}) {
        for (bool fast : {false, true}) {
          cross_entropy_fwd_kernel_key fk{aligned, row_block(cols), fast, dt};
          if (!cross_entropy_fwd_kernel_find(fk, arch_slot)) missing.push_back(fk.str());
        }
        for (bool fast : {false, true}) {
          cross_entropy_fwd_grad_kernel_key gk{aligned, grad_row_block(cols, fast), fast, dt};
          if (!cross_entropy_fwd_grad_kernel_find(gk, arch_slot)) missing.push_back(gk.str());
        }
        cross_entropy_bwd_kernel_key bk{aligned, row_block(cols), dt};
        if (!cross_entropy_bwd_kernel_find(bk, arch_slot)) missing.push_back(bk.str());
      }
    cross_entropy_finalize_kernel_key fin{dt};
    if (!cross_entropy_finalize_kernel_find(fin, arch_slot)) missing.push_back(fin.str());
    column_sum_accumulate_kernel_key cs{dt};
    if (!column_sum_accumulate_kernel_find(cs, arch_slot)) missing.push_back(cs.str());
  }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

namespace {

const auto& fwd_op() {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("liger::cross_entropy_fwd", "").typed<decltype(fwd_cpu)>();
  return op;
}

const auto& fwd_grad_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("liger::cross_entropy_fwd_grad", "")
                       .typed<decltype(fwd_grad_cpu)>();
  return op;
}

const auto& bwd_into_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("liger::cross_entropy_bwd_into", "")
                       .typed<decltype(bwd_into_cpu)>();
  return op;
}

}  // namespace

class CrossEntropyBackward : public torch::autograd::Function<CrossEntropyBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& grad_loss,
                                                const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                                                const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats,
                                                int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                                optional<double> softcap, std::string reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::cross_entropy_bwd", "").typed<decltype(bwd_cpu)>();
    return {op.call(grad_loss, grad_z, logits, target, weight, lse, stats, ignore_index, label_smoothing,
                    lse_square_scale, softcap, reduction)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false,
                "cross_entropy: second derivatives are not supported (liger::cross_entropy_bwd is not differentiable)");
  }
};

// Gradients for the logits only: target and the class weights are not differentiated (as F.cross_entropy's
// weight, they are constants of the loss). fuse ("mean"/"sum" while training): the forward also computes the
// gradient for output gradients (1, 0) and keeps it (memory: one logits-sized tensor from forward to backward,
// the size of the gradient the backward would allocate anyway; it becomes logits.grad without a copy).
class CrossEntropyForward : public torch::autograd::Function<CrossEntropyForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& logits,
                                                const Tensor& target, const optional<Tensor>& weight,
                                                int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                                optional<double> softcap, std::string reduction, bool fuse) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor loss, z, lse, stats, grad;
    if (fuse) {
      std::tie(loss, z, lse, stats, grad) = fwd_grad_op().call(logits, target, weight, ignore_index, label_smoothing,
                                                               lse_square_scale, softcap, reduction);
    } else {
      std::tie(loss, z, lse, stats) =
          fwd_op().call(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
    }
    ctx->save_for_backward({logits, target, weight.value_or(Tensor()), lse, stats, grad});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["lse_square_scale"] = lse_square_scale;
    ctx->saved_data["has_softcap"] = softcap.has_value();
    ctx->saved_data["softcap"] = softcap.value_or(0.0);
    ctx->saved_data["reduction"] = reduction;
    ctx->mark_non_differentiable({lse, stats});
    // lse and stats never have a gradient, and a loss whose z_loss is not used gets none for it: no zero tensors
    // (three fill kernels per backward); the backward makes the one scalar it needs.
    ctx->set_materialize_grads(false);
    return {loss, z, lse, stats};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined() && !grads[1].defined()) return torch::autograd::variable_list(9);
    if (!grads[0].defined()) grads[0] = at::zeros_like(grads[1]);
    optional<Tensor> grad_z;  // none when the z_loss output got no gradient: the kernel takes it as 0
    if (grads[1].defined()) grad_z = grads[1];
    auto saved = ctx->get_saved_variables();
    optional<Tensor> weight;
    if (saved[2].defined()) weight = saved[2];
    optional<double> softcap;
    if (ctx->saved_data["has_softcap"].toBool()) softcap = ctx->saved_data["softcap"].toDouble();
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const double label_smoothing = ctx->saved_data["label_smoothing"].toDouble();
    const double lse_square_scale = ctx->saved_data["lse_square_scale"].toDouble();
    const std::string& reduction = ctx->saved_data["reduction"].toStringRef();
    Tensor dlogits;
    if (!ctx->needs_input_grad(0)) {
    } else if (saved[5].defined() && !torch::autograd::get_current_graph_task_keep_graph() &&
               !at::GradMode::is_enabled()) {
      // The graph is freed after this backward, so the kept gradient can be completed in place and handed out
      // (a retained graph, or create_graph, takes the general path below: a second backward must find the
      // buffer as the forward left it, and a second derivative must raise).
      dlogits = saved[5];
      bwd_into_op().call(dlogits, grads[0], grad_z, saved[0], saved[1], weight, saved[3], saved[4], ignore_index,
                         label_smoothing, lse_square_scale, softcap, reduction);
    } else {
      dlogits = CrossEntropyBackward::apply(grads[0], grad_z, saved[0], saved[1], weight, saved[3], saved[4],
                                            ignore_index, label_smoothing, lse_square_scale, softcap, reduction)[0];
    }
    return {dlogits, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> cross_entropy_autograd(const Tensor& logits, const Tensor& target,
                                                  const optional<Tensor>& weight, int64_t ignore_index,
                                                  double label_smoothing, double lse_square_scale,
                                                  optional<double> softcap, c10::string_view reduction) {
  if (!(at::GradMode::is_enabled() && logits.requires_grad())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, z, lse, stats] = fwd_op().call(logits, target, weight, ignore_index, label_smoothing,
                                               lse_square_scale, softcap, reduction);
    return {loss, z};
  }
  const bool fuse = reduction != "none";
  auto out = CrossEntropyForward::apply(logits, target, weight, ignore_index, label_smoothing, lse_square_scale,
                                        softcap, std::string(reduction), fuse);
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> fwd_autograd(const Tensor& logits, const Tensor& target,
                                                        const optional<Tensor>& weight, int64_t ignore_index,
                                                        double label_smoothing, double lse_square_scale,
                                                        optional<double> softcap, c10::string_view reduction) {
  auto out = CrossEntropyForward::apply(logits, target, weight, ignore_index, label_smoothing, lse_square_scale,
                                        softcap, std::string(reduction), false);
  return {out[0], out[1], out[2], out[3]};
}

Tensor bwd_autograd(const Tensor& grad_loss, const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                    const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, int64_t ignore_index,
                    double label_smoothing, double lse_square_scale, optional<double> softcap,
                    c10::string_view reduction) {
  return CrossEntropyBackward::apply(grad_loss, grad_z, logits, target, weight, lse, stats, ignore_index,
                                     label_smoothing, lse_square_scale, softcap, std::string(reduction))[0];
}

// The fused pieces compute a gradient; they have none themselves.
void check_not_differentiated(const char* op, std::initializer_list<const Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return;
  for (const Tensor* t : inputs)
    TORCH_CHECK(!(t->defined() && t->requires_grad()), "liger::", op,
                " is not differentiable (it computes the logits' gradient): call liger::cross_entropy");
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> fwd_grad_autograd(const Tensor& logits, const Tensor& target,
                                                                     const optional<Tensor>& weight,
                                                                     int64_t ignore_index, double label_smoothing,
                                                                     double lse_square_scale, optional<double> softcap,
                                                                     c10::string_view reduction) {
  check_not_differentiated("cross_entropy_fwd_grad", {&logits, weight ? &*weight : &logits});
  at::AutoDispatchBelowADInplaceOrView guard;
  return fwd_grad_op().call(logits, target, weight, ignore_index, label_smoothing, lse_square_scale, softcap,
                            reduction);
}

void bwd_into_autograd(c10::DispatchKeySet ks, const Tensor& grad_logits, const Tensor& grad_loss,
                       const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                       const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, int64_t ignore_index,
                       double label_smoothing, double lse_square_scale, optional<double> softcap,
                       c10::string_view reduction) {
  check_not_differentiated("cross_entropy_bwd_into",
                           {&grad_logits, &grad_loss, grad_z ? &*grad_z : &grad_loss, &logits});
  bwd_into_op().redispatch(ks & c10::after_autograd_keyset, grad_logits, grad_loss, grad_z, logits, target, weight,
                           lse, stats, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
}

// grad_logits is written in place: bump its version, as ATen's in-place ops do.
void bwd_into_ad_inplace(c10::DispatchKeySet ks, const Tensor& grad_logits, const Tensor& grad_loss,
                         const optional<Tensor>& grad_z, const Tensor& logits, const Tensor& target,
                         const optional<Tensor>& weight, const Tensor& lse, const Tensor& stats, int64_t ignore_index,
                         double label_smoothing, double lse_square_scale, optional<double> softcap,
                         c10::string_view reduction) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    bwd_into_op().redispatch(ks & c10::after_ADInplaceOrView_keyset, grad_logits, grad_loss, grad_z, logits, target,
                             weight, lse, stats, ignore_index, label_smoothing, lse_square_scale, softcap, reduction);
  }
  torch::autograd::impl::bump_version(grad_logits);
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("cross_entropy", &cross_entropy_cpu);
  m.impl("cross_entropy_fwd", &fwd_cpu);
  m.impl("cross_entropy_bwd", &bwd_cpu);
  m.impl("cross_entropy_fwd_grad", &fwd_grad_cpu);
  m.impl("cross_entropy_bwd_into", &bwd_into_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("cross_entropy", &cross_entropy_meta);
  m.impl("cross_entropy_fwd", &fwd_meta);
  m.impl("cross_entropy_bwd", &bwd_meta);
  m.impl("cross_entropy_fwd_grad", &fwd_grad_meta);
  m.impl("cross_entropy_bwd_into", &bwd_into_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("cross_entropy", &cross_entropy_cuda);
  m.impl("cross_entropy_fwd", &fwd_cuda);
  m.impl("cross_entropy_bwd", &bwd_cuda);
  m.impl("cross_entropy_fwd_grad", &fwd_grad_cuda);
  m.impl("cross_entropy_bwd_into", &bwd_into_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("cross_entropy", &cross_entropy_autograd);
  m.impl("cross_entropy_fwd", &fwd_autograd);
  m.impl("cross_entropy_bwd", &bwd_autograd);
  m.impl("cross_entropy_fwd_grad", &fwd_grad_autograd);
  m.impl("cross_entropy_bwd_into", &bwd_into_autograd);
}

TORCH_LIBRARY_IMPL(liger, ADInplaceOrView, m) { m.impl("cross_entropy_bwd_into", &bwd_into_ad_inplace); }

}  // namespace liger::cross_entropy
