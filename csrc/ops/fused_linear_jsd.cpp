// Fused linear + generalized JSD (Liger-Kernel's LigerFusedLinearJSD): the JSD of
// log_softmax(student_input @ student_weight.T / temperature) against the teacher's, without ever holding
// all [BT, V] logits. Tokens are processed in chunks: logits via at::mm, then one Triton kernel per chunk
// computes the loss rows and overwrites the student logits with their gradient, which two more matmuls turn
// into d student_input and d student_weight. The gradients are computed during the forward (the loss is the
// last op) and scaled by the incoming gradient in the backward. The teacher gets no gradient.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/jsd.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::fused_linear_jsd {

using at::Tensor;
using c10::optional;
using namespace liger::gen::jsd;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("fused_linear_jsd(Tensor student_input, Tensor student_weight, Tensor teacher_input, Tensor teacher_weight, "
        "Tensor? shift_labels=None, float beta=0.5, int ignore_index=-100, float temperature=1.0) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // -> (loss, d student_input or [0], d student_weight or [0]), gradients for an incoming gradient of 1
  m.def("fused_linear_jsd_fwd(Tensor student_input, Tensor student_weight, Tensor teacher_input, "
        "Tensor teacher_weight, Tensor? shift_labels, float beta, int ignore_index, float temperature, "
        "bool input_grad, bool weight_grad) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

constexpr const char* kOp = "fused_linear_jsd";

void check_inputs(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw,
                  const optional<Tensor>& labels, double beta, double temperature) {
  TORCH_CHECK(si.dim() == 2, kOp, ": student_input must have shape [BT, H], got ", shape_str(si));
  TORCH_CHECK(is_half_or_float(si.scalar_type()) || (si.scalar_type() == at::kDouble && !si.is_cuda()), kOp,
              ": student_input must be float32, bfloat16 or float16 (float64 on CPU), got ", si.scalar_type());
  auto same_device_dtype = [&](const Tensor& t, const char* name) {
    TORCH_CHECK(t.device() == si.device(), kOp, ": ", name, " is on ", t.device(), " but student_input is on ",
                si.device(), "; all must be on the same device");
    TORCH_CHECK(t.scalar_type() == si.scalar_type(), kOp, ": ", name, " must have student_input's dtype ",
                si.scalar_type(), ", got ", t.scalar_type());
  };
  same_device_dtype(sw, "student_weight");
  same_device_dtype(ti, "teacher_input");
  same_device_dtype(tw, "teacher_weight");
  TORCH_CHECK(sw.dim() == 2, kOp, ": student_weight must have shape [V, H], got ", shape_str(sw));
  TORCH_SYM_CHECK(sw.sym_size(1).sym_eq(si.sym_size(1)), kOp, ": student_weight must have shape [V, ",
                  si.sym_size(1), "] to match student_input's last dimension, got ", shape_str(sw));
  TORCH_CHECK(ti.dim() == 2, kOp, ": teacher_input must have shape [BT, H_teacher], got ", shape_str(ti));
  TORCH_SYM_CHECK(ti.sym_size(0).sym_eq(si.sym_size(0)), kOp, ": teacher_input must have ", si.sym_size(0),
                  " rows like student_input, got ", shape_str(ti));
  TORCH_CHECK(tw.dim() == 2, kOp, ": teacher_weight must have shape [V, H_teacher], got ", shape_str(tw));
  TORCH_SYM_CHECK(tw.sym_size(1).sym_eq(ti.sym_size(1)), kOp, ": teacher_weight must have shape [V, ",
                  ti.sym_size(1), "] to match teacher_input's last dimension, got ", shape_str(tw));
  TORCH_SYM_CHECK(tw.sym_size(0).sym_eq(sw.sym_size(0)), kOp, ": teacher_weight must have student_weight's ",
                  sw.sym_size(0), " rows (the vocabulary), got ", shape_str(tw));
  TORCH_CHECK(beta >= 0.0 && beta <= 1.0, kOp, ": beta must be in [0, 1], got ", beta);
  TORCH_CHECK(temperature > 0.0, kOp, ": temperature must be > 0, got ", temperature);
  if (labels.has_value()) {
    const Tensor& l = *labels;
    TORCH_CHECK(l.device() == si.device(), kOp, ": shift_labels is on ", l.device(), " but student_input is on ",
                si.device());
    TORCH_CHECK(l.scalar_type() == at::kLong, kOp, ": shift_labels must be int64, got ", l.scalar_type());
    TORCH_CHECK(l.dim() == 1, kOp, ": shift_labels must have shape [BT] = [", si.sym_size(0), "], got ",
                shape_str(l));
    TORCH_SYM_CHECK(l.sym_size(0).sym_eq(si.sym_size(0)), kOp, ": shift_labels must have shape [BT] = [",
                    si.sym_size(0), "], got ", shape_str(l));
  }
}

c10::ScalarType acc_dtype(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

int64_t beta_mode(double beta) { return beta == 0.0 ? 0 : (beta == 1.0 ? 1 : 2); }

using Out = std::tuple<Tensor, Tensor, Tensor>;

// ---- CPU reference (ATen ops, whole logits in the accumulation dtype)

Out fwd_cpu(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw, const optional<Tensor>& labels,
            double beta, int64_t ignore_index, double temperature, bool input_grad, bool weight_grad) {
  check_inputs(si, sw, ti, tw, labels, beta, temperature);
  const auto acc = acc_dtype(si);
  Tensor s = at::mm(si.to(acc), sw.to(acc).t()) / temperature;
  Tensor x = s.log_softmax(-1);
  Tensor y = (at::mm(ti.to(acc), tw.to(acc).t()) / temperature).log_softmax(-1);
  Tensor loss, g;
  switch (beta_mode(beta)) {
    case 0: {
      Tensor p = y.exp();
      loss = p * (y - x);
      g = -p;
      break;
    }
    case 1: {
      Tensor q = x.exp();
      loss = q * (x - y);
      g = loss + q;
      break;
    }
    default: {
      Tensor bp = beta * y.exp();
      Tensor bq = (1.0 - beta) * x.exp();
      Tensor m = bp + bq;
      loss = bp * y + bq * x - m * m.log();
      g = bq * (x - m.log());
    }
  }
  Tensor live = labels.has_value() ? labels->ne(ignore_index).to(acc).unsqueeze(1)
                                   : at::ones({si.size(0), 1}, si.options().dtype(acc));
  Tensor mult = 1.0 / live.sum().clamp_min(1);
  Tensor total = (at::where(live > 0, loss, 0.0).sum() * mult).reshape({});
  Tensor gi = at::empty({0}, si.options());
  Tensor gw = at::empty({0}, sw.options());
  if (input_grad || weight_grad) {
    g = at::where(live > 0, g, 0.0) * mult;
    Tensor dz = (g - x.exp() * g.sum(-1, true)) / temperature;
    if (input_grad) gi = at::mm(dz, sw.to(acc)).to(si.scalar_type());
    if (weight_grad) gw = at::mm(dz.t(), si.to(acc)).to(sw.scalar_type());
  }
  return {total, gi, gw};
}

// ---- Meta (SymInt-clean)

Out fwd_meta(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw, const optional<Tensor>& labels,
             double beta, int64_t, double temperature, bool input_grad, bool weight_grad) {
  check_inputs(si, sw, ti, tw, labels, beta, temperature);
  Tensor gi = input_grad ? at::empty_symint(si.sym_sizes(), si.options()) : at::empty({0}, si.options());
  Tensor gw = weight_grad ? at::empty_symint(sw.sym_sizes(), sw.options()) : at::empty({0}, sw.options());
  return {at::empty({}, si.options().dtype(acc_dtype(si))), gi, gw};
}

// ---- CUDA launcher

// Tokens per chunk: Liger-Kernel's rule, chunk logits about the size of the hidden states
// (BT / ceil(V / H), rounded up to a power of 2), so the extra memory stays ~2 x BT x H.
int64_t chunk_rows(int64_t bt, int64_t v, int64_t h) {
  const int64_t factor = std::max<int64_t>(1, ceil_div(v, std::max<int64_t>(h, 1)));
  return std::min(bt, next_pow2(ceil_div(bt, factor)));
}

Out fwd_cuda(const Tensor& si_in, const Tensor& sw_in, const Tensor& ti_in, const Tensor& tw_in,
             const optional<Tensor>& labels_in, double beta, int64_t ignore_index, double temperature,
             bool input_grad, bool weight_grad) {
  check_inputs(si_in, sw_in, ti_in, tw_in, labels_in, beta, temperature);
  TORCH_CHECK(is_half_or_float(si_in.scalar_type()), kOp, ": the CUDA kernels take float32, bfloat16 or float16, got ",
              si_in.scalar_type());
  c10::DeviceGuard guard(si_in.device());
  const int64_t bt = si_in.size(0), h = si_in.size(1), v = sw_in.size(0);
  TORCH_CHECK(bt < (int64_t(1) << 31) && v < (int64_t(1) << 31), kOp,
              ": at most 2^31 - 1 tokens and vocabulary entries are supported, got ", bt, " x ", v);
  Tensor si = si_in.contiguous(), sw = sw_in.contiguous(), ti = ti_in.contiguous(), tw = tw_in.contiguous();
  auto f32 = si.options().dtype(at::kFloat);
  Tensor loss = at::empty({}, f32);
  Tensor gi = input_grad ? at::empty({bt, h}, si.options()) : at::empty({0}, si.options());
  Tensor gw = weight_grad ? at::zeros({v, h}, sw.options()) : at::empty({0}, sw.options());
  optional<Tensor> labels = labels_in.has_value() ? optional<Tensor>(labels_in->contiguous()) : c10::nullopt;
  const int has_labels = labels.has_value() ? 1 : 0;
  const CUdeviceptr lp = labels.has_value() ? ptr(*labels) : CUdeviceptr{0};
  const LaunchContext ctx = launch_context(si);
  Tensor mult = at::empty({2}, f32);  // [0]: 1 / non-ignored tokens, [1]: scratch for jsd_sum_kernel
  Tensor partial = at::empty({bt}, f32);
  const auto& cv = inv_count_kernel_get({SUM_BLOCK}, ctx.arch_slot);
  inv_count_kernel_launch(cv, ctx, Grid{1}, lp, ptr(mult), bt, ignore_index, has_labels);
  const bool grads = input_grad || weight_grad;
  if (bt > 0 && v > 0) {
    const int64_t chunk = chunk_rows(bt, v, h);
    const int64_t vec = 16 / static_cast<int64_t>(c10::elementSize(si.scalar_type()));
    for (int64_t start = 0; start < bt; start += chunk) {
      const int64_t n = std::min(chunk, bt - start);
      Tensor si_c = si.narrow(0, start, n);
      Tensor s = at::mm(si_c, sw.t());  // [n, V], contiguous
      Tensor t = at::mm(ti.narrow(0, start, n), tw.t());
      const bool aligned = v % vec == 0 && aligned16(s) && aligned16(t) && aligned16(partial) && aligned16(mult) &&
                           (!labels.has_value() || aligned16(*labels));
      const auto& kv = fused_linear_jsd_kernel_get({aligned, beta_mode(beta), grads, si.scalar_type()}, ctx.arch_slot);
      fused_linear_jsd_kernel_launch(kv, ctx, Grid{static_cast<uint32_t>(n)}, ptr(s), ptr(t), lp, ptr(partial),
                                     ptr(mult), static_cast<int32_t>(start), v / kv.ALIGN, v / kv.ALIGN, v / kv.ALIGN,
                                     ignore_index, has_labels, static_cast<float>(beta),
                                     static_cast<float>(1.0 / temperature));
      if (input_grad) {
        Tensor gi_c = gi.narrow(0, start, n);  // contiguous rows of a contiguous [BT, H]
        at::mm_out(gi_c, s, sw);
      }
      if (weight_grad) gw.addmm_(s.t(), si_c);
    }
  } else {
    partial.zero_();  // no vocabulary: every row's loss is 0 (and so are the gradients)
    if (input_grad) gi.zero_();
  }
  const auto& sv = jsd_sum_kernel_get({at::kFloat}, ctx.arch_slot);
  jsd_sum_kernel_launch(sv, ctx, Grid{1}, ptr(partial), CUdeviceptr{0}, ptr(loss), ptr(mult) + 4, bt, 0, 0, 0,
                         1.0f);
  return {loss, gi, gw};
}

// Every key the launcher can ask for, per arch slot, must have been built.
const VariantCheck variant_check("fused_linear_jsd", [](int arch_slot) {
  std::vector<std::string> missing;
  if (!inv_count_kernel_find({SUM_BLOCK}, arch_slot)) missing.push_back(inv_count_kernel_key{SUM_BLOCK}.str());
  if (!jsd_sum_kernel_find({at::kFloat}, arch_slot)) missing.push_back(jsd_sum_kernel_key{at::kFloat}.str());
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf})
    for (bool aligned : {false, true})
      for (double beta : {0.0, 1.0, 0.5})
        for (bool grads : {false, true}) {
          fused_linear_jsd_kernel_key k{aligned, beta_mode(beta), grads, dt};
          if (!fused_linear_jsd_kernel_find(k, arch_slot)) missing.push_back(k.str());
        }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

using FwdFn = Out(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const optional<Tensor>&, double, int64_t,
                  double, bool, bool);

Out call_fwd(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw, const optional<Tensor>& labels,
             double beta, int64_t ignore_index, double temperature, bool input_grad, bool weight_grad) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::fused_linear_jsd_fwd", "").typed<FwdFn>();
  return op.call(si, sw, ti, tw, labels, beta, ignore_index, temperature, input_grad, weight_grad);
}

class FusedLinearJsdFunction : public torch::autograd::Function<FusedLinearJsdFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& si,
                                                const Tensor& sw, const Tensor& ti, const Tensor& tw,
                                                const optional<Tensor>& labels, double beta, int64_t ignore_index,
                                                double temperature) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, gi, gw] = call_fwd(si, sw, ti, tw, labels, beta, ignore_index, temperature, si.requires_grad(),
                                   sw.requires_grad());
    ctx->save_for_backward({gi, gw});
    return {loss};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& g = grads[0];
    Tensor gi, gw;
    if (ctx->needs_input_grad(0)) gi = saved[0] * g.to(saved[0].scalar_type());
    if (ctx->needs_input_grad(1)) gw = saved[1] * g.to(saved[1].scalar_type());
    return {gi, gw, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor fused_autograd(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw,
                      const optional<Tensor>& labels, double beta, int64_t ignore_index, double temperature) {
  const bool grad_mode = at::GradMode::is_enabled();
  TORCH_CHECK(!(grad_mode && (ti.requires_grad() || tw.requires_grad())), kOp,
              ": gradients with respect to the teacher (teacher_input, teacher_weight) are not supported; "
              "detach them or run the teacher under torch.no_grad()");
  if (!(grad_mode && (si.requires_grad() || sw.requires_grad()))) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return std::get<0>(call_fwd(si, sw, ti, tw, labels, beta, ignore_index, temperature, false, false));
  }
  return FusedLinearJsdFunction::apply(si, sw, ti, tw, labels, beta, ignore_index, temperature)[0];
}

