// The `mmfast` op library and the Python module `mmfast._C`.
//
// Each op defines its schemas, checks, autograd formula and kernels in csrc/ops/<op>/ (as
// TORCH_LIBRARY_FRAGMENTs of this library); loading `mmfast._C` registers them all. The module
// itself only exports what the Python side reads instead of retyping it: `input_limits`, op name
// -> (fewest, most) inputs, as the ops' C++ checks enforce them.
#include <torch/library.h>

#include <Python.h>

#include "engine/checks.h"

// The namespace is declared here once; the ops add to it.
TORCH_LIBRARY(mmfast, m) {}

namespace {

PyObject* input_limits_dict() {
  PyObject* limits = PyDict_New();
  if (limits == nullptr) {
    return nullptr;
  }
  for (const auto& [op, bounds] : mmfast::input_limits_registry()) {
    PyObject* pair = Py_BuildValue("(LL)", static_cast<long long>(bounds.min_inputs),
                                   static_cast<long long>(bounds.max_inputs));
    if (pair == nullptr || PyDict_SetItemString(limits, op.c_str(), pair) != 0) {
      Py_XDECREF(pair);
      Py_DECREF(limits);
      return nullptr;
    }
    Py_DECREF(pair);
  }
  return limits;
}

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) {
    return nullptr;
  }
  PyObject* limits = input_limits_dict();
  if (limits == nullptr || PyModule_AddObject(module, "input_limits", limits) != 0) {
    Py_XDECREF(limits);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
