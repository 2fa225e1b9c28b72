// What liger_llama_torchscript and liger_llama_aoti share: their command line, the check that the liger::
// operators are registered, reading a tensor saved by Python's torch.save, and printing logits in the format
// tests/test_deploy.py parses.
#pragma once

#include <torch/script.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace liger_example {

struct Args {
  std::string model, ids, device = "cpu";
};

// "<program> <model> <ids.pt> [--device cpu|cuda]"; false (usage printed) otherwise.
inline bool parse_args(int argc, char** argv, const char* model_file, Args& args) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      args.device = argv[++i];
    } else {
      positional.emplace_back(argv[i]);
    }
  }
  if (positional.size() != 2) {
    std::fprintf(stderr, "usage: %s <%s> <ids.pt> [--device cpu|cuda]\n", argv[0], model_file);
    return false;
  }
  args.model = positional[0];
  args.ids = positional[1];
  return true;
}

// The operators register when libliger_aot loads; a program linked without --no-as-needed drops the library.
inline bool operators_registered(const char* program) {
  if (c10::Dispatcher::singleton().findSchema({"liger::rms_norm", ""}).has_value()) return true;
  std::fprintf(stderr, "%s: the liger:: operators are not registered: libliger_aot was not loaded (link it with "
                       "-Wl,--no-as-needed, CMake target liger_aot::ops, or dlopen it)\n", program);
  return false;
}

// A tensor saved from Python with torch.save(tensor, path).
inline torch::Tensor load_tensor(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  torch::IValue v = torch::jit::pickle_load(bytes);
  if (!v.isTensor()) throw std::runtime_error(path + " does not hold a tensor (save one with torch.save(t, path))");
  return v.toTensor();
}

// logits [batch, seq, vocab] as
//   logits.shape <b> <s> <v>
//   logits <i> <value>     every element, flattened, float32 with 9 significant digits (reads back exactly)
//   next <b> <token>       argmax over the vocabulary at the last position of row b
inline void print_logits(const torch::Tensor& logits) {
  torch::Tensor flat = logits.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  if (flat.dim() != 3) throw std::runtime_error("expected logits [batch, seq, vocab], got " + c10::str(flat.sizes()));
  std::printf("logits.shape %lld %lld %lld\n", static_cast<long long>(flat.size(0)),
              static_cast<long long>(flat.size(1)), static_cast<long long>(flat.size(2)));
  torch::Tensor next = flat.select(1, flat.size(1) - 1).argmax(-1);
  flat = flat.view(-1);
  const float* p = flat.const_data_ptr<float>();
  for (int64_t i = 0; i < flat.numel(); ++i) std::printf("logits %lld %.9g\n", static_cast<long long>(i), p[i]);
  for (int64_t b = 0; b < next.size(0); ++b)
    std::printf("next %lld %lld\n", static_cast<long long>(b), static_cast<long long>(next[b].item<int64_t>()));
}

}  // namespace liger_example
