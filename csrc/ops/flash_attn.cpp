// FlashAttention-2: out = softmax(mask(softcap(scale * q k^T))) v per head, forward and backward (FA2 algorithm:
// the forward saves the log-sum-exp, the backward recomputes the probabilities). Fixed-length batches
// (q [B, S_q, H_q, D]) and packed ones (q [total_q, H_q, D] with cu_seqlens); GQA/MQA (H_q a multiple of
// H_k); causal masks aligned to the bottom-right corner when S_q != S_k; sliding windows; soft-capping.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <climits>
#include <cstdlib>
#include <cmath>
#include <string>

#include "liger_gen/flash_attn.h"
#include "liger_gen/flash_attn_ws.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::flash_attn {

using at::Tensor;
using c10::SymInt;
using std::optional;
using namespace liger::gen::flash_attn;
using namespace liger::gen::flash_attn_ws;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("flash_attn(Tensor q, Tensor k, Tensor v, bool causal=False, float? softmax_scale=None, int window_left=-1, "
        "int window_right=-1, float softcap=0.0) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("flash_attn_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
        "SymInt max_seqlen_q, SymInt max_seqlen_k, bool causal=False, float? softmax_scale=None, "
        "int window_left=-1, int window_right=-1, float softcap=0.0) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def("flash_attn_fwd(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "
        "SymInt max_seqlen_q, SymInt max_seqlen_k, bool causal, float? softmax_scale, int window_left, "
        "int window_right, float softcap) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("flash_attn_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? cu_seqlens_q, "
        "Tensor? cu_seqlens_k, SymInt max_seqlen_q, SymInt max_seqlen_k, bool causal, float? softmax_scale, "
        "int window_left, int window_right, float softcap) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

// The arguments every piece shares, normalized: causal is window_right = 0; a negative window is unbounded.
struct Attn {
  bool varlen;
  double scale;
  int64_t window_left;
  int64_t window_right;
  double softcap;
};

Attn make_attn(const Tensor& q, bool varlen, bool causal, optional<double> softmax_scale, int64_t window_left,
               int64_t window_right, double softcap, const char* op) {
  TORCH_CHECK(window_left >= -1, op, ": window_left must be -1 (unbounded) or >= 0, got ", window_left);
  TORCH_CHECK(window_right >= -1, op, ": window_right must be -1 (unbounded) or >= 0, got ", window_right);
  TORCH_CHECK(std::isfinite(softcap) && softcap >= 0.0, op, ": softcap must be >= 0 (0 disables it), got ",
              softcap);
  if (softmax_scale.has_value())
    TORCH_CHECK(std::isfinite(*softmax_scale), op, ": softmax_scale must be finite, got ", *softmax_scale);
  // The default scale needs the head dim as a number; a symbolic one (never seen in practice) is guarded.
  const double scale =
      softmax_scale.has_value() ? *softmax_scale : 1.0 / std::sqrt(static_cast<double>(q.sym_size(-1).guard_int(
                                                                         __FILE__, __LINE__)));
  return Attn{varlen, scale, window_left, causal ? 0 : window_right, softcap};
}

bool cpu_dtype_ok(c10::ScalarType t) { return is_half_or_float(t) || t == at::kDouble; }

void check_same(const Tensor& a, const char* a_name, const Tensor& ref, const char* op) {
  TORCH_CHECK(a.device() == ref.device(), op, ": ", a_name, " is on ", a.device(), " but q is on ", ref.device(),
              "; all tensors must be on one device");
  TORCH_CHECK(a.scalar_type() == ref.scalar_type(), op, ": ", a_name, " must have q's dtype ", ref.scalar_type(),
              ", got ", a.scalar_type());
}

void check_cu_seqlens(const Tensor& cu, const char* name, const Tensor& q, const char* op) {
  TORCH_CHECK(cu.device() == q.device(), op, ": ", name, " is on ", cu.device(), " but q is on ", q.device());
  TORCH_CHECK(cu.scalar_type() == at::kInt, op, ": ", name, " must be int32, got ", cu.scalar_type());
  TORCH_CHECK(cu.dim() == 1, op, ": ", name, " must be 1-D [batch + 1], got shape ", shape_str(cu));
  TORCH_SYM_CHECK(cu.sym_size(0).sym_ge(1), op, ": ", name, " must hold at least one offset (0), got shape ",
                  shape_str(cu));
}

void check_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const optional<Tensor>& cu_q,
               const optional<Tensor>& cu_k, bool varlen, const char* op) {
  TORCH_CHECK(cpu_dtype_ok(q.scalar_type()), op, ": q must be bfloat16 or float16 (float32/float64 on CPU), got ",
              q.scalar_type());
  check_same(k, "k", q, op);
  check_same(v, "v", q, op);
  const int64_t dims = varlen ? 3 : 4;
  const char* layout = varlen ? "[total, heads, head_dim]" : "[batch, seqlen, heads, head_dim]";
  TORCH_CHECK(q.dim() == dims, op, ": q must be ", dims, "-D ", layout, ", got shape ", shape_str(q));
  TORCH_CHECK(k.dim() == dims, op, ": k must be ", dims, "-D ", layout, ", got shape ", shape_str(k));
  TORCH_CHECK(v.dim() == dims, op, ": v must have k's shape ", shape_str(k), ", got ", shape_str(v));
  for (int64_t i = 0; i < dims; ++i)
    TORCH_SYM_CHECK(v.sym_size(i).sym_eq(k.sym_size(i)), op, ": v must have k's shape ", shape_str(k), ", got ",
                    shape_str(v));
  if (!varlen)
    TORCH_SYM_CHECK(k.sym_size(0).sym_eq(q.sym_size(0)), op, ": k must have q's batch size ", q.sym_size(0),
                    ", got shape ", shape_str(k));
  TORCH_SYM_CHECK(q.sym_size(-1).sym_gt(0), op, ": q's head_dim must not be empty, got shape ", shape_str(q));
  TORCH_SYM_CHECK(k.sym_size(-1).sym_eq(q.sym_size(-1)), op, ": k must have q's head_dim ", q.sym_size(-1),
                  ", got shape ", shape_str(k));
  TORCH_SYM_CHECK(k.sym_size(-2).sym_gt(0), op, ": k must have at least one head, got shape ", shape_str(k));
  TORCH_SYM_CHECK((q.sym_size(-2) % k.sym_size(-2)).sym_eq(0), op, ": q's heads (", q.sym_size(-2),
                  ") must be a multiple of k's heads (", k.sym_size(-2), ") for grouped-query attention");
  if (varlen) {
    TORCH_CHECK(cu_q.has_value() && cu_k.has_value(), op, ": cu_seqlens_q and cu_seqlens_k are both required");
    check_cu_seqlens(*cu_q, "cu_seqlens_q", q, op);
    check_cu_seqlens(*cu_k, "cu_seqlens_k", q, op);
    TORCH_SYM_CHECK(cu_k->sym_size(0).sym_eq(cu_q->sym_size(0)), op,
                    ": cu_seqlens_k must have cu_seqlens_q's length (batch + 1) ", cu_q->sym_size(0), ", got ",
                    shape_str(*cu_k));
  } else {
    TORCH_CHECK(!cu_q.has_value() && !cu_k.has_value(), op,
                ": cu_seqlens_q/cu_seqlens_k are for packed [total, heads, head_dim] inputs only");
  }
}

void check_max_seqlen(const SymInt& max_q, const SymInt& max_k, const char* op) {
  TORCH_SYM_CHECK(max_q.sym_ge(0), op, ": max_seqlen_q must be >= 0, got ", max_q);
  TORCH_SYM_CHECK(max_k.sym_ge(0), op, ": max_seqlen_k must be >= 0, got ", max_k);
}

c10::ScalarType lse_dtype(const Tensor& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// LSE is [batch, heads_q, seqlen_q] for fixed-length inputs and [heads_q, total_q] for packed ones.
std::vector<SymInt> lse_shape(const Tensor& q, bool varlen) {
  if (varlen) return {q.sym_size(1), q.sym_size(0)};
  return {q.sym_size(0), q.sym_size(2), q.sym_size(1)};
}

void check_backward(const Tensor& dout, const Tensor& q, const Tensor& out, const Tensor& lse, bool varlen) {
  const char* op = "flash_attn_bwd";
  check_same(dout, "dout", q, op);
  check_same(out, "out", q, op);
  TORCH_CHECK(dout.dim() == q.dim() && out.dim() == q.dim(), op, ": dout and out must have q's shape ", shape_str(q),
              ", got ", shape_str(dout), " and ", shape_str(out));
  for (int64_t i = 0; i < q.dim(); ++i) {
    TORCH_SYM_CHECK(dout.sym_size(i).sym_eq(q.sym_size(i)), op, ": dout must have q's shape ", shape_str(q),
                    ", got ", shape_str(dout));
    TORCH_SYM_CHECK(out.sym_size(i).sym_eq(q.sym_size(i)), op, ": out must have q's shape ", shape_str(q), ", got ",
                    shape_str(out));
  }
  TORCH_CHECK(lse.device() == q.device() && lse.scalar_type() == lse_dtype(q), op, ": lse must be ",
              lse_dtype(q), " on ", q.device(), ", got ", lse.scalar_type(), " on ", lse.device());
  auto shape = lse_shape(q, varlen);
  TORCH_CHECK(lse.dim() == static_cast<int64_t>(shape.size()), op, ": lse has the wrong shape ", shape_str(lse));
  for (size_t i = 0; i < shape.size(); ++i)
    TORCH_SYM_CHECK(lse.sym_size(i).sym_eq(shape[i]), op, ": lse has the wrong shape ", shape_str(lse));
}

// ---- CPU reference (ATen ops, float64 for float64 inputs and float32 otherwise)

// Keys each query sees: i + (S_k - S_q) - window_left <= j <= i + (S_k - S_q) + window_right.
Tensor allowed_cpu(int64_t sq, int64_t sk, const Attn& a) {
  auto opts = at::TensorOptions().dtype(at::kLong);
  Tensor rel = at::arange(sk, opts).unsqueeze(0) - (at::arange(sq, opts).unsqueeze(1) + (sk - sq));
  Tensor ok = at::ones({sq, sk}, opts.dtype(at::kBool));
  if (a.window_left >= 0) ok = ok & (rel >= -a.window_left);
  if (a.window_right >= 0) ok = ok & (rel <= a.window_right);
  return ok;
}

struct Scores {
  Tensor p;  // [H, S_q, S_k] probabilities (0 where masked)
  Tensor t;  // tanh(s / softcap) when soft-capping (for the derivative)
};

// q [S_q, H, D], k [S_k, H, D] (heads already repeated for GQA), in the compute dtype.
Scores scores_cpu(const Tensor& q, const Tensor& k, const Tensor* lse, const Attn& a, Tensor* lse_out) {
  Tensor s = at::matmul(q.transpose(0, 1), k.transpose(0, 1).transpose(1, 2)) * a.scale;
  Scores r;
  if (a.softcap > 0) {
    r.t = at::tanh(s / a.softcap);
    s = r.t * a.softcap;
  }
  s = s.masked_fill(allowed_cpu(q.size(0), k.size(0), a).logical_not(), -INFINITY);
  Tensor l = lse != nullptr ? *lse : at::logsumexp(s, -1);
  // A row that sees no key: LSE +inf, probabilities 0 (as the kernel and flash-attn).
  if (lse == nullptr) l = at::where(l.isneginf(), INFINITY, l);
  if (lse_out != nullptr) *lse_out = l;
  r.p = at::exp(s - l.unsqueeze(-1));
  return r;
}

Tensor repeat_heads(const Tensor& t, int64_t group) { return group == 1 ? t : t.repeat_interleave(group, 1); }

// [S, H, D] per-head gradients summed over each group of H / H_k query heads -> [S, H_k, D].
Tensor sum_groups(const Tensor& g, int64_t hk) {
  return g.reshape({g.size(0), hk, g.size(1) / hk, g.size(2)}).sum(2);
}

// The sequences of a call as (q rows, k rows) slices: one per batch entry, or per cu_seqlens pair.
template <typename F>
void for_each_sequence(const Tensor& q, const Tensor& k, const optional<Tensor>& cu_q, const optional<Tensor>& cu_k,
                       bool varlen, F&& f) {
  if (!varlen) {
    for (int64_t b = 0; b < q.size(0); ++b) f(b, q.select(0, b), k.select(0, b), int64_t(0), q.size(1), int64_t(0));
    return;
  }
  Tensor cq = cu_q->to(at::kLong).cpu();
  Tensor ck = cu_k->to(at::kLong).cpu();
  const int64_t* pq = cq.const_data_ptr<int64_t>();
  const int64_t* pk = ck.const_data_ptr<int64_t>();
  for (int64_t b = 0; b + 1 < cq.size(0); ++b) {
    TORCH_CHECK(0 <= pq[b] && pq[b] <= pq[b + 1] && pq[b + 1] <= q.size(0), "flash_attn_varlen: cu_seqlens_q must "
                "be non-decreasing offsets into q's ", q.size(0), " rows, got ", cq);
    TORCH_CHECK(0 <= pk[b] && pk[b] <= pk[b + 1] && pk[b + 1] <= k.size(0), "flash_attn_varlen: cu_seqlens_k must "
                "be non-decreasing offsets into k's ", k.size(0), " rows, got ", ck);
    f(b, q.slice(0, pq[b], pq[b + 1]), k.slice(0, pk[b], pk[b + 1]), pq[b], pq[b + 1] - pq[b], pk[b]);
  }
}

std::tuple<Tensor, Tensor> fwd_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const optional<Tensor>& cu_q,
                                   const optional<Tensor>& cu_k, SymInt max_q, SymInt max_k, bool causal,
                                   optional<double> softmax_scale, int64_t window_left, int64_t window_right,
                                   double softcap) {
  const bool varlen = cu_q.has_value();
  const char* op = varlen ? "flash_attn_varlen" : "flash_attn";
  check_qkv(q, k, v, cu_q, cu_k, varlen, op);
  check_max_seqlen(max_q, max_k, op);
  const Attn a = make_attn(q, varlen, causal, softmax_scale, window_left, window_right, softcap, op);
  const auto acc = lse_dtype(q);
  const int64_t group = q.size(-2) / k.size(-2);
  Tensor out = varlen ? at::zeros(q.sizes(), q.options()) : at::empty(q.sizes(), q.options());
  std::vector<int64_t> lshape;
  for (const auto& s : lse_shape(q, varlen)) lshape.push_back(s.expect_int());
  Tensor lse = at::full(lshape, INFINITY, q.options().dtype(acc));
  Tensor kf = k.to(acc), vf = v.to(acc), qf = q.to(acc);
  for_each_sequence(qf, kf, cu_q, cu_k, varlen, [&](int64_t b, const Tensor& qs, const Tensor& ks, int64_t q0,
                                                     int64_t sq, int64_t k0) {
    Tensor vs = varlen ? vf.slice(0, k0, k0 + ks.size(0)) : vf.select(0, b);
    Tensor l;
    Scores sc = scores_cpu(qs, repeat_heads(ks, group), nullptr, a, &l);
    Tensor o = at::matmul(sc.p, repeat_heads(vs, group).transpose(0, 1)).transpose(0, 1);  // [S_q, H, D]
    if (varlen) {
      out.slice(0, q0, q0 + sq).copy_(o);
      lse.slice(1, q0, q0 + sq).copy_(l);
    } else {
      out.select(0, b).copy_(o);
      lse.select(0, b).copy_(l);
    }
  });
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> bwd_cpu(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                           const Tensor& out, const Tensor& lse, const optional<Tensor>& cu_q,
                                           const optional<Tensor>& cu_k, SymInt max_q, SymInt max_k, bool causal,
                                           optional<double> softmax_scale, int64_t window_left, int64_t window_right,
                                           double softcap) {
  const bool varlen = cu_q.has_value();
  check_qkv(q, k, v, cu_q, cu_k, varlen, "flash_attn_bwd");
  check_max_seqlen(max_q, max_k, "flash_attn_bwd");
  check_backward(dout, q, out, lse, varlen);
  const Attn a = make_attn(q, varlen, causal, softmax_scale, window_left, window_right, softcap, "flash_attn_bwd");
  const auto acc = lse_dtype(q);
  const int64_t hk = k.size(-2);
  const int64_t group = q.size(-2) / hk;
  Tensor qf = q.to(acc), kf = k.to(acc), vf = v.to(acc), dof = dout.to(acc);
  Tensor dq = at::zeros(q.sizes(), q.options().dtype(acc));
  Tensor dk = at::zeros(k.sizes(), k.options().dtype(acc));
  Tensor dv = at::zeros(v.sizes(), v.options().dtype(acc));
  for_each_sequence(qf, kf, cu_q, cu_k, varlen, [&](int64_t b, const Tensor& qs, const Tensor& ks, int64_t q0,
                                                     int64_t sq, int64_t k0) {
    const int64_t sk = ks.size(0);
    Tensor vs = varlen ? vf.slice(0, k0, k0 + sk) : vf.select(0, b);
    Tensor dos = varlen ? dof.slice(0, q0, q0 + sq) : dof.select(0, b);
    Tensor ls = varlen ? lse.slice(1, q0, q0 + sq).to(acc) : lse.select(0, b).to(acc);
    Tensor kr = repeat_heads(ks, group), vr = repeat_heads(vs, group);
    Scores sc = scores_cpu(qs, kr, &ls, a, nullptr);
    Tensor doh = dos.transpose(0, 1);                                               // [H, S_q, D]
    Tensor dvh = at::matmul(sc.p.transpose(1, 2), doh);                              // [H, S_k, D]
    Tensor dp = at::matmul(doh, vr.transpose(0, 1).transpose(1, 2));                 // [H, S_q, S_k]
    // delta = rowsum(dO * O) from O recomputed at the compute precision: the saved O is rounded to the input
    // dtype, which costs a reference computed in fp32 its edge over eager fp16 (the kernels use the saved O).
    Tensor delta = (doh * at::matmul(sc.p, vr.transpose(0, 1))).sum(-1, true);       // [H, S_q, 1]
    Tensor ds = sc.p * (dp - delta);
    if (a.softcap > 0) ds = ds * (1 - sc.t * sc.t);
    ds = ds * a.scale;
    Tensor dqs = at::matmul(ds, kr.transpose(0, 1)).transpose(0, 1);                 // [S_q, H, D]
    Tensor dks = at::matmul(ds.transpose(1, 2), qs.transpose(0, 1)).transpose(0, 1);  // [S_k, H, D]
    if (varlen) {
      dq.slice(0, q0, q0 + sq).copy_(dqs);
      dk.slice(0, k0, k0 + sk).add_(sum_groups(dks, hk));
      dv.slice(0, k0, k0 + sk).add_(sum_groups(dvh.transpose(0, 1), hk));
    } else {
      dq.select(0, b).copy_(dqs);
      dk.select(0, b).copy_(sum_groups(dks, hk));
      dv.select(0, b).copy_(sum_groups(dvh.transpose(0, 1), hk));
    }
  });
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

// ---- Meta (SymInt-clean)

std::tuple<Tensor, Tensor> fwd_meta(const Tensor& q, const Tensor& k, const Tensor& v, const optional<Tensor>& cu_q,
                                    const optional<Tensor>& cu_k, SymInt max_q, SymInt max_k, bool causal,
                                    optional<double> softmax_scale, int64_t window_left, int64_t window_right,
                                    double softcap) {
  const bool varlen = cu_q.has_value();
  const char* op = varlen ? "flash_attn_varlen" : "flash_attn";
  check_qkv(q, k, v, cu_q, cu_k, varlen, op);
  check_max_seqlen(max_q, max_k, op);
  make_attn(q, varlen, causal, softmax_scale, window_left, window_right, softcap, op);
  return {at::empty_symint(q.sym_sizes(), q.options()),
          at::empty_symint(lse_shape(q, varlen), q.options().dtype(lse_dtype(q)))};
}

std::tuple<Tensor, Tensor, Tensor> bwd_meta(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& out, const Tensor& lse, const optional<Tensor>& cu_q,
                                            const optional<Tensor>& cu_k, SymInt max_q, SymInt max_k, bool causal,
                                            optional<double> softmax_scale, int64_t window_left,
                                            int64_t window_right, double softcap) {
  const bool varlen = cu_q.has_value();
  check_qkv(q, k, v, cu_q, cu_k, varlen, "flash_attn_bwd");
  check_max_seqlen(max_q, max_k, "flash_attn_bwd");
  check_backward(dout, q, out, lse, varlen);
  make_attn(q, varlen, causal, softmax_scale, window_left, window_right, softcap, "flash_attn_bwd");
  return {at::empty_symint(q.sym_sizes(), q.options()), at::empty_symint(k.sym_sizes(), k.options()),
          at::empty_symint(v.sym_sizes(), v.options())};
}

// ---- CUDA launcher

CUdeviceptr ptr(const Tensor& t) {
  return t.defined() && t.numel() > 0 ? reinterpret_cast<CUdeviceptr>(t.const_data_ptr()) : 0;
}

// A [B, S, H, D] or [T, H, D] operand with 16-byte aligned rows: the last dimension contiguous, the other
// strides multiples of ALIGN_ELEMS elements, the data 16-byte aligned (copied otherwise). Strides of size-1
// dimensions are set to 0 (never used), strides are returned divided by ALIGN_ELEMS.
struct Operand {
  Tensor t;
  int64_t sb, ss, sh;
};

bool row_aligned(const Tensor& t) {
  if (t.stride(-1) != 1 || !aligned16(t)) return false;
  for (int64_t i = 0; i + 1 < t.dim(); ++i)
    if (t.size(i) > 1 && t.stride(i) % ALIGN_ELEMS != 0) return false;
  return true;
}

Operand operand(const Tensor& in, bool varlen) {
  Tensor t = in;
  if (!row_aligned(t)) t = t.contiguous();
  if (!row_aligned(t)) t = t.clone(at::MemoryFormat::Contiguous);  // a misaligned storage offset
  auto stride = [&](int64_t d) { return t.size(d) > 1 ? t.stride(d) / ALIGN_ELEMS : 0; };
  if (varlen) return {t, 0, stride(0), stride(1)};
  return {t, stride(0), stride(1), stride(2)};
}

Operand output(const Tensor& t, bool varlen) { return operand(t, varlen); }

void check_cuda(const Tensor& q, const Tensor& k, const char* op) {
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf, op,
              ": the CUDA kernels take bfloat16 or float16 q, k, v, got ", q.scalar_type());
  const int64_t d = q.size(-1);
  TORCH_CHECK(d == 64 || d == 96 || d == 128 || d == 256, op,
              ": the CUDA kernels support head_dim 64, 96, 128 and 256, got ", d);
  TORCH_CHECK(q.size(-2) < 65536 && k.size(-2) < 65536, op, ": at most 65535 heads are supported, got ",
              q.size(-2));
}

int32_t seqlen_arg(int64_t n, const char* what, const char* op) {
  TORCH_CHECK(n < (int64_t(1) << 31) - (int64_t(1) << 20), op, ": ", what, " must be < 2^31 - 2^20, got ", n);
  return static_cast<int32_t>(n);
}

int32_t window_arg(int64_t w) { return static_cast<int32_t>(std::min<int64_t>(w, INT32_MAX)); }

struct Shapes {
  int64_t batch, max_q, max_k, hq, hk, d;
};

Shapes shapes(const Tensor& q, const Tensor& k, const optional<Tensor>& cu_q, const SymInt& max_q,
              const SymInt& max_k, bool varlen, const char* op) {
  Shapes s;
  s.hq = q.size(-2);
  s.hk = k.size(-2);
  s.d = q.size(-1);
  if (varlen) {
    s.batch = cu_q->size(0) - 1;
    s.max_q = max_q.guard_int(__FILE__, __LINE__);
    s.max_k = max_k.guard_int(__FILE__, __LINE__);
  } else {
    s.batch = q.size(0);
    s.max_q = q.size(1);
    s.max_k = k.size(1);
  }
  TORCH_CHECK(s.batch < 65536, op, ": at most 65535 sequences per call are supported, got ", s.batch);
  seqlen_arg(s.max_q, varlen ? "max_seqlen_q" : "seqlen_q", op);
  seqlen_arg(s.max_k, varlen ? "max_seqlen_k" : "seqlen_k", op);
  return s;
}

template <typename Key>
Key attn_key(const Tensor& q, const Attn& a) {
  Key key;
  key.qkv_dtype = q.scalar_type();
  key.head_dim = q.size(-1);
  key.softcap = a.softcap > 0;
  return key;
}

// Contiguous and 16-byte aligned, as every pointer of the (aligned) variants is promised to be.
Tensor aligned_contiguous(const Tensor& t) {
  Tensor c = t.contiguous();
  return aligned16(c) ? c : c.clone();
}

Tensor cu_tensor(const optional<Tensor>& cu) { return cu.has_value() ? aligned_contiguous(*cu) : Tensor(); }

// The Hopper kernels in Gluon (triton_src/flash_attn_ws.py: TMA, wgmma, warp-specialized warpgroups) where their
// conditions hold: an sm_90 build variant for the dtype/head dim, S_q == S_k (fixed-length batches with
// max_seqlen_q == max_seqlen_k, or packed ones whose cu_seqlens_q and cu_seqlens_k are one tensor: the same
// sequences on both sides), plain or causal masking (windows that cut nothing count as none), no soft-cap, a
// positive scale, tensors with 16-byte aligned rows (row_aligned: TMA's rule for the [S, D] view of each sequence
// and head). The forward writes out and lse exactly as flash_attn_fwd_kernel does, the backward takes the same
// delta; either side may run without the other. LIGER_FLASH_ATTN_WS=0 turns both off (benchmarks compare them
// with the Triton kernels).
bool ws_enabled() {
  const char* env = std::getenv("LIGER_FLASH_ATTN_WS");  // read per call (~0.1 us): tests and benchmarks toggle it
  return env == nullptr || std::string(env) != "0";
}

// Whether the sequences and the masking are ones the Gluon kernels implement; *causal tells which masking.
bool ws_masking(const Attn& a, const Shapes& s, const optional<Tensor>& cu_q, const optional<Tensor>& cu_k,
                bool* causal) {
  if (a.varlen && !cu_q->is_same(*cu_k)) return false;
  if (s.max_q != s.max_k || a.softcap > 0 || !(a.scale > 0)) return false;
  const int64_t last = s.max_k - 1;  // a window this wide cuts nothing
  const bool left_open = a.window_left < 0 || a.window_left >= last;
  *causal = a.window_right == 0 && last > 0;
  return left_open && (*causal || a.window_right < 0 || a.window_right >= last) && ws_enabled();
}

bool ws_rows(const Tensor& t, const Shapes& s, bool varlen) {
  // the row stride is a TMA descriptor stride even for one row: a 16-byte multiple, rows not overlapping
  const int64_t rows = t.stride(varlen ? 0 : 1);
  return row_aligned(t) && rows % ALIGN_ELEMS == 0 && rows >= s.d;
}

// Strides (batch, sequence, head) in elements: a packed [total, H, D] tensor has no batch stride.
std::array<int64_t, 3> ws_strides(const Tensor& t, bool varlen) {
  if (varlen) return {0, t.stride(0), t.stride(1)};
  return {t.stride(0), t.stride(1), t.stride(2)};
}

// What the kernels take for the sequences: the longest length, the number of rows of the token dimension
// (B * S when fixed) and cu_seqlens (unused when fixed).
struct WsSeqs {
  int32_t max_len, total;
  bool varlen;
  CUdeviceptr cu;
};

WsSeqs ws_seqs(const Tensor& q, const Shapes& s, bool varlen, const Tensor& cu) {
  return {static_cast<int32_t>(s.max_q), static_cast<int32_t>(varlen ? q.size(0) : s.batch * s.max_q), varlen,
          varlen ? ptr(cu) : CUdeviceptr{0}};
}

bool ws_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                const Tensor& cu, const optional<Tensor>& cu_q, const optional<Tensor>& cu_k, const Attn& a,
                const Shapes& s, const LaunchContext& ctx) {
  bool causal = false;
  if (!ws_masking(a, s, cu_q, cu_k, &causal)) return false;
  // Short causal rows leave each program a tile or two after its setup (descriptors, barriers, the Q load): at
  // S 512 the Triton forward is faster (H200, bf16 d128 B32 H16: 0.211 against 0.222 ms; from S 1024 on the
  // Gluon one leads, 0.274 against 0.313 ms; benchmarks/results/h200.md).
  if (causal && s.max_q <= 512) return false;
  const bool varlen = a.varlen;
  if (!ws_rows(q, s, varlen) || !ws_rows(k, s, varlen) || !ws_rows(v, s, varlen) || !out.is_contiguous() ||
      !aligned16(out))
    return false;
  const int64_t tiles = ceil_div(s.max_q, WS_BLOCK_M);
  if (tiles > 65535 || s.batch * s.hq > INT32_MAX || q.size(0) * (varlen ? s.hq : 1) > INT32_MAX) return false;
  flash_attn_ws_fwd_kernel_key key;
  key.qkv_dtype = q.scalar_type();
  key.head_dim = s.d;
  key.causal = causal;
  const auto* var = flash_attn_ws_fwd_kernel_find(key, ctx.arch_slot);
  if (var == nullptr) return false;
  constexpr double kLog2e = 1.4426950408889634;
  const WsSeqs seqs = ws_seqs(q, s, varlen, cu);
  const auto sq = ws_strides(q, varlen), sk = ws_strides(k, varlen), sv = ws_strides(v, varlen);
  flash_attn_ws_fwd_kernel_launch(*var, ctx,
                                  Grid{static_cast<uint32_t>(s.batch * s.hq), static_cast<uint32_t>(tiles), 1},
                                  ptr(q), ptr(k), ptr(v), ptr(out), ptr(lse), seqs.cu, seqs.max_len, seqs.total,
                                  seqs.varlen, static_cast<int32_t>(s.hq), static_cast<int32_t>(s.hk), sq[0], sq[1],
                                  sq[2], sk[0], sk[1], sk[2], sv[0], sv[1], sv[2], static_cast<float>(a.scale * kLog2e));
  return true;
}

// The backward (head dims 64 and 128): dK/dV per 128-key tile in registers, dQ added up in an fp32 [B, H, S, D]
// buffer by TMA reduce-adds, then scaled, cast and transposed into dq. dq, dk, dv: contiguous, as allocated.
bool ws_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& lse,
                 const Tensor& delta, const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& cu,
                 const optional<Tensor>& cu_q, const optional<Tensor>& cu_k, const Attn& a, const Shapes& s,
                 const LaunchContext& ctx) {
  // Its dQ sums land in the order key tiles finish: torch.use_deterministic_algorithms(True) takes Triton's.
  if (at::globalContext().deterministicAlgorithms()) return false;
  bool causal = false;
  if (!ws_masking(a, s, cu_q, cu_k, &causal) || (causal && s.max_q <= 512)) return false;
  const bool varlen = a.varlen;
  if (!ws_rows(q, s, varlen) || !ws_rows(k, s, varlen) || !ws_rows(v, s, varlen) || !ws_rows(dout, s, varlen))
    return false;
  // q and dout's head stride is a TMA stride too (their descriptors span a GQA group's heads): not 0 (expanded)
  const int64_t hdim = varlen ? 1 : 2;
  for (const Tensor* t : {&q, &dout})
    if (t->size(hdim) > 1 && t->stride(hdim) < s.d) return false;
  auto strides = [&](const Tensor& t) {
    auto st = ws_strides(t, varlen);
    if (t.size(hdim) == 1) st[2] = s.d;  // unused, but a valid TMA stride
    return st;
  };
  const int64_t tiles = ceil_div(s.max_k, WS_BWD_BLOCK_N);
  const WsSeqs seqs = ws_seqs(q, s, varlen, cu);
  // dQ's reduce-adds address the buffer's rows ([B * H * S] or [H * total]) with 32-bit coordinates
  if (s.hq * seqs.total > INT32_MAX || (!varlen && s.batch * s.max_q > INT32_MAX)) return false;
  // causal: grid (B * H_k, key tiles), longest first; otherwise (key tiles, B * H_k) for L2 locality
  const uint32_t heads_dim = static_cast<uint32_t>(s.batch * s.hk), tiles_dim = static_cast<uint32_t>(tiles);
  if ((causal ? tiles : s.batch * s.hk) > 65535) return false;
  const Grid grid = causal ? Grid{heads_dim, tiles_dim, 1} : Grid{tiles_dim, heads_dim, 1};
  flash_attn_ws_bwd_kernel_key key;
  key.qkv_dtype = q.scalar_type();
  key.head_dim = s.d;
  key.causal = causal;
  const auto* var = flash_attn_ws_bwd_kernel_find(key, ctx.arch_slot);
  flash_attn_ws_dq_convert_kernel_key ckey;
  ckey.qkv_dtype = q.scalar_type();
  ckey.head_dim = s.d;
  const auto* cvar = flash_attn_ws_dq_convert_kernel_find(ckey, ctx.arch_slot);
  if (var == nullptr || cvar == nullptr) return false;
  // [B, H, S, D], or [H, total, D] packed (one "batch entry" of total rows for the conversion)
  Tensor dq_acc = varlen ? at::zeros({s.hq, seqs.total, s.d}, q.options().dtype(at::kFloat))
                         : at::zeros({s.batch, s.hq, s.max_q, s.d}, q.options().dtype(at::kFloat));
  constexpr double kLog2e = 1.4426950408889634;
  const auto sq = strides(q), sk = ws_strides(k, varlen), sv = ws_strides(v, varlen), sd = strides(dout);
  flash_attn_ws_bwd_kernel_launch(*var, ctx, grid, ptr(q), ptr(k), ptr(v), ptr(dout), ptr(lse), ptr(delta),
                                  ptr(dq_acc), ptr(dk), ptr(dv), seqs.cu, seqs.max_len, seqs.total, seqs.varlen,
                                  static_cast<int32_t>(s.hq), static_cast<int32_t>(s.hk), sq[0], sq[1], sq[2], sk[0],
                                  sk[1], sk[2], sv[0], sv[1], sv[2], sd[0], sd[1], sd[2],
                                  static_cast<float>(a.scale * kLog2e), static_cast<float>(a.scale));
  const int64_t conv_batch = varlen ? 1 : s.batch, conv_rows = varlen ? seqs.total : s.max_q;
  flash_attn_ws_dq_convert_kernel_launch(
      *cvar, ctx,
      Grid{static_cast<uint32_t>(conv_batch * s.hq), static_cast<uint32_t>(ceil_div(conv_rows, WS_DQ_CONVERT_BLOCK_M)),
           1},
      ptr(dq_acc), ptr(dq), static_cast<int32_t>(conv_rows), static_cast<int32_t>(s.hq), static_cast<float>(a.scale));
  return true;
}

