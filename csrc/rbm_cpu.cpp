// CPU kernels of the dense RBM ops: the element-wise passes fused around ATen's GEMMs. Element i of every random
// draw is a pure function of (seed, i) (see philox.h), so results do not depend on the number of threads.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <mutex>

#include "philox.h"
#include "rbm.h"

namespace pymusicrbm {
namespace {

constexpr int64_t kGrain = 2048;  // elements per task; below this, threading costs more than it saves

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// Runs f(i0, i1) over [0, n) in chunks aligned to 4 elements, the width of one Philox block.
template <typename F> void parallel_blocks(int64_t n, F f) {
  const int64_t blocks = (n + 3) / 4;
  at::parallel_for(0, blocks, kGrain / 4, [&](int64_t b0, int64_t b1) { f(b0 * 4, std::min(n, b1 * 4)); });
}

struct CpuKernels {
  static Draw draw(const std::optional<at::Generator>& gen) {
    auto* g = at::get_generator_or_default<at::CPUGeneratorImpl>(gen, at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(g->mutex_);
    return {g->random64(), 0};
  }

  static void fill_uniform(Tensor out, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_uniform_", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      parallel_blocks(out.numel(), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) o[i] = uniform_at<scalar_t>(d.seed, d.offset, i);
      });
    });
  }

  static void fill_normal(Tensor out, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_normal_", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      parallel_blocks(out.numel(), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) o[i] = normal_at<scalar_t>(d.seed, d.offset, i);
      });
    });
  }

  static void sigmoid_sample(Tensor p, Tensor s, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "sigmoid_sample", [&] {
      scalar_t* pp = p.data_ptr<scalar_t>();
      scalar_t* sp = s.defined() ? s.data_ptr<scalar_t>() : nullptr;
      parallel_blocks(p.numel(), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) pp[i] = sigmoid(pp[i]);
        if (!sp) return;
        for (int64_t i = i0; i < i1; i += 4) {
          const Philox4 r = philox(d.seed, d.offset, static_cast<uint64_t>(i) >> 2);
          for (int64_t j = 0; j < 4 && i + j < i1; ++j)
            sp[i + j] = to_uniform<scalar_t>(r.x[j]) < pp[i + j] ? scalar_t(1) : scalar_t(0);
        }
      });
    });
  }

  static void gaussian_sample(Tensor m, Tensor b, Tensor sigma, Tensor s, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "gaussian_sample", [&] {
      const int64_t V = m.size(1);
      scalar_t* mp = m.data_ptr<scalar_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      const scalar_t* sg = sigma.defined() ? sigma.data_ptr<scalar_t>() : nullptr;
      scalar_t* sp = s.defined() ? s.data_ptr<scalar_t>() : nullptr;
      parallel_blocks(m.numel(), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t col = i % V;
          const scalar_t sd = sg ? sg[col] : scalar_t(1);
          mp[i] = bp[col] + sd * mp[i];
          if (sp) sp[i] = mp[i] + sd * normal_at<scalar_t>(d.seed, d.offset, i);
        }
      });
    });
  }

  static bool prepare_update(Tensor g, Tensor vel, Tensor p, double momentum, double lr_wd) {
    std::atomic<bool> finite{true};
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "prepare_update", [&] {
      scalar_t* gp = g.data_ptr<scalar_t>();
      const scalar_t* vp = vel.data_ptr<scalar_t>();
      const scalar_t* pp = p.data_ptr<scalar_t>();
      const auto m = static_cast<scalar_t>(momentum), wd = static_cast<scalar_t>(lr_wd);
      at::parallel_for(0, g.numel(), kGrain, [&](int64_t i0, int64_t i1) {
        bool ok = true;
        for (int64_t i = i0; i < i1; ++i) {
          const scalar_t u = m * vp[i] + gp[i] - wd * pp[i];
          gp[i] = u;
          ok &= std::isfinite(u) && std::isfinite(pp[i] + u);
        }
        if (!ok) finite = false;
      });
    });
    return finite;
  }

  static void apply_update(Tensor p, Tensor vel, Tensor g) {
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "apply_update", [&] {
      scalar_t* pp = p.data_ptr<scalar_t>();
      scalar_t* vp = vel.data_ptr<scalar_t>();
      const scalar_t* gp = g.data_ptr<scalar_t>();
      at::parallel_for(0, g.numel(), kGrain, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          vp[i] = gp[i];
          pp[i] += gp[i];
        }
      });
    });
  }

  static bool all_finite(const Tensor& t) {
    std::atomic<bool> finite{true};
    const Tensor x = t.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "all_finite", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), kGrain * 4, [&](int64_t i0, int64_t i1) {
        scalar_t acc = 0;  // x * 0 is NaN exactly when x is Inf or NaN; vectorises, unlike an early exit
        for (int64_t i = i0; i < i1; ++i) acc += xp[i] * scalar_t(0);
        if (std::isnan(acc)) finite = false;
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
  m.impl("cd_step_", &cd_step<CpuKernels>);
}

}  // namespace pymusicrbm
