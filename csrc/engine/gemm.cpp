#include "engine/gemm.h"
#include "engine/segments.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <algorithm>
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
// Candidates whose best times are within this fraction of the fastest's are tied: timings on a
// shared machine are noisy, and a pick between near-equals would otherwise flip from run to run.
// Tied candidates get further rounds (at least kMinTieRounds, then up to kMaxTieRounds while they
// have cost less than kTieBudgetSeconds); a tie that remains goes to the earliest candidate, the
// plain ATen path where it is among them, since a wrong pick costs more than a near-tie gains.
constexpr double kTieMargin = 0.03;
constexpr int kMinTieRounds = 5;
constexpr int kMaxTieRounds = 200;
constexpr double kTieBudgetSeconds = 0.03;

struct Remembered {
  std::string engine;  // the chosen candidate's name
  int64_t m, n, k;  // the shape it was timed on
  std::vector<std::pair<std::string, double>> best_seconds;
  uint64_t order;  // when it was chosen, for listing oldest first
};

// Guards the remembered choices and the forced engine.
std::mutex tune_mutex;
std::unordered_map<TuneKey, Remembered, TuneKeyHash>& tune_cache() {
  static std::unordered_map<TuneKey, Remembered, TuneKeyHash> cache;
  return cache;
}
uint64_t next_order = 0;

std::string valid_engine_names() {
  std::string names;
  for (const char* name : kGemmEngineNames) {
    names += (names.empty() ? "" : ", ") + std::string(name);
  }
  return names;
}

// The forced engine ("" for none). Until force_gemm_engine is first called, MMFAST_CPU_GEMM's
// value, read once at the first use; `env_error` is set while that value is unknown.
struct ForcedState {
  bool read_environment = false;
  std::string engine;
  std::string env_error;
};
ForcedState forced_state;

// Reads MMFAST_CPU_GEMM on first use; call with tune_mutex held.
ForcedState& forced_locked() {
  if (!forced_state.read_environment) {
    forced_state.read_environment = true;
    const char* env = std::getenv("MMFAST_CPU_GEMM");
    const std::string value = env == nullptr ? "" : env;
    if (value.empty() || value == "auto") {
      forced_state.engine.clear();
    } else if (is_gemm_engine(value)) {
      forced_state.engine = value;
    } else {
      forced_state.env_error = "MMFAST_CPU_GEMM='" + value + "' is not a CPU GEMM engine: expected one of " +
                               valid_engine_names() + ", or auto (or unset) to let the tuner choose";
    }
  }
  return forced_state;
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

bool is_onednn(const GemmCandidate& candidate) { return std::string_view(candidate.name) == "onednn"; }

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

bool is_gemm_engine(const std::string& name) {
  for (const char* engine : kGemmEngineNames) {
    if (name == engine) {
      return true;
    }
  }
  return false;
}

std::string forced_gemm_engine() {
  std::lock_guard<std::mutex> lock(tune_mutex);
  const ForcedState& state = forced_locked();
  TORCH_CHECK_VALUE(state.env_error.empty(), state.env_error);
  return state.engine;
}

std::string force_gemm_engine(const std::string& name) {
  const std::string engine = name == "auto" ? std::string() : name;
  TORCH_CHECK_VALUE(engine.empty() || is_gemm_engine(engine), "'", name,
                    "' is not a CPU GEMM engine: expected one of ", valid_engine_names(),
                    ", or None / 'auto' to let the tuner choose");
  std::lock_guard<std::mutex> lock(tune_mutex);
  ForcedState& state = forced_locked();
  std::string previous = state.env_error.empty() ? state.engine : std::string();
  state.engine = engine;
  state.env_error.clear();
  return previous;
}

std::vector<GemmChoice> gemm_choices() {
  std::vector<std::pair<uint64_t, GemmChoice>> ordered;
  {
    std::lock_guard<std::mutex> lock(tune_mutex);
    for (const auto& [key, remembered] : tune_cache()) {
      ordered.push_back({remembered.order,
                         GemmChoice{key, remembered.m, remembered.n, remembered.k, remembered.engine,
                                    remembered.best_seconds}});
    }
  }
  std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<GemmChoice> choices;
  choices.reserve(ordered.size());
  for (auto& entry : ordered) {
    choices.push_back(std::move(entry.second));
  }
  return choices;
}

void reset_gemm_choices() {
  std::lock_guard<std::mutex> lock(tune_mutex);
  tune_cache().clear();
}

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
  return candidates[choose_fastest(shape_key, candidates)].run();
}

