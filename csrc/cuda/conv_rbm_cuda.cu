// CUDA kernels of the convolutional RBM ops (orchestration and checks in conv_rbm.h). On the GPU the correlations
// go to cuDNN through ATen (conv2d, conv_transpose2d, convolution_backward for the weight statistic); what is fused
// by hand is everything between them: bias + probabilistic max-pooling softmax + sampling of the hidden units
// (one pass, probabilities written in place over the energies) and bias + sigmoid/Gaussian + sampling of the
// visible units.
//
// Random numbers: as rbm_cuda.cu (draw(): philox_cuda_state(4), unpacked on the device, streams tagged with
// kStreamTag), with philox.h's stream layout, so element i of a draw equals what philox_uniform_ / philox_normal_
// give element i on the same device and generator state, and what the CPU kernels use for the same (seed, offset).
// Element i of a hidden draw is pooled unit i (index in (B, K, Hh/pool, Wh/pool)); of a visible draw, visible unit i.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/common.cuh"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <utility>

#include "conv_rbm.h"
#include "rbm_kernels.cuh"

namespace pymusicrbm {
namespace {

using namespace kernels;

dim3 conv_grid(int64_t threads) {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t resident = int64_t{prop->multiProcessorCount} * (prop->maxThreadsPerMultiProcessor / kThreads);
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min(resident, ceil_div(threads, kThreads)))));
}

// One thread per Philox block; each of its 4 words belongs to one pooled unit (block of pool x pool hidden units
// of one map). e holds the energies and receives the probabilities; h (optional) the sample, q (optional) the
// pooled probabilities. pool == 1 is the plain sigmoid: softmax over {e, 'off' = 0}.
template <typename T>
__global__ void pool_sample_kernel(T* e, T* h, T* q, int64_t n_pooled, int64_t Hp, int64_t Wp, int64_t Wh, int pool,
                                   at::PhiloxCudaState rng) {
  const Stream st = h ? rng_stream(rng) : Stream{0, 0};
  for (int64_t blk = first_thread(); blk < uniform_blocks(n_pooled); blk += grid_stride()) {
    const Philox4 r = h ? block_at(st, blk) : Philox4{};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t i = uniform_element(blk, w);
      if (i >= n_pooled) continue;
      const int64_t map = i / (Hp * Wp), rem = i % (Hp * Wp), by = rem / Wp, bx = rem % Wp;
      T* eb = e + (map * Hp * pool + by * pool) * Wh + bx * pool;
      T m = 0;  // the energy of 'all off'
      for (int dy = 0; dy < pool; ++dy)
        for (int dx = 0; dx < pool; ++dx) m = max(m, eb[dy * Wh + dx]);
      T z = exp(-m);
      for (int dy = 0; dy < pool; ++dy)
        for (int dx = 0; dx < pool; ++dx) z += exp(eb[dy * Wh + dx] - m);
      const T inv = T(1) / z;
      const T u = to_uniform<T>(r.x[w]);
      T pooled = 0, cum = 0;
      bool on = false;
      for (int dy = 0; dy < pool; ++dy)
        for (int dx = 0; dx < pool; ++dx) {
          const int64_t j = dy * Wh + dx;
          const T pr = exp(eb[j] - m) * inv;
          eb[j] = pr;
          pooled += pr;
          if (h) {  // row-major walk: unit on when cum_before <= u < cum_before + pr
            cum += pr;
            const bool hit = !on && u < cum;
            h[eb - e + j] = (hit ? T(1) : T(0)) + (pr - pr);  // NaN p -> NaN sample
            on |= hit;
          }
        }
      if (q) q[i] = pooled;
    }
  }
}

// a (B, C, H, W): in the full convolution of the hidden maps, out the mean sigmoid(b_c + a); s = (u < mean).
template <typename T>
__global__ void bernoulli_visible_kernel(T* a, const T* b, T* s, int64_t n, int64_t C, int64_t HW,
                                         at::PhiloxCudaState rng) {
  const Stream st = s ? rng_stream(rng) : Stream{0, 0};
  for (int64_t blk = first_thread(); blk < uniform_blocks(n); blk += grid_stride()) {
    const Philox4 r = s ? block_at(st, blk) : Philox4{};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t i = uniform_element(blk, w);
      if (i >= n) continue;
      const T mean = sigmoid(b[(i / HW) % C] + a[i]);
      a[i] = mean;
      if (s) s[i] = (to_uniform<T>(r.x[w]) < mean ? T(1) : T(0)) + (mean - mean);
    }
  }
}

