// Rotary position embeddings: Hugging Face rotate-half RoPE (full and partial), Qwen2-VL multimodal RoPE,
// Llama 4 complex (interleaved-pair) RoPE. One kernel serves all three (triton_src/rope.py).
#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "liger_gen/rope.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

#include <algorithm>
#include <numeric>

namespace liger::rope {

using at::Tensor;
using namespace liger::gen::rope;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("rope(Tensor q, Tensor k, Tensor cos, Tensor sin, int unsqueeze_dim=1) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // q_order/k_order: the dims of the forward's q/k from the largest stride to the smallest; the gradients are
  // laid out that way (HF's q is a transposed view: a dq in its layout reaches q_proj's backward without a copy).
  m.def("rope_bwd(Tensor dq, Tensor dk, Tensor cos, Tensor sin, int unsqueeze_dim, int[] q_order=[], "
        "int[] k_order=[]) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("llama4_rope(Tensor q, Tensor k, Tensor freqs_cos, Tensor freqs_sin) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("llama4_rope_bwd(Tensor dq, Tensor dk, Tensor freqs_cos, Tensor freqs_sin) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("qwen2vl_mrope(Tensor q, Tensor k, Tensor cos, Tensor sin, int[] mrope_section, int unsqueeze_dim=1) -> "
        "(Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Decoding with a static cache: rope(q, k) as unsqueeze_dim=2 (q [B, S, H, D]), the rotated k and v written into
  // k_cache / v_cache [B, L, Hk, D] at slots cache_position [S]; returns the rotated q. Inference only.
  m.def("rope_kv_cache(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) v_cache, "
        "Tensor cache_position) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

// The rotation an op applies: rotate-half (rope) or interleaved pairs (llama4_rope, always [B, S, H, D]).
struct Mode {
  const char* op;
  bool interleaved;
};

int64_t norm_unsqueeze_dim(int64_t unsqueeze_dim, const char* op) {
  // cos.unsqueeze(d) for 3-d cos and 4-d q: -3 is 1 and -2 is 2; 0 and 3 would not broadcast against q.
  const int64_t d = unsqueeze_dim < 0 ? unsqueeze_dim + 4 : unsqueeze_dim;
  TORCH_CHECK(d == 1 || d == 2, op, ": unsqueeze_dim must be 1 (q [B, H, S, D]) or 2 (q [B, S, H, D]), got ",
              unsqueeze_dim);
  return d;
}

bool dtype_ok(const Tensor& t) {
  return is_half_or_float(t.scalar_type()) || (t.scalar_type() == at::kDouble && !t.is_cuda());
}

// q and k as (batch, token, head, column) views (no copy).
Tensor canonical(const Tensor& t, int64_t udim) { return udim == 1 ? t.transpose(1, 2) : t; }

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin, int64_t udim, Mode mode,
                  const char* qn = "q", const char* kn = "k") {
  const char* op = mode.op;
  const char* cn = mode.interleaved ? "freqs_cos" : "cos";
  const char* sn = mode.interleaved ? "freqs_sin" : "sin";
  const char* layout = udim == 1 ? "[B, H, S, D]" : "[B, S, H, D]";
  TORCH_CHECK(q.dim() == 4, op, ": ", qn, " must be 4-D ", layout, ", got shape ", shape_str(q));
  TORCH_CHECK(k.dim() == 4, op, ": ", kn, " must be 4-D ", layout, ", got shape ", shape_str(k));
  TORCH_CHECK(dtype_ok(q), op, ": ", qn, " must be float32, bfloat16 or float16 (float64 on CPU), got ",
              q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type(), op, ": ", kn, " must have ", qn, "'s dtype ", q.scalar_type(),
              ", got ", k.scalar_type());
  TORCH_CHECK(at::isFloatingType(cos.scalar_type()) && sin.scalar_type() == cos.scalar_type(), op, ": ", cn,
              " and ", sn, " must be floating-point tensors of one dtype, got ", cos.scalar_type(), " and ",
              sin.scalar_type());
  for (const Tensor* t : {&k, &cos, &sin})
    TORCH_CHECK(t->device() == q.device(), op, ": ", qn, ", ", kn, ", ", cn, " and ", sn,
                " must be on one device, got ", q.device(), ", ", k.device(), ", ", cos.device(), ", ",
                sin.device());
  const Tensor qc = canonical(q, udim), kc = canonical(k, udim);
  const char* cs_layout = mode.interleaved ? "[B or 1, S, D/2]" : "[B or 1, S, R]";
  TORCH_CHECK(cos.dim() == 3, op, ": ", cn, " must be 3-D ", cs_layout, ", got shape ", shape_str(cos));
  TORCH_CHECK(sin.dim() == 3, op, ": ", sn, " must be 3-D ", cs_layout, ", got shape ", shape_str(sin));
  for (int64_t i = 0; i < 3; ++i)
    TORCH_SYM_CHECK(sin.sym_size(i).sym_eq(cos.sym_size(i)), op, ": ", sn, " must have ", cn, "'s shape ",
                    shape_str(cos), ", got ", shape_str(sin));
  for (int64_t i : {0, 1, 3})
    TORCH_SYM_CHECK(kc.sym_size(i).sym_eq(qc.sym_size(i)), op, ": ", kn, " must match ", qn,
                    " in every dimension but the heads (", layout, "), got ", shape_str(k), " and ", shape_str(q));
  TORCH_SYM_CHECK(cos.sym_size(0).sym_eq(1).sym_or(cos.sym_size(0).sym_eq(qc.sym_size(0))), op, ": ", cn,
                  "'s first dimension must be 1 or ", qn, "'s batch ", qc.sym_size(0), ", got shape ", shape_str(cos));
  TORCH_SYM_CHECK(cos.sym_size(1).sym_eq(qc.sym_size(1)), op, ": ", cn, "'s second dimension must be ", qn,
                  "'s sequence length ", qc.sym_size(1), ", got shape ", shape_str(cos));
  const c10::SymInt d = qc.sym_size(3);
  const c10::SymInt r = cos.sym_size(2);
  if (mode.interleaved) {
    TORCH_SYM_CHECK((d % 2).sym_eq(0), op, ": ", qn, "'s last dimension must be even (complex pairs), got shape ",
                    shape_str(q));
    TORCH_SYM_CHECK((r * 2).sym_eq(d), op, ": ", cn, "'s last dimension must be half of ", qn, "'s (", d,
                    " / 2), got shape ", shape_str(cos));
  } else {
    TORCH_SYM_CHECK((r % 2).sym_eq(0), op, ": ", cn, "'s last dimension (the rotary dimension R) must be even, got ",
                    "shape ", shape_str(cos));
    TORCH_SYM_CHECK(r.sym_le(d), op, ": ", cn, "'s last dimension (the rotary dimension R) must be at most ", qn,
                    "'s head dimension ", d, ", got shape ", shape_str(cos));
  }
}

// ---- gradient layouts

// The dims of t from the largest stride to the smallest (ties keep the logical order): the layout its gradient
// is given. Empty when the strides are symbolic (torch.compile and export choose layouts themselves).
std::vector<int64_t> layout_order(const Tensor& t) {
  if (t.unsafeGetTensorImpl()->has_symbolic_sizes_strides()) return {};
  std::vector<int64_t> order(t.dim());
  std::iota(order.begin(), order.end(), 0);
  const auto st = t.strides();
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return st[a] > st[b]; });
  return order;
}

// An empty tensor of t's sizes laid out in `order` (outermost first); empty_like(t) when order is empty.
Tensor empty_in_order(const Tensor& t, at::IntArrayRef order, const char* op, const char* name) {
  if (order.empty()) return at::empty_like(t);
  std::vector<int64_t> inv(order.size(), -1);
  bool perm = static_cast<int64_t>(order.size()) == t.dim();
  for (size_t i = 0; perm && i < order.size(); ++i) {
    perm = order[i] >= 0 && order[i] < t.dim() && inv[order[i]] < 0;
    if (perm) inv[order[i]] = static_cast<int64_t>(i);
  }
  TORCH_CHECK(perm, op, ": ", name, " must be empty or a permutation of the ", t.dim(), " dims, got ", order);
  std::vector<c10::SymInt> sizes;
  for (int64_t o : order) sizes.push_back(t.sym_size(o));
  return at::empty_symint(sizes, t.options()).permute(inv);
}

// ---- CPU reference (ATen ops; the kernels' arithmetic: fp32, one rounding at the end)

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// cos/sin halves as the kernel uses them: (c1, c2, a1, a2) with o1 = x1*c1 + x2*a1, o2 = x2*c2 + x1*a2.
std::array<Tensor, 4> coefficients(const Tensor& cos, const Tensor& sin, int64_t udim, bool interleaved,
                                   bool backward, c10::ScalarType acc) {
  Tensor c = cos.to(acc).unsqueeze(udim), s = sin.to(acc).unsqueeze(udim);
  Tensor c1 = c, c2 = c, s1 = s, s2 = s;
  if (!interleaved) {
    const int64_t h = cos.size(-1) / 2;
    c1 = c.narrow(-1, 0, h), c2 = c.narrow(-1, h, h), s1 = s.narrow(-1, 0, h), s2 = s.narrow(-1, h, h);
  }
  return backward ? std::array<Tensor, 4>{c1, c2, s2, -s1} : std::array<Tensor, 4>{c1, c2, -s1, s2};
}

Tensor rotate_cpu(const Tensor& x, const std::array<Tensor, 4>& co, int64_t rot, bool interleaved, Tensor y) {
  const auto acc = acc_dtype(x);
  Tensor xf = x.to(acc);
  const auto& [c1, c2, a1, a2] = co;
  Tensor out;
  if (interleaved) {
    Tensor pairs = xf.unflatten(-1, {-1, 2});
    Tensor x1 = pairs.select(-1, 0), x2 = pairs.select(-1, 1);
    out = at::stack({x1 * c1 + x2 * a1, x2 * c2 + x1 * a2}, -1).flatten(-2);
  } else {
    const int64_t h = rot / 2;
    Tensor x1 = xf.narrow(-1, 0, h), x2 = xf.narrow(-1, h, h);
    out = at::cat({x1 * c1 + x2 * a1, x2 * c2 + x1 * a2, xf.narrow(-1, rot, x.size(-1) - rot)}, -1);
  }
  // The CUDA path's output layout.
  y.copy_(out);
  return y;
}

std::tuple<Tensor, Tensor> apply_cpu(const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin,
                                     int64_t udim, Mode mode, bool backward, at::IntArrayRef q_order = {},
                                     at::IntArrayRef k_order = {}) {
  const auto co = coefficients(cos, sin, udim, mode.interleaved, backward, acc_dtype(q));
  const int64_t rot = mode.interleaved ? q.size(-1) : cos.size(-1);
  return {rotate_cpu(q, co, rot, mode.interleaved, empty_in_order(q, q_order, mode.op, "q_order")),
          rotate_cpu(k, co, rot, mode.interleaved, empty_in_order(k, k_order, mode.op, "k_order"))};
}

constexpr Mode ROPE{"rope", false};
constexpr Mode ROPE_BWD{"rope_bwd", false};
constexpr Mode LLAMA4{"llama4_rope", true};
constexpr Mode LLAMA4_BWD{"llama4_rope_bwd", true};

std::tuple<Tensor, Tensor> rope_cpu(const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin,
                                    int64_t unsqueeze_dim) {
  const int64_t udim = norm_unsqueeze_dim(unsqueeze_dim, ROPE.op);
  check_inputs(q, k, cos, sin, udim, ROPE);
  return apply_cpu(q, k, cos, sin, udim, ROPE, false);
}

std::tuple<Tensor, Tensor> rope_bwd_cpu(const Tensor& dq, const Tensor& dk, const Tensor& cos, const Tensor& sin,
                                        int64_t unsqueeze_dim, at::IntArrayRef q_order, at::IntArrayRef k_order) {
  const int64_t udim = norm_unsqueeze_dim(unsqueeze_dim, ROPE_BWD.op);
  check_inputs(dq, dk, cos, sin, udim, ROPE_BWD, "dq", "dk");
  return apply_cpu(dq, dk, cos, sin, udim, ROPE_BWD, true, q_order, k_order);
}

std::tuple<Tensor, Tensor> llama4_cpu(const Tensor& q, const Tensor& k, const Tensor& fc, const Tensor& fs) {
  check_inputs(q, k, fc, fs, 2, LLAMA4);
  return apply_cpu(q, k, fc, fs, 2, LLAMA4, false);
}

std::tuple<Tensor, Tensor> llama4_bwd_cpu(const Tensor& dq, const Tensor& dk, const Tensor& fc, const Tensor& fs) {
  check_inputs(dq, dk, fc, fs, 2, LLAMA4_BWD, "dq", "dk");
  return apply_cpu(dq, dk, fc, fs, 2, LLAMA4_BWD, true);
}

// ---- Meta (SymInt-clean)

std::tuple<Tensor, Tensor> rope_meta(const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin,
                                     int64_t unsqueeze_dim) {
  check_inputs(q, k, cos, sin, norm_unsqueeze_dim(unsqueeze_dim, ROPE.op), ROPE);
  return {at::empty_like(q), at::empty_like(k)};
}

std::tuple<Tensor, Tensor> rope_bwd_meta(const Tensor& dq, const Tensor& dk, const Tensor& cos, const Tensor& sin,
                                         int64_t unsqueeze_dim, at::IntArrayRef q_order, at::IntArrayRef k_order) {
  check_inputs(dq, dk, cos, sin, norm_unsqueeze_dim(unsqueeze_dim, ROPE_BWD.op), ROPE_BWD, "dq", "dk");
  return {empty_in_order(dq, q_order, ROPE_BWD.op, "q_order"), empty_in_order(dk, k_order, ROPE_BWD.op, "k_order")};
}

std::tuple<Tensor, Tensor> llama4_meta(const Tensor& q, const Tensor& k, const Tensor& fc, const Tensor& fs) {
  check_inputs(q, k, fc, fs, 2, LLAMA4);
  return {at::empty_like(q), at::empty_like(k)};
}

std::tuple<Tensor, Tensor> llama4_bwd_meta(const Tensor& dq, const Tensor& dk, const Tensor& fc, const Tensor& fs) {
  check_inputs(dq, dk, fc, fs, 2, LLAMA4_BWD, "dq", "dk");
  return {at::empty_like(dq), at::empty_like(dk)};
}

// ---- rope_kv_cache: checks, CPU reference, Meta

constexpr Mode ROPE_KV{"rope_kv_cache", false};

void check_kv_cache(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cos, const Tensor& sin,
                    const Tensor& k_cache, const Tensor& v_cache, const Tensor& pos) {
  const char* op = ROPE_KV.op;
  check_inputs(q, k, cos, sin, 2, ROPE_KV);
  TORCH_CHECK(v.dim() == 4, op, ": v must be 4-D [B, S, Hk, D], got shape ", shape_str(v));
  TORCH_CHECK(v.scalar_type() == k.scalar_type(), op, ": v must have k's dtype ", k.scalar_type(), ", got ",
              v.scalar_type());
  for (int64_t i = 0; i < 4; ++i)
    TORCH_SYM_CHECK(v.sym_size(i).sym_eq(k.sym_size(i)), op, ": v must have k's shape ", shape_str(k), ", got ",
                    shape_str(v));
  for (const Tensor* c : {&k_cache, &v_cache}) {
    const char* name = c == &k_cache ? "k_cache" : "v_cache";
    TORCH_CHECK(c->dim() == 4, op, ": ", name, " must be 4-D [B, L, Hk, D], got shape ", shape_str(*c));
    TORCH_CHECK(c->scalar_type() == k.scalar_type(), op, ": ", name, " must have k's dtype ", k.scalar_type(),
                ", got ", c->scalar_type());
    for (int64_t i : {0, 2, 3})
      TORCH_SYM_CHECK(c->sym_size(i).sym_eq(k.sym_size(i)), op, ": ", name,
                      " must match k [B, S, Hk, D] in every dimension but the second (the cache length), got ",
                      shape_str(*c), " and ", shape_str(k));
    TORCH_CHECK(c->size(3) <= 1 || c->stride(3) == 1, op, ": ", name,
                "'s last dimension must be dense (it is written in place), got strides ", c->strides());
  }
  TORCH_CHECK(!k_cache.is_same(v_cache), op, ": k_cache and v_cache must be different tensors");
  TORCH_CHECK(pos.dim() == 1 && pos.scalar_type() == at::kLong, op,
              ": cache_position must be a 1-D int64 tensor [S] (the slot of each new token), got ", pos.scalar_type(),
              " of shape ", shape_str(pos));
  TORCH_SYM_CHECK(pos.sym_size(0).sym_eq(q.sym_size(1)), op, ": cache_position must have one slot per token (",
                  q.sym_size(1), "), got shape ", shape_str(pos));
  for (const Tensor* t : {&v, &k_cache, &v_cache, &pos})
    TORCH_CHECK(t->device() == q.device(), op, ": every tensor must be on q's device ", q.device(), ", got ",
                t->device());
}

Tensor rope_kv_cache_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cos, const Tensor& sin,
                         Tensor& k_cache, Tensor& v_cache, const Tensor& pos) {
  check_kv_cache(q, k, v, cos, sin, k_cache, v_cache, pos);
  auto [oq, ok] = apply_cpu(q, k, cos, sin, 2, ROPE_KV, false);
  // Slots outside the cache are skipped, as the kernel does.
  const Tensor keep = ((pos >= 0) & (pos < k_cache.size(1))).nonzero().squeeze(1);
  const Tensor slots = pos.index_select(0, keep);
  k_cache.index_copy_(1, slots, ok.index_select(1, keep));
  v_cache.index_copy_(1, slots, v.index_select(1, keep));
  return oq;
}

Tensor rope_kv_cache_meta(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cos, const Tensor& sin,
                          Tensor& k_cache, Tensor& v_cache, const Tensor& pos) {
  check_kv_cache(q, k, v, cos, sin, k_cache, v_cache, pos);
  return at::empty_like(q);
}

// ---- CUDA launcher

// The cos/sin dtype the kernels take: q's own or fp32 (interleaved: always fp32); others are converted.
c10::ScalarType kernel_cs_dtype(c10::ScalarType x, c10::ScalarType cs, bool interleaved) {
  return (!interleaved && cs == x) ? x : at::kFloat;
}

rope_kernel_key choose(c10::ScalarType xdt, c10::ScalarType csdt, int64_t half, bool aligned, bool interleaved) {
  rope_kernel_key key{};
  key.x_dtype = xdt;
  key.cs_dtype = csdt;
  key.block_c = std::min<int64_t>(MAX_BLOCK_C, std::max<int64_t>(MIN_BLOCK_C, next_pow2(half)));
  key.aligned = aligned;
  key.interleaved = interleaved;
  return key;
}

// The last dimension must be dense; any other stride (0 included) is passed to the kernel as it is.
Tensor unit_last(const Tensor& t) { return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous(); }

std::tuple<Tensor, Tensor> apply_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& cos_in,
                                      const Tensor& sin_in, int64_t udim, Mode mode, bool backward,
                                      at::IntArrayRef q_order = {}, at::IntArrayRef k_order = {}) {
  TORCH_CHECK(is_half_or_float(q_in.scalar_type()), mode.op,
              ": the CUDA kernels take float32, bfloat16 or float16 tensors, got ", q_in.scalar_type());
  c10::DeviceGuard guard(q_in.device());
  const Tensor q = unit_last(q_in), k = unit_last(k_in);
  Tensor oq = empty_in_order(q, q_order, mode.op, "q_order"), ok = empty_in_order(k, k_order, mode.op, "k_order");
  if (q.numel() == 0 && k.numel() == 0) return {oq, ok};
  const auto csdt = kernel_cs_dtype(q.scalar_type(), cos_in.scalar_type(), mode.interleaved);
  const Tensor cos = unit_last(cos_in.scalar_type() == csdt ? cos_in : cos_in.to(csdt));
  const Tensor sin = unit_last(sin_in.scalar_type() == csdt ? sin_in : sin_in.to(csdt));
  const Tensor qc = canonical(q, udim), kc = canonical(k, udim), oqc = canonical(oq, udim),
               okc = canonical(ok, udim);
  const int64_t batch = qc.size(0), seq = qc.size(1), d = qc.size(3);
  const int64_t half = mode.interleaved ? d / 2 : cos.size(2) / 2;
  TORCH_CHECK(batch * seq < (int64_t(1) << 31) && qc.size(2) < (int64_t(1) << 31) && kc.size(2) < (int64_t(1) << 31),
              mode.op, ": at most 2^31 - 1 tokens (B * S) and heads are supported, got ", batch * seq, " tokens");
  const int64_t cb = cos.size(0) == 1 ? 0 : cos.stride(0), sb = sin.size(0) == 1 ? 0 : sin.stride(0);
  const int64_t vec = vec_elems(q.scalar_type()), cvec = vec_elems(csdt);
  bool aligned = half % vec == 0 && d % vec == 0 && cb % cvec == 0 && sb % cvec == 0 && cos.stride(1) % cvec == 0 &&
                 sin.stride(1) % cvec == 0;
  for (const Tensor* t : {&qc, &kc, &oqc, &okc})
    aligned = aligned && aligned16(*t) && t->stride(0) % vec == 0 && t->stride(1) % vec == 0 &&
              t->stride(2) % vec == 0;
  aligned = aligned && aligned16(cos) && aligned16(sin);
  const LaunchContext ctx = launch_context(q);
  const auto& v = rope_kernel_get(choose(q.scalar_type(), csdt, half, aligned, mode.interleaved), ctx.arch_slot);
  const int64_t a = v.ALIGN, ca = v.CALIGN;
  // One program per token; with fewer tokens than 8 programs per SM (short sequences) each token's head
  // blocks are split over more programs (grid y), so that enough loads are in flight. (8: a first guess from
  // 4-warp programs and 64 resident warps per SM; to be tuned on the H200.)
  const int64_t tokens = batch * seq;
  const int64_t head_blocks = ceil_div(std::max<int64_t>({qc.size(2), kc.size(2), 1}), v.BLOCK_H);
  const int64_t split = std::clamp<int64_t>(ceil_div(int64_t(ctx.sm_count) * 8, tokens), 1, head_blocks);
  Grid grid{static_cast<uint32_t>(tokens), static_cast<uint32_t>(split)};
  rope_kernel_launch(v, ctx, grid, ptr(q), ptr(k), ptr(cos), ptr(sin), ptr(oq),
                     ptr(ok), seq, qc.size(2), kc.size(2), half / a, d / a, qc.stride(0) / a, qc.stride(1) / a,
                     qc.stride(2) / a, kc.stride(0) / a, kc.stride(1) / a, kc.stride(2) / a, oqc.stride(0) / a,
                     oqc.stride(1) / a, oqc.stride(2) / a, okc.stride(0) / a, okc.stride(1) / a, okc.stride(2) / a,
                     cb / ca, cos.stride(1) / ca, sb / ca, sin.stride(1) / ca, backward ? 1 : 0);
  return {oq, ok};
}

