#include "runtime/kernel.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <mutex>
#include <sstream>

#include "liger_gen/archs.h"
#include "runtime/cuda_driver.h"

namespace liger {
namespace {

struct DeviceState {
  std::once_flag once;
  CUcontext context = nullptr;
  int cc = 0;
  int arch_slot = -1;
  int sm_count = 0;
  int max_shared_optin = 0;
  std::string name;
  std::string arch_error;
};

DeviceState g_devices[kMaxDevices];
std::mutex g_load_mutex;

void check_cu(CUresult r, const char* what, const KernelImage* image, int device) {
  if (r == CUDA_SUCCESS) return;
  std::ostringstream s;
  s << "liger_aot: " << what << " failed";
  if (image != nullptr) s << " for " << image->variant << " (" << image->arch_name << ")";
  s << " on cuda:" << device << ": " << cu_error_string(r);
  TORCH_CHECK(false, s.str());
}

std::string built_arch_list() {
  std::string s;
  for (int i = 0; i < gen::kNumArchs; ++i) s += (i ? ", " : "") + std::string(gen::kArchNames[i]);
  return s;
}

// sm_XYa cubins (cc >= 9.0) run only on exactly that cc; sm_8X cubins run on any 8.x at or above X.
int pick_arch_slot(int cc) {
  int best = -1;
  for (int i = 0; i < gen::kNumArchs; ++i) {
    int a = gen::kArchs[i];
    if (a == cc) return i;
    if (a < 90 && a / 10 == cc / 10 && a < cc && (best < 0 || a > gen::kArchs[best])) best = i;
  }
  return best;
}

void init_device(int device, DeviceState& st) {
  const Driver& d = driver();
  CUdevice dev;
  check_cu(d.cuDeviceGet(&dev, device), "cuDeviceGet", nullptr, device);
  check_cu(d.cuDevicePrimaryCtxRetain(&st.context, dev), "cuDevicePrimaryCtxRetain", nullptr, device);
  int major = 0, minor = 0;
  check_cu(d.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute",
           nullptr, device);
  check_cu(d.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute",
           nullptr, device);
  check_cu(d.cuDeviceGetAttribute(&st.sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev),
           "cuDeviceGetAttribute", nullptr, device);
  check_cu(d.cuDeviceGetAttribute(&st.max_shared_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev),
           "cuDeviceGetAttribute", nullptr, device);
  char name[256] = {0};
  d.cuDeviceGetName(name, sizeof(name) - 1, dev);
  st.name = name;
  st.cc = major * 10 + minor;
  st.arch_slot = pick_arch_slot(st.cc);
  if (st.arch_slot < 0) {
    std::ostringstream s;
    s << "liger_aot was built for " << built_arch_list() << "; this GPU (" << st.name << ", cuda:" << device
      << ") is sm_" << st.cc << ": rebuild with LIGER_CUDA_ARCHS=" << major << "." << minor;
    st.arch_error = s.str();
  }
}

CUfunction load_function(const KernelImage& image, const LaunchContext& ctx) {
  std::lock_guard<std::mutex> lock(g_load_mutex);
  CUfunction fn = image.cache->fn[ctx.device].load(std::memory_order_acquire);
  if (fn != nullptr) return fn;
  const Driver& d = driver();
  const DeviceState& st = g_devices[ctx.device];
  CUmodule module;
  CUresult r = d.cuModuleLoadData(&module, image.cubin);
  if (r == CUDA_ERROR_NO_BINARY_FOR_GPU || r == CUDA_ERROR_INVALID_IMAGE || r == CUDA_ERROR_UNSUPPORTED_PTX_VERSION ||
      r == CUDA_ERROR_INVALID_PTX || r == CUDA_ERROR_INVALID_SOURCE) {
    int version = 0;
    d.cuDriverGetVersion(&version);
    TORCH_CHECK(false, "liger_aot: the NVIDIA driver (CUDA ", version / 1000, ".", (version % 1000) / 10,
                ") refused the cubin of ", image.variant, " (", image.arch_name, ") on cuda:", ctx.device, " (",
                st.name, "): ", cu_error_string(r),
                ". Cubins assembled by the ptxas of Triton 3.6 need driver R525 or newer (ptxas from CUDA 13 "
                "needs R580); update the driver or rebuild liger_aot with LIGER_CUDA_ARCHS matching this GPU.");
  }
  check_cu(r, "cuModuleLoadData", &image, ctx.device);
  check_cu(d.cuModuleGetFunction(&fn, module, image.function), "cuModuleGetFunction", &image, ctx.device);
  // Querying an attribute forces the load now even under CUDA_MODULE_LOADING=LAZY, so that a later
  // launch inside CUDA-graph capture does not load a module.
  int regs = 0;
  check_cu(d.cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn), "cuFuncGetAttribute", &image, ctx.device);
  if (image.shared > 48 * 1024) {
    TORCH_CHECK(image.shared <= st.max_shared_optin, "liger_aot: ", image.variant, " (", image.arch_name,
                ") needs ", image.shared, " bytes of shared memory; ", st.name, " (cuda:", ctx.device,
                ") allows ", st.max_shared_optin);
    int static_shared = 0;
    check_cu(d.cuFuncGetAttribute(&static_shared, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn), "cuFuncGetAttribute",
             &image, ctx.device);
    check_cu(d.cuFuncSetCacheConfig(fn, CU_FUNC_CACHE_PREFER_SHARED), "cuFuncSetCacheConfig", &image, ctx.device);
    check_cu(d.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                  st.max_shared_optin - static_shared),
             "cuFuncSetAttribute", &image, ctx.device);
  }
  int resident = 0;
  check_cu(d.cuOccupancyMaxActiveBlocksPerMultiprocessor(&resident, fn, 32 * image.num_warps, image.shared),
           "cuOccupancyMaxActiveBlocksPerMultiprocessor", &image, ctx.device);
  image.cache->resident_per_sm[ctx.device].store(std::max(resident, 1), std::memory_order_relaxed);
  image.cache->fn[ctx.device].store(fn, std::memory_order_release);
  return fn;
}

