// CUDA kernels of the dense RBM ops: the element-wise passes fused around cuBLAS (called through ATen by the
// templates in rbm.h). They mirror CpuKernels in rbm_cpu.cpp.
//
// Random numbers. One thread owns one Philox block of 4 elements, so element i of a draw receives exactly the
// number that philox.h assigns it on the CPU for the same (seed, offset, i): uniforms and Bernoulli thresholds are
// bit-identical across devices; normals and sigmoids agree up to the rounding of the device's exp/log/cos.
// draw() takes one Philox state per sampling phase from the CUDA generator, as ATen's dropout and bernoulli do
// (philox_cuda_state(4): same seed, offset advanced by 4). Kernels receive it as an at::PhiloxCudaState and unpack it
// on the device, where the offset gets bit 63 set (rng_stream): ATen's curand-based kernels on the same generator
// use counters whose high 64 bits are a thread index, so with that bit our counters (block, offset | 2^63) can never
// coincide with theirs.
// CUDA graphs: rbm.h passes a Draw, a plain (seed, offset) pair, from draw() to the kernels, so the state is unpacked
// on the host and draw() refuses graph capture with a clear error. The kernels are already graph-ready: once draw()
// may return the generator's PhiloxCudaState itself (captured or not), only draw() and Draw's type change.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <utility>

#include "philox.h"
#include "rbm.h"

namespace pymusicrbm {
namespace {

constexpr int kThreads = 256;
constexpr uint64_t kStreamTag = uint64_t{1} << 63;

// ---------------------------------------------------------------------------------------------------------------
// Device helpers

// Four consecutive elements, moved as one 16-byte (float) or two 16-byte (double) memory transactions.
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

template <typename T> __device__ __forceinline__ void store4(T* x, int64_t i, int64_t n, bool packed, const Pack4<T>& r) {
  if (packed && i + 4 <= n) {
    *reinterpret_cast<Pack4<T>*>(x + i) = r;
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (i + j < n) x[i + j] = r.v[j];
}

__device__ __forceinline__ int64_t first_block() { return int64_t{blockIdx.x} * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t{gridDim.x} * blockDim.x; }
__host__ __device__ __forceinline__ int64_t blocks_of_4(int64_t n) { return (n + 3) / 4; }

struct Stream {
  uint64_t seed, offset;
};

__device__ __forceinline__ Stream rng_stream(const at::PhiloxCudaState& rng) {
  const auto [seed, offset] = at::cuda::philox::unpack(rng);
  return {seed, offset | kStreamTag};
}

template <typename T> __device__ __forceinline__ T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// normal_at's Box-Muller (philox.h) on two words of a block already computed: one Philox call gives two normals.
template <typename T> __device__ __forceinline__ T box_muller(uint32_t a, uint32_t b) {
  const T u1 = to_uniform<T>(a);
  const T u2 = to_uniform<T>(b);
  return std::sqrt(T(-2) * std::log(u1)) * std::cos(T(6.283185307179586) * u2);
}

// The standard normals of elements [i, i + 4) (i a multiple of 4): element e uses words (2(e&1), 2(e&1)+1) of
// block e / 2, exactly as normal_at.
template <typename T> __device__ __forceinline__ Pack4<T> normals4(const Stream& st, int64_t i) {
  const uint64_t blk = static_cast<uint64_t>(i) >> 1;
  const Philox4 r0 = philox(st.seed, st.offset, blk);
  const Philox4 r1 = philox(st.seed, st.offset, blk + 1);
  return Pack4<T>{{box_muller<T>(r0.x[0], r0.x[1]), box_muller<T>(r0.x[2], r0.x[3]),
                   box_muller<T>(r1.x[0], r1.x[1]), box_muller<T>(r1.x[2], r1.x[3])}};
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels: grid-stride loops over blocks of 4 elements.

template <typename T> __global__ void uniform_kernel(T* out, int64_t n, bool packed, at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t q = first_block(); q < blocks_of_4(n); q += grid_stride()) {
    const Philox4 r = philox(st.seed, st.offset, static_cast<uint64_t>(q));
    Pack4<T> u;
#pragma unroll
    for (int j = 0; j < 4; ++j) u.v[j] = to_uniform<T>(r.x[j]);
    store4(out, 4 * q, n, packed, u);
  }
}

template <typename T> __global__ void normal_kernel(T* out, int64_t n, bool packed, at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t q = first_block(); q < blocks_of_4(n); q += grid_stride())
    store4(out, 4 * q, n, packed, normals4<T>(st, 4 * q));
}

// p <- sigmoid(p); s <- (u < p) when s is given.
template <typename T>
__global__ void sigmoid_sample_kernel(T* p, T* s, int64_t n, bool packed, at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t q = first_block(); q < blocks_of_4(n); q += grid_stride()) {
    const int64_t i = 4 * q;
    Pack4<T> x = load4(p, i, n, packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) x.v[j] = sigmoid(x.v[j]);
    store4(p, i, n, packed, x);
    if (s) {
      const Philox4 r = philox(st.seed, st.offset, static_cast<uint64_t>(q));
      Pack4<T> y;
#pragma unroll
      for (int j = 0; j < 4; ++j) y.v[j] = to_uniform<T>(r.x[j]) < x.v[j] ? T(1) : T(0);
      store4(s, i, n, packed, y);
    }
  }
}

// m (rows, V) <- b + sigma * m; s <- m + sigma * z when s is given. sigma == nullptr means 1.
template <typename T>
__global__ void gaussian_sample_kernel(T* m, const T* b, const T* sigma, T* s, int64_t n, int64_t V, bool packed,
                                       at::PhiloxCudaState rng) {
  const Stream st = rng_stream(rng);
  for (int64_t q = first_block(); q < blocks_of_4(n); q += grid_stride()) {
    const int64_t i = 4 * q;
    Pack4<T> x = load4(m, i, n, packed);
    Pack4<T> sd;
    int64_t col = i % V;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      sd.v[j] = sigma ? sigma[col] : T(1);
      x.v[j] = b[col] + sd.v[j] * x.v[j];
      col = col + 1 == V ? 0 : col + 1;
    }
    store4(m, i, n, packed, x);
    if (s) {
      const Pack4<T> z = normals4<T>(st, i);
#pragma unroll
      for (int j = 0; j < 4; ++j) x.v[j] += sd.v[j] * z.v[j];
      store4(s, i, n, packed, x);
    }
  }
}