std::tuple<Tensor, Tensor> rope_cuda(const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin,
                                     int64_t unsqueeze_dim) {
  const int64_t udim = norm_unsqueeze_dim(unsqueeze_dim, ROPE.op);
  check_inputs(q, k, cos, sin, udim, ROPE);
  return apply_cuda(q, k, cos, sin, udim, ROPE, false);
}

std::tuple<Tensor, Tensor> rope_bwd_cuda(const Tensor& dq, const Tensor& dk, const Tensor& cos, const Tensor& sin,
                                         int64_t unsqueeze_dim, at::IntArrayRef q_order, at::IntArrayRef k_order) {
  const int64_t udim = norm_unsqueeze_dim(unsqueeze_dim, ROPE_BWD.op);
  check_inputs(dq, dk, cos, sin, udim, ROPE_BWD, "dq", "dk");
  return apply_cuda(dq, dk, cos, sin, udim, ROPE_BWD, true, q_order, k_order);
}

std::tuple<Tensor, Tensor> llama4_cuda(const Tensor& q, const Tensor& k, const Tensor& fc, const Tensor& fs) {
  check_inputs(q, k, fc, fs, 2, LLAMA4);
  return apply_cuda(q, k, fc, fs, 2, LLAMA4, false);
}

std::tuple<Tensor, Tensor> llama4_bwd_cuda(const Tensor& dq, const Tensor& dk, const Tensor& fc, const Tensor& fs) {
  check_inputs(dq, dk, fc, fs, 2, LLAMA4_BWD, "dq", "dk");
  return apply_cuda(dq, dk, fc, fs, 2, LLAMA4_BWD, true);
}

