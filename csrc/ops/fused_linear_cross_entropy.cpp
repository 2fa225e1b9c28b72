// Cross-entropy of input @ weight.T + bias without holding the logits of all tokens: the tokens are processed in
// chunks; per chunk cuBLAS makes the logits, the cross-entropy kernel writes the loss rows and overwrites the
// logits with their gradient, and cuBLAS turns that into the chunk's d input and adds its share of d weight.
// The gradients are computed in the forward (for grad_output 1) and scaled by grad_output in the backward, so the
// reductions with gradients are "mean" and "sum"; "none" is forward-only. z_loss is reported, not differentiable.
#include <cstdlib>
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include "liger_gen/cross_entropy.h"
#include "ops/cross_entropy.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::fused_linear_cross_entropy {

using at::Tensor;
using std::optional;
using namespace liger::cross_entropy;
using namespace liger::gen::cross_entropy;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("fused_linear_cross_entropy(Tensor input, Tensor weight, Tensor target, Tensor? bias=None, Tensor? ce_weight=None, int ignore_index=-100, float label_smoothing=0.0, float lse_square_scale=0.0, float? softcap=None, str reduction=\"mean\") -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("fused_linear_cross_entropy_fwd(Tensor input, Tensor weight, Tensor target, Tensor? bias, Tensor? ce_weight, int ignore_index, float label_smoothing, float lse_square_scale, float? softcap, str reduction, bool[3] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

constexpr const char* kOp = "fused_linear_cross_entropy";

void check_inputs(const Tensor& input, const Tensor& weight, const Tensor& target, const optional<Tensor>& bias,
                  const optional<Tensor>& ce_weight) {
  TORCH_CHECK(input.dim() >= 1, kOp, ": input must have at least one dimension (the hidden size), got a 0-d tensor");
  const bool cpu_double = input.scalar_type() == at::kDouble && !input.is_cuda();
  TORCH_CHECK(is_half_or_float(input.scalar_type()) || cpu_double, kOp,
              ": input must be float32, bfloat16 or float16 (float64 on CPU), got ", input.scalar_type());
  TORCH_CHECK(weight.device() == input.device(), kOp, ": weight is on ", weight.device(), " but input is on ",
              input.device());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), kOp, ": weight must have input's dtype ",
              input.scalar_type(), ", got ", weight.scalar_type());
  TORCH_CHECK(weight.dim() == 2, kOp, ": weight must have shape [vocab, ", input.sym_size(-1), "], got ",
              shape_str(weight));
  TORCH_SYM_CHECK(weight.sym_size(1).sym_eq(input.sym_size(-1)), kOp, ": weight must have shape [vocab, ",
                  input.sym_size(-1), "] to match input's last dimension, got ", shape_str(weight));
  TORCH_SYM_CHECK(weight.sym_size(0).sym_gt(0), kOp, ": weight must have at least one row (class), got ",
                  shape_str(weight));
  if (bias) {
    TORCH_CHECK(bias->device() == input.device(), kOp, ": bias is on ", bias->device(), " but input is on ",
                input.device());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), kOp, ": bias must have input's dtype ",
                input.scalar_type(), ", got ", bias->scalar_type());
    TORCH_CHECK(bias->dim() == 1, kOp, ": bias must have shape [", weight.sym_size(0), "], got ", shape_str(*bias));
    TORCH_SYM_CHECK(bias->sym_size(0).sym_eq(weight.sym_size(0)), kOp, ": bias must have shape [",
                    weight.sym_size(0), "] (one per row of weight), got ", shape_str(*bias));
  }
  check_target_and_weight(kOp, target, input.sym_sizes().slice(0, input.dim() - 1), weight.sym_size(0), ce_weight,
                          "ce_weight", input.device());
}

Options options(int64_t ignore_index, double label_smoothing, double lse_square_scale, optional<double> softcap,
                c10::string_view reduction, bool compute_grad) {
  Options o = make_options(kOp, ignore_index, label_smoothing, lse_square_scale, softcap, std::string(reduction));
  TORCH_CHECK(!(compute_grad && o.reduction == Reduction::None), kOp,
              ": gradients need reduction 'mean' or 'sum' (they are computed in the forward for a scalar "
              "grad_output); reduction 'none' is supported without gradients");
  return o;
}

