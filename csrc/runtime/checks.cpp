#include "runtime/checks.h"

#include <ATen/MemoryOverlap.h>
#include <c10/core/SymBool.h>
#include <c10/util/Exception.h>

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

void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name, const char* op) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device(), "; both must be on the same device");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == ref.dim(), op, ": ", name, " must have ", ref_name, "'s shape ", shape_str(ref), ", got ",
              shape_str(t));
  for (int64_t i = 0; i < ref.dim(); ++i)
    TORCH_SYM_CHECK(t.sym_size(i).sym_eq(ref.sym_size(i)), op, ": ", name, " must have ", ref_name, "'s shape ",
                    shape_str(ref), ", got ", shape_str(t));
}

void check_cuda_dtype(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(is_half_or_float(t.scalar_type()), op, ": the CUDA kernels take float32, bfloat16 or float16 ", name,
              ", got ", t.scalar_type());
}

void check_row_sizes(int64_t rows, int64_t cols, const char* op) {
  TORCH_CHECK(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), op,
              ": at most 2^31 - 1 rows and columns are supported, got ", rows, " x ", cols);
}

void check_overwritable(const char* op, std::initializer_list<std::pair<const at::Tensor*, const char*>> args) {
  for (const auto& [t, name] : args)
    TORCH_CHECK(at::has_internal_overlap(*t) != at::MemOverlap::Yes, op, ": ", name,
                " is overwritten, so its elements must not overlap (an expanded tensor's do)");
  for (auto a = args.begin(); a != args.end(); ++a)
    for (auto b = a + 1; b != args.end(); ++b)
      TORCH_CHECK(at::get_overlap_status(*a->first, *b->first) == at::MemOverlapStatus::No, op, ": the tensors it "
                  "overwrites must not share memory (", a->second, " and ", b->second, " do)");
}

}  // namespace liger