Tensor rope_kv_cache_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& cos_in,
                          const Tensor& sin_in, Tensor& k_cache, Tensor& v_cache, const Tensor& pos) {
  const char* op = ROPE_KV.op;
  check_kv_cache(q_in, k_in, v_in, cos_in, sin_in, k_cache, v_cache, pos);
  TORCH_CHECK(is_half_or_float(q_in.scalar_type()), op,
              ": the CUDA kernels take float32, bfloat16 or float16 tensors, got ", q_in.scalar_type());
  c10::DeviceGuard guard(q_in.device());
  const Tensor q = unit_last(q_in), k = unit_last(k_in), v = unit_last(v_in);
  Tensor oq = at::empty_like(q);
  if (q.numel() == 0 && k.numel() == 0) return oq;
  const auto csdt = kernel_cs_dtype(q.scalar_type(), cos_in.scalar_type(), false);
  const Tensor cos = unit_last(cos_in.scalar_type() == csdt ? cos_in : cos_in.to(csdt));
  const Tensor sin = unit_last(sin_in.scalar_type() == csdt ? sin_in : sin_in.to(csdt));
  const Tensor position = pos.is_contiguous() ? pos : pos.contiguous();
  const int64_t batch = q.size(0), seq = q.size(1), d = q.size(3), half = cos.size(2) / 2;
  TORCH_CHECK(batch * seq < (int64_t(1) << 31) && q.size(2) < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 tokens (B * S) and heads are supported, got ", batch * seq, " tokens");
  const int64_t cb = cos.size(0) == 1 ? 0 : cos.stride(0), sb = sin.size(0) == 1 ? 0 : sin.stride(0);
  const int64_t vec = vec_elems(q.scalar_type()), cvec = vec_elems(csdt);
  bool aligned = half % vec == 0 && d % vec == 0 && cb % cvec == 0 && sb % cvec == 0 && cos.stride(1) % cvec == 0 &&
                 sin.stride(1) % cvec == 0 && aligned16(cos) && aligned16(sin);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k, &v, &oq, &k_cache, &v_cache})
    aligned = aligned && aligned16(*t) && t->stride(0) % vec == 0 && t->stride(1) % vec == 0 &&
              t->stride(2) % vec == 0;
  const LaunchContext ctx = launch_context(q);
  rope_kv_cache_kernel_key key{};
  key.x_dtype = q.scalar_type();
  key.cs_dtype = csdt;
  key.aligned = aligned;
  const auto& var = rope_kv_cache_kernel_get(key, ctx.arch_slot);
  const int64_t a = var.ALIGN, ca = var.CALIGN;
  // rope's grid: one program per token, each token's head blocks split over more programs when tokens are few.
  const int64_t tokens = batch * seq;
  const int64_t head_blocks = ceil_div(std::max<int64_t>({q.size(2), k.size(2), 1}), var.BLOCK_H);
  const int64_t split = std::clamp<int64_t>(ceil_div(int64_t(ctx.sm_count) * 8, tokens), 1, head_blocks);
  Grid grid{static_cast<uint32_t>(tokens), static_cast<uint32_t>(split)};
  rope_kv_cache_kernel_launch(
      var, ctx, grid, ptr(q), ptr(k), ptr(v), ptr(cos), ptr(sin), ptr(oq), ptr(k_cache), ptr(v_cache), ptr(position),
      seq, k_cache.size(1), q.size(2), k.size(2), half / a, d / a, q.stride(0) / a, q.stride(1) / a, q.stride(2) / a,
      k.stride(0) / a, k.stride(1) / a, k.stride(2) / a, v.stride(0) / a, v.stride(1) / a, v.stride(2) / a,
      oq.stride(0) / a, oq.stride(1) / a, oq.stride(2) / a, k_cache.stride(0) / a, k_cache.stride(1) / a,
      k_cache.stride(2) / a, v_cache.stride(0) / a, v_cache.stride(1) / a, v_cache.stride(2) / a, cb / ca,
      cos.stride(1) / ca, sb / ca, sin.stride(1) / ca);
  return oq;
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck kv_cache_variant_check("rope_kv_cache", [](int arch_slot) {
  std::vector<std::string> missing;
  for (c10::ScalarType x : {at::kFloat, at::kBFloat16, at::kHalf})
    for (c10::ScalarType cs : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble})
      for (bool aligned : {false, true}) {
        rope_kv_cache_kernel_key key{};
        key.x_dtype = x;
        key.cs_dtype = kernel_cs_dtype(x, cs, false);
        key.aligned = aligned;
        if (!rope_kv_cache_kernel_find(key, arch_slot)) missing.push_back(key.str());
      }
  return missing;
});

