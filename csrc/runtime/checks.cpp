#include "runtime/checks.h"

#include <sstream>

namespace liger {

Rows as_rows(const at::Tensor& t) {
  const int64_t cols = t.size(-1);
  const int64_t rows = cols == 0 ? 0 : t.numel() / cols;
  bool ok = t.stride(-1) == 1 || cols == 1;
  int64_t row_stride = cols;
  int64_t expected = 0;
  bool first = true;
  for (int64_t i = t.dim() - 2; i >= 0 && ok; --i) {
    if (t.size(i) == 1) continue;
    if (first) {
      row_stride = t.stride(i);
      first = false;
    } else if (t.stride(i) != expected) {
      ok = false;
    }
    expected = t.stride(i) * t.size(i);
  }
  if (ok) return Rows{t, rows, cols, row_stride};
  return Rows{t.contiguous(), rows, cols, cols};
}

std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sym_sizes();
  return s.str();
}

KernelParams kernel_params(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias) {
  const auto xdt = x.scalar_type();
  const bool own =
      (!weight.has_value() || weight->scalar_type() == xdt) && (!bias.has_value() || bias->scalar_type() == xdt);
  const auto pdt = own ? xdt : at::kFloat;
  // Tensor::to dispatches even when it has nothing to do: skip it on the hot path.
  auto prepare = [&](const std::optional<at::Tensor>& p) -> at::Tensor {
    if (!p.has_value()) return at::Tensor();
    return (p->scalar_type() == pdt ? *p : p->to(pdt)).contiguous();
  };
  return {prepare(weight), prepare(bias), pdt};
}

}  // namespace liger
