// CPU kernels of the dense RBM ops: the element-wise passes fused around ATen's GEMMs. Work is split in runs of 32
// elements (the Philox stream layout of philox.h), so results do not depend on the number of threads, and the
// inner loops are written over 8 lanes so the compiler vectorises the generator, the sigmoid and the comparison.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "philox.h"
#include "rbm.h"

namespace pymusicrbm {
namespace {

constexpr int64_t kRun = 32;     // elements per Philox run (8 blocks x 4 words)
constexpr int64_t kGrain = 4096;  // elements per task; below this, threading costs more than it saves

// The 32 words of run `run`, in element order: out[w * 8 + l] is word w of block run * 8 + l (see philox.h).
#if defined(__SSE2__)
// 4 lanes of (a * m): high and low 32-bit halves. _mm_mul_epu32 multiplies the even lanes, so odd lanes are
// shifted down and multiplied separately, then both are interleaved back into lane order.
inline void mulhilo4(__m128i a, __m128i m, __m128i& hi, __m128i& lo) {
  const __m128i pe = _mm_mul_epu32(a, m);
  const __m128i po = _mm_mul_epu32(_mm_srli_epi64(a, 32), m);
  const __m128i e = _mm_shuffle_epi32(pe, _MM_SHUFFLE(3, 1, 2, 0));  // lo0 lo2 hi0 hi2
  const __m128i o = _mm_shuffle_epi32(po, _MM_SHUFFLE(3, 1, 2, 0));  // lo1 lo3 hi1 hi3
  lo = _mm_unpacklo_epi32(e, o);
  hi = _mm_unpackhi_epi32(e, o);
}

inline void philox_run(uint64_t seed, uint64_t offset, uint64_t run, uint32_t out[32]) {
  const uint64_t base = run * 8;  // a multiple of 8: adding a lane index never carries into the high word
  const __m128i lanes = _mm_setr_epi32(0, 1, 2, 3);
  __m128i c0[2], c1[2], c2[2], c3[2];
  for (int h = 0; h < 2; ++h) {
    c0[h] = _mm_add_epi32(_mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(base) + 4 * h)), lanes);
    c1[h] = _mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32)));
    c2[h] = _mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset)));
    c3[h] = _mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset >> 32)));
  }
  const __m128i m0 = _mm_set1_epi32(static_cast<int>(0xD2511F53u)), m1 = _mm_set1_epi32(static_cast<int>(0xCD9E8D57u));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const __m128i vk0 = _mm_set1_epi32(static_cast<int>(k0)), vk1 = _mm_set1_epi32(static_cast<int>(k1));
    for (int h = 0; h < 2; ++h) {
      __m128i hi0, lo0, hi1, lo1;
      mulhilo4(c0[h], m0, hi0, lo0);
      mulhilo4(c2[h], m1, hi1, lo1);
      c0[h] = _mm_xor_si128(_mm_xor_si128(hi1, c1[h]), vk0);
      c1[h] = lo1;
      c2[h] = _mm_xor_si128(_mm_xor_si128(hi0, c3[h]), vk1);
      c3[h] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int h = 0; h < 2; ++h) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 0 + 4 * h), c0[h]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8 + 4 * h), c1[h]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16 + 4 * h), c2[h]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 24 + 4 * h), c3[h]);
  }
}

// The same with 8 lanes, for CPUs with AVX2 (chosen at run time).
__attribute__((target("avx2"))) inline void mulhilo8(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i pe = _mm256_mul_epu32(a, m);
  const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

__attribute__((target("avx2"))) inline void philox_run_avx2(uint64_t seed, uint64_t offset, uint64_t run,
                                                             uint32_t out[32]) {
  const uint64_t base = run * 8;
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base))),
                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32)));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset)));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(offset >> 32)));
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    mulhilo8(c0, m0, hi0, lo0);
    mulhilo8(c2, m1, hi1, lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), c0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), c1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), c2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 24), c3);
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#define PMR_HAVE_AVX2 1
#else
inline void philox_run(uint64_t seed, uint64_t offset, uint64_t run, uint32_t out[32]) {
  for (int l = 0; l < 8; ++l) {
    const Philox4 r = philox(seed, offset, run * 8 + l);
    for (int w = 0; w < 4; ++w) out[w * 8 + l] = r.x[w];
  }
}
#endif

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

// Non-finite test on the exponent bits: an integer OR-reduction vectorises, a float sum would be one serial chain.
inline uint32_t nonfinite(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x7F800000u) == 0x7F800000u;
}
inline uint32_t nonfinite(double x) {
  uint64_t u;
  std::memcpy(&u, &x, 8);
  return (u & 0x7FF0000000000000ull) == 0x7FF0000000000000ull;
}

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

template <typename T> void sigmoid_sample_run(T* pp, T* sp, int64_t m, Draw d, uint64_t run) {
  uint32_t w[kRun];
  philox_run(d.seed, d.offset, run, w);
  sigmoid_sample_body(pp, sp, m, w);
}

#ifdef PMR_HAVE_AVX2
__attribute__((target("avx2,fma"))) void sigmoid_sample_run_avx2(float* pp, float* sp, int64_t m, Draw d,
                                                                  uint64_t run) {
  uint32_t w[kRun];
  philox_run_avx2(d.seed, d.offset, run, w);
  sigmoid_sample_body(pp, sp, m, w);
}
#endif

