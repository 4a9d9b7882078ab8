#include "engine/gemm.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/activation_kernels.h"

namespace mmfast::cpu {

bool TuneKey::operator==(const TuneKey& other) const {
  return std::string_view(site.name) == other.site.name && m == other.m && n == other.n && k == other.k && dtype == other.dtype &&
         variant == other.variant;
}

namespace {

struct TuneKeyHash {
  size_t operator()(const TuneKey& key) const {
    size_t h = std::hash<std::string_view>()(key.site.name) ^ std::hash<int64_t>()(key.m);
    for (int64_t v : {key.n, key.k, static_cast<int64_t>(key.dtype),
                      static_cast<int64_t>(key.variant)}) {
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    }
    return h;
  }
};

// Shapes seen by a long-running process are few; the bound only guards against pathological use.
constexpr size_t kMaxTunedShapes = 4096;
// Timed rounds per choice: at least kMinTimedRounds, then more while the choice has cost less than
// kTuningBudgetSeconds. Small shapes, whose timings are the noisiest, get up to kMaxTimedRounds
// (best-of-N approaches the undisturbed time as N grows); large ones stop at the minimum.
constexpr int kMinTimedRounds = 5;
constexpr int kMaxTimedRounds = 50;
constexpr double kTuningBudgetSeconds = 0.02;
// A candidate other than the plain ATen path must beat it by this factor to be chosen: timings on
// a shared machine are noisy, and a wrong pick costs more than a near-tie gains.
constexpr double kRequiredGain = 0.9;

std::mutex tune_mutex;
// Key -> name of the chosen candidate (names are string literals with static storage).
std::unordered_map<TuneKey, std::string, TuneKeyHash>& tune_cache() {
  static std::unordered_map<TuneKey, std::string, TuneKeyHash> cache;
  return cache;
}

const std::string& forced_candidate() {
  static const std::string forced = [] {
    const char* env = std::getenv("MMFAST_CPU_GEMM");
    const std::string value = env == nullptr ? "" : env;
    return value == "auto" ? std::string() : value;
  }();
  return forced;
}

bool verbose() {
  static const bool value = [] {
    const char* env = std::getenv("MMFAST_CPU_GEMM_VERBOSE");
    return env != nullptr && std::string(env) == "1";
  }();
  return value;
}

// Sizes up to this are tuned exactly: small GEMMs change engine quickly with size, and the
// candidate set itself depends on the row count there (segment_gemv).
constexpr int64_t kExactTuningSize = 16;

// The size class a tuning decision is shared by: exact up to kExactTuningSize, then powers of two.
// Rows vary from call to call ([B, T, D] inputs with a varying T, a smaller last batch); timing
// every candidate for each new row count would cost tens of op calls each time.
int64_t size_class(int64_t size) {
  if (size <= kExactTuningSize) {
    return size;
  }
  int64_t bound = kExactTuningSize;
  while (bound < size) {
    bound *= 2;
  }
  return bound;
}

TuneKey size_classes_of(const TuneKey& key) {
  TuneKey classes = key;
  classes.m = size_class(key.m);
  classes.n = size_class(key.n);
  classes.k = size_class(key.k);
  return classes;
}

bool is_onednn(const GemmCandidate& candidate) { return std::string(candidate.name) == "onednn"; }

double time_once(const std::function<at::Tensor()>& candidate) {
  const auto start = std::chrono::steady_clock::now();
  candidate();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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

bool is_reduced_precision(at::ScalarType dtype) { return dtype == at::kBFloat16 || dtype == at::kHalf; }

at::Tensor float32_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                          Activation act) {
  std::optional<at::Tensor> bias32;
  if (bias.has_value() && bias->defined()) {
    bias32 = bias->to(at::kFloat);
  }
  return aten_linear(x.to(at::kFloat), w.to(at::kFloat), bias32, act).to(x.scalar_type());
}

at::Tensor run_fastest(const TuneKey& shape_key, const std::vector<GemmCandidate>& candidates) {
  TORCH_INTERNAL_ASSERT(!candidates.empty());
  // A timed choice can differ between processes, and the candidates round differently; under
  // torch.use_deterministic_algorithms(True) every call takes the plain ATen path instead.
  if (at::globalContext().deterministicAlgorithms()) {
    return candidates[0].run();
  }
  const TuneKey key = size_classes_of(shape_key);
  const bool onednn_ok = onednn_supports(key.dtype);
  if (!forced_candidate().empty()) {
    for (const auto& candidate : candidates) {
      if (forced_candidate() == candidate.name && (onednn_ok || !is_onednn(candidate))) {
        return candidate.run();
      }
    }
    return candidates[0].run();
  }
  {
    std::lock_guard<std::mutex> lock(tune_mutex);
    const auto found = tune_cache().find(key);
    if (found != tune_cache().end()) {
      for (const auto& candidate : candidates) {
        if (found->second == candidate.name) {
          return candidate.run();
        }
      }
    }
  }
  // One warm-up run each (it also builds oneDNN's primitive), then rounds that time every
  // candidate in turn, so that a change of machine load affects them all alike; best time each.
  std::vector<double> best_times(candidates.size(), -1.0);
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (is_onednn(candidates[i]) && !onednn_ok) {
      continue;
    }
    try {
      candidates[i].run();
      best_times[i] = std::numeric_limits<double>::infinity();
    } catch (const c10::Error&) {
      // This engine cannot run the shape or dtype on this CPU; candidate 0 always can.
      if (i == 0) {
        throw;
      }
    }
  }
  double spent = 0;
  for (int round = 0; round < kMaxTimedRounds && (round < kMinTimedRounds || spent < kTuningBudgetSeconds);
       ++round) {
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (best_times[i] >= 0) {
        const double seconds = time_once(candidates[i].run);
        best_times[i] = std::min(best_times[i], seconds);
        spent += seconds;
      }
    }
  }
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i) {
    if (best_times[i] >= 0 && best_times[i] < kRequiredGain * best_times[0] && best_times[i] < best_times[best]) {
      best = i;
    }
  }
  if (verbose()) {
    std::string timings;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (best_times[i] >= 0) {
        timings += " " + std::string(candidates[i].name) + "=" + std::to_string(best_times[i] * 1e6) + "us";
      }
    }
    std::fprintf(stderr,
                 "mmfast: GEMM site %s, m=%lld n=%lld k=%lld (size class %lld %lld %lld) %s variant %d:%s -> %s\n",
                 key.site.name, static_cast<long long>(shape_key.m),
                 static_cast<long long>(shape_key.n), static_cast<long long>(shape_key.k),
                 static_cast<long long>(key.m), static_cast<long long>(key.n), static_cast<long long>(key.k),
                 c10::toString(key.dtype), key.variant, timings.c_str(), candidates[best].name);
  }
  {
    std::lock_guard<std::mutex> lock(tune_mutex);
    if (tune_cache().size() >= kMaxTunedShapes) {
      tune_cache().clear();
    }
    tune_cache().insert_or_assign(key, candidates[best].name);
  }
  return candidates[best].run();
}

}  // namespace mmfast::cpu
