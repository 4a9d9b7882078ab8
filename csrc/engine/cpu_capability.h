// CPU kernels built once per instruction set ("capability"), the way ATen builds its own.
//
// Every source named *_cpu.cpp is compiled once for each capability the build targets (on x86-64:
// AVX2 and AVX-512), from the same text, with CPU_CAPABILITY naming the build: at::vec picks its
// registers from it, and the kernels live in namespace mmfast::cpu::CPU_CAPABILITY, so that no
// function of one build can stand in for another's. One capability is chosen when the library
// loads (active_cpu_capability): only its op kernels are registered with the dispatcher and only
// its engine kernels are reachable, so a CPU without AVX-512 never runs AVX-512 code.
//
// Code compiled once (the GEMM engine, the schemas) calls a capability's kernels through a
// CpuKernel pointer that the active build fills in at load time.
#pragma once

#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mmfast::cpu {

// The enumerators are spelled as the CPU_CAPABILITY macro values (and ATen's capabilities).
enum class Capability : int { DEFAULT = 0, AVX2 = 1, AVX512 = 2 };

const char* capability_name(Capability capability);

// The capabilities this library's kernels were compiled for, lowest first.
std::vector<Capability> built_cpu_capabilities();

// Whether this CPU (and its operating system) runs the capability's instructions.
bool cpu_supports(Capability capability);

// The build whose kernels run, chosen once: MMFAST_CPU_CAPABILITY=avx2|avx512 when it names a
// build this CPU runs, otherwise the highest such build that ATen's own choice
// (torch.backends.cpu.get_cpu_capability(), lowered by ATEN_CPU_CAPABILITY) allows.
Capability active_cpu_capability();

// How the active capability was chosen, in words (for `mmfast info` and the tests).
const std::string& cpu_capability_reason();

// A kernel compiled once per capability, called from code compiled once. `fn` is the active
// build's, set while the library loads; the pointer stays null until then.
template <typename Fn>
struct CpuKernel {
  Fn* fn = nullptr;
};

namespace detail {

// Registers `init`'s op kernels (as TORCH_LIBRARY_IMPL(mmfast, CPU, m) would) when `built` is the
// active capability; the returned library keeps them registered while the library is loaded.
std::unique_ptr<torch::Library> register_if_active(Capability built, void (*init)(torch::Library&), const char* file,
                                                   uint32_t line);

template <typename Fn>
bool offer(CpuKernel<Fn>& kernel, Capability built, Fn* fn) {
  if (built == active_cpu_capability()) {
    kernel.fn = fn;
  }
  return true;
}

}  // namespace detail
}  // namespace mmfast::cpu

// In a *_cpu.cpp file, instead of TORCH_LIBRARY_IMPL(mmfast, CPU, m): the block registers this
// build's op kernels, and only when this build is the active one.
#define MMFAST_CPU_KERNELS(m) MMFAST_CPU_KERNELS_UID_(m, C10_UID)
#define MMFAST_CPU_KERNELS_UID_(m, uid)                                                                          \
  static void C10_CONCATENATE(mmfast_cpu_kernels_init_, uid)(torch::Library&);                                \
  static const std::unique_ptr<torch::Library> C10_CONCATENATE(mmfast_cpu_kernels_library_, uid) =            \
      ::mmfast::cpu::detail::register_if_active(::mmfast::cpu::Capability::CPU_CAPABILITY,                    \
                                                &C10_CONCATENATE(mmfast_cpu_kernels_init_, uid), __FILE__, __LINE__); \
  void C10_CONCATENATE(mmfast_cpu_kernels_init_, uid)(torch::Library & m)

// In a *_cpu.cpp file: this build's `fn` becomes `kernel`'s function when this build is active.
#define MMFAST_OFFER_CPU_KERNEL(kernel, fn)                                 \
  static const bool C10_CONCATENATE(mmfast_cpu_kernel_offered_, C10_UID) = \
      ::mmfast::cpu::detail::offer(kernel, ::mmfast::cpu::Capability::CPU_CAPABILITY, fn)
