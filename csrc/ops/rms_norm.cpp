// RMSNorm: y = x * rsqrt(mean(x^2) + eps) * (offset + weight) over the last dimension.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/rms_norm.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::rms_norm {

using at::Tensor;
using std::optional;
using namespace liger::gen::rms_norm;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("rms_norm(Tensor x, Tensor? weight, float eps=1e-06, float offset=0.0, str casting_mode=\"llama\") -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("rms_norm_fwd(Tensor x, Tensor? weight, float eps, float offset, str casting_mode) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("rms_norm_bwd(Tensor dy, Tensor x, Tensor? weight, Tensor rstd, float offset, str casting_mode, "
        "bool compute_dw) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

int64_t casting_code(c10::string_view mode) {
  if (mode == "llama") return CASTING_LLAMA;
  if (mode == "gemma") return CASTING_GEMMA;
  if (mode == "none") return CASTING_NONE;
  TORCH_CHECK(false, "rms_norm: casting_mode must be 'llama', 'gemma' or 'none', got '", mode, "'");
}

void check_inputs(const Tensor& x, const optional<Tensor>& weight, c10::string_view mode) {
  casting_code(mode);
  TORCH_CHECK(x.dim() >= 1, "rms_norm: x must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()),
              "rms_norm: x must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
  TORCH_SYM_CHECK(x.sym_size(-1).sym_gt(0), "rms_norm: x's last dimension must not be empty, got x of shape ",
                  shape_str(x));
  if (!weight.has_value()) return;
  const Tensor& w = *weight;
  TORCH_CHECK(w.device() == x.device(), "rms_norm: weight is on ", w.device(), " but x is on ", x.device(),
              "; both must be on the same device");
  TORCH_CHECK(at::isFloatingType(w.scalar_type()), "rms_norm: weight must be a floating-point tensor, got ",
              w.scalar_type());
  TORCH_CHECK(w.dim() == 1, "rms_norm: weight must be 1-D with x's last dimension (", x.sym_size(-1),
              ") elements, got shape ", shape_str(w));
  TORCH_SYM_CHECK(w.sym_size(0).sym_eq(x.sym_size(-1)), "rms_norm: weight must have shape [", x.sym_size(-1),
                  "] to match x's last dimension, got ", shape_str(w));
}

void check_backward_inputs(const Tensor& dy, const Tensor& x, const Tensor& rstd) {
  TORCH_CHECK(dy.device() == x.device() && rstd.device() == x.device(),
              "rms_norm_bwd: dy, x and rstd must be on one device, got ", dy.device(), ", ", x.device(), ", ",
              rstd.device());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "rms_norm_bwd: dy must have x's dtype ", x.scalar_type(),
              ", got ", dy.scalar_type());
  TORCH_CHECK(dy.dim() == x.dim(), "rms_norm_bwd: dy must have x's shape ", shape_str(x), ", got ", shape_str(dy));
  for (int64_t i = 0; i < x.dim(); ++i)
    TORCH_SYM_CHECK(dy.sym_size(i).sym_eq(x.sym_size(i)), "rms_norm_bwd: dy must have x's shape ", shape_str(x),
                    ", got ", shape_str(dy));
  TORCH_SYM_CHECK(rstd.sym_numel().sym_eq(x.sym_numel() / x.sym_size(-1)),
                  "rms_norm_bwd: rstd must hold one value per row of x, got shape ", shape_str(rstd));
}

// The weight dtype the kernels see: x's own or fp32 (any other weight is upcast, exactly).
c10::ScalarType kernel_weight_dtype(const Tensor& x, const Tensor& w) {
  if (w.scalar_type() == x.scalar_type()) return x.scalar_type();
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

c10::ScalarType rstd_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

std::tuple<Tensor, Tensor> fwd_cpu(const Tensor& x, const optional<Tensor>& weight, double eps, double offset,
                                   c10::string_view mode) {
  check_inputs(x, weight, mode);
  const int64_t casting = casting_code(mode);
  const auto acc = rstd_dtype(x);
  const auto xdt = x.scalar_type();
  auto round = [&](const Tensor& t) { return t.to(xdt).to(acc); };
  Tensor xf = x.to(acc);
  // rstd as saved for the backward: unrounded in every mode (see triton_src/rms_norm.py).
  Tensor rstd_saved = (xf * xf).mean(-1, true).add(eps).sqrt().reciprocal();
  Tensor rstd = rstd_saved;
  if (casting == CASTING_NONE) {
    Tensor ms = round(round(xf * xf).mean(-1, true));
    rstd = round(round(ms + eps).sqrt().reciprocal());
  }
  Tensor y = xf * rstd;
  if (casting != CASTING_GEMMA) y = round(y);
  if (weight.has_value()) {
    const auto wdt = kernel_weight_dtype(x, *weight);
    Tensor w_eff = weight->to(acc) + offset;
    if (casting == CASTING_NONE) w_eff = w_eff.to(wdt).to(acc);
    y = y * w_eff;
  }
  return {y.to(xdt).contiguous(), rstd_saved.squeeze(-1).contiguous()};
}

Tensor rms_norm_cpu(const Tensor& x, const optional<Tensor>& weight, double eps, double offset,
                    c10::string_view mode) {
  return std::get<0>(fwd_cpu(x, weight, eps, offset, mode));
}

std::tuple<Tensor, Tensor> bwd_cpu(const Tensor& dy, const Tensor& x, const optional<Tensor>& weight,
                                   const Tensor& rstd_in, double offset, c10::string_view mode, bool compute_dw) {
  check_inputs(x, weight, mode);
  check_backward_inputs(dy, x, rstd_in);
  const int64_t casting = casting_code(mode);
  const auto acc = rstd_dtype(x);
  Tensor xf = x.to(acc);
  Tensor dyf = dy.to(acc);
  Tensor rstd = rstd_in.to(acc).reshape(xf.sizes().slice(0, x.dim() - 1)).unsqueeze(-1);
  Tensor dn = weight.has_value() ? dyf * (weight->to(acc) + offset) : dyf;
  Tensor c = (dn * xf).mean(-1, true);
  Tensor dx = (rstd * dn - rstd * rstd * rstd * c * xf).to(x.scalar_type()).contiguous();
  Tensor dw;
  if (compute_dw && weight.has_value()) {
    Tensor n = xf * rstd;
    if (casting != CASTING_GEMMA) n = n.to(x.scalar_type()).to(acc);
    dw = (dyf * n).reshape({-1, x.size(-1)}).sum(0).to(weight->scalar_type());
  } else {
    dw = at::empty({0}, x.options().dtype(weight.has_value() ? weight->scalar_type() : x.scalar_type()));
  }
  return {dx, dw};
}

// ---- Meta (SymInt-clean: shapes stay symbolic under torch.export and torch.compile)

std::tuple<Tensor, Tensor> fwd_meta(const Tensor& x, const optional<Tensor>& weight, double, double,
                                    c10::string_view mode) {
  check_inputs(x, weight, mode);
  auto sizes = x.sym_sizes();
  return {at::empty_symint(sizes, x.options()),
          at::empty_symint(sizes.slice(0, sizes.size() - 1), x.options().dtype(rstd_dtype(x)))};
}

Tensor rms_norm_meta(const Tensor& x, const optional<Tensor>& weight, double, double, c10::string_view mode) {
  check_inputs(x, weight, mode);
  return at::empty_symint(x.sym_sizes(), x.options());
}

std::tuple<Tensor, Tensor> bwd_meta(const Tensor& dy, const Tensor& x, const optional<Tensor>& weight,
                                    const Tensor& rstd, double, c10::string_view mode, bool compute_dw) {
  check_inputs(x, weight, mode);
  check_backward_inputs(dy, x, rstd);
  Tensor dw = (compute_dw && weight.has_value())
                  ? at::empty_symint(weight->sym_sizes(), weight->options())
                  : at::empty({0}, x.options().dtype(weight.has_value() ? weight->scalar_type() : x.scalar_type()));
  return {at::empty_symint(x.sym_sizes(), x.options()), dw};
}

// ---- CUDA launcher

struct KernelWeight {
  Tensor w;  // contiguous, in the kernel's weight dtype (undefined when there is no weight)
  c10::ScalarType dtype;
};

KernelWeight kernel_weight(const Tensor& x, const optional<Tensor>& weight) {
  if (!weight.has_value()) return {Tensor(), x.scalar_type()};
  const auto wdt = kernel_weight_dtype(x, *weight);
  // Tensor::to dispatches even when it has nothing to do: skip it on the hot path.
  const Tensor& w = weight->scalar_type() == wdt ? *weight : weight->to(wdt);
  return {w.contiguous(), wdt};
}

int64_t kernel_casting(const Tensor& x, c10::string_view mode) {
  // Every casting mode computes the same function in fp32: one set of variants serves all three.
  return x.scalar_type() == at::kFloat ? CASTING_LLAMA : casting_code(mode);
}

// Key and grid of the forward for a given input; shared with the variant check below.
struct FwdChoice {
  bool looped;
  rms_norm_fwd_kernel_key single;
  rms_norm_fwd_looped_kernel_key loop;
};

FwdChoice choose_fwd(c10::ScalarType xdt, c10::ScalarType wdt, int64_t casting, int64_t cols, bool aligned) {
  FwdChoice c{};
  c.looped = !aligned || cols > FWD_MAX_BLOCK_N;
  c.single.x_dtype = c.loop.x_dtype = xdt;
  c.single.w_dtype = c.loop.w_dtype = wdt;
  c.single.casting = c.loop.casting = casting;
  c.single.block_n = std::max<int64_t>(MIN_BLOCK_N, next_pow2(cols));
  c.loop.aligned = aligned;
  return c;
}

struct BwdChoice {
  bool looped;
  rms_norm_bwd_kernel_key single;
  rms_norm_bwd_looped_kernel_key loop;
};

BwdChoice choose_bwd(c10::ScalarType xdt, c10::ScalarType wdt, int64_t casting, int64_t cols, bool aligned) {
  BwdChoice c{};
  c.looped = !aligned || cols > BWD_MAX_BLOCK_N;
  c.single.x_dtype = c.loop.x_dtype = xdt;
  c.single.w_dtype = c.loop.w_dtype = wdt;
  c.single.casting = c.loop.casting = casting;
  c.single.block_n = std::max<int64_t>(MIN_BLOCK_N, next_pow2(cols));
  c.loop.aligned = aligned;
  return c;
}

std::tuple<Tensor, Tensor> fwd_cuda_impl(const Tensor& x_in, const optional<Tensor>& weight, double eps,
                                         double offset, c10::string_view mode, bool store_rstd) {
  check_inputs(x_in, weight, mode);
  check_cuda_dtype(x_in, "rms_norm");
  c10::DeviceGuard guard(x_in.device());
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  auto rstd_sizes = x_in.sizes().slice(0, x_in.dim() - 1);
  Tensor rstd = store_rstd ? at::empty(rstd_sizes, x_in.options().dtype(at::kFloat)) : Tensor();
  if (x_in.numel() == 0) return {y, rstd};
  Rows x = as_rows(x_in);
  check_row_sizes(x.rows, x.cols, "rms_norm");
  KernelWeight w = kernel_weight(x_in, weight);
  const int64_t vec = vec_elems(x_in.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && aligned16(x.t) && aligned16(w.w);
  const LaunchContext ctx = launch_context(x_in);
  FwdChoice c = choose_fwd(x_in.scalar_type(), w.dtype, kernel_casting(x_in, mode), x.cols, aligned);
  const bool has_w = w.w.defined();
  if (!c.looped) {
    const auto& v = rms_norm_fwd_kernel_get(c.single, ctx.arch_slot);
    Grid grid{static_cast<uint32_t>(ceil_div(x.rows, v.BLOCK_M))};
    rms_norm_fwd_kernel_launch(v, ctx, grid, ptr(x.t), ptr(w.w), ptr(y), ptr(rstd), x.rows, x.cols / v.ALIGN,
                               x.row_stride / v.ALIGN, x.cols / v.ALIGN, eps, offset, has_w, store_rstd);
  } else {
    const auto& v = rms_norm_fwd_looped_kernel_get(c.loop, ctx.arch_slot);
    Grid grid{static_cast<uint32_t>(x.rows)};
    rms_norm_fwd_looped_kernel_launch(v, ctx, grid, ptr(x.t), ptr(w.w), ptr(y), ptr(rstd), x.rows,
                                      x.cols / v.ALIGN, x.row_stride / v.ALIGN, x.cols / v.ALIGN, eps, offset,
                                      has_w, store_rstd);
  }
  return {y, rstd};
}

std::tuple<Tensor, Tensor> fwd_cuda(const Tensor& x, const optional<Tensor>& weight, double eps, double offset,
                                    c10::string_view mode) {
  return fwd_cuda_impl(x, weight, eps, offset, mode, true);
}

Tensor rms_norm_cuda(const Tensor& x, const optional<Tensor>& weight, double eps, double offset,
                     c10::string_view mode) {
  return std::get<0>(fwd_cuda_impl(x, weight, eps, offset, mode, false));
}

std::tuple<Tensor, Tensor> bwd_cuda(const Tensor& dy_in, const Tensor& x_in, const optional<Tensor>& weight,
                                    const Tensor& rstd_in, double offset, c10::string_view mode, bool compute_dw) {
  check_inputs(x_in, weight, mode);
  check_backward_inputs(dy_in, x_in, rstd_in);
  check_cuda_dtype(x_in, "rms_norm_bwd");
  TORCH_CHECK(rstd_in.scalar_type() == at::kFloat, "rms_norm_bwd: rstd must be float32, got ",
              rstd_in.scalar_type());
  c10::DeviceGuard guard(x_in.device());
  compute_dw = compute_dw && weight.has_value();
  Tensor dx = at::empty(x_in.sizes(), x_in.options());
  const auto dw_dtype = weight.has_value() ? weight->scalar_type() : x_in.scalar_type();
  if (x_in.numel() == 0) {
    Tensor dw = compute_dw ? at::zeros(weight->sizes(), weight->options()) : at::empty({0}, x_in.options().dtype(dw_dtype));
    return {dx, dw};
  }
  Rows x = as_rows(x_in);
  Rows dy = as_rows(dy_in);
  check_row_sizes(x.rows, x.cols, "rms_norm_bwd");
  Tensor rstd = rstd_in.contiguous();
  KernelWeight w = kernel_weight(x_in, weight);
  const int64_t vec = vec_elems(x_in.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && dy.row_stride % vec == 0 && aligned16(x.t) &&
                       aligned16(dy.t) && aligned16(w.w);
  const LaunchContext ctx = launch_context(x_in);
  BwdChoice c = choose_bwd(x_in.scalar_type(), w.dtype, kernel_casting(x_in, mode), x.cols, aligned);
  const bool has_w = w.w.defined();
  Tensor partial;
  auto make_partial = [&](int64_t programs) {
    if (compute_dw) partial = at::empty({programs, x.cols}, x_in.options().dtype(at::kFloat));
  };
  if (!c.looped) {
    const auto& v = rms_norm_bwd_kernel_get(c.single, ctx.arch_slot);
    // About 16 resident warps per SM: at 8192x4096 bf16 on H200, 2 programs of 8 warps per SM beat 4, 8
    // and 16 (each more program adds a row of fp32 partial sums to write and reduce).
    const int64_t per_sm = std::max<int64_t>(1, 16 / v.image.num_warps);
    const int64_t programs = std::min<int64_t>(
        {ceil_div(x.rows, v.BLOCK_M), max_resident_programs(v.image, ctx), ctx.sm_count * per_sm});
    make_partial(programs);
    rms_norm_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(dy.t), ptr(x.t), ptr(w.w),
                               ptr(rstd), ptr(dx), ptr(partial), x.rows, x.cols / v.ALIGN, dy.row_stride / v.ALIGN,
                               x.row_stride / v.ALIGN, x.cols / v.ALIGN, offset, has_w, compute_dw);
  } else {
    const auto& v = rms_norm_bwd_looped_kernel_get(c.loop, ctx.arch_slot);
    // Latency-bound (each step waits for its loads): more programs per SM help up to 8 (H200 sweep).
    const int64_t programs = std::min<int64_t>(
        {ceil_div(x.rows, v.ROWS), max_resident_programs(v.image, ctx), int64_t(ctx.sm_count) * 8});
    make_partial(programs);
    rms_norm_bwd_looped_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(dy.t), ptr(x.t),
                                      ptr(w.w), ptr(rstd), ptr(dx), ptr(partial), x.rows, x.cols / v.ALIGN,
                                      dy.row_stride / v.ALIGN, x.row_stride / v.ALIGN, x.cols / v.ALIGN, offset,
                                      has_w, compute_dw);
  }
  if (!compute_dw) return {dx, at::empty({0}, x_in.options().dtype(dw_dtype))};
  // The partial sums are reduced by our own kernel into the weight's dtype (fp32 for other dtypes, then cast).
  const auto reduce_dtype = is_half_or_float(dw_dtype) ? dw_dtype : at::kFloat;
  Tensor dw = at::empty({x.cols}, x_in.options().dtype(reduce_dtype));
  rms_norm_dw_kernel_key key;
  key.dw_dtype = reduce_dtype;
  const auto& v = rms_norm_dw_kernel_get(key, ctx.arch_slot);
  rms_norm_dw_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(ceil_div(x.cols, v.BLOCK_C))}, ptr(partial), ptr(dw),
                            partial.size(0), x.cols);
  return {dx, reduce_dtype == dw_dtype ? dw : dw.to(dw_dtype)};
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("rms_norm", [](int arch_slot) {
  std::vector<std::string> missing;
  const std::pair<c10::ScalarType, c10::ScalarType> pairs[] = {{at::kFloat, at::kFloat},
                                                               {at::kBFloat16, at::kBFloat16},
                                                               {at::kHalf, at::kHalf},
                                                               {at::kBFloat16, at::kFloat},
                                                               {at::kHalf, at::kFloat}};
  std::vector<int64_t> sizes;
  for (int64_t p = 1; p <= 2 * FWD_MAX_BLOCK_N; p *= 2) {
    sizes.push_back(p);
    sizes.push_back(p + 1);
    if (p > 2) sizes.push_back(p - 1);
  }
  for (auto [xdt, wdt] : pairs)
    for (int64_t casting : {CASTING_LLAMA, CASTING_GEMMA, CASTING_NONE}) {
      const int64_t kc = xdt == at::kFloat ? CASTING_LLAMA : casting;
      for (int64_t cols : sizes)
        for (bool aligned : {false, true}) {
          FwdChoice f = choose_fwd(xdt, wdt, kc, cols, aligned);
          if (f.looped ? !rms_norm_fwd_looped_kernel_find(f.loop, arch_slot)
                       : !rms_norm_fwd_kernel_find(f.single, arch_slot))
            missing.push_back(f.looped ? f.loop.str() : f.single.str());
          BwdChoice b = choose_bwd(xdt, wdt, kc, cols, aligned);
          if (b.looped ? !rms_norm_bwd_looped_kernel_find(b.loop, arch_slot)
                       : !rms_norm_bwd_kernel_find(b.single, arch_slot))
            missing.push_back(b.looped ? b.loop.str() : b.single.str());
        }
    }
  for (c10::ScalarType dwdt : {at::kFloat, at::kBFloat16, at::kHalf}) {  // dW comes back in the weight's dtype
    rms_norm_dw_kernel_key key;
    key.dw_dtype = dwdt;
    if (!rms_norm_dw_kernel_find(key, arch_slot)) missing.push_back(key.str());
  }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

class RmsNormBackward : public torch::autograd::Function<RmsNormBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy, const Tensor& x,
                                                const optional<Tensor>& weight, const Tensor& rstd, double offset,
                                                const std::string& mode, bool compute_dw) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::rms_norm_bwd", "").typed<decltype(bwd_cpu)>();
    auto [dx, dw] = op.call(dy, x, weight, rstd, offset, mode, compute_dw);
    return {dx, dw};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "rms_norm: second derivatives are not supported (liger::rms_norm_bwd is not differentiable)");
  }
};

