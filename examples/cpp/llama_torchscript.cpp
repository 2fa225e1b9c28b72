// liger_llama_torchscript: runs a scripted Llama-style model (examples/deploy/tiny_llama.py, liger_aot backend)
// from C++, and prints its logits so that they can be compared with Python's.
//
//   python examples/deploy/torchscript.py --out llama.pt --ids ids.pt     # writes the model and token ids
//   liger_llama_torchscript llama.pt ids.pt [--device cpu|cuda]
//
// ids.pt: an int64 [batch, seq] tensor saved with torch.save. Output, after a header line:
//   logits.shape <b> <s> <v>
//   logits <i> <value>           every element, flattened, as float32 with 9 significant digits (reads back exactly)
//   next <b> <token>             argmax of the last position of each row
//
// The model calls torch.ops.liger.*; the program calls no function of the library, which registers those
// operators when it is loaded: link it with -Wl,--no-as-needed (the liger_aot::ops CMake target) or dlopen it.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/script.h>
#include <torch/version.h>

#include "llama_io.h"

#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  liger_example::Args args;
  if (!liger_example::parse_args(argc, argv, "model.pt", args)) return 2;
  if (!liger_example::operators_registered("liger_llama_torchscript")) return 1;
  try {
    const torch::Device device(args.device);
    torch::jit::Module model = torch::jit::load(args.model, device);
    model.eval();
    torch::Tensor ids = liger_example::load_tensor(args.ids).to(device);
    std::printf("liger_llama_torchscript: libtorch %s, device %s, ids %s\n", TORCH_VERSION, device.str().c_str(),
                c10::str(ids.sizes()).c_str());
    torch::NoGradGuard no_grad;
    liger_example::print_logits(model.forward({ids}).toTensor());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "liger_llama_torchscript: %s\n", e.what());
    return 1;
  }
  return 0;
}