// Every key the launcher can ask for, per arch slot, must have been built.
const VariantCheck variant_check("rope", [](int arch_slot) {
  std::vector<std::string> missing;
  for (c10::ScalarType x : {at::kFloat, at::kBFloat16, at::kHalf})
    for (c10::ScalarType cs : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble})
      for (bool interleaved : {false, true})
        for (int64_t half : {1, 2, 7, 8, 16, 17, 32, 64, 100, 128, 129, 1000})
          for (bool aligned : {false, true}) {
            auto key = choose(x, kernel_cs_dtype(x, cs, interleaved), half, aligned, interleaved);
            if (!rope_kernel_find(key, arch_slot)) missing.push_back(key.str());
          }
  return missing;
});

// ---- Autograd (C++: TorchScript and libtorch programs get gradients too)

// Gradients of cos and sin (rare: cos/sin are usually buffers), from the saved q and k with ATen ops:
// o = x*c + rotate(x)*s is linear in c and s, so dc = sum over heads of g*x and ds = sum of g*rotate(x),
// reduced over the batch where cos broadcasts (shape [1, S, R]).
std::array<Tensor, 2> cos_sin_grads(const Tensor& x, const Tensor& g, const Tensor& cos, int64_t udim,
                                    bool interleaved) {
  const auto acc = acc_dtype(x);
  Tensor xf = x.to(acc), gf = g.to(acc);
  Tensor dc, ds;
  if (interleaved) {
    Tensor xp = xf.unflatten(-1, {-1, 2}), gp = gf.unflatten(-1, {-1, 2});
    Tensor x1 = xp.select(-1, 0), x2 = xp.select(-1, 1), g1 = gp.select(-1, 0), g2 = gp.select(-1, 1);
    dc = g1 * x1 + g2 * x2;
    ds = g2 * x1 - g1 * x2;
  } else {
    const int64_t r = cos.size(-1), h = r / 2;
    Tensor xr = xf.narrow(-1, 0, r), gr = gf.narrow(-1, 0, r);
    dc = gr * xr;
    ds = gr * at::cat({-xr.narrow(-1, h, h), xr.narrow(-1, 0, h)}, -1);
  }
  return {dc.sum(udim), ds.sum(udim)};
}

