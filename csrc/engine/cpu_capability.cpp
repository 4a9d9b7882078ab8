#include "engine/cpu_capability.h"

#include <ATen/Version.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace mmfast::cpu {
namespace {

constexpr const char* kCapabilityEnv = "MMFAST_CPU_CAPABILITY";

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// ATen's choice for its own kernels, as one of ours (AVX512 > AVX2 > DEFAULT).
Capability aten_capability() {
  const std::string name = at::get_cpu_capability();
  if (name == "AVX512") {
    return Capability::AVX512;
  }
  return name == "AVX2" ? Capability::AVX2 : Capability::DEFAULT;
}

struct Choice {
  Capability capability;
  std::string reason;
};

Choice choose() {
  const std::vector<Capability> built = built_cpu_capabilities();
  const char* env = std::getenv(kCapabilityEnv);
  const std::string requested = lower(env != nullptr ? env : "");
  if (!requested.empty() && requested != "auto") {
    for (Capability capability : built) {
      if (lower(capability_name(capability)) == requested && cpu_supports(capability)) {
        return {capability, std::string(kCapabilityEnv) + "=" + requested};
      }
    }
    // The Python loader (mmfast/_backend.py) refuses such a value before loading this library; a
    // library loaded some other way (torch.ops.load_library) says so and chooses by itself, as an
    // exception cannot leave a static initializer.
    std::fprintf(stderr, "mmfast: %s=%s names no kernel build this CPU runs; choosing automatically\n",
                 kCapabilityEnv, requested.c_str());
  }
  const Capability ceiling = aten_capability();
  Capability best = built.front();  // what the library's own baseline requires anyway
  for (Capability capability : built) {
    if (cpu_supports(capability) && static_cast<int>(capability) <= static_cast<int>(ceiling)) {
      best = capability;
    }
  }
  return {best, std::string("auto: the highest build this CPU runs within ATen's capability (") +
                    at::get_cpu_capability() + ")"};
}

const Choice& active_choice() {
  static const Choice choice = choose();
  return choice;
}

}  // namespace

const char* capability_name(Capability capability) {
  switch (capability) {
    case Capability::AVX512:
      return "AVX512";
    case Capability::AVX2:
      return "AVX2";
    case Capability::DEFAULT:
      break;
  }
  return "DEFAULT";
}

std::vector<Capability> built_cpu_capabilities() {
  // The build passes one MMFAST_CPU_BUILT_<capability> define per kernel build (setup.py,
  // CMakeLists.txt), to every source.
  std::vector<Capability> built;
#ifdef MMFAST_CPU_BUILT_DEFAULT
  built.push_back(Capability::DEFAULT);
#endif
#ifdef MMFAST_CPU_BUILT_AVX2
  built.push_back(Capability::AVX2);
#endif
#ifdef MMFAST_CPU_BUILT_AVX512
  built.push_back(Capability::AVX512);
#endif
  static_assert(
#if defined(MMFAST_CPU_BUILT_DEFAULT) || defined(MMFAST_CPU_BUILT_AVX2) || defined(MMFAST_CPU_BUILT_AVX512)
      true,
#else
      false,
#endif
      "the build names no CPU kernel build (MMFAST_CPU_BUILT_<capability>)");
  return built;
}

bool cpu_supports(Capability capability) {
#if defined(__x86_64__) || defined(_M_X64)
  // __builtin_cpu_supports also checks that the operating system saves the vector registers.
  switch (capability) {
    case Capability::AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Capability::AVX2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Capability::DEFAULT:
      return true;
  }
  return false;
#else
  return capability == Capability::DEFAULT;
#endif
}

Capability active_cpu_capability() { return active_choice().capability; }

const std::string& cpu_capability_reason() { return active_choice().reason; }

namespace detail {

std::unique_ptr<torch::Library> register_if_active(Capability built, void (*init)(torch::Library&), const char* file,
                                                   uint32_t line) {
  if (built != active_cpu_capability()) {
    return nullptr;
  }
  auto library = std::make_unique<torch::Library>(torch::Library::IMPL, "mmfast", c10::DispatchKey::CPU, file, line);
  init(*library);
  return library;
}

}  // namespace detail
}  // namespace mmfast::cpu
