// GroupNorm: x [N, C, *], y = (x - mean) * rstd * weight[c] + bias[c] with mean and biased variance over each
// group of C / num_groups channels and all spatial elements (F.group_norm).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/archs.h"
#include "liger_gen/group_norm.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::group_norm {

using at::Tensor;
using std::optional;
using namespace liger::gen::group_norm;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("group_norm(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps=1e-05) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("group_norm_fwd(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("group_norm_bwd(Tensor dy, Tensor x, int num_groups, Tensor? weight, Tensor mean, Tensor rstd, "
        "bool compute_dw, bool compute_db) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

void check_param(const Tensor& x, const optional<Tensor>& p, const char* name) {
  if (!p.has_value()) return;
  TORCH_CHECK(p->device() == x.device(), "group_norm: ", name, " is on ", p->device(), " but x is on ", x.device(),
              "; both must be on the same device");
  TORCH_CHECK(at::isFloatingType(p->scalar_type()), "group_norm: ", name, " must be a floating-point tensor, got ",
              p->scalar_type());
  TORCH_CHECK(p->dim() == 1, "group_norm: ", name, " must be 1-D with x's channel count (", x.sym_size(1),
              ") elements, got shape ", shape_str(*p));
  TORCH_SYM_CHECK(p->sym_size(0).sym_eq(x.sym_size(1)), "group_norm: ", name, " must have shape [", x.sym_size(1),
                  "] to match x's channel dimension, got ", shape_str(*p));
}

void check_inputs(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight, const optional<Tensor>& bias) {
  TORCH_CHECK(x.dim() >= 2, "group_norm: x must have shape [N, C, *] (at least 2 dimensions), got ", shape_str(x));
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()),
              "group_norm: x must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
  TORCH_CHECK(num_groups > 0, "group_norm: num_groups must be positive, got ", num_groups);
  TORCH_SYM_CHECK((x.sym_size(1) % num_groups).sym_eq(0), "group_norm: num_groups (", num_groups,
                  ") must divide the number of channels C = x.shape[1] (", x.sym_size(1), ")");
  check_param(x, weight, "weight");
  check_param(x, bias, "bias");
}

void check_stats(const Tensor& x, int64_t num_groups, const Tensor& stat, const char* name) {
  TORCH_CHECK(stat.device() == x.device(), "group_norm_bwd: ", name, " is on ", stat.device(), " but x is on ",
              x.device());
  TORCH_CHECK(stat.dim() == 2, "group_norm_bwd: ", name, " must have shape [N, num_groups], got ", shape_str(stat));
  TORCH_SYM_CHECK(stat.sym_size(0).sym_eq(x.sym_size(0)), "group_norm_bwd: ", name,
                  " must have shape [N, num_groups], got ", shape_str(stat));
  TORCH_SYM_CHECK(stat.sym_size(1).sym_eq(num_groups), "group_norm_bwd: ", name,
                  " must have shape [N, num_groups], got ", shape_str(stat));
}

void check_backward_inputs(const Tensor& dy, const Tensor& x, int64_t num_groups, const Tensor& mean,
                           const Tensor& rstd) {
  TORCH_CHECK(dy.device() == x.device(), "group_norm_bwd: dy is on ", dy.device(), " but x is on ", x.device());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "group_norm_bwd: dy must have x's dtype ", x.scalar_type(),
              ", got ", dy.scalar_type());
  TORCH_CHECK(dy.dim() == x.dim(), "group_norm_bwd: dy must have x's shape ", shape_str(x), ", got ", shape_str(dy));
  for (int64_t i = 0; i < x.dim(); ++i)
    TORCH_SYM_CHECK(dy.sym_size(i).sym_eq(x.sym_size(i)), "group_norm_bwd: dy must have x's shape ", shape_str(x),
                    ", got ", shape_str(dy));
  check_stats(x, num_groups, mean, "mean");
  check_stats(x, num_groups, rstd, "rstd");
}

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// x as [N, G, C / G, HW] (HW: product of the spatial dimensions, 1 for [N, C]).
struct Shape {
  int64_t n, c, g, cpg, hw;
};

Shape shape_of(const Tensor& x, int64_t num_groups) {
  int64_t hw = 1;
  for (int64_t i = 2; i < x.dim(); ++i) hw *= x.size(i);
  return {x.size(0), x.size(1), num_groups, x.size(1) / num_groups, hw};
}

Tensor empty_grad(const Tensor& x, const optional<Tensor>& p) {
  return at::empty({0}, x.options().dtype(p.has_value() ? p->scalar_type() : x.scalar_type()));
}

// ---- CPU reference (ATen ops)

std::tuple<Tensor, Tensor, Tensor> fwd_cpu(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                                           const optional<Tensor>& bias, double eps) {
  check_inputs(x, num_groups, weight, bias);
  const Shape s = shape_of(x, num_groups);
  const auto acc = acc_dtype(x);
  if (x.numel() == 0)
    return {at::empty(x.sizes(), x.options()), at::zeros({s.n, s.g}, x.options().dtype(acc)),
            at::zeros({s.n, s.g}, x.options().dtype(acc))};
  Tensor xg = x.to(acc).reshape({s.n, s.g, s.cpg * s.hw});
  Tensor mean = xg.mean(-1, true);
  Tensor rstd = ((xg - mean).square().mean(-1, true) + eps).rsqrt();
  Tensor y = ((xg - mean) * rstd).reshape({s.n, s.c, s.hw});
  if (weight.has_value()) y = y * weight->to(acc).view({1, s.c, 1});
  if (bias.has_value()) y = y + bias->to(acc).view({1, s.c, 1});
  return {y.reshape(x.sizes()).to(x.scalar_type()).contiguous(), mean.reshape({s.n, s.g}).contiguous(),
          rstd.reshape({s.n, s.g}).contiguous()};
}

Tensor group_norm_cpu(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                      const optional<Tensor>& bias, double eps) {
  return std::get<0>(fwd_cpu(x, num_groups, weight, bias, eps));
}

std::tuple<Tensor, Tensor, Tensor> bwd_cpu(const Tensor& dy, const Tensor& x, int64_t num_groups,
                                           const optional<Tensor>& weight, const Tensor& mean_in,
                                           const Tensor& rstd_in, bool compute_dw, bool compute_db) {
  check_inputs(x, num_groups, weight, std::nullopt);
  check_backward_inputs(dy, x, num_groups, mean_in, rstd_in);
  const Shape s = shape_of(x, num_groups);
  const auto acc = acc_dtype(x);
  const auto param_dtype = weight.has_value() ? weight->scalar_type() : x.scalar_type();
  if (x.numel() == 0) {
    Tensor dw = compute_dw ? at::zeros({s.c}, x.options().dtype(param_dtype)) : empty_grad(x, weight);
    Tensor db = compute_db ? at::zeros({s.c}, x.options().dtype(param_dtype)) : empty_grad(x, weight);
    return {at::empty(x.sizes(), x.options()), dw, db};
  }
  const std::vector<int64_t> g4{s.n, s.g, s.cpg, s.hw};
  Tensor xh = (x.to(acc).reshape(g4) - mean_in.to(acc).view({s.n, s.g, 1, 1})) * rstd_in.to(acc).view({s.n, s.g, 1, 1});
  Tensor dyf = dy.to(acc).reshape(g4);
  Tensor dyw = weight.has_value() ? dyf * weight->to(acc).view({1, s.g, s.cpg, 1}) : dyf;
  Tensor c2 = dyw.mean({2, 3}, true);
  Tensor c1 = (dyw * xh).mean({2, 3}, true);
  Tensor dx = (rstd_in.to(acc).view({s.n, s.g, 1, 1}) * (dyw - c2 - xh * c1)).reshape(x.sizes()).to(x.scalar_type());
  Tensor dw = compute_dw ? (dyf * xh).sum(at::IntArrayRef{0, 3}).reshape({s.c}).to(param_dtype) : empty_grad(x, weight);
  Tensor db = compute_db ? dyf.sum(at::IntArrayRef{0, 3}).reshape({s.c}).to(param_dtype) : empty_grad(x, weight);
  return {dx.contiguous(), dw, db};
}

// ---- Meta (SymInt-clean)

std::tuple<Tensor, Tensor, Tensor> fwd_meta(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                                            const optional<Tensor>& bias, double) {
  check_inputs(x, num_groups, weight, bias);
  std::vector<c10::SymInt> stat_sizes{x.sym_size(0), c10::SymInt(num_groups)};
  auto stat_opts = x.options().dtype(acc_dtype(x));
  return {at::empty_symint(x.sym_sizes(), x.options()), at::empty_symint(stat_sizes, stat_opts),
          at::empty_symint(stat_sizes, stat_opts)};
}

Tensor group_norm_meta(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                       const optional<Tensor>& bias, double) {
  check_inputs(x, num_groups, weight, bias);
  return at::empty_symint(x.sym_sizes(), x.options());
}

std::tuple<Tensor, Tensor, Tensor> bwd_meta(const Tensor& dy, const Tensor& x, int64_t num_groups,
                                            const optional<Tensor>& weight, const Tensor& mean, const Tensor& rstd,
                                            bool compute_dw, bool compute_db) {
  check_inputs(x, num_groups, weight, std::nullopt);
  check_backward_inputs(dy, x, num_groups, mean, rstd);
  const auto param_opts = x.options().dtype(weight.has_value() ? weight->scalar_type() : x.scalar_type());
  std::vector<c10::SymInt> c{x.sym_size(1)};
  return {at::empty_symint(x.sym_sizes(), x.options()),
          compute_dw ? at::empty_symint(c, param_opts) : empty_grad(x, weight),
          compute_db ? at::empty_symint(c, param_opts) : empty_grad(x, weight)};
}

// ---- CUDA launcher

// The kernels read weight and bias as fp32, contiguous.
void check_cuda(const Tensor& x, const Shape& s, const char* op) {
  TORCH_CHECK(is_half_or_float(x.scalar_type()), op, ": the CUDA kernels take float32, bfloat16 or float16 x, got ",
              x.scalar_type());
  TORCH_CHECK(s.n * s.g < (int64_t(1) << 31) && s.c < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 groups in all (N * num_groups) and channels are supported, got N = ", s.n,
              ", num_groups = ", s.g, ", C = ", s.c);
}

// The tile for a spatial size: BLOCK_HW the smallest power of 4 >= HW (at most MAX_BLOCK_HW); 16-byte
// access needs HW a multiple of the vector and a tile at least MIN_ALIGNED_BLOCK_HW wide.
struct Choice {
  int64_t block_hw;
  bool aligned;
};

Choice choose(int64_t hw, bool aligned_ptrs, int64_t vec) {
  int64_t b = 1;
  while (b < hw && b < MAX_BLOCK_HW) b *= 4;
  return {b, aligned_ptrs && b >= MIN_ALIGNED_BLOCK_HW && hw % vec == 0};
}

// Persistent grid, as many programs as are resident (at most one per group). A grid sized so that the groups in
// flight fit in half of L2 was slower (H200, [32, 512, 64, 64] bf16, scripts/tune_group_norm.py: forward 168 us
// at 132 programs, 112 at 264, 105.5 at 528 and at 1024 = one per group; backward 280 / 205 / 226 / 191 us): at
// 8 warps per program the loads in flight matter more than L2 hits for the second read.
// Groups that fit one tile are read once and the next group's tile is loaded early: a few programs per SM,
// each walking several groups (per_sm_one_tile; see ONE_TILE_*_PER_SM).
template <typename V>
int64_t group_programs(const Shape& s, const V& v, const LaunchContext& ctx, int64_t per_sm_one_tile) {
  const bool one_tile = s.cpg <= v.BLOCK_C && s.hw <= v.BLOCK_HW;
  const int64_t resident = max_resident_programs(v.image, ctx);
  const int64_t programs = one_tile ? std::min<int64_t>(int64_t(ctx.sm_count) * per_sm_one_tile, resident) : resident;
  return std::min<int64_t>(s.n * s.g, programs);
}

// The spatial blocks with BIG variants (BIG_HW and BIG16_HW in triton_src/group_norm.py).
constexpr int64_t kBigHw[] = {256, 1024, 4096};
constexpr int64_t kBig16Hw[] = {256, 1024};

template <size_t K>
bool among(int64_t v, const int64_t (&values)[K]) {
  for (int64_t h : values)
    if (v == h) return true;
  return false;
}

// Groups of more than one [BLOCK_C, BLOCK_HW] tile that fit one [big / BLOCK_HW, BLOCK_HW] tile, 16-byte aligned:
// the BIG variants (keyed by big, the tile's size; 0 for none) read them once and are launched as programmatic
// dependents. BIG16_TILE for 16-bit x only.
int64_t big_tile(const Shape& s, const Choice& c, at::ScalarType dtype) {
  const int64_t tile_c = std::min<int64_t>(MAX_BLOCK_C, TILE / c.block_hw);
  if (!c.aligned || s.hw > c.block_hw || s.cpg <= tile_c) return 0;
  if (among(c.block_hw, kBigHw) && s.cpg <= BIG_TILE / c.block_hw) return BIG_TILE;
  if (dtype != at::kFloat && among(c.block_hw, kBig16Hw) && s.cpg <= BIG16_TILE / c.block_hw) return BIG16_TILE;
  return 0;
}

// The BIG16_TILE forward holds a 16384-element group per program: one program per SM (H200, scripts/gn_probe.py
// big16: 36.3 us at [16, 320, 32, 32] against 38.7-40.2 at two per SM).
int64_t one_tile_per_sm(int64_t big, int64_t per_sm) { return big == BIG16_TILE ? 1 : per_sm; }

// The backward of the BIG16_TILE groups, split (SPLIT_* in triton_src/group_norm.py): per-(sample, channel) sums of
// dy and dy * xh into partial over many small programs, then dx from each group's sums; both launched as
// programmatic dependents. partial is needed whether or not dweight / dbias are.
void split_backward(const LaunchContext& ctx, const Shape& s, int64_t block_hw, at::ScalarType p_dtype,
                    const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                    const Tensor& dx, const Tensor& partial) {
  const auto& sums = group_norm_bwd_sums_kernel_get({block_hw, x.scalar_type()}, ctx.arch_slot);
  const int64_t hw_v = s.hw / sums.ALIGN;
  group_norm_bwd_sums_kernel_launch(sums, ctx, Grid{static_cast<uint32_t>(ceil_div(s.n * s.c, sums.BLOCK_R))},
                                    ptr(dy), ptr(x), ptr(mean), ptr(rstd), ptr(partial), s.n, s.c, s.cpg, s.g, hw_v);
  const auto& d = group_norm_bwd_dx_kernel_get({block_hw, p_dtype, x.scalar_type()}, ctx.arch_slot);
  group_norm_bwd_dx_kernel_launch(
      d, ctx, Grid{static_cast<uint32_t>(s.n * s.g), static_cast<uint32_t>(ceil_div(s.cpg, d.BLOCK_R))}, ptr(dy),
      ptr(x), ptr(w), ptr(mean), ptr(rstd), ptr(partial), ptr(dx), s.n, s.c, s.cpg, s.g, hw_v, w.defined());
}

// [WIDE_BLOCK_C, MAX_BLOCK_HW] tiles on 16 warps for groups of >= WIDE_BLOCK_C channels with large spatial sizes.
bool wide_tiles(const Shape& s, const Choice& c, int64_t min_hw) {
  return c.block_hw == MAX_BLOCK_HW && s.cpg >= WIDE_BLOCK_C && s.hw >= min_hw;
}

// The spatial sizes group_norm_fwd_regs_kernel is built for (REG_HW in triton_src/group_norm.py).
constexpr int64_t kRegHw[] = {256, 1024, 4096, 16384};

// The register kernel's variant for channels per group that are a multiple of 16, promised to the compiler (built
// for tiles of at least 16 channel rows; triton_src/group_norm.py, cpg16).
bool reg_cpg16(int64_t cpg, int64_t tile, int64_t hw) { return cpg % 16 == 0 && tile / hw >= 16; }

// 16-bit x with groups of REG_MIN_GROUP + 1 to REG_MAX_GROUP elements and a spatial size in kRegHw: the group held
// in registers, x read once (group_norm_fwd_regs_kernel); nullptr otherwise.
const group_norm_fwd_regs_kernel_variant* regs_variant(const Tensor& x, const Shape& s, at::ScalarType p_dtype,
                                                       const LaunchContext& ctx) {
  const int64_t group = s.cpg * s.hw;
  if (x.scalar_type() == at::kFloat || !among(s.hw, kRegHw) || group <= REG_MIN_GROUP || group > REG_MAX_GROUP ||
      !aligned16(x))
    return nullptr;
  const int64_t tile = group <= REG_SMALL_TILE ? REG_SMALL_TILE : REG_MAX_GROUP;
  return group_norm_fwd_regs_kernel_find({s.hw, reg_cpg16(s.cpg, tile, s.hw), p_dtype, tile, x.scalar_type()},
                                         ctx.arch_slot);
}

// 16-bit x, 16-byte aligned, groups of exactly SPLIT16_GROUP elements whose spatial size is a multiple of 256: one
// program per group with part of it in registers and the rest in shared memory, two programs an SM
// (group_norm_fwd_split16_kernel). Built for sm_90 only: nullptr elsewhere, and the register kernel runs.
const group_norm_fwd_split16_kernel_variant* split16_variant(const Tensor& x, const Shape& s, at::ScalarType p_dtype,
                                                             const LaunchContext& ctx) {
  if (x.scalar_type() == at::kFloat || s.cpg * s.hw != SPLIT16_GROUP || s.hw % 256 != 0 || !aligned16(x))
    return nullptr;
  return group_norm_fwd_split16_kernel_find({p_dtype, x.scalar_type()}, ctx.arch_slot);
}

std::tuple<Tensor, Tensor, Tensor> fwd_cuda_impl(const Tensor& x_in, int64_t num_groups,
                                                 const optional<Tensor>& weight, const optional<Tensor>& bias,
                                                 double eps, bool store_stats) {
  check_inputs(x_in, num_groups, weight, bias);
  c10::DeviceGuard guard(x_in.device());
  const Shape s = shape_of(x_in, num_groups);
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  const auto stat_opts = x_in.options().dtype(at::kFloat);
  Tensor mean = store_stats ? at::empty({s.n, s.g}, stat_opts) : Tensor();
  Tensor rstd = store_stats ? at::empty({s.n, s.g}, stat_opts) : Tensor();
  if (s.n * s.g == 0) return {y, mean, rstd};
  if (x_in.numel() == 0) {  // empty groups (C / G or HW is 0): nothing to normalize
    if (store_stats) {
      mean.zero_();
      rstd.zero_();
    }
    return {y, mean, rstd};
  }
  check_cuda(x_in, s, "group_norm");
  Tensor x = x_in.contiguous();
  // weight and bias in x's dtype when both have it (no cast kernels), else fp32
  const KernelParams p = kernel_params(x, weight, bias);
  const Tensor& w = p.w;
  const Tensor& b = p.b;
  const LaunchContext ctx = launch_context(x_in);
  if (const auto* h = split16_variant(x, s, p.dtype, ctx)) {
    group_norm_fwd_split16_kernel_launch(*h, ctx, Grid{static_cast<uint32_t>(s.n * s.g)}, ptr(x), ptr(w), ptr(b),
                                         ptr(y), ptr(mean), ptr(rstd), s.g, s.cpg, s.hw / 256, eps, w.defined(),
                                         b.defined(), store_stats);
    return {y, mean, rstd};
  }
  if (const auto* r = regs_variant(x, s, p.dtype, ctx)) {
    // One program per group; the group `ahead` programs later is prefetched into L2 (half the resident programs:
    // H200, [32, 512, 64, 64] bf16, one program per SM: 76.4 us at 66, 77.0 at 99, 78.2 at 132, 88 at 198).
    const int64_t ahead = std::max<int64_t>(1, max_resident_programs(r->image, ctx) / 2);
    group_norm_fwd_regs_kernel_launch(*r, ctx, Grid{static_cast<uint32_t>(s.n * s.g)}, ptr(x), ptr(w), ptr(b),
                                      ptr(y), ptr(mean), ptr(rstd), s.n, s.c, s.cpg, s.g, eps, w.defined(),
                                      b.defined(), store_stats, ahead);
    return {y, mean, rstd};
  }
  const Choice c = choose(s.hw, aligned16(x) && aligned16(w) && aligned16(b), vec_elems(x.scalar_type()));
  const int64_t big = big_tile(s, c, x.scalar_type());
  const auto& v = group_norm_fwd_kernel_get(
      {c.aligned, big, c.block_hw, p.dtype, !big && wide_tiles(s, c, WIDE_FWD_MIN_HW), x.scalar_type()},
      ctx.arch_slot);
  const int64_t programs = group_programs(s, v, ctx, one_tile_per_sm(big, ONE_TILE_FWD_PER_SM));
  group_norm_fwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(x), ptr(w), ptr(b), ptr(y),
                               ptr(mean), ptr(rstd), s.n, s.c, s.cpg, s.hw / v.ALIGN, s.g, eps, w.defined(),
                               b.defined(), store_stats);
  return {y, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> fwd_cuda(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                                            const optional<Tensor>& bias, double eps) {
  return fwd_cuda_impl(x, num_groups, weight, bias, eps, true);
}

Tensor group_norm_cuda(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                       const optional<Tensor>& bias, double eps) {
  return std::get<0>(fwd_cuda_impl(x, num_groups, weight, bias, eps, false));
}

std::tuple<Tensor, Tensor, Tensor> bwd_cuda(const Tensor& dy_in, const Tensor& x_in, int64_t num_groups,
                                            const optional<Tensor>& weight, const Tensor& mean_in,
                                            const Tensor& rstd_in, bool compute_dw, bool compute_db) {
  check_inputs(x_in, num_groups, weight, std::nullopt);
  check_backward_inputs(dy_in, x_in, num_groups, mean_in, rstd_in);
  TORCH_CHECK(mean_in.scalar_type() == at::kFloat && rstd_in.scalar_type() == at::kFloat,
              "group_norm_bwd: mean and rstd must be float32, got ", mean_in.scalar_type(), " and ",
              rstd_in.scalar_type());
  c10::DeviceGuard guard(x_in.device());
  const Shape s = shape_of(x_in, num_groups);
  const auto param_opts = x_in.options().dtype(weight.has_value() ? weight->scalar_type() : x_in.scalar_type());
  Tensor dx = at::empty(x_in.sizes(), x_in.options());
  if (x_in.numel() == 0) {
    return {dx, compute_dw ? at::zeros({s.c}, param_opts) : empty_grad(x_in, weight),
            compute_db ? at::zeros({s.c}, param_opts) : empty_grad(x_in, weight)};
  }
  check_cuda(x_in, s, "group_norm_bwd");
  Tensor x = x_in.contiguous();
  Tensor dy = dy_in.contiguous();
  Tensor mean = mean_in.contiguous();
  Tensor rstd = rstd_in.contiguous();
  const KernelParams p = kernel_params(x, weight, std::nullopt);
  const Tensor& w = p.w;
  const bool partials = compute_dw || compute_db;
  const bool aligned_ptrs = aligned16(x) && aligned16(dy) && aligned16(w) && aligned16(mean) && aligned16(rstd);
  const Choice c = choose(s.hw, aligned_ptrs, vec_elems(x.scalar_type()));
  const LaunchContext ctx = launch_context(x_in);
  const int64_t big = big_tile(s, c, x.scalar_type());
  const bool split = big == BIG16_TILE;
  // dweight and dbias in the parameters' dtype (two tensors: views of one would alias each other, and opcheck
  // rejects aliased outputs). A dtype without a variant (double parameters) goes through fp32.
  const auto pdt = param_opts.dtype().toScalarType();
  const auto odt = is_half_or_float(pdt) ? pdt : at::kFloat;
  Tensor dw_k = partials ? at::empty({s.c}, param_opts.dtype(odt)) : Tensor();
  Tensor db_k = partials ? at::empty({s.c}, param_opts.dtype(odt)) : Tensor();
  const auto f32 = x_in.options().dtype(at::kFloat);
  Tensor partial;
  bool reduce = partials;  // per-(sample, channel) sums in partial, reduced over N by a second kernel
  bool pdl = true;         // the backward was launched as a programmatic dependent
  if (split) {
    partial = at::empty({2, s.n, s.c}, f32);
    split_backward(ctx, s, c.block_hw, p.dtype, dy, x, w, mean, rstd, dx, partial);
  } else {
    const auto& v = group_norm_bwd_kernel_get(
        {c.aligned, big, c.block_hw, p.dtype, !big && wide_tiles(s, c, MAX_BLOCK_HW), x.scalar_type()},
        ctx.arch_slot);
    // Few samples of one-tile groups: G programs, each taking its group of every sample, sum their channels'
    // dweight / dbias themselves (own), and no reduction kernel follows (for launch-bound shapes such as
    // [2, 64, 8, 8]; at most OWN_MAX_N groups per program). Not built into the BIG variants (v.OWN).
    const bool own = v.OWN && partials && s.n <= OWN_MAX_N && s.cpg <= v.BLOCK_C && s.hw <= v.BLOCK_HW &&
                     odt == p.dtype;
    if (reduce && !own) partial = at::empty({2, s.n, s.c}, f32);
    const int64_t programs = own ? s.g : group_programs(s, v, ctx, ONE_TILE_BWD_PER_SM);
    group_norm_bwd_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(programs)}, ptr(dy), ptr(x), ptr(w), ptr(mean),
                                 ptr(rstd), ptr(dx), ptr(partial), ptr(dw_k), ptr(db_k), s.n, s.c, s.cpg,
                                 s.hw / v.ALIGN, s.g, w.defined(), partials, own);
    pdl = v.PDL != 0;
    reduce = reduce && !own;
  }
  if (reduce) {
    // Reduced over N by a Triton kernel (no at::sum on the GPU path), stored in the parameters' dtype; launched
    // as a programmatic dependent after a backward that is one (the BIG and split variants)
    const auto& r = group_norm_reduce_kernel_get({odt, pdl}, ctx.arch_slot);
    group_norm_reduce_kernel_launch(r, ctx, Grid{static_cast<uint32_t>(ceil_div(s.c, r.BLOCK_C)), 2},
                                    ptr(partial), ptr(dw_k), ptr(db_k), s.n, s.c);
  }
  Tensor dw = empty_grad(x_in, weight);
  Tensor db = empty_grad(x_in, weight);
  if (compute_dw) dw = odt == pdt ? dw_k : dw_k.to(pdt);
  if (compute_db) db = odt == pdt ? db_k : db_k.to(pdt);
  return {dx, dw, db};
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("group_norm", [](int arch_slot) {
  std::vector<std::string> missing;
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (auto pdt : {dt, at::kFloat})
      for (int64_t p = 1; p <= 4 * MAX_BLOCK_HW; p *= 2)
        for (int64_t hw : {p - 1, p, p + 1})
          for (bool aligned : {false, true}) {
            if (hw < 1) continue;
            Choice c = choose(hw, aligned, vec_elems(dt));
            for (bool wide : {false, c.block_hw == MAX_BLOCK_HW}) {
              group_norm_fwd_kernel_key fk{c.aligned, 0, c.block_hw, pdt, wide, dt};
              group_norm_bwd_kernel_key bk{c.aligned, 0, c.block_hw, pdt, wide, dt};
              if (!group_norm_fwd_kernel_find(fk, arch_slot)) missing.push_back(fk.str());
              if (!group_norm_bwd_kernel_find(bk, arch_slot)) missing.push_back(bk.str());
            }
            // BIG: any channel count a BIG tile holds, on this spatial size
            for (int64_t cpg = 1; cpg <= BIG16_TILE; cpg *= 2)
              if (const int64_t big = big_tile({1, cpg, 1, cpg, hw}, c, dt)) {
                group_norm_fwd_kernel_key fk{true, big, c.block_hw, pdt, false, dt};
                if (!group_norm_fwd_kernel_find(fk, arch_slot)) missing.push_back(fk.str());
                if (big == BIG16_TILE) {  // the split backward
                  group_norm_bwd_sums_kernel_key sk{c.block_hw, dt};
                  group_norm_bwd_dx_kernel_key dk{c.block_hw, pdt, dt};
                  if (!group_norm_bwd_sums_kernel_find(sk, arch_slot)) missing.push_back(sk.str());
                  if (!group_norm_bwd_dx_kernel_find(dk, arch_slot)) missing.push_back(dk.str());
                } else {
                  group_norm_bwd_kernel_key bk{true, big, c.block_hw, pdt, false, dt};
                  if (!group_norm_bwd_kernel_find(bk, arch_slot)) missing.push_back(bk.str());
                }
              }
          }
  // the register kernel: regs_variant looks it up with _find, so a key missing from the build would fall back to
  // the tiles silently; listed here, it fails the packaging test instead
  for (auto dt : {at::kBFloat16, at::kHalf})
    for (auto pdt : {dt, at::kFloat})
      for (int64_t hw : kRegHw)
        for (int64_t tile : {int64_t(REG_SMALL_TILE), int64_t(REG_MAX_GROUP)})
          for (bool cpg16 : {false, reg_cpg16(16, tile, hw)}) {
            group_norm_fwd_regs_kernel_key k{hw, cpg16, pdt, tile, dt};
            if (!group_norm_fwd_regs_kernel_find(k, arch_slot)) missing.push_back(k.str());
          }
  // the split16 kernel is built for sm_90 only (split16_variant falls back to the register kernel elsewhere)
  if (gen::kArchs[arch_slot] == 90)
    for (auto dt : {at::kBFloat16, at::kHalf})
      for (auto pdt : {dt, at::kFloat}) {
        group_norm_fwd_split16_kernel_key k{pdt, dt};
        if (!group_norm_fwd_split16_kernel_find(k, arch_slot)) missing.push_back(k.str());
      }
  for (auto odt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (bool pdl : {false, true}) {
      group_norm_reduce_kernel_key rk{odt, pdl};
      if (!group_norm_reduce_kernel_find(rk, arch_slot)) missing.push_back(rk.str());
    }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

class GroupNormBackward : public torch::autograd::Function<GroupNormBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy, const Tensor& x,
                                                int64_t num_groups, const optional<Tensor>& weight,
                                                const Tensor& mean, const Tensor& rstd, bool compute_dw,
                                                bool compute_db) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::group_norm_bwd", "").typed<decltype(bwd_cpu)>();
    auto [dx, dw, db] = op.call(dy, x, num_groups, weight, mean, rstd, compute_dw, compute_db);
    return {dx, dw, db};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false,
                "group_norm: second derivatives are not supported (liger::group_norm_bwd is not differentiable)");
  }
};