size_t choose_fastest(const TuneKey& shape_key, const std::vector<GemmCandidate>& candidates) {
  TORCH_INTERNAL_ASSERT(!candidates.empty());
  const TuneKey key = size_classes_of(shape_key);
  std::string forced;
  {
    std::lock_guard<std::mutex> lock(tune_mutex);
    const ForcedState& state = forced_locked();
    // Never a silent fallback: an engine asked for by a misspelt name would go untested.
    TORCH_CHECK_VALUE(state.env_error.empty(), state.env_error);
    forced = state.engine;
  }
  // A timed choice can differ between processes, and the candidates round differently; under
  // torch.use_deterministic_algorithms(True) every call takes the plain ATen path instead.
  if (at::globalContext().deterministicAlgorithms()) {
    return 0;
  }
  const bool onednn_ok = onednn_supports(key.dtype);
  if (!forced.empty()) {
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (forced == candidates[i].name && (onednn_ok || !is_onednn(candidates[i]))) {
        return i;
      }
    }
    return 0;
  }
  std::string remembered;
  {
    std::lock_guard<std::mutex> lock(tune_mutex);
    const auto found = tune_cache().find(key);
    if (found != tune_cache().end()) {
      remembered = found->second.engine;
    }
  }
  // Run outside the lock: a candidate may itself run GEMM sites (segments_linear_backward's).
  if (!remembered.empty()) {
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (remembered == candidates[i].name) {
        return i;
      }
    }
  }
  for (const auto& candidate : candidates) {
    TORCH_INTERNAL_ASSERT(is_gemm_engine(candidate.name), "GEMM site ", key.site.name, " offers '",
                          candidate.name, "', which is not in kGemmEngineNames (csrc/engine/gemm.h)");
  }
  // One warm-up run each (it also builds oneDNN's primitive), then rounds that time every
  // candidate in turn, so that a change of machine load affects them all alike; best time each.
  std::vector<double> best_times(candidates.size(), -1.0);
  // Why a candidate was left out, for the verbose output: a refusal is silent otherwise, and a
  // candidate that always throws (a bug) would never be noticed.
  std::string refused;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (is_onednn(candidates[i]) && !onednn_ok) {
      refused += std::string(" ") + candidates[i].name + "=refused (oneDNN cannot run this dtype here)";
      continue;
    }
    try {
      candidates[i].run();
      best_times[i] = std::numeric_limits<double>::infinity();
    } catch (const c10::Error& error) {
      // This engine cannot run the shape or dtype on this CPU; candidate 0 always can.
      if (i == 0) {
        throw;
      }
      const std::string message = error.what_without_backtrace();
      refused += std::string(" ") + candidates[i].name + "=refused (" + message.substr(0, message.find('\n')) + ")";
    }
  }
  auto time_round = [&](const std::vector<size_t>& which) {
    double seconds_spent = 0;
    for (size_t i : which) {
      const double seconds = time_once(candidates[i].run);
      best_times[i] = std::min(best_times[i], seconds);
      seconds_spent += seconds;
    }
    return seconds_spent;
  };
  std::vector<size_t> runnable;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (best_times[i] >= 0) {
      runnable.push_back(i);
    }
  }
  double spent = 0;
  for (int round = 0; round < kMaxTimedRounds && (round < kMinTimedRounds || spent < kTuningBudgetSeconds);
       ++round) {
    spent += time_round(runnable);
  }
  // The candidates within kTieMargin of the fastest, in candidate order.
  auto tied = [&] {
    double fastest = std::numeric_limits<double>::infinity();
    for (size_t i : runnable) {
      fastest = std::min(fastest, best_times[i]);
    }
    std::vector<size_t> near;
    for (size_t i : runnable) {
      if (best_times[i] <= fastest * (1 + kTieMargin)) {
        near.push_back(i);
      }
    }
    return near;
  };
  std::vector<size_t> contenders = tied();
  double tie_spent = 0;
  for (int round = 0; contenders.size() > 1 && round < kMaxTieRounds &&
                      (round < kMinTieRounds || tie_spent < kTieBudgetSeconds);
       ++round) {
    tie_spent += time_round(contenders);
    contenders = tied();
  }
  // The fastest, or where a tie remains the earliest of the tied (candidate 0 is ATen).
  const size_t best = contenders.front();
  std::vector<std::pair<std::string, double>> best_seconds;
  for (size_t i : runnable) {
    best_seconds.emplace_back(candidates[i].name, best_times[i]);
  }
  if (verbose()) {
    std::string timings;
    for (const auto& [name, seconds] : best_seconds) {
      timings += " " + name + "=" + std::to_string(seconds * 1e6) + "us";
    }
    timings += refused;
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
    tune_cache().insert_or_assign(key, Remembered{candidates[best].name, shape_key.m, shape_key.n, shape_key.k,
                                                  std::move(best_seconds), next_order++});
  }
  // The candidates grew scratch buffers that the one chosen may never use again (a float32 gather
  // beside the bfloat16 one): free them, once per size class; the chosen engine allocates its own.
  release_scratch_buffers();
  return best;
}

}  // namespace mmfast::cpu