std::tuple<Tensor, Tensor> fwd_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const optional<Tensor>& cu_q, const optional<Tensor>& cu_k, SymInt max_q,
                                    SymInt max_k, bool causal, optional<double> softmax_scale, int64_t window_left,
                                    int64_t window_right, double softcap) {
  const bool varlen = cu_q.has_value();
  const char* op = varlen ? "flash_attn_varlen" : "flash_attn";
  check_qkv(q_in, k_in, v_in, cu_q, cu_k, varlen, op);
  check_max_seqlen(max_q, max_k, op);
  check_cuda(q_in, k_in, op);
  const Attn a = make_attn(q_in, varlen, causal, softmax_scale, window_left, window_right, softcap, op);
  c10::DeviceGuard guard(q_in.device());
  const Shapes s = shapes(q_in, k_in, cu_q, max_q, max_k, varlen, op);
  // Packed rows outside every sequence are never written: zeros, as the CPU path.
  Tensor out = varlen ? at::zeros(q_in.sizes(), q_in.options()) : at::empty(q_in.sizes(), q_in.options());
  std::vector<int64_t> lshape = varlen ? std::vector<int64_t>{s.hq, q_in.size(0)}
                                       : std::vector<int64_t>{s.batch, s.hq, s.max_q};
  Tensor lse = at::empty(lshape, q_in.options().dtype(at::kFloat));
  if (q_in.numel() == 0 || s.batch == 0) return {out, lse};
  const LaunchContext ctx = launch_context(q_in);
  Tensor cq = cu_tensor(cu_q), ck = cu_tensor(cu_k);
  if (ws_forward(q_in, k_in, v_in, out, lse, cq, cu_q, cu_k, a, s, ctx)) return {out, lse};
  Operand q = operand(q_in, varlen), k = operand(k_in, varlen), v = operand(v_in, varlen), o = output(out, varlen);
  const int64_t lse_b = varlen ? 0 : s.hq * s.max_q;
  const int64_t lse_h = varlen ? q_in.size(0) : s.max_q;
  const auto& var = flash_attn_fwd_kernel_get(attn_key<flash_attn_fwd_kernel_key>(q_in, a), ctx.arch_slot);
  Grid grid{static_cast<uint32_t>(ceil_div(s.max_q, var.BLOCK_M)), static_cast<uint32_t>(s.hq),
            static_cast<uint32_t>(s.batch)};
  flash_attn_fwd_kernel_launch(var, ctx, grid, ptr(q.t), ptr(k.t), ptr(v.t), ptr(o.t), ptr(lse), ptr(cq), ptr(ck),
                               s.max_q, s.max_k, varlen, s.hq / s.hk, q.sb, q.ss, q.sh, k.sb, k.ss, k.sh, v.sb,
                               v.ss, v.sh, o.sb, o.ss, o.sh, lse_b, lse_h, a.scale, a.softcap,
                               window_arg(a.window_left), window_arg(a.window_right));
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> bwd_cuda(const Tensor& dout_in, const Tensor& q_in, const Tensor& k_in,
                                            const Tensor& v_in, const Tensor& out_in, const Tensor& lse_in,
                                            const optional<Tensor>& cu_q, const optional<Tensor>& cu_k, SymInt max_q,
                                            SymInt max_k, bool causal, optional<double> softmax_scale,
                                            int64_t window_left, int64_t window_right, double softcap) {
  const bool varlen = cu_q.has_value();
  const char* op = "flash_attn_bwd";
  check_qkv(q_in, k_in, v_in, cu_q, cu_k, varlen, op);
  check_max_seqlen(max_q, max_k, op);
  check_backward(dout_in, q_in, out_in, lse_in, varlen);
  check_cuda(q_in, k_in, op);
  const Attn a = make_attn(q_in, varlen, causal, softmax_scale, window_left, window_right, softcap, op);
  c10::DeviceGuard guard(q_in.device());
  const Shapes s = shapes(q_in, k_in, cu_q, max_q, max_k, varlen, op);
  auto make = [&](const Tensor& like) {
    return varlen ? at::zeros(like.sizes(), like.options()) : at::empty(like.sizes(), like.options());
  };
  Tensor dq_t = make(q_in), dk_t = make(k_in), dv_t = make(v_in);
  if (k_in.numel() == 0 || q_in.numel() == 0 || s.batch == 0) {
    // No keys: nothing attends (out is 0, so are the gradients); no queries: nothing flows back.
    return {dq_t.zero_(), dk_t.zero_(), dv_t.zero_()};
  }
  Operand q = operand(q_in, varlen), k = operand(k_in, varlen), v = operand(v_in, varlen);
  Operand o = operand(out_in, varlen), dout = operand(dout_in, varlen);
  Operand dq = output(dq_t, varlen), dk = output(dk_t, varlen), dv = output(dv_t, varlen);
  Tensor lse = aligned_contiguous(lse_in);
  Tensor delta = at::empty(lse.sizes(), lse.options());
  Tensor cq = cu_tensor(cu_q), ck = cu_tensor(cu_k);
  const int64_t lse_b = varlen ? 0 : s.hq * s.max_q;
  const int64_t lse_h = varlen ? q_in.size(0) : s.max_q;
  const int32_t group = static_cast<int32_t>(s.hq / s.hk);
  const int32_t wl = window_arg(a.window_left), wr = window_arg(a.window_right);
  const LaunchContext ctx = launch_context(q_in);
  const uint32_t hq = static_cast<uint32_t>(s.hq), nb = static_cast<uint32_t>(s.batch);

  flash_attn_bwd_preprocess_kernel_key pkey;
  pkey.qkv_dtype = q_in.scalar_type();
  pkey.head_dim = s.d;
  const auto& pv = flash_attn_bwd_preprocess_kernel_get(pkey, ctx.arch_slot);
  flash_attn_bwd_preprocess_kernel_launch(pv, ctx, Grid{static_cast<uint32_t>(ceil_div(s.max_q, pv.BLOCK_M)), hq, nb},
                                          ptr(o.t), ptr(dout.t), ptr(delta), ptr(cq), s.max_q, varlen, o.sb, o.ss,
                                          o.sh, dout.sb, dout.ss, dout.sh, lse_b, lse_h);

  if (ws_backward(q.t, k.t, v.t, dout.t, lse, delta, dq_t, dk_t, dv_t, cq, cu_q, cu_k, a, s, ctx))
    return {dq_t, dk_t, dv_t};

  const auto& kv = flash_attn_bwd_dkdv_kernel_get(attn_key<flash_attn_bwd_dkdv_kernel_key>(q_in, a), ctx.arch_slot);
  flash_attn_bwd_dkdv_kernel_launch(
      kv, ctx, Grid{static_cast<uint32_t>(ceil_div(s.max_k, kv.BLOCK_N)), static_cast<uint32_t>(s.hk), nb}, ptr(q.t),
      ptr(k.t), ptr(v.t), ptr(dout.t), ptr(lse), ptr(delta), ptr(dk.t), ptr(dv.t), ptr(cq), ptr(ck), s.max_q, s.max_k,
      varlen, group, q.sb, q.ss, q.sh, k.sb, k.ss, k.sh, v.sb, v.ss, v.sh, dout.sb, dout.ss, dout.sh, dk.sb, dk.ss,
      dk.sh, dv.sb, dv.ss, dv.sh, lse_b, lse_h, a.scale, a.softcap, wl, wr);

  const auto& qv = flash_attn_bwd_dq_kernel_get(attn_key<flash_attn_bwd_dq_kernel_key>(q_in, a), ctx.arch_slot);
  flash_attn_bwd_dq_kernel_launch(
      qv, ctx, Grid{static_cast<uint32_t>(ceil_div(s.max_q, qv.BLOCK_M)), hq, nb}, ptr(q.t), ptr(k.t), ptr(v.t),
      ptr(dout.t), ptr(lse), ptr(delta), ptr(dq.t), ptr(cq), ptr(ck), s.max_q, s.max_k, varlen, group, q.sb, q.ss,
      q.sh, k.sb, k.ss, k.sh, v.sb, v.ss, v.sh, dout.sb, dout.ss, dout.sh, dq.sb, dq.ss, dq.sh, lse_b, lse_h, a.scale,
      a.softcap, wl, wr);
  return {dq_t, dk_t, dv_t};
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("flash_attn", [](int arch_slot) {
  std::vector<std::string> missing;
  for (c10::ScalarType dt : {at::kBFloat16, at::kHalf})
    for (int64_t d : {64, 96, 128, 256}) {
      flash_attn_bwd_preprocess_kernel_key pkey;
      pkey.qkv_dtype = dt;
      pkey.head_dim = d;
      if (!flash_attn_bwd_preprocess_kernel_find(pkey, arch_slot)) missing.push_back(pkey.str());
      for (bool sc : {false, true}) {
        flash_attn_fwd_kernel_key f;
        f.qkv_dtype = dt;
        f.head_dim = d;
        f.softcap = sc;
        flash_attn_bwd_dkdv_kernel_key kv;
        kv.qkv_dtype = dt;
        kv.head_dim = d;
        kv.softcap = sc;
        flash_attn_bwd_dq_kernel_key qk;
        qk.qkv_dtype = dt;
        qk.head_dim = d;
        qk.softcap = sc;
        if (!flash_attn_fwd_kernel_find(f, arch_slot)) missing.push_back(f.str());
        if (!flash_attn_bwd_dkdv_kernel_find(kv, arch_slot)) missing.push_back(kv.str());
        if (!flash_attn_bwd_dq_kernel_find(qk, arch_slot)) missing.push_back(qk.str());
      }
    }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FlashAttnBackward : public torch::autograd::Function<FlashAttnBackward> {
 public:
  static variable_list forward(AutogradContext*, const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse, const optional<Tensor>& cu_q,
                               const optional<Tensor>& cu_k, const SymInt& max_q, const SymInt& max_k, bool causal,
                               optional<double> scale, int64_t wl, int64_t wr, double softcap) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::flash_attn_bwd", "").typed<decltype(bwd_cpu)>();
    auto [dq, dk, dv] = op.call(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr, softcap);
    return {dq, dk, dv};
  }
  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "flash_attn: second derivatives are not supported (liger::flash_attn_bwd is not "
                "differentiable)");
  }
};

// flash_attn_fwd differentiated: out carries the gradient, lse is marked non-differentiable.
class FlashAttnForward : public torch::autograd::Function<FlashAttnForward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                               const optional<Tensor>& cu_q, const optional<Tensor>& cu_k, const SymInt& max_q,
                               const SymInt& max_k, bool causal, optional<double> scale, int64_t wl, int64_t wr,
                               double softcap) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::flash_attn_fwd", "").typed<decltype(fwd_cpu)>();
    auto [out, lse] = op.call(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr, softcap);
    ctx->save_for_backward({q, k, v, out, lse, cu_q.value_or(Tensor()), cu_k.value_or(Tensor())});
    ctx->saved_data["max_q"] = max_q;
    ctx->saved_data["max_k"] = max_k;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["wl"] = wl;
    ctx->saved_data["wr"] = wr;
    ctx->saved_data["softcap"] = softcap;
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    optional<Tensor> cu_q, cu_k;
    if (saved[5].defined()) cu_q = saved[5];
    if (saved[6].defined()) cu_k = saved[6];
    auto& d = ctx->saved_data;
    Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(saved[3]);
    auto g = FlashAttnBackward::apply(dout, saved[0], saved[1], saved[2], saved[3], saved[4], cu_q, cu_k,
                                      d["max_q"].toSymInt(), d["max_k"].toSymInt(), d["causal"].toBool(),
                                      d["scale"].toOptional<double>(), d["wl"].toInt(), d["wr"].toInt(),
                                      d["softcap"].toDouble());
    return {g[0], g[1], g[2], Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor()};
  }
};

