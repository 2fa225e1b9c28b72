// Fused residual add + RMSNorm: s = x + residual, y = rms_norm(s) (liger::rms_norm's semantics); returns (y, s).
#include <algorithm>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/fused_add_rms_norm.h"
#include "liger_gen/layer_norm.h"  // column_sum_kernel adds up the dw partial sums
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::fused_add_rms_norm {

using at::Tensor;
using std::optional;
using namespace liger::gen::fused_add_rms_norm;
using liger::gen::layer_norm::COLSUM_BLOCK_N;
using liger::gen::layer_norm::column_sum_kernel_find;
using liger::gen::layer_norm::column_sum_kernel_get;
using liger::gen::layer_norm::column_sum_kernel_key;
using liger::gen::layer_norm::column_sum_kernel_launch;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("fused_add_rms_norm(Tensor x, Tensor residual, Tensor? weight, float eps=1e-06, float offset=0.0, "
        "str casting_mode=\"llama\") -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("fused_add_rms_norm_fwd(Tensor x, Tensor residual, Tensor? weight, float eps, float offset, "
        "str casting_mode) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("fused_add_rms_norm_bwd(Tensor? dy, Tensor? ds_out, Tensor s, Tensor? weight, Tensor rstd, float offset, "
        "str casting_mode, bool compute_dw) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

int64_t casting_code(c10::string_view mode) {
  if (mode == "llama") return CASTING_LLAMA;
  if (mode == "gemma") return CASTING_GEMMA;
  if (mode == "none") return CASTING_NONE;
  TORCH_CHECK(false, "fused_add_rms_norm: casting_mode must be 'llama', 'gemma' or 'none', got '", mode, "'");
}

// x is the tensor being normalized: x in the forward, s in the backward.
void check_x_and_weight(const Tensor& x, const optional<Tensor>& weight, c10::string_view mode, const char* name) {
  casting_code(mode);
  TORCH_CHECK(x.dim() >= 1, "fused_add_rms_norm: ", name, " must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()),
              "fused_add_rms_norm: ", name, " must be float32, bfloat16 or float16 (float64 on CPU), got ",
              x.scalar_type());
  TORCH_SYM_CHECK(x.sym_size(-1).sym_gt(0), "fused_add_rms_norm: ", name,
                  "'s last dimension must not be empty, got shape ", shape_str(x));
  if (!weight.has_value()) return;
  const Tensor& w = *weight;
  TORCH_CHECK(w.device() == x.device(), "fused_add_rms_norm: weight is on ", w.device(), " but ", name, " is on ",
              x.device(), "; both must be on the same device");
  TORCH_CHECK(at::isFloatingType(w.scalar_type()), "fused_add_rms_norm: weight must be a floating-point tensor, got ",
              w.scalar_type());
  TORCH_CHECK(w.dim() == 1, "fused_add_rms_norm: weight must be 1-D with ", name, "'s last dimension (",
              x.sym_size(-1), ") elements, got shape ", shape_str(w));
  TORCH_SYM_CHECK(w.sym_size(0).sym_eq(x.sym_size(-1)), "fused_add_rms_norm: weight must have shape [",
                  x.sym_size(-1), "] to match ", name, "'s last dimension, got ", shape_str(w));
}

void check_inputs(const Tensor& x, const Tensor& residual, const optional<Tensor>& weight, c10::string_view mode) {
  check_x_and_weight(x, weight, mode, "x");
  check_like(residual, "residual", x, "x", "fused_add_rms_norm");
}

void check_backward_inputs(const optional<Tensor>& dy, const optional<Tensor>& ds_out, const Tensor& s,
                           const optional<Tensor>& weight, const Tensor& rstd, c10::string_view mode) {
  check_x_and_weight(s, weight, mode, "s");
  if (dy.has_value()) check_like(*dy, "dy", s, "s", "fused_add_rms_norm_bwd");
  if (ds_out.has_value()) check_like(*ds_out, "ds_out", s, "s", "fused_add_rms_norm_bwd");
  TORCH_CHECK(rstd.device() == s.device(), "fused_add_rms_norm_bwd: rstd is on ", rstd.device(), " but s is on ",
              s.device());
  TORCH_SYM_CHECK(rstd.sym_numel().sym_eq(s.sym_numel() / s.sym_size(-1)),
                  "fused_add_rms_norm_bwd: rstd must hold one value per row of s, got shape ", shape_str(rstd));
}

// The weight dtype the kernels see: x's own or fp32 (any other weight is upcast, exactly).
c10::ScalarType kernel_weight_dtype(const Tensor& x, const Tensor& w) {
  if (w.scalar_type() == x.scalar_type()) return x.scalar_type();
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

c10::ScalarType rstd_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

Tensor empty_dw(const Tensor& s, const optional<Tensor>& weight) {
  return at::empty({0}, s.options().dtype(weight.has_value() ? weight->scalar_type() : s.scalar_type()));
}

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

std::tuple<Tensor, Tensor, Tensor> fwd_cpu(const Tensor& x, const Tensor& residual, const optional<Tensor>& weight,
                                           double eps, double offset, c10::string_view mode) {
  check_inputs(x, residual, weight, mode);
  const int64_t casting = casting_code(mode);
  const auto acc = rstd_dtype(x);
  const auto xdt = x.scalar_type();
  auto round = [&](const Tensor& t) { return t.to(xdt).to(acc); };
  Tensor s = (x + residual).contiguous();  // rounded to x's dtype, as eager PyTorch adds
  Tensor sf = s.to(acc);
  // rstd as saved for the backward: unrounded in every mode (see triton_src/rms_norm.py).
  Tensor rstd_saved = (sf * sf).mean(-1, true).add(eps).sqrt().reciprocal();
  Tensor rstd = rstd_saved;
  if (casting == CASTING_NONE) {
    Tensor ms = round(round(sf * sf).mean(-1, true));
    rstd = round(round(ms + eps).sqrt().reciprocal());
  }
  Tensor y = sf * rstd;
  if (casting != CASTING_GEMMA) y = round(y);
  if (weight.has_value()) {
    const auto wdt = kernel_weight_dtype(x, *weight);
    Tensor w_eff = weight->to(acc) + offset;
    if (casting == CASTING_NONE) w_eff = w_eff.to(wdt).to(acc);
    y = y * w_eff;
  }
  return {y.to(xdt).contiguous(), s, rstd_saved.squeeze(-1).contiguous()};
}

std::tuple<Tensor, Tensor> fused_add_rms_norm_cpu(const Tensor& x, const Tensor& residual,
                                                  const optional<Tensor>& weight, double eps, double offset,
                                                  c10::string_view mode) {
  auto [y, s, rstd] = fwd_cpu(x, residual, weight, eps, offset, mode);
  return {y, s};
}

std::tuple<Tensor, Tensor> bwd_cpu(const optional<Tensor>& dy, const optional<Tensor>& ds_out, const Tensor& s,
                                   const optional<Tensor>& weight, const Tensor& rstd_in, double offset,
                                   c10::string_view mode, bool compute_dw) {
  check_backward_inputs(dy, ds_out, s, weight, rstd_in, mode);
  const int64_t casting = casting_code(mode);
  const auto acc = rstd_dtype(s);
  Tensor sf = s.to(acc);
  Tensor ds = at::zeros_like(sf);
  Tensor dw;
  if (dy.has_value()) {
    Tensor dyf = dy->to(acc);
    Tensor rstd = rstd_in.to(acc).reshape(sf.sizes().slice(0, s.dim() - 1)).unsqueeze(-1);
    Tensor dn = weight.has_value() ? dyf * (weight->to(acc) + offset) : dyf;
    Tensor c = (dn * sf).mean(-1, true);
    ds = rstd * dn - rstd * rstd * rstd * c * sf;
    if (compute_dw && weight.has_value()) {
      Tensor n = sf * rstd;
      if (casting != CASTING_GEMMA) n = n.to(s.scalar_type()).to(acc);
      dw = (dyf * n).reshape({-1, s.size(-1)}).sum(0).to(weight->scalar_type());
    }
  }
  if (compute_dw && weight.has_value() && !dw.defined()) dw = at::zeros(weight->sizes(), weight->options());
  if (!dw.defined()) dw = empty_dw(s, weight);
  if (ds_out.has_value()) ds = ds + ds_out->to(acc);
  return {ds.to(s.scalar_type()).contiguous(), dw};
}

// ---- Meta (SymInt-clean: shapes stay symbolic under torch.export and torch.compile)

std::tuple<Tensor, Tensor, Tensor> fwd_meta(const Tensor& x, const Tensor& residual, const optional<Tensor>& weight,
                                            double, double, c10::string_view mode) {
  check_inputs(x, residual, weight, mode);
  auto sizes = x.sym_sizes();
  return {at::empty_symint(sizes, x.options()), at::empty_symint(sizes, x.options()),
          at::empty_symint(sizes.slice(0, sizes.size() - 1), x.options().dtype(rstd_dtype(x)))};
}

std::tuple<Tensor, Tensor> fused_add_rms_norm_meta(const Tensor& x, const Tensor& residual,
                                                   const optional<Tensor>& weight, double, double,
                                                   c10::string_view mode) {
  check_inputs(x, residual, weight, mode);
  return {at::empty_symint(x.sym_sizes(), x.options()), at::empty_symint(x.sym_sizes(), x.options())};
}

std::tuple<Tensor, Tensor> bwd_meta(const optional<Tensor>& dy, const optional<Tensor>& ds_out, const Tensor& s,
                                    const optional<Tensor>& weight, const Tensor& rstd, double, c10::string_view mode,
                                    bool compute_dw) {
  check_backward_inputs(dy, ds_out, s, weight, rstd, mode);
  Tensor dw = (compute_dw && weight.has_value()) ? at::empty_symint(weight->sym_sizes(), weight->options())
                                                 : empty_dw(s, weight);
  return {at::empty_symint(s.sym_sizes(), s.options()), dw};
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

struct FwdChoice {
  bool looped;
  fused_add_rms_norm_fwd_kernel_key single;
  fused_add_rms_norm_fwd_looped_kernel_key loop;
};

FwdChoice choose_fwd(c10::ScalarType xdt, c10::ScalarType wdt, int64_t casting, int64_t cols, bool aligned) {
  FwdChoice c{};
  c.looped = !aligned || cols > FWD_MAX_BLOCK_N;
  c.single.x_dtype = c.loop.x_dtype = xdt;
  c.single.w_dtype = c.loop.w_dtype = wdt;
  c.single.casting = casting;
  c.single.block_n = std::max<int64_t>(MIN_BLOCK_N, next_pow2(cols));
  c.loop.aligned = aligned;
  return c;
}

struct BwdChoice {
  bool reload;  // aligned 16-bit rows up to RELOAD_MAX_BLOCK_N beyond the single block: ..._bwd_reload_kernel
  bool split;   // longer or unaligned rows: fused_add_rms_norm_bwd_rowstats_kernel + fused_add_rms_norm_bwd_cols_kernel
  fused_add_rms_norm_bwd_kernel_key single;
  fused_add_rms_norm_bwd_reload_kernel_key wide;
  fused_add_rms_norm_bwd_rowstats_kernel_key rowstats;
  fused_add_rms_norm_bwd_cols_kernel_key cols;
};

BwdChoice choose_bwd(c10::ScalarType xdt, c10::ScalarType wdt, int32_t casting, int64_t cols, bool aligned) {
  BwdChoice c{};
  c.reload = aligned && xdt != at::kFloat && cols > BWD_MAX_BLOCK_N && cols <= RELOAD_MAX_BLOCK_N;
  c.split = !c.reload && (!aligned || cols > BWD_MAX_BLOCK_N);
  c.single.x_dtype = c.wide.x_dtype = c.rowstats.x_dtype = c.cols.x_dtype = xdt;
  c.single.w_dtype = c.wide.w_dtype = c.rowstats.w_dtype = c.cols.w_dtype = wdt;
  c.single.block_n = std::max<int64_t>(MIN_BLOCK_N, next_pow2(cols));
  c.wide.block_n = next_pow2(cols);
  c.wide.casting = casting;
  c.rowstats.aligned = c.cols.aligned = aligned;
  return c;
}

c10::ScalarType colsum_dtype(c10::ScalarType t) { return is_half_or_float(t) ? t : at::kFloat; }

std::tuple<Tensor, Tensor, Tensor> fwd_cuda_impl(const Tensor& x_in, const Tensor& r_in,
                                                 const optional<Tensor>& weight, double eps, double offset,
                                                 c10::string_view mode, bool store_rstd) {
  check_inputs(x_in, r_in, weight, mode);
  check_cuda_dtype(x_in, "fused_add_rms_norm");
  c10::DeviceGuard guard(x_in.device());
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  Tensor s = at::empty(x_in.sizes(), x_in.options());
  auto rstd_sizes = x_in.sizes().slice(0, x_in.dim() - 1);
  Tensor rstd = store_rstd ? at::empty(rstd_sizes, x_in.options().dtype(at::kFloat)) : Tensor();
  if (x_in.numel() == 0) return {y, s, rstd};
  Rows x = as_rows(x_in);
  Rows r = as_rows(r_in);
  check_row_sizes(x.rows, x.cols, "fused_add_rms_norm");
  KernelWeight w = kernel_weight(x_in, weight);
  const int64_t vec = vec_elems(x_in.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && r.row_stride % vec == 0 && aligned16(x.t) &&
                       aligned16(r.t) && aligned16(w.w);
  const LaunchContext ctx = launch_context(x_in);
  // Every mode computes the same function in fp32.
  const int32_t casting = x_in.scalar_type() == at::kFloat ? CASTING_LLAMA : casting_code(mode);
  FwdChoice c = choose_fwd(x_in.scalar_type(), w.dtype, casting, x.cols, aligned);
  const bool has_w = w.w.defined();
  if (!c.looped) {
    const auto& v = fused_add_rms_norm_fwd_kernel_get(c.single, ctx.arch_slot);
    Grid grid{static_cast<uint32_t>(ceil_div(x.rows, v.BLOCK_M))};
    fused_add_rms_norm_fwd_kernel_launch(v, ctx, grid, ptr(x.t), ptr(r.t), ptr(w.w), ptr(y), ptr(s), ptr(rstd),
                                         x.rows, x.cols / v.ALIGN, x.row_stride / v.ALIGN, r.row_stride / v.ALIGN,
                                         x.cols / v.ALIGN, eps, offset, has_w, store_rstd);
  } else {
    const auto& v = fused_add_rms_norm_fwd_looped_kernel_get(c.loop, ctx.arch_slot);
    // One program per row (check_sizes keeps the row count below 2^31), as
    // layer_norm's looped forward measured best on the H200 (a resident wave, or one sized to keep the s rows
    // in L2 for their second read, was slower).
    Grid grid{static_cast<uint32_t>(x.rows)};
    fused_add_rms_norm_fwd_looped_kernel_launch(v, ctx, grid, ptr(x.t), ptr(r.t), ptr(w.w), ptr(y), ptr(s),
                                                ptr(rstd), x.rows, x.cols / v.ALIGN, x.row_stride / v.ALIGN,
                                                r.row_stride / v.ALIGN, x.cols / v.ALIGN, eps, offset, casting, has_w,
                                                store_rstd);
  }
  return {y, s, rstd};
}

std::tuple<Tensor, Tensor, Tensor> fwd_cuda(const Tensor& x, const Tensor& residual, const optional<Tensor>& weight,
                                            double eps, double offset, c10::string_view mode) {
  return fwd_cuda_impl(x, residual, weight, eps, offset, mode, true);
}

std::tuple<Tensor, Tensor> fused_add_rms_norm_cuda(const Tensor& x, const Tensor& residual,
                                                   const optional<Tensor>& weight, double eps, double offset,
                                                   c10::string_view mode) {
  auto [y, s, rstd] = fwd_cuda_impl(x, residual, weight, eps, offset, mode, false);
  return {y, s};
}

std::tuple<Tensor, Tensor> bwd_cuda(const optional<Tensor>& dy_opt, const optional<Tensor>& ds_out,
                                    const Tensor& s_in, const optional<Tensor>& weight, const Tensor& rstd_in,
                                    double offset, c10::string_view mode, bool compute_dw) {
  check_backward_inputs(dy_opt, ds_out, s_in, weight, rstd_in, mode);
  check_cuda_dtype(s_in, "fused_add_rms_norm_bwd");
  TORCH_CHECK(rstd_in.scalar_type() == at::kFloat, "fused_add_rms_norm_bwd: rstd must be float32, got ",
              rstd_in.scalar_type());
  c10::DeviceGuard guard(s_in.device());
  compute_dw = compute_dw && weight.has_value();
  Tensor dw = compute_dw ? at::empty(weight->sizes(), weight->options()) : empty_dw(s_in, weight);
  if (!dy_opt.has_value()) {
    // No gradient reaches y: ds is ds_out alone and dw is zero.
    if (compute_dw) dw.zero_();
    Tensor ds = ds_out.has_value() ? ds_out->clone(at::MemoryFormat::Contiguous)
                                   : at::zeros(s_in.sizes(), s_in.options());
    return {ds, dw};
  }
  Tensor ds = at::empty(s_in.sizes(), s_in.options());
  if (s_in.numel() == 0) {
    if (compute_dw) dw.zero_();
    return {ds, dw};
  }
  Rows s = as_rows(s_in);
  Rows dy = as_rows(*dy_opt);
  Rows dso = ds_out.has_value() ? as_rows(*ds_out) : Rows{Tensor(), s.rows, s.cols, s.cols};
  check_row_sizes(s.rows, s.cols, "fused_add_rms_norm_bwd");
  Tensor rstd = rstd_in.contiguous();
  KernelWeight w = kernel_weight(s_in, weight);
  const int64_t vec = vec_elems(s_in.scalar_type());
  const bool aligned = s.cols % vec == 0 && s.row_stride % vec == 0 && dy.row_stride % vec == 0 &&
                       dso.row_stride % vec == 0 && aligned16(s.t) && aligned16(dy.t) && aligned16(dso.t) &&
                       aligned16(w.w);
  const LaunchContext ctx = launch_context(s_in);
  const int32_t casting = s_in.scalar_type() == at::kFloat ? CASTING_LLAMA : casting_code(mode);
  BwdChoice c = choose_bwd(s_in.scalar_type(), w.dtype, casting, s.cols, aligned);
  const bool has_w = w.w.defined(), has_dso = dso.t.defined();
  Tensor partial;
  int64_t programs;
  auto make_partial = [&](int64_t n) {
    if (compute_dw) partial = at::empty({n, s.cols}, s_in.options().dtype(at::kFloat));
  };
  if (c.reload) {
    c.wide.weight_and_dw = has_w && compute_dw;  // the training case, without runtime branches
    const auto& v = fused_add_rms_norm_bwd_reload_kernel_get(c.wide, ctx.arch_slot);
    // One program per SM, consecutive rows each (H200, 8192 x 16384 bf16: 297.7 us; two per SM 1-3 % slower).
    programs = std::min<int64_t>({s.rows, ctx.sm_count, max_resident_programs(v.image, ctx)});
    make_partial(programs);
    fused_add_rms_norm_bwd_reload_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(dy.t),
                                                ptr(dso.t), ptr(s.t), ptr(w.w), ptr(rstd), ptr(ds), ptr(partial),
                                                s.rows, s.cols / v.ALIGN, dy.row_stride / v.ALIGN,
                                                dso.row_stride / v.ALIGN, s.row_stride / v.ALIGN, s.cols / v.ALIGN,
                                                offset, has_w, has_dso, compute_dw);
  } else if (!c.split) {
    const auto& v = fused_add_rms_norm_bwd_kernel_get(c.single, ctx.arch_slot);
    // About 16 resident warps per SM, as rms_norm measured on H200.
    const int64_t per_sm = std::max<int64_t>(1, 16 / v.image.num_warps);
    programs = std::min<int64_t>(
        {ceil_div(s.rows, v.BLOCK_M), max_resident_programs(v.image, ctx), ctx.sm_count * per_sm});
    make_partial(programs);
    fused_add_rms_norm_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(dy.t), ptr(dso.t),
                                         ptr(s.t), ptr(w.w), ptr(rstd), ptr(ds), ptr(partial), s.rows,
                                         s.cols / v.ALIGN, dy.row_stride / v.ALIGN, dso.row_stride / v.ALIGN,
                                         s.row_stride / v.ALIGN, s.cols / v.ALIGN, offset, casting, has_w, has_dso,
                                         compute_dw);
  } else {
    // Row statistics first (one read of dy and s), then a (row programs x column blocks) grid for ds and the
    // dw partial rows (a second read).
    const auto& vs = fused_add_rms_norm_bwd_rowstats_kernel_get(c.rowstats, ctx.arch_slot);
    Tensor stats = at::empty({s.rows}, s_in.options().dtype(at::kFloat));
    // One program per row, 1024-element chunks at 4 warps: H200 8192 rows bf16 (scripts/tune_layer_norm.py bwd),
    // 137.5 us at 16384 and 259.9 at 32768, against >= 142 us for one resident wave or 2048-element chunks.
    fused_add_rms_norm_bwd_rowstats_kernel_launch(vs, ctx, Grid{static_cast<uint32_t>(s.rows)}, ptr(dy.t),
                                                  ptr(s.t), ptr(w.w), ptr(stats), s.rows, s.cols / vs.ALIGN,
                                                  dy.row_stride / vs.ALIGN, s.row_stride / vs.ALIGN, offset, has_w);
    const auto& v = fused_add_rms_norm_bwd_cols_kernel_get(c.cols, ctx.arch_slot);
    const int64_t col_blocks = ceil_div(s.cols, v.BLOCK_N);
    TORCH_CHECK(col_blocks <= 65535, "fused_add_rms_norm_bwd: at most ", 65535 * v.BLOCK_N, " columns, got ", s.cols);
    // Enough row programs to fill the device once with the column blocks, no more (each writes a partial row).
    programs = std::clamp<int64_t>(ceil_div(max_resident_programs(v.image, ctx), col_blocks), 1,
                                   ceil_div(s.rows, v.BLOCK_M));
    make_partial(programs);
    fused_add_rms_norm_bwd_cols_kernel_launch(
        v, ctx, Grid{static_cast<uint32_t>(programs), static_cast<uint32_t>(col_blocks)}, ptr(dy.t), ptr(dso.t),
        ptr(s.t), ptr(w.w), ptr(rstd), ptr(stats), ptr(ds), ptr(partial), s.rows, s.cols / v.ALIGN,
        dy.row_stride / v.ALIGN, dso.row_stride / v.ALIGN, s.row_stride / v.ALIGN, s.cols / v.ALIGN, offset, casting,
        has_w, has_dso, compute_dw);
  }
  if (compute_dw) {
    // Summed in fp32 by a small kernel and rounded once (at::sum's first CUDA launch in a process is slow).
    Tensor out = dw.scalar_type() == colsum_dtype(dw.scalar_type())
                     ? dw
                     : at::empty(dw.sizes(), dw.options().dtype(at::kFloat));
    const auto& v = column_sum_kernel_get(column_sum_kernel_key{out.scalar_type()}, ctx.arch_slot);
    column_sum_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(ceil_div(s.cols, COLSUM_BLOCK_N)), 1}, ptr(partial),
                             ptr(out), ptr(out), programs, s.cols, programs * s.cols);
    if (!out.is_same(dw)) dw.copy_(out);
  }
  return {ds, dw};
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("fused_add_rms_norm", [](int arch_slot) {
  std::vector<std::string> missing;
  const c10::ScalarType dtypes[] = {at::kFloat, at::kBFloat16, at::kHalf};
  std::vector<int64_t> sizes;
  for (int64_t p = 1; p <= 2 * FWD_MAX_BLOCK_N; p *= 2) {
    sizes.push_back(p);
    sizes.push_back(p + 1);
    if (p > 2) sizes.push_back(p - 1);
  }
  for (auto xdt : dtypes)
    for (auto wdt : {xdt, at::kFloat})
      for (int64_t cols : sizes)
        for (bool aligned : {false, true}) {
          for (int64_t casting : {CASTING_LLAMA, CASTING_GEMMA, CASTING_NONE}) {
            if (xdt == at::kFloat && casting != CASTING_LLAMA) continue;  // fp32: one set serves every mode
            FwdChoice f = choose_fwd(xdt, wdt, casting, cols, aligned);
            if (f.looped ? !fused_add_rms_norm_fwd_looped_kernel_find(f.loop, arch_slot)
                         : !fused_add_rms_norm_fwd_kernel_find(f.single, arch_slot))
              missing.push_back(f.looped ? f.loop.str() : f.single.str());
            BwdChoice b = choose_bwd(xdt, wdt, static_cast<int32_t>(casting), cols, aligned);
            if (b.reload) {
              for (bool weight_and_dw : {false, true}) {
                b.wide.weight_and_dw = weight_and_dw;
                if (!fused_add_rms_norm_bwd_reload_kernel_find(b.wide, arch_slot)) missing.push_back(b.wide.str());
              }
            } else if (b.split) {
              if (!fused_add_rms_norm_bwd_rowstats_kernel_find(b.rowstats, arch_slot))
                missing.push_back(b.rowstats.str());
              if (!fused_add_rms_norm_bwd_cols_kernel_find(b.cols, arch_slot)) missing.push_back(b.cols.str());
            } else if (!fused_add_rms_norm_bwd_kernel_find(b.single, arch_slot)) {
              missing.push_back(b.single.str());
            }
          }
        }
  for (auto gdt : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
    column_sum_kernel_key k{colsum_dtype(gdt)};
    if (!column_sum_kernel_find(k, arch_slot)) missing.push_back(k.str());
  }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

optional<Tensor> defined_or_none(const Tensor& t) { return t.defined() ? optional<Tensor>(t) : std::nullopt; }

class FusedAddRmsNormBackward : public torch::autograd::Function<FusedAddRmsNormBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const optional<Tensor>& dy,
                                                const optional<Tensor>& ds_out, const Tensor& s,
                                                const optional<Tensor>& weight, const Tensor& rstd, double offset,
                                                const std::string& mode, bool compute_dw) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("liger::fused_add_rms_norm_bwd", "")
                         .typed<decltype(bwd_cpu)>();
    auto [ds, dw] = op.call(dy, ds_out, s, weight, rstd, offset, mode, compute_dw);
    return {ds, dw};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false,
                "fused_add_rms_norm: second derivatives are not supported (liger::fused_add_rms_norm_bwd is not "
                "differentiable)");
  }
};

// fused_add_rms_norm_fwd differentiated: y and s carry gradients, rstd is marked non-differentiable.
class FusedAddRmsNormForward : public torch::autograd::Function<FusedAddRmsNormForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const Tensor& residual, const optional<Tensor>& weight, double eps,
                                                double offset, const std::string& mode) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("liger::fused_add_rms_norm_fwd", "")
                         .typed<decltype(fwd_cpu)>();
    auto [y, s, rstd] = op.call(x, residual, weight, eps, offset, mode);
    ctx->save_for_backward({s, weight.value_or(Tensor()), rstd});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["mode"] = mode;
    ctx->mark_non_differentiable({rstd});
    // An unused output's gradient stays undefined instead of a tensor of zeros to read.
    ctx->set_materialize_grads(false);
    return {y, s, rstd};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    optional<Tensor> weight;
    if (saved[1].defined()) weight = saved[1];
    const bool compute_dw = weight.has_value() && ctx->needs_input_grad(2) && grads[0].defined();
    if (!grads[0].defined() && !grads[1].defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    auto out = FusedAddRmsNormBackward::apply(defined_or_none(grads[0]), defined_or_none(grads[1]), saved[0], weight,
                                              saved[2], ctx->saved_data["offset"].toDouble(),
                                              ctx->saved_data["mode"].toStringRef(), compute_dw);
    // d(x + residual) reaches x and residual alike.
    return {out[0], out[0], compute_dw ? out[1] : Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

bool needs_grad(const Tensor& x, const Tensor& residual, const optional<Tensor>& weight) {
  return at::GradMode::is_enabled() &&
         (x.requires_grad() || residual.requires_grad() || (weight.has_value() && weight->requires_grad()));
}

std::tuple<Tensor, Tensor> fused_add_rms_norm_autograd(const Tensor& x, const Tensor& residual,
                                                       const optional<Tensor>& weight, double eps, double offset,
                                                       c10::string_view mode) {
  if (!needs_grad(x, residual, weight)) {
    // Inference: the forward without storing rstd.
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("liger::fused_add_rms_norm", "")
                         .typed<decltype(fused_add_rms_norm_cpu)>();
    return op.call(x, residual, weight, eps, offset, mode);
  }
  auto out = FusedAddRmsNormForward::apply(x, residual, weight, eps, offset, std::string(mode));
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor, Tensor> fwd_autograd(const Tensor& x, const Tensor& residual,
                                                const optional<Tensor>& weight, double eps, double offset,
                                                c10::string_view mode) {
  auto out = FusedAddRmsNormForward::apply(x, residual, weight, eps, offset, std::string(mode));
  return {out[0], out[1], out[2]};
}

std::tuple<Tensor, Tensor> bwd_autograd(const optional<Tensor>& dy, const optional<Tensor>& ds_out, const Tensor& s,
                                        const optional<Tensor>& weight, const Tensor& rstd, double offset,
                                        c10::string_view mode, bool compute_dw) {
  auto out = FusedAddRmsNormBackward::apply(dy, ds_out, s, weight, rstd, offset, std::string(mode), compute_dw);
  return {out[0], out[1]};
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_cpu);
  m.impl("fused_add_rms_norm_fwd", &fwd_cpu);
  m.impl("fused_add_rms_norm_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_meta);
  m.impl("fused_add_rms_norm_fwd", &fwd_meta);
  m.impl("fused_add_rms_norm_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_cuda);
  m.impl("fused_add_rms_norm_fwd", &fwd_cuda);
  m.impl("fused_add_rms_norm_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_autograd);
  m.impl("fused_add_rms_norm_fwd", &fwd_autograd);
  m.impl("fused_add_rms_norm_bwd", &bwd_autograd);
}

}  // namespace liger::fused_add_rms_norm