// g <- momentum * vel + g - lr_wd * p; *bad = 1 if any g or p + g is not finite. Reads p and vel, never writes them.
template <typename T>
__global__ void prepare_update_kernel(T* g, const T* vel, const T* p, int64_t n, bool packed, T momentum, T lr_wd,
                                      int* bad) {
  bool ok = true;
  for (int64_t q = first_block(); q < blocks_of_4(n); q += grid_stride()) {
    const int64_t i = 4 * q;
    Pack4<T> u = load4(g, i, n, packed);
    const Pack4<T> v = load4(vel, i, n, packed);
    const Pack4<T> w = load4(p, i, n, packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      u.v[j] = momentum * v.v[j] + u.v[j] - lr_wd * w.v[j];
      ok &= isfinite(u.v[j]) && isfinite(w.v[j] + u.v[j]);
    }
    store4(g, i, n, packed, u);
  }
  if (!ok) *bad = 1;  // every writer stores the same value: no atomic needed
}

// vel <- g; p += g.
template <typename T> __global__ void apply_update_kernel(T* p, T* vel, const T* g, int64_t n, bool packed) {
  for (int64_t q = first_block(); q < blocks_of_4(n); q += grid_stride()) {
    const int64_t i = 4 * q;
    const Pack4<T> u = load4(g, i, n, packed);
    Pack4<T> w = load4(p, i, n, packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) w.v[j] += u.v[j];
    store4(vel, i, n, packed, u);
    store4(p, i, n, packed, w);
  }
}

template <typename T> __global__ void nonfinite_kernel(const T* x, int64_t n, bool packed, int* bad) {
  T acc = 0;  // x * 0 is NaN exactly when x is Inf or NaN: no branch per element
  for (int64_t q = first_block(); q < blocks_of_4(n); q += grid_stride()) {
    const Pack4<T> v = load4(x, 4 * q, n, packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) acc += v.v[j] * T(0);
  }
  if (isnan(acc)) *bad = 1;
}

// ---------------------------------------------------------------------------------------------------------------
// Host side

// Enough blocks to fill the device, no more: the grid-stride loops take the rest.
dim3 grid_for(int64_t n) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t resident = int64_t{prop->multiProcessorCount} * (prop->maxThreadsPerMultiProcessor / kThreads);
  const int64_t wanted = (blocks_of_4(n) + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min(resident, wanted))));
}

template <typename T, typename... P> bool packable(const P*... ptrs) {
  return ((reinterpret_cast<uintptr_t>(ptrs) % sizeof(Pack4<T>) == 0) && ...);
}

template <typename T> T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

at::PhiloxCudaState philox_state(Draw d) { return at::PhiloxCudaState(d.seed, d.offset); }

// A 0/1 flag on the device that kernels raise on a non-finite value; read back once.
struct BadFlag {
  Tensor t;
  explicit BadFlag(const Tensor& like) : t(at::zeros({1}, like.options().dtype(at::kInt))) {}
  int* ptr() { return t.data_ptr<int>(); }
  bool raised() const { return t.item<int>() != 0; }
};

struct CudaKernels {
  static Draw draw(const std::optional<at::Generator>& gen) {
    auto* g = at::get_generator_or_default<at::CUDAGeneratorImpl>(gen, at::cuda::detail::getDefaultCUDAGenerator());
    at::PhiloxCudaState st;
    {
      std::lock_guard<std::mutex> lock(g->mutex_);
      st = g->philox_cuda_state(4);
    }
    TORCH_CHECK(!st.captured_,
                "pymusicrbm: the sampling ops cannot be captured in a CUDA graph (their random state is read on the "
                "host); run them eagerly or compile without CUDA graphs (e.g. torch.compile mode='default')");
    return {st.seed_.val, st.offset_.val};
  }

