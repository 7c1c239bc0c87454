// CUDA kernels of the dense RBM ops: the element-wise passes fused around cuBLAS (called through ATen by the
// templates in rbm.h). They mirror CpuKernels in rbm_cpu.cpp; the device code is in rbm_kernels.cuh.
//
// Random state. draw() takes one Philox state per sampling phase from the CUDA generator, as ATen's dropout and
// bernoulli kernels do (philox_cuda_state(4): the generator's seed, its offset advanced by 4), so results depend on
// the seed only. Element i of a draw gets philox.h's number for (seed, offset | 2^63, i): uniforms and Bernoulli
// thresholds are bit-identical to what the CPU computes for that stream; normals and sigmoids agree up to the
// rounding of each device's exp/log/cos. (The CPU and CUDA generators hand out different seeds, so the same
// torch.manual_seed gives different, equally valid, samples on the two devices.)
// CUDA graphs: a step makes no host synchronisation (non-finite data and updates are flagged on the device, see
// common.h) and its draws are graph-safe (cuda_draw in launch.cuh), so a whole cd_step_ can be captured and
// replayed.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/launch.cuh"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <utility>

#include "rbm_kernels.cuh"
#include "rbm.h"

namespace pymusicrbm {
namespace {

using namespace kernels;

// Whether every pointer allows 16-byte (Pack4) accesses; views such as X.narrow(0, B, N) need not.
template <typename T, typename... P> bool packable(const P*... ptrs) {
  return ((reinterpret_cast<uintptr_t>(ptrs) % sizeof(Pack4<T>) == 0) && ...);
}

template <typename T> T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

// A flag on the device that kernels raise on a non-finite value; read back once (one synchronisation).
struct BadFlag {
  Tensor t;
  explicit BadFlag(const Tensor& like) : t(at::zeros({1}, like.options().dtype(at::kInt))) {}
  int* ptr() { return t.data_ptr<int>(); }
  bool raised() const { return t.item<int>() != 0; }
};

}  // namespace

// Two launches and no host synchronisation: a check of every p + u into a device flag, then the update, applied by
// the second kernel only if the flag is clear (see update_apply_kernel).
Tensor apply_update_cuda(const UpdateArgs& a) {
  const Tensor& W = a.t[0].p;
  c10::cuda::CUDAGuard guard(W.device());
  Tensor bad = at::empty({1}, W.options().dtype(at::kInt));
  Tensor ok = at::empty({}, W.options().dtype(at::kBool));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  C10_CUDA_CHECK(cudaMemsetAsync(bad.data_ptr<int>(), 0, sizeof(int), stream));
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "cd_apply_", [&] {
    UpdateSegs<scalar_t> s;
    int64_t end = 0;
    for (int j = 0; j < 3; ++j) {
      const ParamUpdate& u = a.t[j];
      TORCH_INTERNAL_ASSERT(u.p.is_contiguous() && u.vel.is_contiguous() && u.g.is_contiguous());
      s.p[j] = u.p.data_ptr<scalar_t>();
      s.vel[j] = u.vel.data_ptr<scalar_t>();
      s.g[j] = u.g.data_ptr<scalar_t>();
      s.decay[j] = static_cast<scalar_t>(u.decay);
      end += u.p.numel();
      s.end[j] = end;
    }
    const auto m = static_cast<scalar_t>(a.momentum), lr = static_cast<scalar_t>(a.lr);
    const dim3 grid = grid_for(std::max<int64_t>(end, 1));
    update_check_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(s, m, lr, bad.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    update_apply_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(s, m, lr, bad.data_ptr<int>(), ok.data_ptr<bool>(),
                                                                  ptr_or_null<scalar_t>(a.poison));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return ok;
}

namespace {

struct CudaKernels {
  static Draw draw(const std::optional<at::Generator>& gen) { return cuda_draw(gen); }

  static void fill_uniform(Tensor out, Draw d) {
    const int64_t n = out.numel();
    if (n == 0) return;
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_uniform_", [&] {
      uniform_kernel<scalar_t><<<grid_for(uniform_blocks(n)), kThreads, 0, stream>>>(
          out.data_ptr<scalar_t>(), n, philox_state(d));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void fill_normal(Tensor out, Draw d) {
    const int64_t n = out.numel();
    if (n == 0) return;
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_normal_", [&] {
      normal_kernel<scalar_t><<<grid_for(normal_blocks(n)), kThreads, 0, stream>>>(
          out.data_ptr<scalar_t>(), n, philox_state(d));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void sigmoid_sample(Tensor p, Tensor s, Draw d) {
    TORCH_INTERNAL_ASSERT(p.is_contiguous() && (!s.defined() || s.is_contiguous()));
    const int64_t n = p.numel();
    if (n == 0) return;
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "sigmoid_sample", [&] {
      scalar_t* pp = p.data_ptr<scalar_t>();
      if (s.defined()) {
        sigmoid_sample_kernel<scalar_t><<<grid_for(uniform_blocks(n)), kThreads, 0, stream>>>(
            pp, s.data_ptr<scalar_t>(), n, philox_state(d));
      } else {
        sigmoid_kernel<scalar_t><<<grid_for(ceil_div(n, 4)), kThreads, 0, stream>>>(pp, n, packable<scalar_t>(pp));
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static void gaussian_sample(Tensor m, Tensor b, Tensor sigma, Tensor s, Draw d) {
    TORCH_INTERNAL_ASSERT(m.dim() == 2 && m.is_contiguous() && (!s.defined() || s.is_contiguous()));
    const int64_t n = m.numel();
    if (n == 0) return;
    const Tensor bc = b.contiguous();
    const Tensor sc = sigma.defined() ? sigma.contiguous() : Tensor();
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "gaussian_sample", [&] {
      gaussian_sample_kernel<scalar_t><<<grid_for(normal_blocks(n)), kThreads, 0, stream>>>(
          m.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(sc), ptr_or_null<scalar_t>(s), n,
          m.size(1), philox_state(d));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  static Tensor apply(const UpdateArgs& a) { return apply_update_cuda(a); }

  static bool all_finite(const Tensor& t) {
    const Tensor x = t.contiguous();
    const int64_t n = x.numel();
    if (n == 0) return true;
    BadFlag bad(x);
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "all_finite", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      nonfinite_kernel<scalar_t><<<grid_for(ceil_div(n, 4)), kThreads, 0, stream>>>(
          xp, n, packable<scalar_t>(xp), bad.ptr());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return !bad.raised();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pymusicrbm, CUDA, m) {
  m.impl("philox_uniform_", &OnDevice<&fill_uniform<CudaKernels>>::call);
  m.impl("philox_normal_", &OnDevice<&fill_normal<CudaKernels>>::call);
  m.impl("sample_hidden", &OnDevice<&sample_hidden<CudaKernels>>::call);
  m.impl("sample_visible", &OnDevice<&sample_visible<CudaKernels>>::call);
  m.impl("free_energy", &free_energy);
  m.impl("cd_stats", &OnDevice<&cd_stats<CudaKernels>>::call);
  m.impl("cd_apply_", &OnDevice<&cd_apply<CudaKernels>>::call);
  m.impl("cd_step_", &OnDevice<&cd_step<CudaKernels>>::call);
  m.impl("cd_steps_", &OnDevice<&cd_steps<CudaKernels>>::call);
}

}  // namespace pymusicrbm