using Result = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

// The loss and z-loss are reported in fp32 (fp64 for fp64 input), as Liger-Kernel's fused linear cross-entropy and
// Hugging Face's causal-LM loss (logits upcast) report them: a bf16 loss would round the training curve to 3
// significant digits and a "sum" over many tokens to a multiple of its ulp.
at::ScalarType loss_dtype(const Tensor& input) { return at::promote_types(input.scalar_type(), at::kFloat); }

// ---- CPU reference (ATen ops: logits in input's dtype as F.linear makes them, cross-entropy in fp32/fp64)

Result fwd_cpu(const Tensor& input, const Tensor& weight, const Tensor& target, const optional<Tensor>& bias,
               const optional<Tensor>& ce_weight, int64_t ignore_index, double label_smoothing,
               double lse_square_scale, optional<double> softcap, c10::string_view reduction,
               std::array<bool, 3> mask) {
  check_inputs(input, weight, target, bias, ce_weight);
  const bool compute_grad = mask[0] || mask[1] || mask[2];
  Options o = options(ignore_index, label_smoothing, lse_square_scale, softcap, reduction, compute_grad);
  const int64_t H = input.size(-1);
  Tensor x = input.reshape({-1, H});
  Tensor t = target.reshape({-1});
  Tensor logits = at::linear(x, weight, bias);
  RowsResult r = rows_cpu(logits, t, ce_weight, o);
  auto [loss, z] = finalize_cpu(r, o, loss_dtype(input), target.sizes());
  auto empty = [&] { return at::empty({0}, input.options()); };
  if (!compute_grad) return {loss, z, empty(), empty(), empty()};
  Tensor one = at::ones({}, r.lse.options()), zero = at::zeros({}, r.lse.options());
  Tensor g = grad_cpu(logits, t, ce_weight, r.lse, r.stats, one, zero, o);
  Tensor grad_input =
      mask[0] ? at::mm(g, weight.to(g.scalar_type())).to(input.scalar_type()).reshape(input.sizes()) : empty();
  Tensor grad_weight = mask[1] ? at::mm(g.t(), x.to(g.scalar_type())).to(weight.scalar_type()) : empty();
  Tensor grad_bias = mask[2] && bias ? g.sum(0).to(bias->scalar_type()) : empty();
  return {loss, z, grad_input, grad_weight, grad_bias};
}

// ---- Meta (SymInt-clean)

Result fwd_meta(const Tensor& input, const Tensor& weight, const Tensor& target, const optional<Tensor>& bias,
                const optional<Tensor>& ce_weight, int64_t ignore_index, double label_smoothing,
                double lse_square_scale, optional<double> softcap, c10::string_view reduction,
               std::array<bool, 3> mask) {
  check_inputs(input, weight, target, bias, ce_weight);
  const bool compute_grad = mask[0] || mask[1] || mask[2];
  Options o = options(ignore_index, label_smoothing, lse_square_scale, softcap, reduction, compute_grad);
  auto out_shape = o.reduction == Reduction::None ? target.sym_sizes() : c10::SymIntArrayRef{};
  Tensor loss = at::empty_symint(out_shape, input.options().dtype(loss_dtype(input)));
  Tensor z = at::empty_symint(out_shape, input.options().dtype(loss_dtype(input)));
  auto empty = [&] { return at::empty({0}, input.options()); };
  if (!compute_grad) return {loss, z, empty(), empty(), empty()};
  return {loss, z, mask[0] ? at::empty_symint(input.sym_sizes(), input.options()) : empty(),
          mask[1] ? at::empty_symint(weight.sym_sizes(), weight.options()) : empty(),
          mask[2] && bias ? at::empty_symint(bias->sym_sizes(), bias->options()) : empty()};
}

// ---- CUDA launcher