bool needs_grad(const Tensor& q, const Tensor& k, const Tensor& v) {
  return at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
}

// ---- public ops: the forward without its LSE

Tensor flash_attn_cpu(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, optional<double> scale,
                      int64_t wl, int64_t wr, double softcap) {
  check_qkv(q, k, v, {}, {}, false, "flash_attn");
  return std::get<0>(fwd_cpu(q, k, v, {}, {}, q.sym_size(1), k.sym_size(1), causal, scale, wl, wr, softcap));
}

Tensor flash_attn_meta(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, optional<double> scale,
                       int64_t wl, int64_t wr, double softcap) {
  check_qkv(q, k, v, {}, {}, false, "flash_attn");
  return std::get<0>(fwd_meta(q, k, v, {}, {}, q.sym_size(1), k.sym_size(1), causal, scale, wl, wr, softcap));
}

Tensor flash_attn_cuda(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, optional<double> scale,
                       int64_t wl, int64_t wr, double softcap) {
  check_qkv(q, k, v, {}, {}, false, "flash_attn");
  return std::get<0>(fwd_cuda(q, k, v, {}, {}, q.sym_size(1), k.sym_size(1), causal, scale, wl, wr, softcap));
}

Tensor flash_attn_autograd(c10::DispatchKeySet ks, const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                           optional<double> scale, int64_t wl, int64_t wr, double softcap) {
  if (!needs_grad(q, k, v)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::flash_attn", "").typed<decltype(flash_attn_cpu)>();
    return op.redispatch(ks & c10::after_ADInplaceOrView_keyset, q, k, v, causal, scale, wl, wr, softcap);
  }
  check_qkv(q, k, v, {}, {}, false, "flash_attn");
  return FlashAttnForward::apply(q, k, v, optional<Tensor>(), optional<Tensor>(), q.sym_size(1), k.sym_size(1),
                                 causal, scale, wl, wr, softcap)[0];
}

