// CPU kernels of the dense RBM ops: the element-wise passes fused around ATen's GEMMs. Work is split in runs of 32
// elements (the Philox stream layout of philox.h), so results do not depend on the number of threads, and the
// inner loops are written over 8 lanes so the compiler vectorises the generator, the sigmoid and the comparison.
// The Philox runs, normals and vector math come from cpu_simd.h.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#include "cpu_simd.h"
#include "rbm.h"

namespace pymusicrbm {
namespace {

using namespace simd;

constexpr int64_t kGrain = 4096;  // elements per task; below this, threading costs more than it saves

// exp for float without errno or branches, so loops over it vectorise (Cephes expf: about 1 ulp).
inline float exp_f(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer without a rounding instruction
  const float n = (x * 1.44269504088896341f + magic) - magic;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return e * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_f(-x)); }  // NaN stays NaN through exp_f's clamp
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Runs f(run, i0, i1) for each run of 32 elements of [0, n), in parallel.
template <typename F> void parallel_runs(int64_t n, F f) {
  const int64_t runs = (n + kRun - 1) / kRun;
  at::parallel_for(0, runs, kGrain / kRun, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) f(static_cast<uint64_t>(r), r * kRun, std::min(n, (r + 1) * kRun));
  });
}

// One run of m <= 32 elements: p <- sigmoid(p), s <- (u < p), with the run's words w.
template <typename T> __attribute__((always_inline)) inline void sigmoid_sample_body(T* pp, T* sp, int64_t m,
                                                                                    const uint32_t* w) {
  auto body = [&](int64_t j) __attribute__((always_inline)) {
    const T pr = sigmoid(pp[j]);
    pp[j] = pr;
    // no branch (a 50/50 branch mispredicts half the time); + (pr - pr) turns a NaN probability into a NaN sample
    sp[j] = static_cast<T>(to_uniform<T>(w[j]) < pr) + (pr - pr);
  };
  if (m == kRun) {  // full run: fixed trip count, vectorised
    for (int64_t j = 0; j < kRun; ++j) body(j);
  } else {
    for (int64_t j = 0; j < m; ++j) body(j);
  }
}

// One run without sampling: p <- sigmoid(p).
template <typename T> __attribute__((always_inline)) inline void sigmoid_body(T* pp, int64_t m) {
  if (m == kRun) {
    for (int64_t j = 0; j < kRun; ++j) pp[j] = sigmoid(pp[j]);
  } else {
    for (int64_t j = 0; j < m; ++j) pp[j] = sigmoid(pp[j]);
  }
}

template <typename T> void sigmoid_sample_run(T* pp, T* sp, int64_t m, Draw d, uint64_t run) {
  if (!sp) return sigmoid_body(pp, m);
  uint32_t w[kRun];
  philox_run(d.seed, d.offset, run, w);
  sigmoid_sample_body(pp, sp, m, w);
}

#ifdef PMR_HAVE_AVX2
__attribute__((target("avx2,fma"))) void sigmoid_sample_run_avx2(float* pp, float* sp, int64_t m, Draw d,
                                                                  uint64_t run) {
  if (!sp) return sigmoid_body(pp, m);
  uint32_t w[kRun];
  philox_run_avx2(d.seed, d.offset, run, w);
  sigmoid_sample_body(pp, sp, m, w);
}
#endif

template <typename T> void sigmoid_sample_impl(T* p, T* s, int64_t n, Draw d) {
  parallel_runs(n, [&](uint64_t run, int64_t i0, int64_t i1) {
    T* pp = p + i0;
    T* sp = s ? s + i0 : nullptr;
    const int64_t m = i1 - i0;
#ifdef PMR_HAVE_AVX2
    if constexpr (std::is_same_v<T, float>) {
      if (kHaveAvx2) return sigmoid_sample_run_avx2(pp, sp, m, d, run);
    }
#endif
    sigmoid_sample_run(pp, sp, m, d, run);
  });
}

// Normals of [i0, i1) (a run of 32 elements spans two 16-element normal runs).
template <typename T> void run_normals(Draw d, uint64_t run, int64_t m, T* z) {
  for (int half = 0; half < 2 && half * 16 < m; ++half) {
    uint32_t w[kRun];
    philox_run(d.seed, d.offset, run * 2 + half, w);
    for (int j = 0; j < 16 && half * 16 + j < m; ++j) {
      const int l = j & 7, pair = j >> 3;
      z[half * 16 + j] = box_muller<T>(w[(2 * pair) * 8 + l], w[(2 * pair + 1) * 8 + l]);
    }
  }
}

