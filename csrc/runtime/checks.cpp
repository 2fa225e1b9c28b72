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

}  // namespace liger
