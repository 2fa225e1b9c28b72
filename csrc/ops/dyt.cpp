// DyT (Dynamic Tanh, "Transformers without Normalization"): y = gamma * tanh(alpha * x) + beta over the
// last dimension; alpha holds one value, gamma and beta (optional) one per channel.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "liger_gen/dyt.h"
#include "runtime/checks.h"
#include "runtime/kernel.h"

namespace liger::dyt {

using at::Tensor;
using std::optional;
using namespace liger::gen::dyt;

// ---- schema

TORCH_LIBRARY_FRAGMENT(liger, m) {
  m.def("dyt(Tensor x, Tensor alpha, Tensor gamma, Tensor? beta) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("dyt_bwd(Tensor dy, Tensor x, Tensor alpha, Tensor gamma, Tensor? beta, bool compute_params) -> "
        "(Tensor, Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
}

// ---- checks

void check_param(const Tensor& p, const char* name, const Tensor& x, const char* op) {
  TORCH_CHECK(p.device() == x.device(), op, ": ", name, " is on ", p.device(), " but x is on ", x.device(),
              "; both must be on the same device");
  TORCH_CHECK(at::isFloatingType(p.scalar_type()), op, ": ", name, " must be a floating-point tensor, got ",
              p.scalar_type());
}

void check_inputs(const Tensor& x, const Tensor& alpha, const Tensor& gamma, const optional<Tensor>& beta,
                  const char* op = "dyt") {
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK(is_half_or_float(x.scalar_type()) || (x.scalar_type() == at::kDouble && !x.is_cuda()), op,
              ": x must be float32, bfloat16 or float16 (float64 on CPU), got ", x.scalar_type());
  check_param(alpha, "alpha", x, op);
  TORCH_SYM_CHECK(alpha.sym_numel().sym_eq(1), op, ": alpha must hold one value, got shape ", shape_str(alpha));
  check_param(gamma, "gamma", x, op);
  TORCH_CHECK(gamma.dim() == 1, op, ": gamma must be 1-D with x's last dimension (", x.sym_size(-1),
              ") elements, got shape ", shape_str(gamma));
  TORCH_SYM_CHECK(gamma.sym_size(0).sym_eq(x.sym_size(-1)), op, ": gamma must have shape [", x.sym_size(-1),
                  "] to match x's last dimension, got ", shape_str(gamma));
  if (!beta.has_value()) return;
  check_param(*beta, "beta", x, op);
  TORCH_CHECK(beta->dim() == 1, op, ": beta must be 1-D with x's last dimension (", x.sym_size(-1),
              ") elements, got shape ", shape_str(*beta));
  TORCH_SYM_CHECK(beta->sym_size(0).sym_eq(x.sym_size(-1)), op, ": beta must have shape [", x.sym_size(-1),
                  "] to match x's last dimension, got ", shape_str(*beta));
}

void check_backward_inputs(const Tensor& dy, const Tensor& x, const Tensor& alpha, const Tensor& gamma,
                           const optional<Tensor>& beta) {
  check_inputs(x, alpha, gamma, beta, "dyt_bwd");
  TORCH_CHECK(dy.device() == x.device(), "dyt_bwd: dy is on ", dy.device(), " but x is on ", x.device());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "dyt_bwd: dy must have x's dtype ", x.scalar_type(), ", got ",
              dy.scalar_type());
  TORCH_CHECK(dy.dim() == x.dim(), "dyt_bwd: dy must have x's shape ", shape_str(x), ", got ", shape_str(dy));
  for (int64_t i = 0; i < x.dim(); ++i)
    TORCH_SYM_CHECK(dy.sym_size(i).sym_eq(x.sym_size(i)), "dyt_bwd: dy must have x's shape ", shape_str(x),
                    ", got ", shape_str(dy));
}

c10::ScalarType acc_dtype(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

Tensor empty_grad(const Tensor& like) { return at::empty({0}, like.options()); }

// ---- CPU reference (ATen ops; the kernels' arithmetic: fp32, rounded once)

Tensor dyt_cpu(const Tensor& x, const Tensor& alpha, const Tensor& gamma, const optional<Tensor>& beta) {
  check_inputs(x, alpha, gamma, beta);
  const auto acc = acc_dtype(x);
  Tensor y = gamma.to(acc) * at::tanh(alpha.to(acc).reshape({}) * x.to(acc));
  if (beta.has_value()) y = y + beta->to(acc);
  return y.to(x.scalar_type()).contiguous();
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_cpu(const Tensor& dy_in, const Tensor& x, const Tensor& alpha,
                                                   const Tensor& gamma, const optional<Tensor>& beta,
                                                   bool compute_params) {
  check_backward_inputs(dy_in, x, alpha, gamma, beta);
  const auto acc = acc_dtype(x);
  const int64_t cols = x.size(-1);
  Tensor xf = x.to(acc), dy = dy_in.to(acc), a = alpha.to(acc).reshape({});
  Tensor z = a * xf;
  Tensor dys = dy * gamma.to(acc) * at::cosh(z).square().reciprocal();  // 1 - tanh^2 without cancellation
  Tensor dx = (dys * a).to(x.scalar_type()).contiguous();
  if (!compute_params) return {dx, empty_grad(alpha), empty_grad(gamma), beta ? empty_grad(*beta) : empty_grad(gamma)};
  Tensor dalpha = (dys * xf).sum().to(alpha.scalar_type()).reshape(alpha.sizes()).contiguous();
  Tensor dgamma = (dy * at::tanh(z)).reshape({-1, cols}).sum(0).to(gamma.scalar_type());
  Tensor dbeta = beta ? dy.reshape({-1, cols}).sum(0).to(beta->scalar_type()) : empty_grad(gamma);
  return {dx, dalpha, dgamma, dbeta};
}

// ---- Meta (SymInt-clean)

Tensor dyt_meta(const Tensor& x, const Tensor& alpha, const Tensor& gamma, const optional<Tensor>& beta) {
  check_inputs(x, alpha, gamma, beta);
  return at::empty_symint(x.sym_sizes(), x.options());
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_meta(const Tensor& dy, const Tensor& x, const Tensor& alpha,
                                                    const Tensor& gamma, const optional<Tensor>& beta,
                                                    bool compute_params) {
  check_backward_inputs(dy, x, alpha, gamma, beta);
  Tensor dx = at::empty_symint(x.sym_sizes(), x.options());
  if (!compute_params) return {dx, empty_grad(alpha), empty_grad(gamma), beta ? empty_grad(*beta) : empty_grad(gamma)};
  return {dx, at::empty_symint(alpha.sym_sizes(), alpha.options()),
          at::empty_symint(gamma.sym_sizes(), gamma.options()),
          beta ? at::empty_symint(beta->sym_sizes(), beta->options()) : empty_grad(gamma)};
}

// ---- CUDA launcher
// x and dy are made contiguous (a copy only for strided or expanded ones) and seen as [rows, C].

// The parameters as the kernels take them: contiguous, all in x's dtype or all in fp32.
struct KernelParams {
  Tensor alpha, gamma, beta;  // beta undefined when absent
  c10::ScalarType dtype;
};

KernelParams kernel_params(const Tensor& x, const Tensor& alpha, const Tensor& gamma, const optional<Tensor>& beta) {
  const auto xdt = x.scalar_type();
  const bool same = alpha.scalar_type() == xdt && gamma.scalar_type() == xdt && (!beta || beta->scalar_type() == xdt);
  const auto wdt = same ? xdt : at::kFloat;
  auto conv = [&](const Tensor& p) { return (p.scalar_type() == wdt ? p : p.to(wdt)).contiguous(); };
  return {conv(alpha), conv(gamma), beta ? conv(*beta) : Tensor(), wdt};
}

void check_cuda(const Tensor& x, int64_t rows, int64_t cols, const char* op) {
  TORCH_CHECK(is_half_or_float(x.scalar_type()), op, ": the CUDA kernels take float32, bfloat16 or float16 x, got ",
              x.scalar_type());
  TORCH_CHECK(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 rows and columns are supported, got ", rows, " x ", cols);
  TORCH_CHECK(ceil_div(cols, LARGE_BLOCK_N) <= 65535, op, ": at most ", 65535 * LARGE_BLOCK_N,
              " columns are supported, got ", cols);
}

int64_t block_n_for(int64_t cols) { return cols <= SMALL_BLOCK_N ? SMALL_BLOCK_N : LARGE_BLOCK_N; }

bool is_aligned(const Tensor& x, const KernelParams& p, int64_t cols) {
  return cols % vec_elems(x.scalar_type()) == 0 && aligned16(x) && aligned16(p.alpha) && aligned16(p.gamma) &&
         aligned16(p.beta);
}

Tensor dyt_cuda(const Tensor& x_in, const Tensor& alpha, const Tensor& gamma, const optional<Tensor>& beta) {
  check_inputs(x_in, alpha, gamma, beta);
  c10::DeviceGuard guard(x_in.device());
  Tensor y = at::empty(x_in.sizes(), x_in.options());
  if (x_in.numel() == 0) return y;
  const int64_t cols = x_in.size(-1), rows = x_in.numel() / cols;
  check_cuda(x_in, rows, cols, "dyt");
  Tensor x = x_in.contiguous();
  KernelParams p = kernel_params(x, alpha, gamma, beta);
  const LaunchContext ctx = launch_context(x);
  dyt_fwd_kernel_key key{is_aligned(x, p, cols), block_n_for(cols), p.dtype, x.scalar_type()};
  const auto& v = dyt_fwd_kernel_get(key, ctx.arch_slot);
  Grid grid{static_cast<uint32_t>(ceil_div(rows, v.BLOCK_M)), static_cast<uint32_t>(ceil_div(cols, v.BLOCK_N))};
  dyt_fwd_kernel_launch(v, ctx, grid, ptr(x), ptr(p.alpha), ptr(p.gamma), ptr(p.beta), ptr(y), rows,
                        cols / v.ALIGN, p.beta.defined());
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_cuda(const Tensor& dy_in, const Tensor& x_in, const Tensor& alpha,
                                                    const Tensor& gamma, const optional<Tensor>& beta,
                                                    bool compute_params) {
  check_backward_inputs(dy_in, x_in, alpha, gamma, beta);
  c10::DeviceGuard guard(x_in.device());
  Tensor dx = at::empty(x_in.sizes(), x_in.options());
  const Tensor no_beta_grad = beta ? empty_grad(*beta) : empty_grad(gamma);
  if (!compute_params && x_in.numel() == 0)
    return {dx, empty_grad(alpha), empty_grad(gamma), no_beta_grad};
  if (x_in.numel() == 0)
    return {dx, at::zeros(alpha.sizes(), alpha.options()), at::zeros(gamma.sizes(), gamma.options()),
            beta ? at::zeros(beta->sizes(), beta->options()) : no_beta_grad};
  const int64_t cols = x_in.size(-1), rows = x_in.numel() / cols;
  check_cuda(x_in, rows, cols, "dyt_bwd");
  Tensor x = x_in.contiguous(), dy = dy_in.contiguous();
  KernelParams p = kernel_params(x, alpha, gamma, beta);
  const bool has_beta = p.beta.defined();
  const LaunchContext ctx = launch_context(x);
  dyt_bwd_kernel_key key{is_aligned(x, p, cols) && aligned16(dy), block_n_for(cols), p.dtype, x.scalar_type()};
  const auto& v = dyt_bwd_kernel_get(key, ctx.arch_slot);
  const int64_t col_blocks = ceil_div(cols, v.BLOCK_N), row_blocks = ceil_div(rows, v.BLOCK_M);
  // Two programs of 8 warps per SM in all: enough 16-byte loads in flight to stream x and dy, and few
  // rows of partial sums (each one C fp32 values of dgamma and of dbeta, written and read again).
  const int64_t programs = std::min<int64_t>(max_resident_programs(v.image, ctx), 2 * ctx.sm_count);
  const int64_t row_programs = std::clamp<int64_t>(programs / col_blocks, 1, row_blocks);
  Tensor dgamma_p, dbeta_p, dalpha_p;
  if (compute_params) {
    auto f32 = x.options().dtype(at::kFloat);
    dgamma_p = at::empty({row_programs, cols}, f32);
    if (has_beta) dbeta_p = at::empty({row_programs, cols}, f32);
    dalpha_p = at::empty({row_programs * col_blocks}, f32);
  }
  Grid grid{static_cast<uint32_t>(row_programs), static_cast<uint32_t>(col_blocks)};
  dyt_bwd_kernel_launch(v, ctx, grid, ptr(dy), ptr(x), ptr(p.alpha), ptr(p.gamma), ptr(dx), ptr(dgamma_p),
                        ptr(dbeta_p), ptr(dalpha_p), rows, cols / v.ALIGN, compute_params, has_beta);
  if (!compute_params) return {dx, empty_grad(alpha), empty_grad(gamma), no_beta_grad};

  Tensor dalpha = at::empty({1}, x.options().dtype(p.dtype));
  Tensor dgamma = at::empty({cols}, x.options().dtype(p.dtype));
  Tensor dbeta = has_beta ? at::empty({cols}, x.options().dtype(p.dtype)) : Tensor();
  const auto& r = dyt_reduce_kernel_get(dyt_reduce_kernel_key{p.dtype}, ctx.arch_slot);
  dyt_reduce_kernel_launch(r, ctx, Grid{static_cast<uint32_t>(ceil_div(cols, r.BLOCK_N) + 1)}, ptr(dgamma_p),
                           ptr(dbeta_p), ptr(dalpha_p), ptr(dgamma), ptr(dbeta), ptr(dalpha), row_programs, cols,
                           row_programs * col_blocks, has_beta);
  auto as_param = [](const Tensor& g, const Tensor& param) {
    Tensor out = g.scalar_type() == param.scalar_type() ? g : g.to(param.scalar_type());
    return out.view(param.sizes());
  };
  return {dx, as_param(dalpha, alpha), as_param(dgamma, gamma), has_beta ? as_param(dbeta, *beta) : no_beta_grad};
}

// Every key the launchers can ask for, per arch slot, must have been built.
const VariantCheck variant_check("dyt", [](int arch_slot) {
  std::vector<std::string> missing;
  const std::pair<c10::ScalarType, c10::ScalarType> pairs[] = {{at::kFloat, at::kFloat},
                                                               {at::kBFloat16, at::kBFloat16},
                                                               {at::kHalf, at::kHalf},
                                                               {at::kBFloat16, at::kFloat},
                                                               {at::kHalf, at::kFloat}};
  for (auto [xdt, wdt] : pairs) {
    for (bool aligned : {false, true})
      for (int64_t cols : {int64_t(1), SMALL_BLOCK_N, SMALL_BLOCK_N + 1, LARGE_BLOCK_N, int64_t(262144)}) {
        dyt_fwd_kernel_key f{aligned, block_n_for(cols), wdt, xdt};
        if (!dyt_fwd_kernel_find(f, arch_slot)) missing.push_back(f.str());
        dyt_bwd_kernel_key b{aligned, block_n_for(cols), wdt, xdt};
        if (!dyt_bwd_kernel_find(b, arch_slot)) missing.push_back(b.str());
      }
    dyt_reduce_kernel_key r{wdt};
    if (!dyt_reduce_kernel_find(r, arch_slot)) missing.push_back(r.str());
  }
  return missing;
});

// ---- Autograd (C++, so TorchScript and libtorch programs get gradients too)

class DytBackward : public torch::autograd::Function<DytBackward> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext*, const Tensor& dy, const Tensor& x,
                                                const Tensor& alpha, const Tensor& gamma,
                                                const optional<Tensor>& beta, bool compute_params) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::dyt_bwd", "").typed<decltype(bwd_cpu)>();
    auto [dx, dalpha, dgamma, dbeta] = op.call(dy, x, alpha, gamma, beta, compute_params);
    return {dx, dalpha, dgamma, dbeta};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    TORCH_CHECK(false, "dyt: second derivatives are not supported (liger::dyt_bwd is not differentiable)");
  }
};

class DytForward : public torch::autograd::Function<DytForward> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& alpha,
                        const Tensor& gamma, const optional<Tensor>& beta) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::dyt", "").typed<decltype(dyt_cpu)>();
    ctx->save_for_backward({x, alpha, gamma, beta.value_or(Tensor())});
    return op.call(x, alpha, gamma, beta);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    optional<Tensor> beta;
    if (saved[3].defined()) beta = saved[3];
    const bool compute_params =
        ctx->needs_input_grad(1) || ctx->needs_input_grad(2) || (beta.has_value() && ctx->needs_input_grad(3));
    auto out = DytBackward::apply(grads[0], saved[0], saved[1], saved[2], beta, compute_params);
    auto pick = [&](int i, bool wanted) { return wanted && ctx->needs_input_grad(i) ? out[i] : Tensor(); };
    return {pick(0, true), pick(1, compute_params), pick(2, compute_params), pick(3, compute_params && beta)};
  }
};