class GroupNormForward : public torch::autograd::Function<GroupNormForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                int64_t num_groups, const optional<Tensor>& weight,
                                                const optional<Tensor>& bias, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::group_norm_fwd", "").typed<decltype(fwd_cpu)>();
    auto [y, mean, rstd] = op.call(x, num_groups, weight, bias, eps);
    ctx->save_for_backward({x, weight.value_or(Tensor()), mean, rstd});
    ctx->saved_data["num_groups"] = num_groups;
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->mark_non_differentiable({mean, rstd});
    return {y, mean, rstd};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    optional<Tensor> weight;
    if (saved[1].defined()) weight = saved[1];
    // needs_input_grad counts the tensor inputs that were given: x, then weight and bias where present.
    const bool compute_dw = weight.has_value() && ctx->needs_input_grad(1);
    const bool compute_db = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(weight.has_value() ? 2 : 1);
    auto out = GroupNormBackward::apply(grads[0], saved[0], ctx->saved_data["num_groups"].toInt(), weight, saved[2],
                                        saved[3], compute_dw, compute_db);
    return {out[0], Tensor(), compute_dw ? out[1] : Tensor(), compute_db ? out[2] : Tensor(), Tensor()};
  }
};

bool needs_grad(const Tensor& x, const optional<Tensor>& weight, const optional<Tensor>& bias) {
  return at::GradMode::is_enabled() && (x.requires_grad() || (weight.has_value() && weight->requires_grad()) ||
                                        (bias.has_value() && bias->requires_grad()));
}