class RopeBackward : public torch::autograd::Function<RopeBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dq, const Tensor& dk,
                                                const Tensor& cos, const Tensor& sin, int64_t udim, bool interleaved,
                                                const std::vector<int64_t>& q_order = {},
                                                const std::vector<int64_t>& k_order = {}) {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tuple<Tensor, Tensor> out;
    if (interleaved) {
      static auto op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("liger::llama4_rope_bwd", "")
                           .typed<decltype(llama4_bwd_cpu)>();
      out = op.call(dq, dk, cos, sin);
    } else {
      static auto op =
          c10::Dispatcher::singleton().findSchemaOrThrow("liger::rope_bwd", "").typed<decltype(rope_bwd_cpu)>();
      out = op.call(dq, dk, cos, sin, udim, q_order, k_order);
    }
    return {std::get<0>(out), std::get<1>(out)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "rope: second derivatives are not supported (liger::rope_bwd is not differentiable)");
  }
};

class RopeForward : public torch::autograd::Function<RopeForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& q, const Tensor& k,
                                                const Tensor& cos, const Tensor& sin, int64_t udim, bool interleaved) {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tuple<Tensor, Tensor> out;
    if (interleaved) {
      static auto op =
          c10::Dispatcher::singleton().findSchemaOrThrow("liger::llama4_rope", "").typed<decltype(llama4_cpu)>();
      out = op.call(q, k, cos, sin);
    } else {
      static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::rope", "").typed<decltype(rope_cpu)>();
      out = op.call(q, k, cos, sin, udim);
    }
    const bool cs_grad = cos.requires_grad() || sin.requires_grad();
    // q and k are kept only when cos/sin need gradients.
    ctx->save_for_backward({cos, sin, cs_grad ? q : Tensor(), cs_grad ? k : Tensor()});
    ctx->saved_data["udim"] = udim;
    ctx->saved_data["interleaved"] = interleaved;
    ctx->saved_data["q_order"] = layout_order(q);
    ctx->saved_data["k_order"] = layout_order(k);
    return {std::get<0>(out), std::get<1>(out)};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const int64_t udim = ctx->saved_data["udim"].toInt();
    const bool interleaved = ctx->saved_data["interleaved"].toBool();
    Tensor dq, dk, dcos, dsin;
    if (ctx->needs_input_grad(0) || ctx->needs_input_grad(1)) {
      auto out = RopeBackward::apply(grads[0], grads[1], saved[0], saved[1], udim, interleaved,
                                     ctx->saved_data["q_order"].toIntVector(), ctx->saved_data["k_order"].toIntVector());
      dq = out[0];
      dk = out[1];
    }
    if (ctx->needs_input_grad(2) || ctx->needs_input_grad(3)) {
      const Tensor& cos = saved[0];
      auto gq = cos_sin_grads(saved[2], grads[0], cos, udim, interleaved);
      auto gk = cos_sin_grads(saved[3], grads[1], cos, udim, interleaved);
      dcos = at::sum_to(gq[0] + gk[0], cos.sym_sizes()).to(cos.scalar_type());
      dsin = at::sum_to(gq[1] + gk[1], saved[1].sym_sizes()).to(saved[1].scalar_type());
    }
    return {dq, dk, ctx->needs_input_grad(2) ? dcos : Tensor(), ctx->needs_input_grad(3) ? dsin : Tensor(), Tensor(),
            Tensor()};
  }
};