// Tokens per chunk: the chunk's logits stay within 128 MiB. Each chunk reads and writes all of grad_weight in its
// addmm (0.5 GB each way at 128256 x 4096 bf16), so chunks much smaller than ~512 tokens make that product
// memory-bound; 512 x 128256 bf16 logits are 125 MiB, a peak of about grad_weight + 0.13 GB.
// LIGER_FLCE_CHUNK_MB (read at every call, 1 to 4096) trades that peak for speed.
constexpr int64_t kChunkBytes = int64_t(1) << 27;

int64_t chunk_bytes() {
  const char* env = std::getenv("LIGER_FLCE_CHUNK_MB");
  if (env == nullptr || *env == '\0') return kChunkBytes;
  char* end = nullptr;
  const long long mb = std::strtoll(env, &end, 10);
  TORCH_CHECK(end != env && *end == '\0' && mb >= 1 && mb <= 4096, kOp,
              ": LIGER_FLCE_CHUNK_MB must be a whole number of MiB from 1 to 4096, got '", env, "'");
  return int64_t(mb) << 20;
}

int64_t chunk_rows(int64_t rows, int64_t vocab, int64_t elem) {
  int64_t c = std::max<int64_t>(1, chunk_bytes() / (vocab * elem));
  if (c >= 128) c -= c % 128;  // whole cuBLAS tiles
  return std::min(c, std::max<int64_t>(rows, 1));
}

Result fwd_cuda(const Tensor& input, const Tensor& weight, const Tensor& target, const optional<Tensor>& bias,
                const optional<Tensor>& ce_weight, int64_t ignore_index, double label_smoothing,
                double lse_square_scale, optional<double> softcap, c10::string_view reduction,
               std::array<bool, 3> mask) {
  check_inputs(input, weight, target, bias, ce_weight);
  const bool compute_grad = mask[0] || mask[1] || mask[2];
  Options o = options(ignore_index, label_smoothing, lse_square_scale, softcap, reduction, compute_grad);
  c10::DeviceGuard guard(input.device());
  const int64_t H = input.size(-1), V = weight.size(0);
  Tensor x = input.reshape({-1, H}).contiguous();
  const int64_t N = x.size(0);
  TORCH_CHECK(N < (int64_t(1) << 31) && V < (int64_t(1) << 31), kOp,
              ": at most 2^31 - 1 tokens and classes are supported, got ", N, " x ", V);
  Tensor w = weight.contiguous();
  Tensor t = target.reshape({-1}).contiguous();
  Tensor w32 = ce_weight ? ce_weight->to(at::kFloat).contiguous() : Tensor();
  auto f32 = input.options().dtype(at::kFloat);
  Tensor ce_row = at::empty({N}, f32), z_row = at::empty({N}, f32), lse = at::empty({N}, f32);
  Tensor stats = stats_cuda(t, w32, V, o);
  auto empty = [&] { return at::empty({0}, input.options()); };
  Tensor grad_input = mask[0] ? at::empty({N, H}, input.options()) : Tensor();
  Tensor grad_weight = mask[1] ? (N == 0 ? at::zeros_like(w) : at::empty_like(w)) : Tensor();
  Tensor bias_acc = mask[2] && bias ? at::zeros({V}, f32) : Tensor();
  const int64_t chunk = chunk_rows(N, V, input.element_size());
  Tensor buffer = at::empty({N == 0 ? 0 : chunk, V}, input.options());
  const LaunchContext ctx = launch_context(input);
  for (int64_t start = 0; start < N; start += chunk) {
    const int64_t n = std::min(chunk, N - start);
    Tensor xc = x.narrow(0, start, n);
    Tensor logits = buffer.narrow(0, 0, n);
    if (bias) {
      at::addmm_out(logits, *bias, xc, w.t());
    } else {
      at::mm_out(logits, xc, w.t());
    }
    rows_cuda(logits, V, t.narrow(0, start, n), w32, stats, ce_row.narrow(0, start, n), z_row.narrow(0, start, n),
              lse.narrow(0, start, n), o, compute_grad);
    if (!compute_grad) continue;
    if (grad_input.defined()) {
      Tensor grad_input_chunk = grad_input.narrow(0, start, n);
      at::mm_out(grad_input_chunk, logits, w);
    }
    if (grad_weight.defined()) {
      if (start == 0) {
        at::mm_out(grad_weight, logits.t(), xc);
      } else {
        grad_weight.addmm_(logits.t(), xc);
      }
    }
    if (bias_acc.defined()) {
      const auto& v = column_sum_accumulate_kernel_get({input.scalar_type()}, ctx.arch_slot);
      column_sum_accumulate_kernel_launch(v, ctx, Grid{static_cast<uint32_t>(ceil_div(V, v.BLOCK_N))}, ptr(logits),
                                          ptr(bias_acc), static_cast<int32_t>(n), static_cast<int32_t>(V), V);
    }
  }
  auto out_shape = o.reduction == Reduction::None ? target.sizes() : at::IntArrayRef{};
  Tensor loss = at::empty(out_shape, f32), z = at::empty(out_shape, f32);
  finalize_cuda(ce_row, z_row, stats, loss, z, o.reduction);
  if (!compute_grad) return {loss, z, empty(), empty(), empty()};
  return {loss, z, grad_input.defined() ? grad_input.view(input.sizes()) : empty(),
          grad_weight.defined() ? grad_weight : empty(),
          bias_acc.defined() ? bias_acc.to(bias->scalar_type()) : empty()};
}

