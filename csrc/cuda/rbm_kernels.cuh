// Device code of the dense RBM ops (launched by rbm_cuda.cu): grid-stride loops, one Philox block per thread in
// the samplers, four elements per thread with 16-byte loads and stores in the other passes.
//
// Random numbers follow philox.h's stream layout: word w of block blk feeds element (blk / 8) * 32 + w * 8 + blk % 8
// (a normal takes words 2j and 2j + 1 of block blk and feeds element (blk / 8) * 16 + j * 8 + blk % 8). So element
// i of a draw receives exactly the number the CPU kernels give it for the same (seed, offset, i), and the 32
// threads of a warp write, per word, four runs of 8 consecutive elements: every 32-byte sector is used in full.
#pragma once
#include <ATen/cuda/PhiloxUtils.cuh>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "philox.h"

namespace pymusicrbm::kernels {

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

template <typename T> __device__ __forceinline__ T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// Four consecutive elements, moved as one 16-byte (float) or two 16-byte (double) transactions.
template <typename T> struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

// Elements [i, i + 4) of x, i a multiple of 4; lanes at or past n read as 0. `packed`: x is Pack4-aligned.
template <typename T> __device__ __forceinline__ Pack4<T> load4(const T* x, int64_t i, int64_t n, bool packed) {
  if (packed && i + 4 <= n) return *reinterpret_cast<const Pack4<T>*>(x + i);
  Pack4<T> r;
#pragma unroll
  for (int j = 0; j < 4; ++j) r.v[j] = i + j < n ? x[i + j] : T(0);
  return r;
}

template <typename T>
__device__ __forceinline__ void store4(T* x, int64_t i, int64_t n, bool packed, const Pack4<T>& r) {
  if (packed && i + 4 <= n) {
    *reinterpret_cast<Pack4<T>*>(x + i) = r;
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (i + j < n) x[i + j] = r.v[j];
}

// ---- samplers: one Philox block per thread ---------------------------------------------------------------------

template <typename T> __global__ void uniform_kernel(T* out, int64_t n, at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t blk = first_thread(); blk < uniform_blocks(n); blk += grid_stride()) {
    const Philox4 r = block_at(st, blk);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t i = uniform_element(blk, w);
      if (i < n) out[i] = to_uniform<T>(r.x[w]);
    }
  }
}

template <typename T> __global__ void normal_kernel(T* out, int64_t n, at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t blk = first_thread(); blk < normal_blocks(n); blk += grid_stride()) {
    const Philox4 r = block_at(st, blk);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t i = normal_element(blk, j);
      if (i < n) out[i] = box_muller<T>(r.x[2 * j], r.x[2 * j + 1]);
    }
  }
}

// p <- sigmoid(p); s <- (u < p).
template <typename T> __global__ void sigmoid_sample_kernel(T* p, T* s, int64_t n, at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t blk = first_thread(); blk < uniform_blocks(n); blk += grid_stride()) {
    const Philox4 r = block_at(st, blk);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t i = uniform_element(blk, w);
      if (i < n) {
        const T pr = sigmoid(p[i]);
        p[i] = pr;
        s[i] = (to_uniform<T>(r.x[w]) < pr ? T(1) : T(0)) + (pr - pr);  // NaN p -> NaN sample
      }
    }
  }
}

// m (rows, V) <- b + sigma * m; s <- m + sigma * z when s is given. sigma == nullptr means 1.
template <typename T>
__global__ void gaussian_sample_kernel(T* m, const T* b, const T* sigma, T* s, int64_t n, int64_t V,
                                       at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t blk = first_thread(); blk < normal_blocks(n); blk += grid_stride()) {
    const Philox4 r = s ? block_at(st, blk) : Philox4{};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t i = normal_element(blk, j);
      if (i >= n) continue;
      const int64_t col = i % V;
      const T sd = sigma ? sigma[col] : T(1);
      const T mean = b[col] + sd * m[i];
      m[i] = mean;
      if (s) s[i] = mean + sd * box_muller<T>(r.x[2 * j], r.x[2 * j + 1]);
    }
  }
}

// ---- element-wise passes: four elements per thread ------------------------------------------------------------

// p <- sigmoid(p), when nothing is sampled.
template <typename T> __global__ void sigmoid_kernel(T* p, int64_t n, bool packed) {
  for (int64_t q = first_thread(); q < ceil_div(n, 4); q += grid_stride()) {
    Pack4<T> x = load4(p, 4 * q, n, packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) x.v[j] = sigmoid(x.v[j]);
    store4(p, 4 * q, n, packed, x);
  }
}

// The three tensors of a parameter update (W, b, c) as one index space: element q belongs to tensor j, the first
// with q < end[j], at index q - end[j - 1].
template <typename T> struct UpdateSegs {
  T* p[3];
  T* vel[3];
  const T* g[3];
  T decay[3];
  int64_t end[3];
};

template <typename T>
__device__ __forceinline__ void update_index(const UpdateSegs<T>& s, int64_t q, int& j, int64_t& i) {
  j = q < s.end[0] ? 0 : (q < s.end[1] ? 1 : 2);
  i = j == 0 ? q : q - s.end[j - 1];
}

// u = momentum * vel + lr * (g - decay * p): the same arithmetic as the CPU's apply_update_cpu.
template <typename T>
__device__ __forceinline__ T update_of(const UpdateSegs<T>& s, int j, int64_t i, T momentum, T lr) {
  return momentum * s.vel[j][i] + lr * (s.g[j][i] - s.decay[j] * s.p[j][i]);
}

// *bad = 1 if some p + u is not finite (a non-finite u makes p + u non-finite too). Writes nothing else.
template <typename T> __global__ void update_check_kernel(UpdateSegs<T> s, T momentum, T lr, int* bad) {
  bool ok = true;
  for (int64_t q = first_thread(); q < s.end[2]; q += grid_stride()) {
    int j;
    int64_t i;
    update_index(s, q, j, i);
    ok &= isfinite(s.p[j][i] + update_of(s, j, i, momentum, lr));
  }
  if (!ok) *bad = 1;  // every writer stores the same value: no atomic needed
}

// Unless *bad: vel <- u, p += u. Always: *ok <- !*bad, and *poison <- NaN when *bad (poison optional). The flag is
// read on the device, so a rejected update costs no host synchronisation and the step stays graph-capturable.
template <typename T>
__global__ void update_apply_kernel(UpdateSegs<T> s, T momentum, T lr, const int* bad, bool* ok, T* poison) {
  const bool rejected = *bad != 0;
  if (first_thread() == 0) {
    *ok = !rejected;
    if (rejected && poison) *poison = std::numeric_limits<T>::quiet_NaN();
  }
  if (rejected) return;
  for (int64_t q = first_thread(); q < s.end[2]; q += grid_stride()) {
    int j;
    int64_t i;
    update_index(s, q, j, i);
    const T u = update_of(s, j, i, momentum, lr);
    s.vel[j][i] = u;
    s.p[j][i] += u;
  }
}

// *bad = 1 if any x is Inf or NaN.
template <typename T> __global__ void nonfinite_kernel(const T* x, int64_t n, bool packed, int* bad) {
  T acc = 0;  // x * 0 is NaN exactly when x is Inf or NaN: no branch per element
  for (int64_t q = first_thread(); q < ceil_div(n, 4); q += grid_stride()) {
    const Pack4<T> v = load4(x, 4 * q, n, packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc += v.v[j] * T(0);
  }
  if (isnan(acc)) *bad = 1;
}

}  // namespace pymusicrbm::kernels