Out fwd_autograd(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw,
                 const optional<Tensor>& labels, double beta, int64_t ignore_index, double temperature,
                 bool input_grad, bool weight_grad) {
  TORCH_CHECK(!(at::GradMode::is_enabled() &&
                (si.requires_grad() || sw.requires_grad() || ti.requires_grad() || tw.requires_grad())),
              "fused_linear_jsd_fwd: not differentiable, call liger::fused_linear_jsd for gradients");
  at::AutoDispatchBelowADInplaceOrView guard;
  return call_fwd(si, sw, ti, tw, labels, beta, ignore_index, temperature, input_grad, weight_grad);
}

Tensor fused_cpu(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw,
                 const optional<Tensor>& labels, double beta, int64_t ignore_index, double temperature) {
  return std::get<0>(fwd_cpu(si, sw, ti, tw, labels, beta, ignore_index, temperature, false, false));
}

Tensor fused_meta(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw,
                  const optional<Tensor>& labels, double beta, int64_t ignore_index, double temperature) {
  return std::get<0>(fwd_meta(si, sw, ti, tw, labels, beta, ignore_index, temperature, false, false));
}

Tensor fused_cuda(const Tensor& si, const Tensor& sw, const Tensor& ti, const Tensor& tw,
                  const optional<Tensor>& labels, double beta, int64_t ignore_index, double temperature) {
  return std::get<0>(fwd_cuda(si, sw, ti, tw, labels, beta, ignore_index, temperature, false, false));
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("fused_linear_jsd", &fused_cpu);
  m.impl("fused_linear_jsd_fwd", &fwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("fused_linear_jsd", &fused_meta);
  m.impl("fused_linear_jsd_fwd", &fwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("fused_linear_jsd", &fused_cuda);
  m.impl("fused_linear_jsd_fwd", &fwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("fused_linear_jsd", &fused_autograd);
  m.impl("fused_linear_jsd_fwd", &fwd_autograd);
}

}  // namespace liger::fused_linear_jsd
