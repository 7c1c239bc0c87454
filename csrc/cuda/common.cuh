// Shared by the CUDA kernels of the dense and convolutional ops.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>

#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

#include "rbm.h"  // Draw

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
// any phase): a Philox (seed, offset) reserved from the CUDA generator, unpacked on the host.
inline Draw cuda_draw(const std::optional<at::Generator>& gen) {
  auto* g = at::get_generator_or_default<at::CUDAGeneratorImpl>(gen, at::cuda::detail::getDefaultCUDAGenerator());
  at::PhiloxCudaState st;
  {
    std::lock_guard<std::mutex> lock(g->mutex_);
    st = g->philox_cuda_state(4);
  }
  TORCH_CHECK(!st.captured_,
              "pymusicrbm: the sampling ops cannot be captured in a CUDA graph yet (their random state is read on "
              "the host); run them eagerly, or use torch.compile without CUDA graphs (mode='default')");
  return {st.seed_.val, st.offset_.val};
}

}  // namespace pymusicrbm