Tensor varlen_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_q, const Tensor& cu_k,
                  SymInt max_q, SymInt max_k, bool causal, optional<double> scale, int64_t wl, int64_t wr,
                  double softcap) {
  return std::get<0>(fwd_cpu(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr, softcap));
}

Tensor varlen_meta(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_q, const Tensor& cu_k,
                   SymInt max_q, SymInt max_k, bool causal, optional<double> scale, int64_t wl, int64_t wr,
                   double softcap) {
  return std::get<0>(fwd_meta(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr, softcap));
}

Tensor varlen_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_q, const Tensor& cu_k,
                   SymInt max_q, SymInt max_k, bool causal, optional<double> scale, int64_t wl, int64_t wr,
                   double softcap) {
  return std::get<0>(fwd_cuda(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr, softcap));
}

Tensor varlen_autograd(c10::DispatchKeySet ks, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_q,
                       const Tensor& cu_k, SymInt max_q, SymInt max_k, bool causal, optional<double> scale,
                       int64_t wl, int64_t wr, double softcap) {
  if (!needs_grad(q, k, v)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("liger::flash_attn_varlen", "").typed<decltype(varlen_cpu)>();
    return op.redispatch(ks & c10::after_ADInplaceOrView_keyset, q, k, v, cu_q, cu_k, max_q, max_k, causal, scale,
                         wl, wr, softcap);
  }
  return FlashAttnForward::apply(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr, softcap)[0];
}