CUdeviceptr scratch(int64_t bytes_per_cta, int64_t align, int64_t ctas, int device, at::Tensor& holder) {
  if (bytes_per_cta <= 0) return 0;
  align = std::max<int64_t>(align, 1);
  holder = at::empty({ctas * bytes_per_cta + align}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA, device));
  auto p = reinterpret_cast<uintptr_t>(holder.data_ptr());
  return static_cast<CUdeviceptr>((p + align - 1) / align * align);
}

std::vector<const KernelTable*>& tables() {
  static std::vector<const KernelTable*> t;
  return t;
}

std::vector<std::pair<std::string, std::function<std::vector<std::string>(int)>>>& variant_checks() {
  static std::vector<std::pair<std::string, std::function<std::vector<std::string>(int)>>> c;
  return c;
}

}  // namespace

LaunchContext launch_context(const at::Tensor& on_device) {
  const int device = on_device.get_device();
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "liger_aot: unsupported CUDA device index ", device);
  DeviceState& st = g_devices[device];
  std::call_once(st.once, [&] { init_device(device, st); });
  TORCH_CHECK(st.arch_slot >= 0, st.arch_error);
  const Driver& d = driver();
  CUcontext current = nullptr;
  check_cu(d.cuCtxGetCurrent(&current), "cuCtxGetCurrent", nullptr, device);
  if (current != st.context) check_cu(d.cuCtxSetCurrent(st.context), "cuCtxSetCurrent", nullptr, device);
  const auto* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  c10::Stream stream = impl->getStream(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device)));
  return LaunchContext{device, st.arch_slot, st.sm_count, reinterpret_cast<CUstream>(stream.native_handle())};
}

