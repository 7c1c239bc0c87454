// What the dense and the convolutional ops share on every device: the types, argument checks and policies, and
// the update op cd_apply_ (momentum, weight decay, learning rate), which applies the statistics of either kind.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/ParallelGuard.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

// MKL's thread count for the calling thread (in libtorch_cpu where torch is built with MKL; absent otherwise, hence
// weak): returns the previous value, 0 meaning MKL's global setting.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace pymusicrbm {

using at::Tensor;

// One generator draw per sampling phase: a Philox (seed, offset). Under CUDA graph capture the values are only
// known at replay: the draw then holds where the generator keeps them on the device and its offset within the
// graph (at::PhiloxCudaState's captured form), and the kernels read them (see cuda/launch.cuh). Unused on the CPU.
struct Draw {
  uint64_t seed;
  uint64_t offset;
  int64_t* seed_ptr = nullptr;
  int64_t* offset_ptr = nullptr;
  uint64_t offset_intragraph = 0;
};

enum class Visible { Bernoulli, Gaussian };

inline Visible parse_visible(std::string_view s, const char* op) {
  if (s == "bernoulli") return Visible::Bernoulli;
  if (s == "gaussian") return Visible::Gaussian;
  TORCH_CHECK(false, op, ": visible must be 'bernoulli' or 'gaussian', got '", std::string(s), "'");
}

inline void check_dtype_device(const char* op, const char* name, const Tensor& t, const char* ref_name,
                               const Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but ",
              ref_name, " has dtype ", ref.scalar_type(), "; all tensors must share one dtype");
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device(), "; all tensors must be on one device");
}

// double -> T, with values beyond T's range as +-inf (a diverged model's error must reach the divergence checks,
// not fail the conversion)
template <class T> T narrow_float(double x) {
  const double big = static_cast<double>(std::numeric_limits<T>::max());
  if (x > big) return std::numeric_limits<T>::infinity();
  if (x < -big) return -std::numeric_limits<T>::infinity();
  return static_cast<T>(x);  // NaN stays NaN
}

// Runs the scope on one thread when the step is small (CPU only): ATen's and our element-wise passes, and MKL's
// GEMMs (its per-thread setting, where torch has MKL). Below about 8 million multiply-adds (e.g. 50 -> 50 at batch
// 256) a step takes a few hundred microseconds, where forking and joining a thread team for each GEMM and pass costs
// more than it saves, and on a loaded machine the idle team's spin-waiting takes the cores the work needs (measured:
// 2 threads 1.5-4x slower than 1 on 2 busy cores). Results do not change: every pass is laid out independently of
// the number of threads.
class SerialIfSmall {
 public:
  SerialIfSmall(const Tensor& t, double multiply_adds) {
    if (!t.device().is_cpu() || multiply_adds >= 8e6) return;
    // ATen sizes this thread's OpenMP team on its first parallel call, from MKL's thread count: first under the
    // MKL setting below, it would size it 1 for good (every later op, GEMMs included, on one thread)
    at::internal::lazy_init_num_threads();
    guard_.emplace(true);
    if (MKL_Set_Num_Threads_Local) mkl_before_ = MKL_Set_Num_Threads_Local(1);
  }
  ~SerialIfSmall() {
    if (mkl_before_ >= 0) MKL_Set_Num_Threads_Local(mkl_before_);
  }
  SerialIfSmall(const SerialIfSmall&) = delete;
  SerialIfSmall& operator=(const SerialIfSmall&) = delete;

 private:
  std::optional<c10::ParallelGuard> guard_;
  int mkl_before_ = -1;
};

// The sampling hyper-parameters of every CD op.
inline void check_cd_sampling(const char* op, int64_t k, double sparsity_target, double sparsity_cost) {
  TORCH_CHECK(k >= 1, op, ": k (Gibbs steps) must be >= 1, got ", k);
  TORCH_CHECK(sparsity_cost >= 0, op, ": sparsity_cost must be >= 0, got ", sparsity_cost);
  TORCH_CHECK(sparsity_target >= 0 && sparsity_target <= 1, op, ": sparsity_target must be in [0, 1], got ",
              sparsity_target);
}

// The policy for non-finite data in the sampling ops (dense and conv alike): a NaN must never become a
// plausible-looking sample. On the CPU the check costs no synchronisation, so the op raises; on a GPU it would stall
// the stream, so the kernels propagate instead: a NaN probability or mean gives a NaN sample.
inline bool cheap_to_check(const Tensor& t) { return t.device().is_cpu(); }

// The weights of the positive (data) and negative (chain) phases: a negative value asks for the default 1/rows.
inline double phase_weight(const char* op, const char* name, double w, int64_t rows) {
  TORCH_CHECK(std::isfinite(w), op, ": ", name, " must be finite (or negative for the default), got ", w);
  return w < 0 ? 1.0 / static_cast<double>(rows) : w;
}

// One parameter tensor of the apply step and its velocity and statistic:
//   u = momentum * vel + lr * (g - decay * p);  vel <- u;  p <- p + u.
struct ParamUpdate {
  Tensor p, vel, g;
  double decay;
};
// The update of (W, b, c): applied to all three only if every p + u is finite. `poison` (0-d, optional) is set to NaN
// when the update is rejected (the fused step's error on a GPU, which then needs no host synchronisation).
struct UpdateArgs {
  ParamUpdate t[3];
  double lr, momentum;
  Tensor poison;
};

