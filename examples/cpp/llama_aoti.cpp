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
#include <stdexcept>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  liger_example::Args args;
  if (!liger_example::parse_args(argc, argv, "model.pt2", args)) return 2;
  if (!liger_example::operators_registered("liger_llama_aoti")) return 1;
  try {
    const torch::Device device(args.device);
    torch::inductor::AOTIModelPackageLoader loader(args.model);
    torch::Tensor ids = liger_example::load_tensor(args.ids).to(device);
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