void launch(const KernelImage& image, const LaunchContext& ctx, Grid grid, void** params, int num_params) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  CUfunction fn = image.cache->fn[ctx.device].load(std::memory_order_acquire);
  if (fn == nullptr) fn = load_function(image, ctx);

  const int64_t ctas = int64_t(grid.x) * grid.y * grid.z * image.num_ctas;
  at::Tensor global_holder, profile_holder;
  CUdeviceptr global_scratch =
      scratch(image.global_scratch_size, image.global_scratch_align, ctas, ctx.device, global_holder);
  CUdeviceptr profile_scratch =
      scratch(image.profile_scratch_size, image.profile_scratch_align, ctas, ctx.device, profile_holder);
  params[num_params - 2] = &global_scratch;
  params[num_params - 1] = &profile_scratch;

  CUlaunchAttribute attrs[3];
  unsigned n_attrs = 0;
  CUlaunchConfig cfg{};
  cfg.gridDimX = grid.x;
  cfg.gridDimY = grid.y;
  cfg.gridDimZ = grid.z;
  if (image.num_ctas > 1) {
    // Triton's convention: the grid counts clusters; each cluster is num_ctas CTAs along x.
    cfg.gridDimX = grid.x * image.num_ctas;
    attrs[n_attrs].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attrs[n_attrs].value.clusterDim.x = image.num_ctas;
    attrs[n_attrs].value.clusterDim.y = 1;
    attrs[n_attrs].value.clusterDim.z = 1;
    ++n_attrs;
  }
  if (image.launch_pdl) {
    attrs[n_attrs].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attrs[n_attrs].value.programmaticStreamSerializationAllowed = 1;
    ++n_attrs;
  }
  if (image.launch_cooperative_grid) {
    attrs[n_attrs].id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attrs[n_attrs].value.cooperative = 1;
    ++n_attrs;
  }
  cfg.blockDimX = 32 * image.num_warps;
  cfg.blockDimY = 1;
  cfg.blockDimZ = 1;
  cfg.sharedMemBytes = image.shared;
  cfg.hStream = ctx.stream;
  cfg.attrs = n_attrs ? attrs : nullptr;
  cfg.numAttrs = n_attrs;
  check_cu(driver().cuLaunchKernelEx(&cfg, fn, params, nullptr), "cuLaunchKernelEx", &image, ctx.device);
}

int max_resident_programs(const KernelImage& image, const LaunchContext& ctx) {
  if (image.cache->fn[ctx.device].load(std::memory_order_acquire) == nullptr) load_function(image, ctx);
  return image.cache->resident_per_sm[ctx.device].load(std::memory_order_relaxed) * ctx.sm_count;
}

void missing_variant(const std::string& key, int arch_slot) {
  const char* arch = (arch_slot >= 0 && arch_slot < gen::kNumArchs) ? gen::kArchNames[arch_slot] : "unknown arch";
  TORCH_CHECK(false, "liger_aot: no kernel variant ", key, " was built for ", arch,
              "; the launcher and the specializations in triton_src disagree (a bug: please report it)");
}

const char* dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float:
      return "fp32";
    case c10::ScalarType::BFloat16:
      return "bf16";
    case c10::ScalarType::Half:
      return "fp16";
    default:
      return c10::toString(t);
  }
}

KernelTable::KernelTable(const char* op_, const char* kernel_, const KernelImage* first_, size_t stride_, int count_)
    : op(op_), kernel(kernel_), first(first_), stride(stride_), count(count_) {
  tables().push_back(this);
}

const std::vector<const KernelTable*>& kernel_tables() { return tables(); }

VariantCheck::VariantCheck(const char* op, std::function<std::vector<std::string>(int)> missing) {
  variant_checks().emplace_back(op, std::move(missing));
}

// ---- introspection ops (the library's root definition; op files add fragments)

namespace {

std::vector<std::string> built_archs() {
  return std::vector<std::string>(gen::kArchNames, gen::kArchNames + gen::kNumArchs);
}

std::vector<std::string> kernel_variants() {
  std::vector<std::string> out;
  for (const KernelTable* t : kernel_tables())
    for (int i = 0; i < t->count; ++i)
      out.push_back(std::string(t->op) + " " + t->image(i).variant + " " + t->image(i).arch_name);
  return out;
}

std::vector<std::string> missing_variants() {
  std::vector<std::string> out;
  for (auto& [op, check] : variant_checks())
    for (int slot = 0; slot < gen::kNumArchs; ++slot)
      for (auto& key : check(slot)) out.push_back(op + " " + key + " " + gen::kArchNames[slot]);
  return out;
}

}  // namespace

TORCH_LIBRARY(liger, m) {
  m.def("_built_archs() -> str[]", &built_archs);
  m.def("_kernel_variants() -> str[]", &kernel_variants);
  m.def("_missing_variants() -> str[]", &missing_variants);
}

}  // namespace liger
