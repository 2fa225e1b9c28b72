// Kernel images compiled ahead of time, their per-device module cache, and the launch path (kernel_image.h),
// with the helpers launchers use on tensors.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>

#include "runtime/kernel_image.h"

namespace liger {

// A tensor's device address as a kernel argument (0 for an undefined optional tensor).
inline CUdeviceptr ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<CUdeviceptr>(t.const_data_ptr()) : 0;
}

// Elements of a 16-byte vector of this dtype (the ALIGN of the aligned variants).
inline int64_t vec_elems(c10::ScalarType t) { return 16 / static_cast<int64_t>(c10::elementSize(t)); }

// Flat elementwise kernels (an op's inputs made contiguous and seen as n elements, `block` per program): 64-bit
// offsets once the last program's end could pass INT32_MAX (max_block: the op's largest BLOCK), and the grid.
inline bool flat_needs_int64(int64_t n, int64_t max_block) {
  return n > std::numeric_limits<int32_t>::max() - max_block;
}

inline Grid flat_grid(int64_t n, int64_t block, const char* op) {
  const int64_t programs = (n + block - 1) / block;
  TORCH_CHECK(programs <= std::numeric_limits<int32_t>::max(), op, ": ", n, " elements is too many for one launch");
  return Grid{static_cast<uint32_t>(programs)};
}

}  // namespace liger
