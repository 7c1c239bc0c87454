// Shared by the CUDA op registrations.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include <tuple>
#include <utility>

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

}  // namespace pymusicrbm
