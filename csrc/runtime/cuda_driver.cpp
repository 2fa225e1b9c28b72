#include "runtime/cuda_driver.h"

#include <c10/util/Exception.h>
#include <dlfcn.h>

#include <atomic>
#include <mutex>

namespace liger {
namespace {

// Every entry point is resolved at the CUDA 12.0 ABI: the oldest driver the cubins can run on (R525).
constexpr int kAbiVersion = 12000;

using GetProcAddress = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);

Driver load_driver() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  TORCH_CHECK(lib != nullptr, "liger_aot: cannot load the NVIDIA driver library libcuda.so.1 (", dlerror(),
              "); CUDA tensors need an NVIDIA driver, CPU tensors work without one");
  auto get_proc = reinterpret_cast<GetProcAddress>(dlsym(lib, "cuGetProcAddress_v2"));
  TORCH_CHECK(get_proc != nullptr,
              "liger_aot: libcuda.so.1 has no cuGetProcAddress_v2; the NVIDIA driver is older than CUDA 12.0 "
              "(R525), which liger_aot needs");
  Driver d{};
  auto resolve = [&](const char* name, auto& fn) {
    void* p = nullptr;
    CUdriverProcAddressQueryResult status;
    CUresult r = get_proc(name, &p, kAbiVersion, CU_GET_PROC_ADDRESS_DEFAULT, &status);
    TORCH_CHECK(r == CUDA_SUCCESS && p != nullptr && status == CU_GET_PROC_ADDRESS_SUCCESS,
                "liger_aot: the NVIDIA driver does not provide ", name, " (CUDA 12.0 ABI)");
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
  };
  resolve("cuInit", d.cuInit);
  resolve("cuDriverGetVersion", d.cuDriverGetVersion);
  resolve("cuDeviceGet", d.cuDeviceGet);
  resolve("cuDeviceGetAttribute", d.cuDeviceGetAttribute);
  resolve("cuDeviceGetName", d.cuDeviceGetName);
  resolve("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain);
  resolve("cuCtxGetCurrent", d.cuCtxGetCurrent);
  resolve("cuCtxSetCurrent", d.cuCtxSetCurrent);
  resolve("cuModuleLoadData", d.cuModuleLoadData);
  resolve("cuModuleGetFunction", d.cuModuleGetFunction);
  resolve("cuFuncGetAttribute", d.cuFuncGetAttribute);
  resolve("cuFuncSetAttribute", d.cuFuncSetAttribute);
  resolve("cuFuncSetCacheConfig", d.cuFuncSetCacheConfig);
  resolve("cuLaunchKernelEx", d.cuLaunchKernelEx);
  resolve("cuOccupancyMaxActiveBlocksPerMultiprocessor", d.cuOccupancyMaxActiveBlocksPerMultiprocessor);
  resolve("cuGetErrorName", d.cuGetErrorName);
  resolve("cuGetErrorString", d.cuGetErrorString);
  CUresult r = d.cuInit(0);
  TORCH_CHECK(r == CUDA_SUCCESS, "liger_aot: cuInit failed: ", static_cast<int>(r));
  return d;
}

}  // namespace

const Driver& driver() {
  // Not a function-local static initialised by a throwing call: a failed load must be retried and
  // report the same error each time rather than poison later calls.
  static std::mutex mu;
  static std::atomic<const Driver*> loaded{nullptr};
  const Driver* d = loaded.load(std::memory_order_acquire);
  if (d != nullptr) return *d;
  std::lock_guard<std::mutex> lock(mu);
  d = loaded.load(std::memory_order_relaxed);
  if (d == nullptr) {
    d = new Driver(load_driver());
    loaded.store(d, std::memory_order_release);
  }
  return *d;
}

std::string cu_error_string(CUresult r) {
  const Driver& d = driver();
  const char* name = nullptr;
  const char* text = nullptr;
  d.cuGetErrorName(r, &name);
  d.cuGetErrorString(r, &text);
  return std::string(name ? name : "CUDA_ERROR_UNKNOWN") + " (" + std::to_string(static_cast<int>(r)) +
         "): " + (text ? text : "no description");
}

}  // namespace liger
