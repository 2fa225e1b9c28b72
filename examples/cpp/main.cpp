// liger_rms_norm_demo: a libtorch program that runs a TorchScript module calling torch.ops.liger.rms_norm,
// forward and backward, and prints the results so that they can be compared with Python's.
//
//   python examples/cpp/make_model.py --model model.pt --input input.pt   # needs liger_aot importable
//   liger_rms_norm_demo model.pt [input.pt] [--device cpu|cuda]
//
// Without input.pt the input is the deterministic make_model.demo_input(): sin(0.37 * arange(384)) * 3
// as a [2, 3, 64] float32 tensor. The loss for the backward pass is sum(y * y).
//
// Output, after a header line, one value per line, each printed so that it reads back exactly (9
// significant digits for float32 elements, 17 for the float64 statistics):
//   y.numel <n>
//   y <i> <value>              every output element, flattened
//   loss <value>
//   x.grad.sum / x.grad.abs_sum / x.grad.max_abs <value>            (statistics taken in float64)
//   weight.grad.sum / weight.grad.abs_sum / weight.grad.max_abs <value>
//
// The program calls no function of libliger_aot: the library registers its operators when it is loaded,
// so it must be linked with -Wl,--no-as-needed (the liger_aot::ops CMake target does that) or dlopen'ed.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/script.h>
#include <torch/version.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s <model.pt> [<input.pt>] [--device cpu|cuda]\n", argv0);
  return 2;
}

// The same numbers as make_model.demo_input() in Python (same libtorch ops, same order).
torch::Tensor demo_input() {
  return torch::arange(2 * 3 * 64, torch::kFloat32).mul(0.37).sin().mul(3.0).reshape({2, 3, 64});
}

// A tensor saved from Python with torch.save(tensor, path).
torch::Tensor load_tensor(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  torch::IValue v = torch::jit::pickle_load(bytes);
  if (!v.isTensor()) throw std::runtime_error(path + " does not hold a tensor (save one with torch.save(t, path))");
  return v.toTensor();
}

void print_value(const char* name, double v) { std::printf("%s %.17g\n", name, v); }

void print_stats(const std::string& name, const torch::Tensor& g) {
  if (!g.defined()) {
    std::printf("%s undefined\n", name.c_str());
    return;
  }
  torch::Tensor d = g.detach().to(torch::kCPU, torch::kDouble);
  print_value((name + ".sum").c_str(), d.sum().item<double>());
  print_value((name + ".abs_sum").c_str(), d.abs().sum().item<double>());
  print_value((name + ".max_abs").c_str(), d.abs().max().item<double>());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string device_name = "cpu";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      device_name = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      return usage(argv[0]);
    } else {
      positional.emplace_back(argv[i]);
    }
  }
  if (positional.empty() || positional.size() > 2) return usage(argv[0]);

  // Fails here, with a hint, when the linker dropped libliger_aot (see the header comment).
  if (!c10::Dispatcher::singleton().findSchema({"liger::rms_norm", ""}).has_value()) {
    std::fprintf(stderr,
                 "liger::rms_norm is not registered: libliger_aot was not loaded. Link it with "
                 "-Wl,--no-as-needed (CMake: target_link_libraries(app PRIVATE liger_aot::ops)) or dlopen it.\n");
    return 1;
  }

  try {
    const torch::Device device(device_name);
    torch::jit::Module module = torch::jit::load(positional[0]);
    module.to(device);
    module.eval();

    torch::Tensor x = positional.size() == 2 ? load_tensor(positional[1]) : demo_input();
    x = x.to(device).detach().requires_grad_(true);
    std::printf("liger_rms_norm_demo: libtorch %s, device %s, input %s %s (%s)\n", TORCH_VERSION,
                device.str().c_str(), c10::str(x.sizes()).c_str(), c10::toString(x.scalar_type()),
                positional.size() == 2 ? positional[1].c_str() : "demo_input()");

    torch::Tensor y = module.forward({x}).toTensor();
    torch::Tensor loss = (y.to(torch::kFloat32) * y.to(torch::kFloat32)).sum();
    loss.backward();  // through liger::rms_norm's C++ autograd kernel

    torch::Tensor flat = y.detach().to(torch::kCPU, torch::kFloat32).contiguous().view(-1);
    const float* p = flat.const_data_ptr<float>();
    std::printf("y.numel %lld\n", static_cast<long long>(flat.numel()));
    for (int64_t i = 0; i < flat.numel(); ++i) std::printf("y %lld %.9g\n", static_cast<long long>(i), p[i]);
    print_value("loss", loss.item<double>());
    print_stats("x.grad", x.grad());
    torch::Tensor weight_grad;
    for (const auto& param : module.named_parameters())
      if (param.name == "weight") weight_grad = param.value.grad();
    print_stats("weight.grad", weight_grad);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "liger_rms_norm_demo: %s\n", e.what());
    return 1;
  }
  return 0;
}
