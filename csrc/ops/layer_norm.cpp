// LayerNorm: y = (x - mean(x)) * rsqrt(var(x) + eps) * weight + bias over the last dimension.
#include <algorithm>

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/layer_norm.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::layer_norm {

using at::Tensor;
using std::optional;
using namespace liger::gen::layer_norm;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("layer_norm(Tensor x, Tensor? weight, Tensor? bias, float eps=1e-05) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("layer_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("layer_norm_bwd(Tensor dy, Tensor x, Tensor? weight, Tensor? bias, Tensor mean, Tensor rstd, "
        "bool compute_dw, bool compute_db) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

void check_param(const Tensor& x, const optional<Tensor>& p, const char* name) {
  if (!p.has_value()) return;
  TORCH_CHECK(p->device() == x.device(), "layer_norm: ", name, " is on ", p->device(), " but x is on ", x.device(),
              "; both must be on the same device");
  TORCH_CHECK(at::isFloatingType(p->scalar_type()), "layer_norm: ", name, " must be a floating-point tensor, got ",
              p->scalar_type());
  TORCH_CHECK(p->dim() == 1, "layer_norm: ", name, " must be 1-D with x's last dimension (", x.sym_size(-1),
              ") elements, got shape ", shape_str(*p));
  TORCH_SYM_CHECK(p->sym_size(0).sym_eq(x.sym_size(-1)), "layer_norm: ", name, " must have shape [", x.sym_size(-1),
                  "] to match x's last dimension, got ", shape_str(*p));
}

void check_inputs(const Tensor& x, const optional<Tensor>& weight, const optional<Tensor>& bias) {
  TORCH_CHECK(x.dim() >= 1, "layer_norm: x must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()),
              "layer_norm: x must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
  TORCH_SYM_CHECK(x.sym_size(-1).sym_gt(0), "layer_norm: x's last dimension must not be empty, got x of shape ",
                  shape_str(x));
  check_param(x, weight, "weight");
  check_param(x, bias, "bias");
}

void check_backward_inputs(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd) {
  TORCH_CHECK(dy.device() == x.device() && mean.device() == x.device() && rstd.device() == x.device(),
              "layer_norm_bwd: dy, x, mean and rstd must be on one device, got ", dy.device(), ", ", x.device(), ", ",
              mean.device(), ", ", rstd.device());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "layer_norm_bwd: dy must have x's dtype ", x.scalar_type(),
              ", got ", dy.scalar_type());
  TORCH_CHECK(dy.dim() == x.dim(), "layer_norm_bwd: dy must have x's shape ", shape_str(x), ", got ", shape_str(dy));
  for (int64_t i = 0; i < x.dim(); ++i)
    TORCH_SYM_CHECK(dy.sym_size(i).sym_eq(x.sym_size(i)), "layer_norm_bwd: dy must have x's shape ", shape_str(x),
                    ", got ", shape_str(dy));
  const auto rows = x.sym_numel() / x.sym_size(-1);
  TORCH_SYM_CHECK(mean.sym_numel().sym_eq(rows), "layer_norm_bwd: mean must hold one value per row of x, got shape ",
                  shape_str(mean));
  TORCH_SYM_CHECK(rstd.sym_numel().sym_eq(rows), "layer_norm_bwd: rstd must hold one value per row of x, got shape ",
                  shape_str(rstd));
}

c10::ScalarType stats_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// dw / db as returned: the parameter's shape and dtype, or an empty tensor when not computed.
Tensor empty_grad(const Tensor& x, const optional<Tensor>& p) {
  return at::empty({0}, x.options().dtype(p.has_value() ? p->scalar_type() : x.scalar_type()));
}

// ---- CPU reference (ATen ops; the same arithmetic the kernels do)

std::tuple<Tensor, Tensor, Tensor> fwd_cpu(const Tensor& x, const optional<Tensor>& weight,
                                           const optional<Tensor>& bias, double eps) {
  check_inputs(x, weight, bias);
  const auto acc = stats_dtype(x);
  Tensor xf = x.to(acc);
  // The corrected two-pass mean and variance (see triton_src/layer_norm.py).
  Tensor mean = xf.mean(-1, true);
  Tensor xc = xf - mean;
  Tensor c = xc.mean(-1, true);
  Tensor var = ((xc * xc).mean(-1, true) - c * c).clamp_min(0);
  Tensor rstd = var.add(eps).sqrt().reciprocal();
  Tensor y = (xc - c) * rstd;
  if (weight.has_value()) y = y * weight->to(acc);
  if (bias.has_value()) y = y + bias->to(acc);
  return {y.to(x.scalar_type()).contiguous(), (mean + c).squeeze(-1).contiguous(), rstd.squeeze(-1).contiguous()};
}

Tensor layer_norm_cpu(const Tensor& x, const optional<Tensor>& weight, const optional<Tensor>& bias, double eps) {
  return std::get<0>(fwd_cpu(x, weight, bias, eps));
}

std::tuple<Tensor, Tensor, Tensor> bwd_cpu(const Tensor& dy, const Tensor& x, const optional<Tensor>& weight,
                                           const optional<Tensor>& bias, const Tensor& mean_in,
                                           const Tensor& rstd_in, bool compute_dw, bool compute_db) {
  check_inputs(x, weight, bias);
  check_backward_inputs(dy, x, mean_in, rstd_in);
  const auto acc = stats_dtype(x);
  const auto row_shape = x.sizes().slice(0, x.dim() - 1);
  Tensor xf = x.to(acc);
  Tensor dyf = dy.to(acc);
  Tensor mean = mean_in.to(acc).reshape(row_shape).unsqueeze(-1);
  Tensor rstd = rstd_in.to(acc).reshape(row_shape).unsqueeze(-1);
  Tensor xc = xf - mean;
  Tensor g = weight.has_value() ? dyf * weight->to(acc) : dyf;
  Tensor c = xc.mean(-1, true);  // what the saved mean, rounded, is off by
  Tensor c1 = g.mean(-1, true);
  Tensor c2 = rstd * ((g * xc).mean(-1, true) - c * c1);
  Tensor xhat = (xc - c) * rstd;
  Tensor dx = (rstd * (g - c1 - xhat * c2)).to(x.scalar_type()).contiguous();
  const int64_t cols = x.size(-1);
  Tensor dw = compute_dw && weight.has_value()
                  ? (dyf * xhat).reshape({-1, cols}).sum(0).to(weight->scalar_type())
                  : empty_grad(x, weight);
  Tensor db = compute_db && bias.has_value() ? dyf.reshape({-1, cols}).sum(0).to(bias->scalar_type())
                                             : empty_grad(x, bias);
  return {dx, dw, db};
}

// ---- Meta (SymInt-clean: shapes stay symbolic under torch.export and torch.compile)

std::tuple<Tensor, Tensor, Tensor> fwd_meta(const Tensor& x, const optional<Tensor>& weight,
                                            const optional<Tensor>& bias, double) {
  check_inputs(x, weight, bias);
  auto sizes = x.sym_sizes();
  auto row_sizes = sizes.slice(0, sizes.size() - 1);
  auto stats = x.options().dtype(stats_dtype(x));
  return {at::empty_symint(sizes, x.options()), at::empty_symint(row_sizes, stats), at::empty_symint(row_sizes, stats)};
}

Tensor layer_norm_meta(const Tensor& x, const optional<Tensor>& weight, const optional<Tensor>& bias, double) {
  check_inputs(x, weight, bias);
  return at::empty_symint(x.sym_sizes(), x.options());
}

std::tuple<Tensor, Tensor, Tensor> bwd_meta(const Tensor& dy, const Tensor& x, const optional<Tensor>& weight,
                                            const optional<Tensor>& bias, const Tensor& mean, const Tensor& rstd,
                                            bool compute_dw, bool compute_db) {
  check_inputs(x, weight, bias);
  check_backward_inputs(dy, x, mean, rstd);
  Tensor dw = compute_dw && weight.has_value() ? at::empty_symint(weight->sym_sizes(), weight->options())
                                               : empty_grad(x, weight);
  Tensor db = compute_db && bias.has_value() ? at::empty_symint(bias->sym_sizes(), bias->options())
                                             : empty_grad(x, bias);
  return {at::empty_symint(x.sym_sizes(), x.options()), dw, db};
}

// ---- CUDA launcher

// Weight and bias as the kernels read them: kernel_params (runtime/checks.h).

struct FwdChoice {
  bool looped;
  layer_norm_fwd_kernel_key single;
  layer_norm_fwd_looped_kernel_key loop;
};

FwdChoice choose_fwd(c10::ScalarType xdt, c10::ScalarType pdt, int64_t cols, bool aligned, bool affine) {
  FwdChoice c{};
  c.looped = !aligned || cols > FWD_MAX_BLOCK_N;
  c.single.x_dtype = c.loop.x_dtype = xdt;
  c.single.p_dtype = c.loop.p_dtype = pdt;
  c.single.block_n = std::max<int64_t>(MIN_BLOCK_N, next_pow2(cols));
  // weight and bias both given: the variant without the runtime flag masks (fewer registers on wide rows)
  c.single.affine = affine && c.single.block_n >= AFFINE_MIN_BLOCK_N;
  c.loop.aligned = aligned;
  return c;
}

struct BwdChoice {
  bool split;  // wide or unaligned rows: layer_norm_bwd_rowstats_kernel + layer_norm_bwd_cols_kernel
  layer_norm_bwd_kernel_key single;
  layer_norm_bwd_rowstats_kernel_key rowstats;
  layer_norm_bwd_cols_kernel_key cols;
};

BwdChoice choose_bwd(c10::ScalarType xdt, c10::ScalarType pdt, int64_t cols, bool aligned) {
  BwdChoice c{};
  c.split = !aligned || cols > BWD_MAX_BLOCK_N;
  c.single.x_dtype = c.rowstats.x_dtype = c.cols.x_dtype = xdt;
  c.single.p_dtype = c.rowstats.p_dtype = c.cols.p_dtype = pdt;
  c.single.block_n = std::max<int64_t>(MIN_BLOCK_N, next_pow2(cols));
  c.rowstats.aligned = c.cols.aligned = aligned;
  return c;
}

// The dtype column_sum_kernel writes for a gradient of dtype t (fp64 parameters get fp32, then converted).
c10::ScalarType colsum_dtype(c10::ScalarType t) { return is_half_or_float(t) ? t : at::kFloat; }

std::tuple<Tensor, Tensor, Tensor> fwd_cuda_impl(const Tensor& x_in, const optional<Tensor>& weight,
                                                 const optional<Tensor>& bias, double eps, bool store_stats) {
  check_inputs(x_in, weight, bias);
  check_cuda_dtype(x_in, "layer_norm");
  c10::DeviceGuard guard(x_in.device());
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  auto row_sizes = x_in.sizes().slice(0, x_in.dim() - 1);
  Tensor mean = store_stats ? at::empty(row_sizes, x_in.options().dtype(at::kFloat)) : Tensor();
  Tensor rstd = store_stats ? at::empty(row_sizes, x_in.options().dtype(at::kFloat)) : Tensor();
  if (x_in.numel() == 0) return {y, mean, rstd};
  Rows x = as_rows(x_in);
  check_row_sizes(x.rows, x.cols, "layer_norm");
  KernelParams p = kernel_params(x_in, weight, bias);
  const int64_t vec = vec_elems(x_in.scalar_type());
  const bool aligned =
      x.cols % vec == 0 && x.row_stride % vec == 0 && aligned16(x.t) && aligned16(p.w) && aligned16(p.b);
  const LaunchContext ctx = launch_context(x_in);
  const bool has_w = p.w.defined(), has_b = p.b.defined();
  FwdChoice c = choose_fwd(x_in.scalar_type(), p.dtype, x.cols, aligned, has_w && has_b);
  if (!c.looped) {
    const auto& v = layer_norm_fwd_kernel_get(c.single, ctx.arch_slot);
    // PERSISTENT variants (16-bit rows of 16384-32768 with weight and bias) stride over the rows
    Grid grid{static_cast<uint32_t>(v.PERSISTENT ? std::min<int64_t>(x.rows, max_resident_programs(v.image, ctx))
                                                 : ceil_div(x.rows, v.BLOCK_M))};
    layer_norm_fwd_kernel_launch(v, ctx, grid, ptr(x.t), ptr(p.w), ptr(p.b), ptr(y), ptr(mean), ptr(rstd), x.rows,
                                 x.cols / v.ALIGN, x.row_stride / v.ALIGN, x.cols / v.ALIGN, eps, has_w, has_b,
                                 store_stats);
  } else {
    const auto& v = layer_norm_fwd_looped_kernel_get(c.loop, ctx.arch_slot);
    // One program per row (check_sizes keeps the row count below 2^31). H200,
    // 8192 rows bf16 (scripts/tune_layer_norm.py fwd): one program per row 355.6 us at 32768 and 158.4 at
    // 16384, against 387.3 us for one resident wave (1056 programs); sizing the wave to keep the rows in L2
    // for their second read measured 0.469 ms at 32768 (bench_layer_norm.py).
    Grid grid{static_cast<uint32_t>(x.rows)};
    layer_norm_fwd_looped_kernel_launch(v, ctx, grid, ptr(x.t), ptr(p.w), ptr(p.b), ptr(y), ptr(mean), ptr(rstd),
                                        x.rows, x.cols / v.ALIGN, x.row_stride / v.ALIGN, x.cols / v.ALIGN, eps,
                                        has_w, has_b, store_stats);
  }
  return {y, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> fwd_cuda(const Tensor& x, const optional<Tensor>& weight,
                                            const optional<Tensor>& bias, double eps) {
  return fwd_cuda_impl(x, weight, bias, eps, true);
}

Tensor layer_norm_cuda(const Tensor& x, const optional<Tensor>& weight, const optional<Tensor>& bias, double eps) {
  return std::get<0>(fwd_cuda_impl(x, weight, bias, eps, false));
}

// Adds up the rows of the fp32 partial-sum planes into dw and db (either may be undefined) with
// column_sum_kernel: one launch when both have one dtype, else one each.
void sum_partials(const Tensor& partial, int64_t programs, int64_t cols, Tensor& dw, Tensor& db,
                  const LaunchContext& ctx) {
  const int64_t plane = programs * cols;
  const uint32_t col_blocks = static_cast<uint32_t>(ceil_div(cols, COLSUM_BLOCK_N));
  auto out_for = [](const Tensor& g) {
    return g.scalar_type() == colsum_dtype(g.scalar_type()) ? g : at::empty(g.sizes(), g.options().dtype(at::kFloat));
  };
  auto launch_sum = [&](int64_t first_plane, const Tensor& out0, const Tensor& out1, uint32_t planes) {
    const auto& v = column_sum_kernel_get(column_sum_kernel_key{out0.scalar_type()}, ctx.arch_slot);
    column_sum_kernel_launch(v, ctx, Grid{col_blocks, planes}, ptr(partial) + first_plane * plane * sizeof(float),
                             ptr(out0), ptr(out1), programs, cols, plane);
  };
  Tensor ow = dw.defined() ? out_for(dw) : Tensor();
  Tensor ob = db.defined() ? out_for(db) : Tensor();
  if (ow.defined() && ob.defined() && ow.scalar_type() == ob.scalar_type()) {
    launch_sum(0, ow, ob, 2);
  } else {
    if (ow.defined()) launch_sum(0, ow, ow, 1);
    if (ob.defined()) launch_sum(ow.defined() ? 1 : 0, ob, ob, 1);
  }
  if (ow.defined() && !ow.is_same(dw)) dw.copy_(ow);
  if (ob.defined() && !ob.is_same(db)) db.copy_(ob);
}

std::tuple<Tensor, Tensor, Tensor> bwd_cuda(const Tensor& dy_in, const Tensor& x_in, const optional<Tensor>& weight,
                                            const optional<Tensor>& bias, const Tensor& mean_in,
                                            const Tensor& rstd_in, bool compute_dw, bool compute_db) {
  check_inputs(x_in, weight, bias);
  check_backward_inputs(dy_in, x_in, mean_in, rstd_in);
  check_cuda_dtype(x_in, "layer_norm_bwd");
  TORCH_CHECK(mean_in.scalar_type() == at::kFloat && rstd_in.scalar_type() == at::kFloat,
              "layer_norm_bwd: mean and rstd must be float32, got ", mean_in.scalar_type(), " and ",
              rstd_in.scalar_type());
  c10::DeviceGuard guard(x_in.device());
  compute_dw = compute_dw && weight.has_value();
  compute_db = compute_db && bias.has_value();
  Tensor dx = at::empty(x_in.sizes(), x_in.options());
  Tensor dw = compute_dw ? at::empty(weight->sizes(), weight->options()) : empty_grad(x_in, weight);
  Tensor db = compute_db ? at::empty(bias->sizes(), bias->options()) : empty_grad(x_in, bias);
  if (x_in.numel() == 0) {
    if (compute_dw) dw.zero_();
    if (compute_db) db.zero_();
    return {dx, dw, db};
  }
  Rows x = as_rows(x_in);
  Rows dy = as_rows(dy_in);
  check_row_sizes(x.rows, x.cols, "layer_norm_bwd");
  Tensor mean = mean_in.contiguous();
  Tensor rstd = rstd_in.contiguous();
  KernelParams p = kernel_params(x_in, weight, std::nullopt);
  const int64_t vec = vec_elems(x_in.scalar_type());
  const bool aligned = x.cols % vec == 0 && x.row_stride % vec == 0 && dy.row_stride % vec == 0 && aligned16(x.t) &&
                       aligned16(dy.t) && aligned16(p.w);
  const LaunchContext ctx = launch_context(x_in);
  BwdChoice c = choose_bwd(x_in.scalar_type(), p.dtype, x.cols, aligned);
  const bool has_w = p.w.defined();
  const int64_t planes = int64_t(compute_dw) + int64_t(compute_db);
  Tensor partial;
  CUdeviceptr dw_partial = 0, db_partial = 0;
  auto make_partial = [&](int64_t programs) {
    if (planes == 0) return;
    partial = at::empty({planes, programs, x.cols}, x_in.options().dtype(at::kFloat));
    const CUdeviceptr base = ptr(partial);
    if (compute_dw) dw_partial = base;
    if (compute_db) db_partial = base + (compute_dw ? programs * x.cols * sizeof(float) : 0);
  };
  int64_t programs;
  if (!c.split) {
    const auto& v = layer_norm_bwd_kernel_get(c.single, ctx.arch_slot);
    // About 8 resident warps per SM (H200 sweep at 4096: 2 four-warp programs per SM 71 us, 4 of them 74 us;
    // each more program adds a row of fp32 partial sums to write and reduce).
    const int64_t per_sm = std::max<int64_t>(1, BWD_WARPS_PER_SM / v.image.num_warps);
    programs = std::min<int64_t>(
        {ceil_div(x.rows, v.BLOCK_M), max_resident_programs(v.image, ctx), ctx.sm_count * per_sm});
    make_partial(programs);
    layer_norm_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(dy.t), ptr(x.t), ptr(p.w),
                                 ptr(mean), ptr(rstd), ptr(dx), dw_partial, db_partial, x.rows, x.cols / v.ALIGN,
                                 dy.row_stride / v.ALIGN, x.row_stride / v.ALIGN, x.cols / v.ALIGN, has_w, compute_dw,
                                 compute_db);
  } else {
    // Row statistics first (one read of x and dy), then a (row programs x column blocks) grid for dx and the
    // dw / db partial rows (a second read).
    const auto& vs = layer_norm_bwd_rowstats_kernel_get(c.rowstats, ctx.arch_slot);
    Tensor stats = at::empty({x.rows, 4}, x_in.options().dtype(at::kFloat));
    // One program per row, 1024-element chunks at 4 warps: H200 8192 rows bf16 (scripts/tune_layer_norm.py bwd),
    // 137.5 us at 16384 and 259.9 at 32768, against >= 142 us for one resident wave or 2048-element chunks.
    layer_norm_bwd_rowstats_kernel_launch(vs, ctx, Grid{static_cast<uint32_t>(x.rows)}, ptr(dy.t), ptr(x.t),
                                          ptr(p.w), ptr(mean), ptr(rstd), ptr(stats), x.rows, x.cols / vs.ALIGN,
                                          dy.row_stride / vs.ALIGN, x.row_stride / vs.ALIGN, has_w);
    const auto& v = layer_norm_bwd_cols_kernel_get(c.cols, ctx.arch_slot);
    const int64_t col_blocks = ceil_div(x.cols, v.BLOCK_N);
    TORCH_CHECK(col_blocks <= 65535, "layer_norm_bwd: at most ", 65535 * v.BLOCK_N, " columns, got ", x.cols);
    // Enough row programs to fill the device once with the column blocks, no more (each writes a partial row).
    programs = std::clamp<int64_t>(ceil_div(max_resident_programs(v.image, ctx), col_blocks), 1,
                                   ceil_div(x.rows, v.BLOCK_M));
    make_partial(programs);
    layer_norm_bwd_cols_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs), static_cast<uint32_t>(col_blocks)},
                                      ptr(dy.t), ptr(x.t), ptr(p.w), ptr(mean), ptr(rstd), ptr(stats), ptr(dx),
                                      dw_partial, db_partial, x.rows, x.cols / v.ALIGN, dy.row_stride / v.ALIGN,
                                      x.row_stride / v.ALIGN, x.cols / v.ALIGN, has_w, compute_dw, compute_db);
  }
  if (planes > 0) {
    Tensor w_out = compute_dw ? dw : Tensor();
    Tensor b_out = compute_db ? db : Tensor();
    sum_partials(partial, programs, x.cols, w_out, b_out, ctx);
  }
  return {dx, dw, db};
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("layer_norm", [](int arch_slot) {
  std::vector<std::string> missing;
  const c10::ScalarType dtypes[] = {at::kFloat, at::kBFloat16, at::kHalf};
  std::vector<int64_t> sizes;
  for (int64_t p = 1; p <= 2 * FWD_MAX_BLOCK_N; p *= 2) {
    sizes.push_back(p);
    sizes.push_back(p + 1);
    if (p > 2) sizes.push_back(p - 1);
  }
  for (auto xdt : dtypes)
    for (auto pdt : {xdt, at::kFloat}) {
      for (int64_t cols : sizes)
        for (bool aligned : {false, true}) {
          for (bool affine : {false, true}) {
            FwdChoice f = choose_fwd(xdt, pdt, cols, aligned, affine);
            if (f.looped ? !layer_norm_fwd_looped_kernel_find(f.loop, arch_slot)
                         : !layer_norm_fwd_kernel_find(f.single, arch_slot))
              missing.push_back(f.looped ? f.loop.str() : f.single.str());
          }
          BwdChoice b = choose_bwd(xdt, pdt, cols, aligned);
          if (b.split) {
            if (!layer_norm_bwd_rowstats_kernel_find(b.rowstats, arch_slot)) missing.push_back(b.rowstats.str());
            if (!layer_norm_bwd_cols_kernel_find(b.cols, arch_slot)) missing.push_back(b.cols.str());
          } else if (!layer_norm_bwd_kernel_find(b.single, arch_slot)) {
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

class LayerNormBackward : public torch::autograd::Function<LayerNormBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy, const Tensor& x,
                                                const optional<Tensor>& weight, const optional<Tensor>& bias,
                                                const Tensor& mean, const Tensor& rstd, bool compute_dw,
                                                bool compute_db) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::layer_norm_bwd", "").typed<decltype(bwd_cpu)>();
    auto [dx, dw, db] = op.call(dy, x, weight, bias, mean, rstd, compute_dw, compute_db);
    return {dx, dw, db};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false,
                "layer_norm: second derivatives are not supported (liger::layer_norm_bwd is not differentiable)");
  }
};

// layer_norm_fwd differentiated: y carries the gradient, mean and rstd are marked non-differentiable.
class LayerNormForward : public torch::autograd::Function<LayerNormForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const optional<Tensor>& weight, const optional<Tensor>& bias,
                                                double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::layer_norm_fwd", "").typed<decltype(fwd_cpu)>();
    auto [y, mean, rstd] = op.call(x, weight, bias, eps);
    ctx->save_for_backward({x, weight.value_or(Tensor()), bias.value_or(Tensor()), mean, rstd});
    ctx->mark_non_differentiable({mean, rstd});
    return {y, mean, rstd};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    optional<Tensor> weight, bias;
    if (saved[1].defined()) weight = saved[1];
    if (saved[2].defined()) bias = saved[2];
    const bool compute_dw = weight.has_value() && ctx->needs_input_grad(1);
    // needs_input_grad counts only the tensors given: an absent weight shifts the bias's index.
    const bool compute_db = bias.has_value() && ctx->needs_input_grad(weight.has_value() ? 2 : 1);
    auto out = LayerNormBackward::apply(grads[0], saved[0], weight, bias, saved[3], saved[4], compute_dw, compute_db);
    return {out[0], compute_dw ? out[1] : Tensor(), compute_db ? out[2] : Tensor(), Tensor()};
  }
};

bool needs_grad(const Tensor& x, const optional<Tensor>& weight, const optional<Tensor>& bias) {
  return at::GradMode::is_enabled() && (x.requires_grad() || (weight.has_value() && weight->requires_grad()) ||
                                        (bias.has_value() && bias->requires_grad()));
}

Tensor layer_norm_autograd(const Tensor& x, const optional<Tensor>& weight, const optional<Tensor>& bias, double eps) {
  if (!needs_grad(x, weight, bias)) {
    // Inference: the forward without storing mean and rstd.
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::layer_norm", "").typed<decltype(layer_norm_cpu)>();
    return op.call(x, weight, bias, eps);
  }
  return LayerNormForward::apply(x, weight, bias, eps)[0];
}

std::tuple<Tensor, Tensor, Tensor> fwd_autograd(const Tensor& x, const optional<Tensor>& weight,
                                                const optional<Tensor>& bias, double eps) {
  auto out = LayerNormForward::apply(x, weight, bias, eps);
  return {out[0], out[1], out[2]};
}

std::tuple<Tensor, Tensor, Tensor> bwd_autograd(const Tensor& dy, const Tensor& x, const optional<Tensor>& weight,
                                                const optional<Tensor>& bias, const Tensor& mean, const Tensor& rstd,
                                                bool compute_dw, bool compute_db) {
  auto out = LayerNormBackward::apply(dy, x, weight, bias, mean, rstd, compute_dw, compute_db);
  return {out[0], out[1], out[2]};
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("layer_norm", &layer_norm_cpu);
  m.impl("layer_norm_fwd", &fwd_cpu);
  m.impl("layer_norm_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("layer_norm", &layer_norm_meta);
  m.impl("layer_norm_fwd", &fwd_meta);
  m.impl("layer_norm_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("layer_norm", &layer_norm_cuda);
  m.impl("layer_norm_fwd", &fwd_cuda);
  m.impl("layer_norm_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("layer_norm", &layer_norm_autograd);
  m.impl("layer_norm_fwd", &fwd_autograd);
  m.impl("layer_norm_bwd", &bwd_autograd);
}

}  // namespace liger::layer_norm