std::tuple<Tensor, Tensor> flce_cpu(const Tensor& input, const Tensor& weight, const Tensor& target,
                                    const optional<Tensor>& bias, const optional<Tensor>& ce_weight,
                                    int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                    optional<double> softcap, c10::string_view reduction) {
  auto r = fwd_cpu(input, weight, target, bias, ce_weight, ignore_index, label_smoothing, lse_square_scale, softcap,
                   reduction, {false, false, false});
  return {std::get<0>(r), std::get<1>(r)};
}

std::tuple<Tensor, Tensor> flce_meta(const Tensor& input, const Tensor& weight, const Tensor& target,
                                     const optional<Tensor>& bias, const optional<Tensor>& ce_weight,
                                     int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                     optional<double> softcap, c10::string_view reduction) {
  auto r = fwd_meta(input, weight, target, bias, ce_weight, ignore_index, label_smoothing, lse_square_scale, softcap,
                    reduction, {false, false, false});
  return {std::get<0>(r), std::get<1>(r)};
}

std::tuple<Tensor, Tensor> flce_cuda(const Tensor& input, const Tensor& weight, const Tensor& target,
                                     const optional<Tensor>& bias, const optional<Tensor>& ce_weight,
                                     int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                     optional<double> softcap, c10::string_view reduction) {
  auto r = fwd_cuda(input, weight, target, bias, ce_weight, ignore_index, label_smoothing, lse_square_scale, softcap,
                    reduction, {false, false, false});
  return {std::get<0>(r), std::get<1>(r)};
}

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

