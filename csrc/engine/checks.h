// Argument checks shared by the ops (every error names the argument and what was expected), and
// the input limits each op declares and `mmfast._C.input_limits` exports to Python.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mmfast {

// The most feature segments (modality inputs) one call takes: the CPU kernels keep per-segment
// pointers and accumulators in fixed-size arrays of this length.
constexpr int64_t kMaxSegments = 16;

// How many inputs an op takes; each op's file registers its limits (RegisterInputLimits) and the
// Python side reads them from `mmfast._C.input_limits` instead of retyping them.
struct InputLimits {
  int64_t min_inputs;
  int64_t max_inputs;
};

// Op name -> its limits, filled while the library loads.
std::map<std::string, InputLimits>& input_limits_registry();

struct RegisterInputLimits {
  RegisterInputLimits(const char* op, InputLimits limits) { input_limits_registry()[op] = limits; }
};

// "torch.float32" and so on, as Python users spell dtypes.
std::string dtype_name(at::ScalarType type);

// The sizes of a list of feature segments [*, D_i] sharing leading dims, dtype and device.
struct SegmentsShape {
  int64_t rows = 0;  // product of the leading dims
  int64_t in_features = 0;  // sum of the D_i
  std::vector<int64_t> segment_sizes;
  std::vector<int64_t> leading_sizes;
};

// Checks `limits.min_inputs`..`limits.max_inputs` floating-point tensors of shape [*, D_i] with
// one dtype, device and leading dims; errors name `argument`[i].
SegmentsShape check_segments(at::TensorList inputs, const char* argument, InputLimits limits);

// Whether any of `inputs` has symbolic sizes (fake tensors under torch.export / torch.compile with
// dynamic shapes): reading their sizes as integers would specialize them, so the entry points leave
// the checks to the fake implementations, which run the Python checks with the same messages.
bool has_symbolic_sizes(at::TensorList inputs);

// Checks that `tensor` (called `argument`) has `like`'s dtype and device and exactly `sizes`.
void check_parameter(const at::Tensor& tensor, const std::string& argument, const at::Tensor& like,
                     at::IntArrayRef sizes);

}  // namespace mmfast