template <> void run_normals<float>(Draw d, uint64_t run, int64_t m, float* z) {
  uint32_t w[2 * kRun];
  philox_run(d.seed, d.offset, run * 2, w);
  if (m > 16) philox_run(d.seed, d.offset, run * 2 + 1, w + kRun);
  normals_f_body(w, m, z);
}

#ifdef PMR_HAVE_AVX2
__attribute__((target("avx2,fma"))) void normals_f_avx2(Draw d, uint64_t run, int64_t m, float* z) {
  uint32_t w[2 * kRun];
  philox_run_avx2(d.seed, d.offset, run * 2, w);
  if (m > 16) philox_run_avx2(d.seed, d.offset, run * 2 + 1, w + kRun);
  normals_f_body(w, m, z);
}
#endif

// Dispatches float runs to the AVX2 kernel where the CPU has it.
template <typename T> inline void normals_any(Draw d, uint64_t run, int64_t m, T* z) {
#ifdef PMR_HAVE_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (kHaveAvx2) return normals_f_avx2(d, run, m, z);
  }
#endif
  run_normals(d, run, m, z);
}

// One pass over the three parameter tensors: f(ParamUpdate, scalar_t* p, scalar_t* vel, const scalar_t* g, m, lr,
// decay, i0, i1) on chunks of each, in parallel.
template <typename F> void for_each_update_chunk(const UpdateArgs& a, F f) {
  AT_DISPATCH_FLOATING_TYPES(a.t[0].p.scalar_type(), "cd_apply_", [&] {
    for (const ParamUpdate& u : a.t) {
      scalar_t* pp = u.p.data_ptr<scalar_t>();
      scalar_t* vp = u.vel.data_ptr<scalar_t>();
      const scalar_t* gp = u.g.data_ptr<scalar_t>();
      const auto m = static_cast<scalar_t>(a.momentum), lr = static_cast<scalar_t>(a.lr);
      const auto decay = static_cast<scalar_t>(u.decay);
      at::parallel_for(0, u.p.numel(), kGrain, [&](int64_t i0, int64_t i1) { f(pp, vp, gp, m, lr, decay, i0, i1); });
    }
  });
}

}  // namespace

// Two passes: is every p + u finite (u = momentum * vel + lr * (g - decay * p))? Only then the same arithmetic again,
// storing vel <- u and p <- p + u. No scratch memory, and nothing is written unless all of W, b and c can be.
bool apply_update_cpu(const UpdateArgs& a) {
  std::atomic<bool> finite{true};
  for_each_update_chunk(a, [&](auto* pp, auto* vp, const auto* gp, auto m, auto lr, auto decay, int64_t i0,
                               int64_t i1) {
    uint32_t bad = 0;
    for (int64_t i = i0; i < i1; ++i) bad |= nonfinite(pp[i] + (m * vp[i] + lr * (gp[i] - decay * pp[i])));
    if (bad) finite = false;
  });
  if (!finite) return false;
  for_each_update_chunk(a, [&](auto* pp, auto* vp, const auto* gp, auto m, auto lr, auto decay, int64_t i0,
                               int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const auto u = m * vp[i] + lr * (gp[i] - decay * pp[i]);
      vp[i] = u;
      pp[i] += u;
    }
  });
  return true;
}