// The forward computes the gradients for grad_output 1; the backward scales them by grad_output, in place when
// the graph is freed after it (no second gradient-sized buffer: grad_weight is 1 GB at 128256 x 4096 bf16), into
// new tensors under retain_graph=True (the saved ones must stay intact for the next backward).
class FusedLinearCrossEntropyForward : public torch::autograd::Function<FusedLinearCrossEntropyForward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& input,
                                                const Tensor& weight, const Tensor& target,
                                                const optional<Tensor>& bias, const optional<Tensor>& ce_weight,
                                                int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                                optional<double> softcap, std::string reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("liger::fused_linear_cross_entropy_fwd", "")
                         .typed<decltype(fwd_cpu)>();
    // Only the gradients autograd will ask for: a frozen head (LoRA) skips d weight, a third of the work.
    const std::array<bool, 3> mask{input.requires_grad(), weight.requires_grad(), bias && bias->requires_grad()};
    auto [loss, z, gi, gw, gb] = op.call(input, weight, target, bias, ce_weight, ignore_index, label_smoothing,
                                         lse_square_scale, softcap, reduction, mask);
    ctx->saved_data["grad_input"] = gi;
    ctx->saved_data["grad_weight"] = gw;
    ctx->saved_data["grad_bias"] = gb;
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["has_grad_input"] = mask[0];
    ctx->saved_data["has_grad_weight"] = mask[1];
    ctx->saved_data["has_grad_bias"] = mask[2];
    ctx->mark_non_differentiable({z});
    return {loss, z};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const Tensor& g = grads[0];  // 0-dim: reductions with gradients are "mean" and "sum"
    const bool keep = torch::autograd::get_current_graph_task_keep_graph();
    // In place, same-dtype contiguous gradients go through one _foreach_mul_ with g as a device scalar: a
    // vectorized kernel. t.mul_(g) broadcasts a 0-dim CUDA tensor, which TensorIterator cannot vectorize:
    // 1.4 ms for the 1 GB grad_weight of 128256 x 4096 bf16 on an H200 (torch.profiler), ~3x its copy time.
    // g is fp32 (the loss is) and the gradients are in the input's dtype: g is cast to theirs once (a relative
    // rounding of at most half an ulp of that dtype, the same as rounding each product).
    std::vector<Tensor> batch;
    auto scaled = [&](const char* name, bool needed) {
      if (!needed) return Tensor();
      Tensor t = ctx->saved_data[name].toTensor();
      if (keep) return (t * g).to(t.scalar_type());
      if (t.is_cuda() && g.is_cuda() && t.is_contiguous() &&
          (batch.empty() || batch.front().scalar_type() == t.scalar_type())) {
        batch.push_back(t);
        return t;
      }
      return t.mul_(g);
    };
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // needs_input_grad counts the tensors given: input 0, weight 1, target 2, bias 3 when present.
    Tensor gi = scaled("grad_input", ctx->needs_input_grad(0) && ctx->saved_data["has_grad_input"].toBool());
    Tensor gw = scaled("grad_weight", ctx->needs_input_grad(1) && ctx->saved_data["has_grad_weight"].toBool());
    Tensor gb = scaled("grad_bias", has_bias && ctx->needs_input_grad(3) && ctx->saved_data["has_grad_bias"].toBool());
    if (!batch.empty()) at::_foreach_mul_(batch, g.to(batch.front().scalar_type()));
    if (!keep)
      for (const char* name : {"grad_input", "grad_weight", "grad_bias"}) ctx->saved_data.erase(name);
    return {gi, gw, Tensor(), gb, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> flce_autograd(const Tensor& input, const Tensor& weight, const Tensor& target,
                                         const optional<Tensor>& bias, const optional<Tensor>& ce_weight,
                                         int64_t ignore_index, double label_smoothing, double lse_square_scale,
                                         optional<double> softcap, c10::string_view reduction) {
  const bool needs_grad = at::GradMode::is_enabled() &&
                          (input.requires_grad() || weight.requires_grad() || (bias && bias->requires_grad()));
  if (!needs_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("liger::fused_linear_cross_entropy", "")
                         .typed<decltype(flce_cpu)>();
    return op.call(input, weight, target, bias, ce_weight, ignore_index, label_smoothing, lse_square_scale, softcap,
                   reduction);
  }
  auto out = FusedLinearCrossEntropyForward::apply(input, weight, target, bias, ce_weight, ignore_index,
                                                   label_smoothing, lse_square_scale, softcap, std::string(reduction));
  return {out[0], out[1]};
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("fused_linear_cross_entropy", &flce_cpu);
  m.impl("fused_linear_cross_entropy_fwd", &fwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("fused_linear_cross_entropy", &flce_meta);
  m.impl("fused_linear_cross_entropy_fwd", &fwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("fused_linear_cross_entropy", &flce_cuda);
  m.impl("fused_linear_cross_entropy_fwd", &fwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("fused_linear_cross_entropy", &flce_autograd);
  // The gradients it returns are results, not differentiable functions of the inputs.
  m.impl("fused_linear_cross_entropy_fwd", torch::CppFunction::makeFallthrough());
}

}  // namespace liger::fused_linear_cross_entropy