template <typename T> void sigmoid_sample_impl(T* p, T* s, int64_t n, Draw d) {
  parallel_runs(n, [&](uint64_t run, int64_t i0, int64_t i1) {
    T* pp = p + i0;
    const int64_t m = i1 - i0;
    if (!s) {
      for (int64_t j = 0; j < m; ++j) pp[j] = sigmoid(pp[j]);
      return;
    }
#ifdef PMR_HAVE_AVX2
    if constexpr (std::is_same_v<T, float>) {
      if (kHaveAvx2) return sigmoid_sample_run_avx2(pp, s + i0, m, d, run);
    }
#endif
    sigmoid_sample_run(pp, s + i0, m, d, run);
  });
}

// Normals of [i0, i1) (a run of 32 elements spans two 16-element normal runs).
template <typename T> void normals(Draw d, uint64_t run, int64_t m, T* z) {
  for (int half = 0; half < 2 && half * 16 < m; ++half) {
    uint32_t w[kRun];
    philox_run(d.seed, d.offset, run * 2 + half, w);
    for (int j = 0; j < 16 && half * 16 + j < m; ++j) {
      const int l = j & 7, pair = j >> 3;
      z[half * 16 + j] = box_muller<T>(w[(2 * pair) * 8 + l], w[(2 * pair + 1) * 8 + l]);
    }
  }
}

// log for positive normal floats without errno or branches (Cephes logf: about 1 ulp), so loops over it vectorise.
inline float log_f(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, 4);
  float e = static_cast<float>((bits >> 23) - 126);
  const int32_t mbits = (bits & 0x007FFFFF) | 0x3F000000;  // mantissa scaled to [0.5, 1): x = m * 2^e
  float m;
  std::memcpy(&m, &mbits, 4);
  const bool low = m < 0.707106781186547524f;  // keep f = m - 1 in [sqrt(1/2) - 1, sqrt(2) - 1]
  e = low ? e - 1.0f : e;
  const float f = (low ? m + m : m) - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return (f + y) + 0.693359375f * e;
}

// cos(2 pi u) for u in [0, 1] without branches: folded by symmetry to an angle in [0, pi/4], where Cephes' sinf or
// cosf polynomial is accurate to about 1 ulp. Folding in turns keeps every subtraction exact (Sterbenz).
inline float cos_2pi_f(float u) {
  const float a = std::min(u, 1.0f - u);  // cos(2 pi u) = cos(2 pi (1 - u)); a in [0, 1/2]
  const bool neg = a > 0.25f;             // cos(2 pi a) = -cos(2 pi (1/2 - a))
  const float b = neg ? 0.5f - a : a;     // [0, 1/4]
  const bool use_sin = b > 0.125f;        // cos(2 pi b) = sin(2 pi (1/4 - b))
  const float x = (use_sin ? 0.25f - b : b) * 6.28318530717958648f;  // [0, pi/4]
  const float z = x * x;
  const float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z -
                  0.5f * z + 1.0f;
  const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * x + x;
  const float r = use_sin ? s : c;
  return neg ? -r : r;
}

// Float normals of one 32-element run from the words of its two normal runs (w: 64 words). Element k takes words
// a = w[16 * (k / 8) + k % 8] and b = a's index + 8 (philox.h's layout), so each group of 8 elements loads whole
// vectors and the loop over them vectorises; same arithmetic as box_muller<float> up to the log/cos rounding.
__attribute__((always_inline)) inline void normals_f_body(const uint32_t* w, int64_t m, float* z) {
  float r2[kRun], c[kRun];
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 8; ++l) {
      const uint32_t a = w[16 * g + l], b = w[16 * g + 8 + l];
      // to_uniform<float>, with a signed conversion (SSE2 has no unsigned one; the value fits in 24 bits)
      const float u1 = (static_cast<float>(static_cast<int32_t>(a >> 8)) + 0.5f) * (1.0f / 16777216.0f);
      const float u2 = (static_cast<float>(static_cast<int32_t>(b >> 8)) + 0.5f) * (1.0f / 16777216.0f);
      r2[8 * g + l] = -2.0f * log_f(u1);  // u1 >= 2^-25: finite and >= 0
      c[8 * g + l] = cos_2pi_f(u2);
    }
  }
  float out[kRun];
  float* o = m == kRun ? z : out;
#if defined(__SSE2__)
  // std::sqrt's errno branch would stop the vectoriser, so the square roots are taken by hand
  for (int k = 0; k < kRun; k += 4)
    _mm_storeu_ps(o + k, _mm_mul_ps(_mm_sqrt_ps(_mm_loadu_ps(r2 + k)), _mm_loadu_ps(c + k)));
#else
  for (int k = 0; k < kRun; ++k) o[k] = std::sqrt(r2[k]) * c[k];
#endif
  if (o != z) std::memcpy(z, out, sizeof(float) * m);
}

template <> void normals<float>(Draw d, uint64_t run, int64_t m, float* z) {
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
  normals(d, run, m, z);
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
}

}  // namespace pymusicrbm