// a -> mean b_c + sigma_c * a; s = mean + sigma_c * z. sigma == nullptr means 1.
template <typename T>
__global__ void gaussian_visible_kernel(T* a, const T* b, const T* sigma, T* s, int64_t n, int64_t C, int64_t HW,
                                        at::PhiloxCudaState rng) {
  const Stream st = s ? rng_stream(rng) : Stream{0, 0};
  for (int64_t blk = first_thread(); blk < normal_blocks(n); blk += grid_stride()) {
    const Philox4 r = s ? block_at(st, blk) : Philox4{};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int64_t i = normal_element(blk, j);
      if (i >= n) continue;
      const int64_t ch = (i / HW) % C;
      const T sd = sigma ? sigma[ch] : T(1);
      const T mean = b[ch] + sd * a[i];
      a[i] = mean;
      if (s) s[i] = mean + sd * box_muller<T>(r.x[2 * j], r.x[2 * j + 1]);
    }
  }
}

template <typename T> T* data_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

struct CudaConvKernels {
  static Draw draw(const std::optional<at::Generator>& gen) { return cuda_draw(gen); }

  static void hidden_pass(const ConvHidden& a) {
    const int64_t B = a.v.size(0), K = a.W.size(0), p = a.pool;
    Tensor e = at::conv2d(a.v, a.W, a.c);  // cuDNN; becomes the probabilities in place
    if (!e.is_contiguous()) e = e.contiguous();
    const int64_t Hh = e.size(2), Wh = e.size(3), Hp = Hh / p, Wp = Wh / p;
    const int64_t n_pooled = B * K * Hp * Wp;
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "conv_pool_sample", [&] {
      pool_sample_kernel<scalar_t><<<conv_grid(uniform_blocks(n_pooled)), kThreads, 0, stream>>>(
          e.data_ptr<scalar_t>(), data_or_null<scalar_t>(a.H), data_or_null<scalar_t>(a.Q), n_pooled, Hp, Wp, Wh,
          static_cast<int>(p), at::PhiloxCudaState(a.draw.seed, a.draw.offset));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (a.P.defined()) a.P.copy_(e);
    if (a.gW.defined()) {
      // sum_{b,y,x} v[b, c, y+dy, x+dx] * P[b, k, y, x]: the weight gradient of conv2d(v, W) for grad_output P.
      auto grads = at::convolution_backward(e, a.v, a.W, std::nullopt, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1,
                                            {false, true, false});
      a.gW.add_(std::get<1>(grads), a.scale);
    }
    if (a.gc.defined() || a.q.defined()) {
      const Tensor sums = e.sum({0, 2, 3});
      if (a.gc.defined()) a.gc.add_(sums, a.scale);
      if (a.q.defined()) a.q.add_(sums, a.qscale);  // the pooled probabilities sum to the hidden ones
    }
  }

  static void visible_pass(const ConvVisible& a) {
    Tensor m = at::conv_transpose2d(a.H, a.W);  // cuDNN: the full convolution, summed over the hidden maps
    const int64_t n = m.numel(), C = m.size(1), HW = m.size(2) * m.size(3);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    if (!m.is_contiguous()) m = m.contiguous();
    AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "conv_visible_sample", [&] {
      const at::PhiloxCudaState rng(a.draw.seed, a.draw.offset);
      if (a.kind == Visible::Bernoulli) {
        bernoulli_visible_kernel<scalar_t><<<conv_grid(uniform_blocks(n)), kThreads, 0, stream>>>(
            m.data_ptr<scalar_t>(), a.b.data_ptr<scalar_t>(), data_or_null<scalar_t>(a.S), n, C, HW, rng);
      } else {
        gaussian_visible_kernel<scalar_t><<<conv_grid(normal_blocks(n)), kThreads, 0, stream>>>(
            m.data_ptr<scalar_t>(), a.b.data_ptr<scalar_t>(), data_or_null<scalar_t>(a.sigma),
            data_or_null<scalar_t>(a.S), n, C, HW, rng);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    a.mean.copy_(m);
  }

  static Tensor channel_sums(const Tensor& x, double scale) { return x.sum({0, 2, 3}).mul_(scale); }
  static Tensor sq_err(const Tensor& a, const Tensor& b) { return at::mse_loss(a, b, at::Reduction::Sum); }
  static Tensor apply(const UpdateArgs& a) { return apply_update_cuda(a); }
};

}  // namespace

TORCH_LIBRARY_IMPL(pymusicrbm, CUDA, m) {
  m.impl("conv_sample_hidden", &OnDevice<&conv_sample_hidden<CudaConvKernels>>::call);
  m.impl("conv_sample_visible", &OnDevice<&conv_sample_visible<CudaConvKernels>>::call);
  m.impl("conv_cd_stats", &OnDevice<&conv_cd_stats<CudaConvKernels>>::call);
  m.impl("conv_cd_step_", &OnDevice<&conv_cd_step<CudaConvKernels>>::call);
}

}  // namespace pymusicrbm
