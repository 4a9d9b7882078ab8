#include "cpu/gemm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cpu/activation_kernels.h"

namespace mmfast::cpu {

bool TuneKey::operator==(const TuneKey& other) const {
  return site == other.site && m == other.m && n == other.n && k == other.k && dtype == other.dtype &&
         variant == other.variant;
}

namespace {

struct TuneKeyHash {
  size_t operator()(const TuneKey& key) const {
    size_t h = std::hash<int64_t>()(key.m);
    for (int64_t v : {static_cast<int64_t>(key.site), key.n, key.k, static_cast<int64_t>(key.dtype),
                      static_cast<int64_t>(key.variant)}) {
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    }
    return h;
  }
};

enum class Choice : int { kAten = 0, kOneDnn = 1 };

// Shapes seen by a long-running process are few; the bound only guards against pathological use.
constexpr size_t kMaxTunedShapes = 4096;
constexpr int kTimedRuns = 3;

std::mutex tune_mutex;
std::unordered_map<TuneKey, Choice, TuneKeyHash>& tune_cache() {
  static std::unordered_map<TuneKey, Choice, TuneKeyHash> cache;
  return cache;
}

std::optional<Choice> forced_choice() {
  static const std::optional<Choice> forced = []() -> std::optional<Choice> {
    const char* env = std::getenv("MMFAST_CPU_GEMM");
    if (env == nullptr || std::string(env).empty() || std::string(env) == "auto") {
      return std::nullopt;
    }
    if (std::string(env) == "aten") {
      return Choice::kAten;
    }
    if (std::string(env) == "onednn") {
      return Choice::kOneDnn;
    }
    TORCH_WARN_ONCE("MMFAST_CPU_GEMM='", env, "' is not one of auto, aten, onednn; using auto");
    return std::nullopt;
  }();
  return forced;
}

// Best of kTimedRuns after one warm-up run (which also builds oneDNN's primitive).
double time_candidate(const std::function<at::Tensor()>& candidate) {
  candidate();
  double best = 0.0;
  for (int i = 0; i < kTimedRuns; ++i) {
    const auto start = std::chrono::steady_clock::now();
    candidate();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = (i == 0 || seconds < best) ? seconds : best;
  }
  return best;
}

const char* onednn_attr(Activation act) {
  switch (act) {
    case Activation::kNone: return "none";
    case Activation::kRelu: return "relu";
    case Activation::kGelu: return "gelu";
    case Activation::kGeluTanh: return "gelu";
    case Activation::kSilu: return "swish";
    case Activation::kSigmoid: return "sigmoid";
    case Activation::kTanh: return "tanh";
  }
  return "none";
}

}  // namespace

bool onednn_supports(at::ScalarType dtype) {
  if (!at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn()) {
    return false;
  }
  return dtype == at::kFloat || dtype == at::kBFloat16;
}

at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                         Activation act) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         c10::string_view, c10::List<std::optional<at::Scalar>>,
                                         std::optional<c10::string_view>)>();
  const c10::string_view algorithm = act == Activation::kGeluTanh ? "tanh" : "none";
  return op.call(x, w, bias, onednn_attr(act), c10::List<std::optional<at::Scalar>>(), algorithm);
}

at::Tensor aten_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                       Activation act) {
  at::Tensor out = (bias.has_value() && bias->defined()) ? at::addmm(*bias, x, w.t()) : at::mm(x, w.t());
  if (act != Activation::kNone) {
    activation_forward(out, out, act);
  }
  return out;
}

at::Tensor run_fastest(const TuneKey& key, const std::function<at::Tensor()>& aten_candidate,
                       const std::function<at::Tensor()>& onednn_candidate) {
  if (!onednn_supports(key.dtype)) {
    return aten_candidate();
  }
  if (const auto forced = forced_choice()) {
    return *forced == Choice::kOneDnn ? onednn_candidate() : aten_candidate();
  }
  {
    std::lock_guard<std::mutex> lock(tune_mutex);
    const auto found = tune_cache().find(key);
    if (found != tune_cache().end()) {
      return found->second == Choice::kOneDnn ? onednn_candidate() : aten_candidate();
    }
  }
  Choice choice = Choice::kAten;
  const double aten_seconds = time_candidate(aten_candidate);
  try {
    if (time_candidate(onednn_candidate) < aten_seconds) {
      choice = Choice::kOneDnn;
    }
  } catch (const c10::Error&) {
    // This oneDNN build cannot run the shape or dtype on this CPU: keep ATen.
  }
  {
    std::lock_guard<std::mutex> lock(tune_mutex);
    if (tune_cache().size() >= kMaxTunedShapes) {
      tune_cache().clear();
    }
    tune_cache().emplace(key, choice);
  }
  return choice == Choice::kOneDnn ? onednn_candidate() : aten_candidate();
}

}  // namespace mmfast::cpu
