// liger_aot._fast: direct Python bindings for the calls where host time matters.
//
// `torch.ops.liger.X.default._op(...)` builds an IValue stack from the schema, scans every argument for
// __torch_function__ overrides and calls the boxed kernel: about 1 us more per call than a generated
// binding such as torch.add's. These functions parse their fixed arguments directly (METH_FASTCALL) and
// call the operator through its typed dispatcher handle, so autograd, profiling and Python dispatch modes
// still apply. Anything they do not handle themselves -- a Tensor subclass, an active TorchFunctionMode,
// an argument of an unexpected type, any error -- returns NotImplemented, and the Python wrapper then
// makes the ordinary torch.ops call, which raises PyTorch's own exception types and messages.
//
// Built only into the Python package (never into the libtorch library of CMakeLists.txt), against the
// limited API; the two symbols it needs from libtorch_python are declared here because torch's headers
// for them require the full Python C API.
#include <Python.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <string_view>

extern PyObject* THPVariableClass;  // torch.Tensor
extern PyObject* ParameterClass;    // torch.nn.Parameter
PyObject* THPVariable_Wrap(const at::TensorBase& var);

namespace {

// The object layout of torch.Tensor instances (torch/csrc/autograd/python_variable.h): the tensor
// follows the object header.
struct TensorObject {
  PyObject_HEAD at::Tensor cdata;
};

PyObject* not_handled() { Py_RETURN_NOTIMPLEMENTED; }

// Exactly torch.Tensor or nn.Parameter: a subclass may override __torch_function__.
bool tensor_arg(PyObject* o, const at::Tensor** out) {
  PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(o));
  if (type != THPVariableClass && type != ParameterClass) return false;
  *out = &reinterpret_cast<TensorObject*>(o)->cdata;
  return true;
}

bool optional_tensor_arg(PyObject* o, std::optional<at::Tensor>* out) {
  if (o == Py_None) return true;
  const at::Tensor* t = nullptr;
  if (!tensor_arg(o, &t)) return false;
  *out = *t;
  return true;
}

bool float_arg(PyObject* o, double* out) {
  if (PyBool_Check(o) || (!PyFloat_Check(o) && !PyLong_Check(o))) return false;
  *out = PyFloat_AsDouble(o);
  if (*out == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return true;
}

bool str_arg(PyObject* o, std::string_view* out) {
  if (!PyUnicode_Check(o)) return false;
  Py_ssize_t n = 0;
  const char* s = PyUnicode_AsUTF8AndSize(o, &n);
  if (s == nullptr) {
    PyErr_Clear();
    return false;
  }
  *out = std::string_view(s, static_cast<size_t>(n));
  return true;
}

template <typename Fn>
PyObject* guarded(Fn&& fn) {
  try {
    return fn();
  } catch (...) {  // the torch.ops call that follows raises the proper exception
    return not_handled();
  }
}

// rms_norm(x, weight, eps, offset, casting_mode): all five positional.
PyObject* rms_norm(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 5 || at::impl::torch_function_mode_enabled()) return not_handled();
  const at::Tensor* x = nullptr;
  std::optional<at::Tensor> weight;
  double eps = 0, offset = 0;
  std::string_view mode;
  if (!tensor_arg(args[0], &x) || !optional_tensor_arg(args[1], &weight) || !float_arg(args[2], &eps) ||
      !float_arg(args[3], &offset) || !str_arg(args[4], &mode))
    return not_handled();
  return guarded([&] {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("liger::rms_norm", "")
                         .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&, double, double,
                                           c10::string_view)>();
    return THPVariable_Wrap(op.call(*x, weight, eps, offset, c10::string_view(mode.data(), mode.size())));
  });
}

PyMethodDef methods[] = {
    {"rms_norm", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&rms_norm)), METH_FASTCALL,
     "rms_norm(x, weight, eps, offset, casting_mode): liger::rms_norm, or NotImplemented (use torch.ops)."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_fast", "Direct bindings of hot liger ops.", -1, methods,
                          nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__fast() { return PyModule_Create(&module_def); }
