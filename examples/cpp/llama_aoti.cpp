// liger_llama_aoti: runs an AOTInductor package of a Llama-style model (examples/deploy/aoti_package.py) from C++,
// and prints its logits as liger_llama_torchscript does.
//
//   python examples/deploy/aoti_package.py --out llama.pt2 --ids ids.pt     # exports and compiles the package
//   liger_llama_aoti llama.pt2 ids.pt
//
// The package's code calls the liger:: operators through the dispatcher (AOTInductor's proxy executor), so the
// library must be loaded: link it with -Wl,--no-as-needed (the liger_aot::ops CMake target) or dlopen it. A
// package compiled for CUDA runs on the GPU it was compiled for; its inputs must be on that device (--device).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>
#include <torch/version.h>

#include "llama_io.h"

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string device_name = "cpu";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      device_name = argv[++i];
    } else {
      positional.emplace_back(argv[i]);
    }
  }
  if (positional.size() != 2) {
    std::fprintf(stderr, "usage: %s <model.pt2> <ids.pt> [--device cpu|cuda]\n", argv[0]);
    return 2;
  }
  if (!c10::Dispatcher::singleton().findSchema({"liger::rms_norm", ""}).has_value()) {
    std::fprintf(stderr, "liger_llama_aoti: the liger:: operators are not registered: libliger_aot was not loaded "
                         "(link it with -Wl,--no-as-needed, CMake target liger_aot::ops, or dlopen it)\n");
    return 1;
  }
  try {
    const torch::Device device(device_name);
    torch::inductor::AOTIModelPackageLoader loader(positional[0]);
    torch::Tensor ids = liger_example::load_tensor(positional[1]).to(device);
    std::printf("liger_llama_aoti: libtorch %s, device %s, ids %s\n", TORCH_VERSION, device.str().c_str(),
                c10::str(ids.sizes()).c_str());
    std::vector<torch::Tensor> outputs = loader.run({ids});
    if (outputs.size() != 1) throw std::runtime_error("the package returned " + std::to_string(outputs.size()) +
                                                      " outputs, expected 1 (the logits)");
    liger_example::print_logits(outputs[0]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "liger_llama_aoti: %s\n", e.what());
    return 1;
  }
  return 0;
}
