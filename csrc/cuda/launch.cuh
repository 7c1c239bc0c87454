// Launching the CUDA kernels of the dense and convolutional ops: the device guard of an op, the generator draw, the
// grid size, grid-stride loops and the Philox streams as the kernels see them.
//
// Random numbers follow philox.h's stream layout: word w of block blk feeds element (blk / 8) * 32 + w * 8 + blk % 8
// (a normal takes words 2j and 2j + 1 of block blk and feeds element (blk / 8) * 16 + j * 8 + blk % 8). So element
// i of a draw receives exactly the number the CPU kernels give it for the same (seed, offset, i), and the 32
// threads of a warp write, per word, four runs of 8 consecutive elements: every 32-byte sector is used in full.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

#include "common.h"  // Draw
#include "philox.h"

namespace pymusicrbm {

// The dispatcher does not switch devices for custom ops: run each op with its first tensor's device current, so
// that the default generator, the current stream and the launches all belong to that device. (If that tensor is on
// the CPU, the ops' argument checks report the mixed devices.)
template <auto Op> struct OnDevice;
template <typename R, typename... A, R (*Op)(A...)> struct OnDevice<Op> {
  static R call(A... args) {
    const at::Tensor& first = std::get<0>(std::tie(args...));
    c10::cuda::OptionalCUDAGuard guard;
    if (first.is_cuda()) guard.set_device(first.device());
    return Op(std::forward<A>(args)...);
  }
};

// One generator draw per sampling phase (the same for every op, so philox_uniform_ / philox_normal_ reproduce
// any phase): a Philox (seed, offset) reserved from the CUDA generator, as ATen's dropout and bernoulli kernels do.
// Graph-safe: under CUDA graph capture the draw keeps the generator's device-side seed and offset (filled in at each
// replay), which the kernels unpack on the device, so a captured step draws fresh numbers at every replay.
inline Draw cuda_draw(const std::optional<at::Generator>& gen) {
  auto* g = at::get_generator_or_default<at::CUDAGeneratorImpl>(gen, at::cuda::detail::getDefaultCUDAGenerator());
  at::PhiloxCudaState st;
  {
    std::lock_guard<std::mutex> lock(g->mutex_);
    st = g->philox_cuda_state(4);
  }
  if (st.captured_) return {0, 0, st.seed_.ptr, st.offset_.ptr, st.offset_intragraph_};
  return {st.seed_.val, st.offset_.val};
}

// The kernel argument of a draw.
inline at::PhiloxCudaState philox_state(const Draw& d) {
  return d.seed_ptr ? at::PhiloxCudaState(d.seed_ptr, d.offset_ptr, d.offset_intragraph)
                    : at::PhiloxCudaState(d.seed, d.offset);
}

namespace kernels {

constexpr int kThreads = 256;
// Set in the offset of every stream: ATen's curand-based kernels drawing from the same generator use Philox
// counters whose high 64 bits are a thread index (< 2^63), so our counters (block, offset | 2^63) never meet theirs.
constexpr uint64_t kStreamTag = uint64_t{1} << 63;

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Philox blocks that cover n elements: 8 per run of 32 uniforms, 8 per run of 16 normals.
__host__ __device__ __forceinline__ int64_t uniform_blocks(int64_t n) { return ceil_div(n, 32) * 8; }
__host__ __device__ __forceinline__ int64_t normal_blocks(int64_t n) { return ceil_div(n, 16) * 8; }

// The element fed by word w of block blk (the inverse of block_of / word_of in philox.h).
__device__ __forceinline__ int64_t uniform_element(int64_t blk, int w) {
  return (blk >> 3) * 32 + w * 8 + (blk & 7);
}
// The element fed by the normal from words (2j, 2j + 1) of block blk (as normal_at in philox.h).
__device__ __forceinline__ int64_t normal_element(int64_t blk, int j) {
  return (blk >> 3) * 16 + j * 8 + (blk & 7);
}

__device__ __forceinline__ int64_t first_thread() { return int64_t{blockIdx.x} * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t{gridDim.x} * blockDim.x; }

struct Stream {
  uint64_t seed, offset;
};

// Unpacked on the device, so the kernels also work with the captured state of a CUDA graph.
__device__ __forceinline__ Stream rng_stream(const at::PhiloxCudaState& rng) {
  const auto [seed, offset] = at::cuda::philox::unpack(rng);
  return {seed, offset | kStreamTag};
}

__device__ __forceinline__ Philox4 block_at(const Stream& st, int64_t blk) {
  return philox(st.seed, st.offset, static_cast<uint64_t>(blk));
}

}  // namespace kernels

// Thread blocks for `threads` threads, at most as many as the device runs at once: grid-stride loops do the rest.
inline dim3 grid_for(int64_t threads) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t resident =
      int64_t{prop->multiProcessorCount} * (prop->maxThreadsPerMultiProcessor / kernels::kThreads);
  const int64_t blocks = std::min(resident, kernels::ceil_div(threads, kernels::kThreads));
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, blocks)));
}

}  // namespace pymusicrbm
