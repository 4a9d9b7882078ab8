// The `mmfast` op library and the Python module `mmfast._C`.
//
// Each op defines its schemas, checks, autograd formula and kernels in csrc/ops/<op>/ (as
// TORCH_LIBRARY_FRAGMENTs of this library); loading `mmfast._C` registers them all. The module
// itself only exports what the Python side reads instead of retyping it: `input_limits`, op name
// -> (fewest, most) inputs, as the ops' C++ checks enforce them; and the CPU GEMM tuner's state
// (csrc/engine/gemm.h), which `mmfast.ops.cpu_gemm` wraps:
//   cpu_gemm_engines() -> tuple of every engine name any GEMM site offers
//   cpu_gemm_forced() -> the forced engine or None
//   cpu_gemm_force(name or None) -> the previously forced engine or None
//   cpu_gemm_choices() -> list of dicts, one per remembered choice, oldest first
//   cpu_gemm_reset() -> None (forgets the remembered choices)
// the engine's per-thread scratch buffers (csrc/engine/segments.h):
//   cpu_scratch_bytes() -> bytes they hold now
//   cpu_scratch_release() -> bytes released (frees them all)
// and which build of the CPU kernels runs (csrc/engine/cpu_capability.h):
//   cpu_capability() -> {"active": name, "built": (names, lowest first), "supported": (the built
//                        ones this CPU runs), "reason": how the active one was chosen}
#include <torch/library.h>

#include <Python.h>

#include <c10/util/Exception.h>

#include <exception>
#include <string>
#include <vector>

#include "engine/checks.h"
#include "engine/cpu_capability.h"
#include "engine/gemm.h"
#include "engine/segments.h"

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

// Runs `body`, turning a C++ exception into the Python one torch would raise (c10::ValueError:
// ValueError, anything else: RuntimeError) instead of letting it cross the C boundary.
template <typename Body>
PyObject* translating_errors(Body body) {
  try {
    return body();
  } catch (const c10::ValueError& error) {
    PyErr_SetString(PyExc_ValueError, error.what_without_backtrace());
  } catch (const c10::Error& error) {
    PyErr_SetString(PyExc_RuntimeError, error.what_without_backtrace());
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_RuntimeError, error.what());
  }
  return nullptr;
}

// A forced engine name as Python sees it: None for none.
PyObject* engine_or_none(const std::string& engine) {
  if (engine.empty()) {
    Py_RETURN_NONE;
  }
  return PyUnicode_FromString(engine.c_str());
}

PyObject* cpu_gemm_engines(PyObject*, PyObject*) {
  PyObject* names = PyTuple_New(static_cast<Py_ssize_t>(mmfast::cpu::kGemmEngineNames.size()));
  if (names == nullptr) {
    return nullptr;
  }
  Py_ssize_t index = 0;
  for (const char* name : mmfast::cpu::kGemmEngineNames) {
    PyObject* value = PyUnicode_FromString(name);
    if (value == nullptr) {
      Py_DECREF(names);
      return nullptr;
    }
    PyTuple_SET_ITEM(names, index++, value);  // steals the reference
  }
  return names;
}

PyObject* cpu_gemm_forced(PyObject*, PyObject*) {
  return translating_errors([] { return engine_or_none(mmfast::cpu::forced_gemm_engine()); });
}

PyObject* cpu_gemm_force(PyObject*, PyObject* name) {
  std::string engine;
  if (name != Py_None) {
    if (!PyUnicode_Check(name)) {
      PyErr_Format(PyExc_TypeError, "cpu_gemm_force: expected an engine name (str) or None, got %s",
                   Py_TYPE(name)->tp_name);
      return nullptr;
    }
    const char* utf8 = PyUnicode_AsUTF8(name);
    if (utf8 == nullptr) {
      return nullptr;
    }
    engine = utf8;
  }
  return translating_errors([&] { return engine_or_none(mmfast::cpu::force_gemm_engine(engine)); });
}