Tensor group_norm_autograd(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                           const optional<Tensor>& bias, double eps) {
  if (!needs_grad(x, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::group_norm", "").typed<decltype(group_norm_cpu)>();
    return op.call(x, num_groups, weight, bias, eps);
  }
  return GroupNormForward::apply(x, num_groups, weight, bias, eps)[0];
}

std::tuple<Tensor, Tensor, Tensor> fwd_autograd(const Tensor& x, int64_t num_groups, const optional<Tensor>& weight,
                                                const optional<Tensor>& bias, double eps) {
  auto out = GroupNormForward::apply(x, num_groups, weight, bias, eps);
  return {out[0], out[1], out[2]};
}

std::tuple<Tensor, Tensor, Tensor> bwd_autograd(const Tensor& dy, const Tensor& x, int64_t num_groups,
                                                const optional<Tensor>& weight, const Tensor& mean,
                                                const Tensor& rstd, bool compute_dw, bool compute_db) {
  auto out = GroupNormBackward::apply(dy, x, num_groups, weight, mean, rstd, compute_dw, compute_db);
  return {out[0], out[1], out[2]};
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("group_norm", &group_norm_cpu);
  m.impl("group_norm_fwd", &fwd_cpu);
  m.impl("group_norm_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("group_norm", &group_norm_meta);
  m.impl("group_norm_fwd", &fwd_meta);
  m.impl("group_norm_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("group_norm", &group_norm_cuda);
  m.impl("group_norm_fwd", &fwd_cuda);
  m.impl("group_norm_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("group_norm", &group_norm_autograd);
  m.impl("group_norm_fwd", &fwd_autograd);
  m.impl("group_norm_bwd", &bwd_autograd);
}

}  // namespace liger::group_norm
