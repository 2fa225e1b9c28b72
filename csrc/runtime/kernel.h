// Kernel images compiled ahead of time, their per-device module cache, and the launch path (kernel_image.h),
// with the helpers launchers use on tensors.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>

#include "runtime/kernel_image.h"

namespace liger {

// A tensor's device address as a kernel argument (0 for an undefined optional tensor).
inline CUdeviceptr ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<CUdeviceptr>(t.const_data_ptr()) : 0;
}

// Elements of a 16-byte vector of this dtype (the ALIGN of the aligned variants).
inline int64_t vec_elems(c10::ScalarType t) { return 16 / static_cast<int64_t>(c10::elementSize(t)); }

}  // namespace liger
