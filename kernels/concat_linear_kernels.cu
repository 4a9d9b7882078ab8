// CUDA kernels around the concat_linear GEMMs: the activation epilogue and the fused
// activation-gradient + bias-gradient pass. The math is kernels/activation.h, shared with the CPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "activation.h"
#include "concat_linear_kernels.h"

namespace {

using mmfast::Activation;

constexpr int kThreads = 256;
// The backward tiles: 32 columns (one warp, coalesced) by kRowLanes threads walking rows.
constexpr int kColumnTile = 32;
constexpr int kRowLanes = 8;
constexpr int64_t kMaxRowBlocks = 1024;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <Activation A, typename T>
__global__ void activation_forward_kernel(const T* __restrict__ pre, T* out, int64_t numel) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    out[i] = from_float<T>(mmfast::activation_forward<A, float>(to_float(pre[i])));
  }
}

// Rows handled by one block of the backward, chosen so that there are at most kMaxRowBlocks.
int64_t rows_per_block(int64_t rows) {
  const int64_t per_block = (rows + kMaxRowBlocks - 1) / kMaxRowBlocks;
  return per_block < 256 ? 256 : per_block;
}

int64_t row_blocks(int64_t rows) {
  const int64_t per_block = rows_per_block(rows);
  return rows == 0 ? 1 : (rows + per_block - 1) / per_block;
}

// Block (kColumnTile, kRowLanes) over a tile of columns and a range of rows: writes grad_pre and,
// if `partial` is set, the tile's column sums for this row block into partial[row_block, col].
template <Activation A, typename T>
__global__ void activation_backward_kernel(const T* __restrict__ grad, const T* __restrict__ saved,
                                           T* __restrict__ grad_pre, float* __restrict__ partial, int64_t rows,
                                           int64_t cols, int64_t rows_per_block) {
  __shared__ float sums[kRowLanes][kColumnTile];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t row_end = row_begin + rows_per_block < rows ? row_begin + rows_per_block : rows;
  float sum = 0.0f;
  if (col < cols) {
    for (int64_t row = row_begin + threadIdx.y; row < row_end; row += kRowLanes) {
      const int64_t i = row * cols + col;
      const float s = A == Activation::kNone ? 0.0f : to_float(saved[i]);
      const float g = mmfast::activation_backward<A, float>(to_float(grad[i]), s);
      grad_pre[i] = from_float<T>(g);
      sum += g;
    }
  }
  if (partial == nullptr) {
    return;
  }
  sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float total = 0.0f;
    for (int lane = 0; lane < kRowLanes; ++lane) {
      total += sums[lane][threadIdx.x];
    }
    partial[static_cast<int64_t>(blockIdx.y) * cols + col] = total;
  }
}

// grad_bias[col] = sum over row blocks of partial[block, col], in block order.
template <typename T>
__global__ void column_sum_kernel(const float* __restrict__ partial, T* __restrict__ grad_bias, int64_t blocks,
                                  int64_t cols) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) {
    return;
  }
  float total = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) {
    total += partial[b * cols + col];
  }
  grad_bias[col] = from_float<T>(total);
}

unsigned int grid_for(int64_t work, int64_t per_block) {
  const int64_t blocks = (work + per_block - 1) / per_block;
  // Grid-stride loops cover the rest; 65535 * 256 elements per pass is plenty.
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks));
}

template <typename T, typename F>
cudaError_t with_activation(int activation, F&& launch) {
  switch (static_cast<Activation>(activation)) {
    case Activation::kNone: launch(mmfast::ActivationTag<Activation::kNone>{}); break;
    case Activation::kRelu: launch(mmfast::ActivationTag<Activation::kRelu>{}); break;
    case Activation::kGelu: launch(mmfast::ActivationTag<Activation::kGelu>{}); break;
    case Activation::kGeluTanh: launch(mmfast::ActivationTag<Activation::kGeluTanh>{}); break;
    case Activation::kSilu: launch(mmfast::ActivationTag<Activation::kSilu>{}); break;
    case Activation::kSigmoid: launch(mmfast::ActivationTag<Activation::kSigmoid>{}); break;
    case Activation::kTanh: launch(mmfast::ActivationTag<Activation::kTanh>{}); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t forward_typed(const void* pre, void* out, int64_t numel, int activation, cudaStream_t stream) {
  return with_activation<T>(activation, [&](auto tag) {
    activation_forward_kernel<decltype(tag)::value, T><<<grid_for(numel, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(pre), static_cast<T*>(out), numel);
  });
}

template <typename T>
cudaError_t backward_typed(const void* grad, const void* saved, void* grad_pre, void* grad_bias, float* workspace,
                           int64_t rows, int64_t cols, int activation, cudaStream_t stream) {
  const int64_t per_block = rows_per_block(rows);
  const int64_t blocks_y = row_blocks(rows);
  float* partial = grad_bias != nullptr ? workspace : nullptr;
  const dim3 block(kColumnTile, kRowLanes);
  const dim3 grid(static_cast<unsigned int>((cols + kColumnTile - 1) / kColumnTile),
                  static_cast<unsigned int>(blocks_y));
  cudaError_t status = with_activation<T>(activation, [&](auto tag) {
    activation_backward_kernel<decltype(tag)::value, T><<<grid, block, 0, stream>>>(
        static_cast<const T*>(grad), static_cast<const T*>(saved), static_cast<T*>(grad_pre), partial, rows, cols,
        per_block);
  });
  if (status != cudaSuccess || grad_bias == nullptr) {
    return status;
  }
  column_sum_kernel<T><<<grid_for(cols, kThreads), kThreads, 0, stream>>>(partial, static_cast<T*>(grad_bias),
                                                                          blocks_y, cols);
  return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t mmfast_activation_forward(const void* pre, void* out, int64_t numel, mmfast_dtype dtype,
                                                 int activation, cudaStream_t stream) {
  if (numel == 0) {
    return cudaSuccess;
  }
  switch (dtype) {
    case MMFAST_FLOAT32: return forward_typed<float>(pre, out, numel, activation, stream);
    case MMFAST_FLOAT16: return forward_typed<__half>(pre, out, numel, activation, stream);
    case MMFAST_BFLOAT16: return forward_typed<__nv_bfloat16>(pre, out, numel, activation, stream);
  }
  return cudaErrorInvalidValue;
}

extern "C" size_t mmfast_activation_backward_workspace(int64_t rows, int64_t cols) {
  return static_cast<size_t>(row_blocks(rows) * cols);
}

extern "C" cudaError_t mmfast_activation_backward(const void* grad, const void* saved, void* grad_pre,
                                                  void* grad_bias, float* workspace, int64_t rows, int64_t cols,
                                                  mmfast_dtype dtype, int activation, cudaStream_t stream) {
  if (cols == 0) {
    return cudaSuccess;
  }
  if (grad_bias != nullptr && workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  switch (dtype) {
    case MMFAST_FLOAT32:
      return backward_typed<float>(grad, saved, grad_pre, grad_bias, workspace, rows, cols, activation, stream);
    case MMFAST_FLOAT16:
      return backward_typed<__half>(grad, saved, grad_pre, grad_bias, workspace, rows, cols, activation, stream);
    case MMFAST_BFLOAT16:
      return backward_typed<__nv_bfloat16>(grad, saved, grad_pre, grad_bias, workspace, rows, cols, activation,
                                           stream);
  }
  return cudaErrorInvalidValue;
}