// The device implementations of K::apply, shared by the dense and the convolutional kernels (rbm_cpu.cpp,
// cuda/rbm_cuda.cu): true / a 0-d bool device tensor that is true when the update was applied.
bool apply_update_cpu(const UpdateArgs& a);
Tensor apply_update_cuda(const UpdateArgs& a);

inline void check_update_hyperparameters(const char* op, double lr, double momentum, double weight_decay) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0, op, ": lr must be >= 0, got ", lr);
  TORCH_CHECK(momentum >= 0 && momentum < 1, op, ": momentum must be in [0, 1), got ", momentum);
  TORCH_CHECK(std::isfinite(weight_decay) && weight_decay >= 0, op, ": weight_decay must be >= 0, got ",
              weight_decay);
}

// Runs K::apply (bool on the CPU, a 0-d bool device tensor on a GPU) and returns the flag as a 0-d bool tensor.
template <class K> Tensor apply_flag(const UpdateArgs& a) {
  auto ok = K::apply(a);
  if constexpr (std::is_same_v<decltype(ok), bool>) {
    return at::scalar_tensor(ok, a.t[0].p.options().dtype(at::kBool));
  } else {
    return ok;
  }
}

// cd_apply_: the momentum / weight-decay update of any (W, b, c) (dense or convolutional: element-wise, any shapes).
template <class K>
Tensor cd_apply(Tensor& W, Tensor& b, Tensor& c, Tensor& W_vel, Tensor& b_vel, Tensor& c_vel, const Tensor& dW,
                const Tensor& db, const Tensor& dc, double lr, double momentum, double weight_decay) {
  const char* op = "cd_apply_";
  check_dtype_device(op, "W", W, "W", W);
  const std::pair<const Tensor*, const char*> groups[3][3] = {{{&W, "W"}, {&W_vel, "W_vel"}, {&dW, "dW"}},
                                                              {{&b, "b"}, {&b_vel, "b_vel"}, {&db, "db"}},
                                                              {{&c, "c"}, {&c_vel, "c_vel"}, {&dc, "dc"}}};
  for (const auto& g : groups)
    for (int i = 0; i < 3; ++i) {
      const auto& [t, name] = g[i];
      check_dtype_device(op, name, *t, "W", W);
      TORCH_CHECK(t->sizes() == g[0].first->sizes(), op, ": ", name, " must have ", g[0].second, "'s shape ",
                  g[0].first->sizes(), ", got ", t->sizes());
      TORCH_CHECK(i == 2 || t->is_contiguous(), op, ": ", name, " is updated in place and must be contiguous");
    }
  check_update_hyperparameters(op, lr, momentum, weight_decay);
  return apply_flag<K>(UpdateArgs{{{W, W_vel, dW.contiguous(), weight_decay},
                                   {b, b_vel, db.contiguous(), 0.0},
                                   {c, c_vel, dc.contiguous(), 0.0}},
                                  lr, momentum, Tensor()});
}

// What cd_stats returns, plus the chains' new visible state vs (advanced in place by the caller).
struct CDStats {
  Tensor dW, db, dc, sq_err, vs;
};

// The parameters and velocities a fused step updates in place.
inline void check_in_place(const char* op, const Tensor& W, const Tensor& b, const Tensor& c, const Tensor& W_vel,
                           const Tensor& b_vel, const Tensor& c_vel) {
  for (const auto& [t, name] : {std::pair{&W, "W"}, {&b, "b"}, {&c, "c"}, {&W_vel, "W_vel"}, {&b_vel, "b_vel"},
                                {&c_vel, "c_vel"}})
    TORCH_CHECK(t->is_contiguous(), op, ": ", name, " is updated in place and must be contiguous");
}

// The end of a fused step (cd_step_, conv_cd_step_): cd_apply_'s update with the statistics s, the chains advanced,
// the mean squared reconstruction error returned. A non-finite update is never applied: on the CPU the op raises
// (and leaves the chains alone too); on a GPU it returns NaN instead (read once per epoch by the training loop, no
// host sync), the chains advanced.
template <class K>
Tensor apply_fused_step(const char* op, CDStats& s, Tensor& W, Tensor& b, Tensor& c, Tensor& W_vel, Tensor& b_vel,
                        Tensor& c_vel, const std::optional<Tensor>& chains, int64_t numel, double lr,
                        double momentum, double weight_decay) {
  Tensor recon = s.sq_err;  // / numel: by hand on the CPU, where ATen's div_ by a scalar costs ~10 us a step
  if (recon.is_cpu()) {
    AT_DISPATCH_FLOATING_TYPES(recon.scalar_type(), "cd_step_",
                               [&] { *recon.data_ptr<scalar_t>() /= static_cast<scalar_t>(numel); });
  } else {
    recon.div_(static_cast<double>(numel));
  }
  auto ok = K::apply(UpdateArgs{{{W, W_vel, s.dW, weight_decay}, {b, b_vel, s.db, 0.0}, {c, c_vel, s.dc, 0.0}},
                                lr, momentum, recon});
  if constexpr (std::is_same_v<decltype(ok), bool>) {
    TORCH_CHECK(ok, op, ": the update is not finite (training diverged); the parameters were not changed. "
                        "Lower lr, standardise the data (Gaussian visible units expect zero mean, unit variance) "
                        "or add weight_decay");
  }
  if (chains) chains->copy_(s.vs);
  return recon;
}

}  // namespace pymusicrbm