// rms_norm_fwd differentiated: y carries the gradient, rstd is marked non-differentiable.
class RmsNormForward : public torch::autograd::Function<RmsNormForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const optional<Tensor>& weight, double eps, double offset,
                                                const std::string& mode) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::rms_norm_fwd", "").typed<decltype(fwd_cpu)>();
    auto [y, rstd] = op.call(x, weight, eps, offset, mode);
    ctx->save_for_backward({x, weight.value_or(Tensor()), rstd});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["mode"] = mode;
    ctx->mark_non_differentiable({rstd});
    return {y, rstd};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    optional<Tensor> weight;
    if (saved[1].defined()) weight = saved[1];
    const bool compute_dw = weight.has_value() && ctx->needs_input_grad(1);
    auto out = RmsNormBackward::apply(grads[0], saved[0], weight, saved[2], ctx->saved_data["offset"].toDouble(),
                                      ctx->saved_data["mode"].toStringRef(), compute_dw);
    return {out[0], compute_dw ? out[1] : Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

bool needs_grad(const Tensor& x, const optional<Tensor>& weight) {
  return at::GradMode::is_enabled() && (x.requires_grad() || (weight.has_value() && weight->requires_grad()));
}

Tensor rms_norm_autograd(c10::DispatchKeySet ks, const Tensor& x, const optional<Tensor>& weight, double eps,
                         double offset, c10::string_view mode) {
  if (!needs_grad(x, weight)) {
    // Inference: the forward without storing rstd, redispatched below autograd with the key set already
    // computed (cheaper than a fresh call: this is the hot path of every no-grad call).
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::rms_norm", "").typed<decltype(rms_norm_cpu)>();
    return op.redispatch(ks & c10::after_ADInplaceOrView_keyset, x, weight, eps, offset, mode);
  }
  return RmsNormForward::apply(x, weight, eps, offset, std::string(mode))[0];
}

std::tuple<Tensor, Tensor> fwd_autograd(const Tensor& x, const optional<Tensor>& weight, double eps, double offset,
                                        c10::string_view mode) {
  auto out = RmsNormForward::apply(x, weight, eps, offset, std::string(mode));
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> bwd_autograd(const Tensor& dy, const Tensor& x, const optional<Tensor>& weight,
                                        const Tensor& rstd, double offset, c10::string_view mode, bool compute_dw) {
  auto out = RmsNormBackward::apply(dy, x, weight, rstd, offset, std::string(mode), compute_dw);
  return {out[0], out[1]};
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("rms_norm", &rms_norm_cpu);
  m.impl("rms_norm_fwd", &fwd_cpu);
  m.impl("rms_norm_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("rms_norm", &rms_norm_meta);
  m.impl("rms_norm_fwd", &fwd_meta);
  m.impl("rms_norm_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("rms_norm", &rms_norm_cuda);
  m.impl("rms_norm_fwd", &fwd_cuda);
  m.impl("rms_norm_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("rms_norm", &rms_norm_autograd);
  m.impl("rms_norm_fwd", &fwd_autograd);
  m.impl("rms_norm_bwd", &bwd_autograd);
}

}  // namespace liger::rms_norm