bool needs_grad(std::initializer_list<const Tensor*> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor* t : ts)
    if (t->requires_grad()) return true;
  return false;
}

std::tuple<Tensor, Tensor> rope_autograd(c10::DispatchKeySet ks, const Tensor& q, const Tensor& k, const Tensor& cos,
                                         const Tensor& sin, int64_t unsqueeze_dim) {
  if (!needs_grad({&q, &k, &cos, &sin})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::rope", "").typed<decltype(rope_cpu)>();
    return op.redispatch(ks & c10::after_ADInplaceOrView_keyset, q, k, cos, sin, unsqueeze_dim);
  }
  const int64_t udim = norm_unsqueeze_dim(unsqueeze_dim, ROPE.op);
  auto out = RopeForward::apply(q, k, cos, sin, udim, false);
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> llama4_autograd(c10::DispatchKeySet ks, const Tensor& q, const Tensor& k, const Tensor& fc,
                                           const Tensor& fs) {
  if (!needs_grad({&q, &k, &fc, &fs})) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::llama4_rope", "").typed<decltype(llama4_cpu)>();
    return op.redispatch(ks & c10::after_ADInplaceOrView_keyset, q, k, fc, fs);
  }
  auto out = RopeForward::apply(q, k, fc, fs, 2, true);
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> rope_bwd_autograd(const Tensor& dq, const Tensor& dk, const Tensor& cos, const Tensor& sin,
                                             int64_t unsqueeze_dim, at::IntArrayRef q_order, at::IntArrayRef k_order) {
  auto out = RopeBackward::apply(dq, dk, cos, sin, norm_unsqueeze_dim(unsqueeze_dim, ROPE_BWD.op), false,
                                 q_order.vec(), k_order.vec());
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> llama4_bwd_autograd(const Tensor& dq, const Tensor& dk, const Tensor& fc, const Tensor& fs) {
  auto out = RopeBackward::apply(dq, dk, fc, fs, 2, true);
  return {out[0], out[1]};
}

// ---- Qwen2-VL multimodal RoPE: composite over liger::rope
// HF apply_multimodal_rotary_pos_emb: the sections (doubled, one copy per rotate-half) split cos's last
// dimension and chunk i comes from row i % 3 (t, h, w) of cos [3, B, S, D]. The combined [B, S, D] cos/sin
// are built with one cat each (2 * B*S*D elements written, about 1/20 of q/k's traffic at Hq 32, Hk 8),
// then the rope kernel runs; autograd flows through the cat to cos/sin as well.

Tensor mrope_combine(const Tensor& t, at::IntArrayRef sections, const char* name) {
  TORCH_CHECK(t.dim() == 4, "qwen2vl_mrope: ", name, " must be 4-D [3, B, S, D], got shape ", shape_str(t));
  TORCH_SYM_CHECK(t.sym_size(0).sym_eq(3), "qwen2vl_mrope: ", name,
                  "'s first dimension must be 3 (temporal, height, width rows), got shape ", shape_str(t));
  std::vector<c10::SymInt> split;
  int64_t total = 0;
  for (int rep = 0; rep < 2; ++rep)
    for (int64_t s : sections) {
      TORCH_CHECK(s > 0, "qwen2vl_mrope: mrope_section entries must be positive, got ", sections);
      split.emplace_back(s);
      total += s;
    }
  TORCH_SYM_CHECK(t.sym_size(3).sym_eq(total), "qwen2vl_mrope: mrope_section must sum to half of ", name,
                  "'s last dimension (", t.sym_size(3), " / 2), got ", sections, " (sum ", total / 2, ")");
  auto chunks = t.split_with_sizes_symint(split, -1);
  std::vector<Tensor> picked;
  picked.reserve(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) picked.push_back(chunks[i].select(0, static_cast<int64_t>(i % 3)));
  return at::cat(picked, -1);
}

std::tuple<Tensor, Tensor> qwen2vl_mrope(const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin,
                                         at::IntArrayRef mrope_section, int64_t unsqueeze_dim) {
  TORCH_CHECK(!mrope_section.empty(), "qwen2vl_mrope: mrope_section must not be empty");
  Tensor c = mrope_combine(cos, mrope_section, "cos"), s = mrope_combine(sin, mrope_section, "sin");
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::rope", "").typed<decltype(rope_cpu)>();
  return op.call(q, k, c, s, unsqueeze_dim);
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("rope_kv_cache", &rope_kv_cache_cpu);
  m.impl("rope", &rope_cpu);
  m.impl("rope_bwd", &rope_bwd_cpu);
  m.impl("llama4_rope", &llama4_cpu);
  m.impl("llama4_rope_bwd", &llama4_bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("rope_kv_cache", &rope_kv_cache_meta);
  m.impl("rope", &rope_meta);
  m.impl("rope_bwd", &rope_bwd_meta);
  m.impl("llama4_rope", &llama4_meta);
  m.impl("llama4_rope_bwd", &llama4_bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("rope_kv_cache", &rope_kv_cache_cuda);
  m.impl("rope", &rope_cuda);
  m.impl("rope_bwd", &rope_bwd_cuda);
  m.impl("llama4_rope", &llama4_cuda);
  m.impl("llama4_rope_bwd", &llama4_bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  // inference only: a clear error when a gradient would be needed
  m.impl("rope_kv_cache", torch::autograd::autogradNotImplementedFallback());
  m.impl("rope", &rope_autograd);
  m.impl("rope_bwd", &rope_bwd_autograd);
  m.impl("llama4_rope", &llama4_autograd);
  m.impl("llama4_rope_bwd", &llama4_bwd_autograd);
}

TORCH_LIBRARY_IMPL(liger, CompositeImplicitAutograd, m) { m.impl("qwen2vl_mrope", &qwen2vl_mrope); }

}  // namespace liger::rope