// {"site", "m", "n", "k" (size classes), "shape" (m, n, k timed), "dtype" (ATen's name, e.g.
// "Float"), "variant", "engine", "best_seconds" {candidate: seconds}} for one choice.
PyObject* choice_dict(const mmfast::cpu::GemmChoice& choice) {
  PyObject* times = PyDict_New();
  if (times == nullptr) {
    return nullptr;
  }
  for (const auto& [name, seconds] : choice.best_seconds) {
    PyObject* value = PyFloat_FromDouble(seconds);
    if (value == nullptr || PyDict_SetItemString(times, name.c_str(), value) != 0) {
      Py_XDECREF(value);
      Py_DECREF(times);
      return nullptr;
    }
    Py_DECREF(value);
  }
  // "N" steals the reference to `times`.
  return Py_BuildValue("{s:s,s:L,s:L,s:L,s:(LLL),s:s,s:i,s:s,s:N}", "site", choice.key.site.name, "m",
                       static_cast<long long>(choice.key.m), "n", static_cast<long long>(choice.key.n), "k",
                       static_cast<long long>(choice.key.k), "shape", static_cast<long long>(choice.m),
                       static_cast<long long>(choice.n), static_cast<long long>(choice.k), "dtype",
                       c10::toString(choice.key.dtype), "variant", choice.key.variant, "engine",
                       choice.engine.c_str(), "best_seconds", times);
}

PyObject* cpu_gemm_choices(PyObject*, PyObject*) {
  return translating_errors([]() -> PyObject* {
    const auto choices = mmfast::cpu::gemm_choices();
    PyObject* list = PyList_New(0);
    if (list == nullptr) {
      return nullptr;
    }
    for (const auto& choice : choices) {
      PyObject* entry = choice_dict(choice);
      if (entry == nullptr || PyList_Append(list, entry) != 0) {
        Py_XDECREF(entry);
        Py_DECREF(list);
        return nullptr;
      }
      Py_DECREF(entry);
    }
    return list;
  });
}

PyObject* cpu_gemm_reset(PyObject*, PyObject*) {
  return translating_errors([] {
    mmfast::cpu::reset_gemm_choices();
    Py_RETURN_NONE;
  });
}

PyObject* cpu_scratch_bytes(PyObject*, PyObject*) {
  return translating_errors([] { return PyLong_FromLongLong(mmfast::cpu::scratch_bytes()); });
}

PyObject* cpu_scratch_release(PyObject*, PyObject*) {
  return translating_errors([] { return PyLong_FromLongLong(mmfast::cpu::release_scratch_buffers()); });
}

PyObject* cpu_capability(PyObject*, PyObject*) {
  return translating_errors([]() -> PyObject* {
    using mmfast::cpu::Capability;
    const std::vector<Capability> built = mmfast::cpu::built_cpu_capabilities();
    PyObject* built_names = PyTuple_New(static_cast<Py_ssize_t>(built.size()));
    PyObject* supported = PyList_New(0);
    if (built_names == nullptr || supported == nullptr) {
      Py_XDECREF(built_names);
      Py_XDECREF(supported);
      return nullptr;
    }
    for (size_t i = 0; i < built.size(); ++i) {
      PyTuple_SET_ITEM(built_names, static_cast<Py_ssize_t>(i),
                       PyUnicode_FromString(mmfast::cpu::capability_name(built[i])));
      if (mmfast::cpu::cpu_supports(built[i])) {
        PyObject* name = PyUnicode_FromString(mmfast::cpu::capability_name(built[i]));
        PyList_Append(supported, name);
        Py_XDECREF(name);
      }
    }
    PyObject* supported_tuple = PyList_AsTuple(supported);
    Py_DECREF(supported);
    // "N" steals the references to the tuples.
    return Py_BuildValue("{s:s,s:N,s:N,s:s}", "active",
                         mmfast::cpu::capability_name(mmfast::cpu::active_cpu_capability()), "built", built_names,
                         "supported", supported_tuple, "reason", mmfast::cpu::cpu_capability_reason().c_str());
  });
}

PyMethodDef methods[] = {
    {"cpu_gemm_engines", cpu_gemm_engines, METH_NOARGS, "Every CPU GEMM engine name any GEMM site offers."},
    {"cpu_gemm_forced", cpu_gemm_forced, METH_NOARGS, "The CPU GEMM engine forced on every site, or None."},
    {"cpu_gemm_force", cpu_gemm_force, METH_O,
     "Forces a CPU GEMM engine by name (None or 'auto': the timed choice); returns the previous one."},
    {"cpu_gemm_choices", cpu_gemm_choices, METH_NOARGS, "The CPU GEMM tuner's remembered choices, oldest first."},
    {"cpu_gemm_reset", cpu_gemm_reset, METH_NOARGS, "Forgets the CPU GEMM tuner's remembered choices."},
    {"cpu_scratch_bytes", cpu_scratch_bytes, METH_NOARGS,
     "Bytes the CPU engine's per-thread scratch buffers (the gathered concatenations) hold now."},
    {"cpu_scratch_release", cpu_scratch_release, METH_NOARGS,
     "Frees the CPU engine's per-thread scratch buffers; returns the bytes released."},
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "Which build of the CPU kernels runs (active), which were built, which this CPU runs, and why."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
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