  static void fill_uniform(Tensor out, Draw d) {
    const int64_t n = out.numel();
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_uniform_", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      uniform_kernel<scalar_t><<<grid_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          o, n, packable<scalar_t>(o), philox_state(d));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void fill_normal(Tensor out, Draw d) {
    const int64_t n = out.numel();
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_normal_", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      normal_kernel<scalar_t><<<grid_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          o, n, packable<scalar_t>(o), philox_state(d));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void sigmoid_sample(Tensor p, Tensor s, Draw d) {
    TORCH_INTERNAL_ASSERT(p.is_contiguous() && (!s.defined() || s.is_contiguous()));
    const int64_t n = p.numel();
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "sigmoid_sample", [&] {
      scalar_t* pp = p.data_ptr<scalar_t>();
      scalar_t* sp = ptr_or_null<scalar_t>(s);
      sigmoid_sample_kernel<scalar_t><<<grid_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          pp, sp, n, packable<scalar_t>(pp, sp), philox_state(d));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void gaussian_sample(Tensor m, Tensor b, Tensor sigma, Tensor s, Draw d) {
    TORCH_INTERNAL_ASSERT(m.dim() == 2 && m.is_contiguous() && (!s.defined() || s.is_contiguous()));
    const int64_t n = m.numel();
    if (n == 0) return;
    const Tensor bc = b.contiguous();
    const Tensor sc = sigma.defined() ? sigma.contiguous() : Tensor();
    AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "gaussian_sample", [&] {
      scalar_t* mp = m.data_ptr<scalar_t>();
      scalar_t* sp = ptr_or_null<scalar_t>(s);
      gaussian_sample_kernel<scalar_t><<<grid_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          mp, bc.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(sc), sp, n, m.size(1), packable<scalar_t>(mp, sp),
          philox_state(d));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static bool prepare_update(Tensor g, Tensor vel, Tensor p, double momentum, double lr_wd) {
    TORCH_INTERNAL_ASSERT(g.is_contiguous() && vel.is_contiguous() && p.is_contiguous());
    const int64_t n = g.numel();
    if (n == 0) return true;
    BadFlag bad(g);
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "prepare_update", [&] {
      scalar_t* gp = g.data_ptr<scalar_t>();
      const scalar_t* vp = vel.data_ptr<scalar_t>();
      const scalar_t* pp = p.data_ptr<scalar_t>();
      prepare_update_kernel<scalar_t><<<grid_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          gp, vp, pp, n, packable<scalar_t>(gp, vp, pp), static_cast<scalar_t>(momentum),
          static_cast<scalar_t>(lr_wd), bad.ptr());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return !bad.raised();
  }

  static void apply_update(Tensor p, Tensor vel, Tensor g) {
    TORCH_INTERNAL_ASSERT(g.is_contiguous() && vel.is_contiguous() && p.is_contiguous());
    const int64_t n = g.numel();
    if (n == 0) return;
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "apply_update", [&] {
      scalar_t* pp = p.data_ptr<scalar_t>();
      scalar_t* vp = vel.data_ptr<scalar_t>();
      const scalar_t* gp = g.data_ptr<scalar_t>();
      apply_update_kernel<scalar_t><<<grid_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          pp, vp, gp, n, packable<scalar_t>(pp, vp, gp));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static bool all_finite(const Tensor& t) {
    const Tensor x = t.contiguous();
    const int64_t n = x.numel();
    if (n == 0) return true;
    BadFlag bad(x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "all_finite", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      nonfinite_kernel<scalar_t><<<grid_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          xp, n, packable<scalar_t>(xp), bad.ptr());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return !bad.raised();
  }
};

// The dispatcher does not switch devices for custom ops: run each op with its first tensor's device current, so
// that the default generator, the current stream and the launches all belong to that device. (If that tensor is on
// the CPU, the argument checks in rbm.h report the mixed devices.)
template <auto Op> struct OnDevice;
template <typename R, typename... A, R (*Op)(A...)> struct OnDevice<Op> {
  static R call(A... args) {
    const Tensor& first = std::get<0>(std::tie(args...));
    c10::cuda::OptionalCUDAGuard guard;
    if (first.is_cuda()) guard.set_device(first.device());
    return Op(std::forward<A>(args)...);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pymusicrbm, CUDA, m) {
  m.impl("philox_uniform_", &OnDevice<&fill_uniform<CudaKernels>>::call);
  m.impl("philox_normal_", &OnDevice<&fill_normal<CudaKernels>>::call);
  m.impl("sample_hidden", &OnDevice<&sample_hidden<CudaKernels>>::call);
  m.impl("sample_visible", &OnDevice<&sample_visible<CudaKernels>>::call);
  m.impl("free_energy", &free_energy);
  m.impl("cd_step_", &OnDevice<&cd_step<CudaKernels>>::call);
}

}  // namespace pymusicrbm