Tensor dyt_autograd(const Tensor& x, const Tensor& alpha, const Tensor& gamma, const optional<Tensor>& beta) {
  const bool grad = at::GradMode::is_enabled() && (x.requires_grad() || alpha.requires_grad() ||
                                                   gamma.requires_grad() || (beta && beta->requires_grad()));
  if (!grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("liger::dyt", "").typed<decltype(dyt_cpu)>();
    return op.call(x, alpha, gamma, beta);
  }
  return DytForward::apply(x, alpha, gamma, beta);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_autograd(const Tensor& dy, const Tensor& x, const Tensor& alpha,
                                                        const Tensor& gamma, const optional<Tensor>& beta,
                                                        bool compute_params) {
  auto out = DytBackward::apply(dy, x, alpha, gamma, beta, compute_params);
  return {out[0], out[1], out[2], out[3]};
}

// ---- registrations

TORCH_LIBRARY_IMPL(liger, CPU, m) {
  m.impl("dyt", &dyt_cpu);
  m.impl("dyt_bwd", &bwd_cpu);
}

TORCH_LIBRARY_IMPL(liger, Meta, m) {
  m.impl("dyt", &dyt_meta);
  m.impl("dyt_bwd", &bwd_meta);
}

TORCH_LIBRARY_IMPL(liger, CUDA, m) {
  m.impl("dyt", &dyt_cuda);
  m.impl("dyt_bwd", &bwd_cuda);
}

TORCH_LIBRARY_IMPL(liger, Autograd, m) {
  m.impl("dyt", &dyt_autograd);
  m.impl("dyt_bwd", &bwd_autograd);
}

}  // namespace liger::dyt