std::tuple<Tensor, Tensor> fwd_autograd(const Tensor& q, const Tensor& k, const Tensor& v, const optional<Tensor>& cu_q,
                                        const optional<Tensor>& cu_k, SymInt max_q, SymInt max_k, bool causal,
                                        optional<double> scale, int64_t wl, int64_t wr, double softcap) {
  auto out = FlashAttnForward::apply(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr, softcap);
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor, Tensor> bwd_autograd(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                                const Tensor& out, const Tensor& lse, const optional<Tensor>& cu_q,
                                                const optional<Tensor>& cu_k, SymInt max_q, SymInt max_k, bool causal,
                                                optional<double> scale, int64_t wl, int64_t wr, double softcap) {
  auto g = FlashAttnBackward::apply(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, causal, scale, wl, wr,
                                    softcap);
  return {g[0], g[1], g[2]};
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("flash_attn", &flash_attn_cpu);
  m.impl("flash_attn_varlen", &varlen_cpu);
  m.impl("flash_attn_fwd", &fwd_cpu);
  m.impl("flash_attn_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("flash_attn", &flash_attn_meta);
  m.impl("flash_attn_varlen", &varlen_meta);
  m.impl("flash_attn_fwd", &fwd_meta);
  m.impl("flash_attn_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("flash_attn", &flash_attn_cuda);
  m.impl("flash_attn_varlen", &varlen_cuda);
  m.impl("flash_attn_fwd", &fwd_cuda);
  m.impl("flash_attn_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("flash_attn", &flash_attn_autograd);
  m.impl("flash_attn_varlen", &varlen_autograd);
  m.impl("flash_attn_fwd", &fwd_autograd);
  m.impl("flash_attn_bwd", &bwd_autograd);
}

}  // namespace liger::flash_attn