namespace {

struct CpuKernels {
  static Draw draw(const std::optional<at::Generator>& gen) {
    auto* g = at::get_generator_or_default<at::CPUGeneratorImpl>(gen, at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(g->mutex_);
    return {g->random64(), 0};
  }

  static void fill_uniform(Tensor out, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_uniform_", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      parallel_runs(out.numel(), [&](uint64_t run, int64_t i0, int64_t i1) {
        uint32_t w[kRun];
        philox_run(d.seed, d.offset, run, w);
        for (int64_t j = 0; j < i1 - i0; ++j) o[i0 + j] = to_uniform<scalar_t>(w[j]);
      });
    });
  }

  static void fill_normal(Tensor out, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_normal_", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      parallel_runs(out.numel(), [&](uint64_t run, int64_t i0, int64_t i1) { normals_any(d, run, i1 - i0, o + i0); });
    });
  }

  static void sigmoid_sample(Tensor p, Tensor s, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "sigmoid_sample", [&] {
      sigmoid_sample_impl<scalar_t>(p.data_ptr<scalar_t>(), s.defined() ? s.data_ptr<scalar_t>() : nullptr,
                                    p.numel(), d);
    });
  }

  static void gaussian_sample(Tensor m, Tensor b, Tensor sigma, Tensor s, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "gaussian_sample", [&] {
      const int64_t V = m.size(1);
      scalar_t* mp = m.data_ptr<scalar_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      const scalar_t* sg = sigma.defined() ? sigma.data_ptr<scalar_t>() : nullptr;
      scalar_t* sp = s.defined() ? s.data_ptr<scalar_t>() : nullptr;
      parallel_runs(m.numel(), [&](uint64_t run, int64_t i0, int64_t i1) {
        scalar_t z[kRun];
        if (sp) normals_any(d, run, i1 - i0, z);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t col = i % V;
          const scalar_t sd = sg ? sg[col] : scalar_t(1);
          mp[i] = bp[col] + sd * mp[i];
          if (sp) sp[i] = mp[i] + sd * z[i - i0];
        }
      });
    });
  }

  static bool apply(const UpdateArgs& a) { return apply_update_cpu(a); }

  // One pass: each column summed over the rows in row order (columns split between threads), so the result does
  // not depend on the number of threads; the inner loop runs along a row and vectorises. The sums accumulate in
  // double: a float32 running sum over hundreds of rows loses digits that ATen's cascade summation keeps.
  static Tensor weighted_column_sums(Tensor& X, int64_t B, double w0, double w1, bool scale) {
    const int64_t R = X.size(0), C = X.size(1);
    Tensor out = at::empty({C}, X.options());
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "weighted_column_sums", [&] {
      scalar_t* x = X.data_ptr<scalar_t>();
      scalar_t* o = out.data_ptr<scalar_t>();
      const auto a = static_cast<scalar_t>(w0), z = static_cast<scalar_t>(w1);
      at::parallel_for(0, C, std::max<int64_t>(256, kGrain / std::max<int64_t>(R, 1)), [&](int64_t c0, int64_t c1) {
        std::vector<double> acc(c1 - c0, 0.0);
        for (int64_t r = 0; r < R; ++r) {
          const scalar_t w = r < B ? a : z;
          scalar_t* row = x + r * C;
          if (scale) {
            for (int64_t c = c0; c < c1; ++c) {
              row[c] *= w;
              acc[c - c0] += row[c];
            }
          } else {
            for (int64_t c = c0; c < c1; ++c) acc[c - c0] += static_cast<double>(w * row[c]);
          }
        }
        for (int64_t c = c0; c < c1; ++c) o[c] = static_cast<scalar_t>(acc[c - c0]);
      });
    });
    return out;
  }

  // Sum of squared differences of two contiguous tensors of one shape. Partial sums over fixed 4096-element chunks,
  // added in order, so the result does not depend on the number of threads either.
  static Tensor sq_err(const Tensor& a, const Tensor& b) {
    const int64_t n = a.numel(), chunks = (n + kGrain - 1) / kGrain;
    std::vector<double> partial(chunks);
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mse", [&] {
      const scalar_t* ap = a.data_ptr<scalar_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          scalar_t acc[8] = {};  // 8 independent sums vectorise; one would be a serial chain
          const int64_t i0 = c * kGrain, i1 = std::min(n, i0 + kGrain);
          int64_t i = i0;
          for (; i + 8 <= i1; i += 8)
            for (int l = 0; l < 8; ++l) {
              const scalar_t d = ap[i + l] - bp[i + l];
              acc[l] += d * d;
            }
          double s = 0;
          for (; i < i1; ++i) s += static_cast<double>(ap[i] - bp[i]) * (ap[i] - bp[i]);
          for (int l = 0; l < 8; ++l) s += acc[l];
          partial[c] = s;
        }
      });
    });
    double total = 0;
    for (double s : partial) total += s;
    Tensor out = at::empty({}, a.options());
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sq_err",
                               [&] { *out.data_ptr<scalar_t>() = narrow_float<scalar_t>(total); });
    return out;
  }

  static bool all_finite(const Tensor& t) {
    std::atomic<bool> finite{true};
    const Tensor x = t.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "all_finite", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), kGrain * 4, [&](int64_t i0, int64_t i1) {
        uint32_t bad = 0;
        for (int64_t i = i0; i < i1; ++i) bad |= nonfinite(xp[i]);
        if (bad) finite = false;
      });
    });
    return finite;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(pymusicrbm, CPU, m) {
  m.impl("philox_uniform_", &fill_uniform<CpuKernels>);
  m.impl("philox_normal_", &fill_normal<CpuKernels>);
  m.impl("sample_hidden", &sample_hidden<CpuKernels>);
  m.impl("sample_visible", &sample_visible<CpuKernels>);
  m.impl("free_energy", &free_energy);
  m.impl("cd_stats", &cd_stats<CpuKernels>);
  m.impl("cd_apply_", &cd_apply<CpuKernels>);
  m.impl("cd_step_", &cd_step<CpuKernels>);
  m.impl("cd_steps_", &cd_steps<CpuKernels>);
}

}  // namespace pymusicrbm
