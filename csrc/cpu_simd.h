// The CPU's SIMD layer, shared by the dense and the convolutional kernels: one instruction-set dispatch scheme, GCC
// vector types, the vector math (Cephes exp, log, cos) and the one CPU implementation of the Philox streams.
//
// Dispatch: GCC function multiversioning, resolved once when the library loads (an ifunc), so the library runs
// anywhere and is fast where it can be. A kernel that loops over elements is declared PMR_CLONES: GCC compiles its
// one body for AVX-512, AVX2+FMA and baseline x86-64 (target_clones). Everything it calls is PMR_INLINE (inlined
// into each clone) and written either over 64-byte GCC vector types or as fixed-trip scalar loops over lanes, which
// the compiler vectorises for the clone's instruction set. The one exception is philox_runs: the 32 x 32 -> 64-bit
// lane products of its rounds have no vector-extension form that GCC compiles well below AVX-512, so its rounds,
// written once, are instantiated with the instruction set's multiply in versions of their own (cpu_simd.cpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "common.h"  // Draw
#include "philox.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte vectors never cross a non-inlined call

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define PMR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PMR_CLONES
#endif
#define PMR_INLINE __attribute__((always_inline)) inline

namespace pymusicrbm::simd {

// ---- 64-byte vectors -----------------------------------------------------------------------------------------

template <class T> struct VecT;
template <> struct VecT<float> {
  typedef float v __attribute__((vector_size(64)));
  typedef int32_t i __attribute__((vector_size(64)));
};
template <> struct VecT<double> {
  typedef double v __attribute__((vector_size(64)));
  typedef int64_t i __attribute__((vector_size(64)));
};
template <class T> using vec = typename VecT<T>::v;
template <class T> using ivec = typename VecT<T>::i;
template <class T> constexpr int64_t kL = 64 / sizeof(T);  // lanes

template <class T> PMR_INLINE vec<T> loadu(const T* p) {
  vec<T> r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
template <class T> PMR_INLINE void storeu(T* p, vec<T> x) { std::memcpy(p, &x, sizeof(x)); }
template <class T> PMR_INLINE vec<T> splat(T x) { return vec<T>{} + x; }
// mask lanes (all ones / all zeros, as vector comparisons give) -> x where set, 0 elsewhere; by bit operations,
// since GCC scalarises some vector ?: forms.
template <class T> PMR_INLINE vec<T> mask_and(ivec<T> m, vec<T> x) {
  ivec<T> xi;
  std::memcpy(&xi, &x, sizeof(xi));
  xi &= m;
  std::memcpy(&x, &xi, sizeof(x));
  return x;
}
template <class T> PMR_INLINE vec<T> mask_to_one(ivec<T> m) { return mask_and<T>(m, splat(T(1))); }
// All ones where a < b: the sign of a - b (exact for the values compared here), since GCC scalarises vector
// comparisons inside target_clones functions.
template <class T> PMR_INLINE ivec<T> less_mask(vec<T> a, vec<T> b) {
  const vec<T> d = a - b;
  ivec<T> di;
  std::memcpy(&di, &d, sizeof(di));
  return di >> (8 * sizeof(T) - 1);
}
template <class T> PMR_INLINE T hsum(vec<T> x) {
  T s = 0;
  for (int64_t l = 0; l < kL<T>; ++l) s += x[l];
  return s;
}

// exp(x), vectorised (Cephes): x = n ln2 + r, |r| <= ln2 / 2; exp(r) by a polynomial (float) or a Pade
// approximant (double); 2^n by building the exponent bits. ~1 ulp; arguments are clamped to the normal range.
PMR_INLINE vec<float> vexp(vec<float> x) {
  using V = vec<float>;
  using I = ivec<float>;
  x = x < -87.0f ? splat(-87.0f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
  const V magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits
  V t = x * 1.44269504088896341f + magic;
  I ti;
  std::memcpy(&ti, &t, sizeof(ti));
  const V n = t - magic;
  V r = x - n * 0.693359375f + n * 2.12194440e-4f;
  const V z = r * r;
  V y = splat(1.9875691500E-4f);
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * z + r + 1.0f;
  I mi;
  std::memcpy(&mi, &magic, sizeof(mi));
  const I e = (ti - mi + 127) << 23;
  V s;
  std::memcpy(&s, &e, sizeof(s));
  return y * s;
}

PMR_INLINE vec<double> vexp(vec<double> x) {
  using V = vec<double>;
  using I = ivec<double>;
  x = x < -708.0 ? splat(-708.0) : x;
  x = x > 709.0 ? splat(709.0) : x;
  const V magic = splat(6755399441055744.0);  // 1.5 * 2^52
  V t = x * 1.4426950408889634073599 + magic;
  I ti;
  std::memcpy(&ti, &t, sizeof(ti));
  const V n = t - magic;
  V r = x - n * 6.93145751953125E-1 - n * 1.42860682030941723212E-6;
  const V xx = r * r;
  V px = ((splat(1.26177193074810590878E-4) * xx + 3.02994407707441961300E-2) * xx + 9.99999999999999999910E-1) * r;
  V qx = ((splat(3.00198505138664455042E-6) * xx + 2.52448340349684104192E-3) * xx + 2.27265548208155028766E-1) *
             xx + 2.00000000000000000009E0;
  V y = 1.0 + 2.0 * (px / (qx - px));
  I mi;
  std::memcpy(&mi, &magic, sizeof(mi));
  const I e = (ti - mi + 1023) << 52;
  V s;
  std::memcpy(&s, &e, sizeof(s));
  return y * s;
}

template <class T> PMR_INLINE vec<T> vsigmoid(vec<T> x) { return T(1) / (T(1) + vexp(-x)); }

// ---- Philox streams ------------------------------------------------------------------------------------------

constexpr int64_t kRun = 32;     // elements per Philox run (8 blocks x 4 words)
constexpr int64_t kPairRuns = 2;  // runs per philox_runs call

// The words of the Philox runs run and run + 1 of the draw d in philox.h's layout: out[h * 32 + w * 8 + l] is word
// w of block (run + h) * 8 + l. Defined in cpu_simd.cpp, once per instruction set (see the dispatch note above).
void philox_runs(const Draw& d, uint64_t run, uint32_t* out);

// to_uniform<T> (philox.h) by signed conversions, which vectorise on every instruction set (the values fit).
template <class T> PMR_INLINE T uniform_of(uint32_t x) {
  if constexpr (sizeof(T) == 4) {
    return (static_cast<float>(static_cast<int32_t>(x >> 8)) + 0.5f) * (1.0f / 16777216.0f);
  } else {
    return (static_cast<double>(static_cast<int64_t>(x)) + 0.5) * (1.0 / 4294967296.0);
  }
}

// out[i] = uniform_at<T>(seed, offset, start + i) for i < n.
template <class T> PMR_INLINE void uniforms(const Draw& d, int64_t start, int64_t n, T* out) {
  constexpr int64_t R = kPairRuns * kRun;
  const int64_t end = start + n;
  for (int64_t run = start >> 5; run * kRun < end; run += kPairRuns) {
    uint32_t w[R];
    philox_runs(d, static_cast<uint64_t>(run), w);
    const int64_t base = run * kRun, i0 = std::max(start, base), i1 = std::min(end, base + R);
    T* o = out + (i0 - start);
    if (i0 == base && i1 == base + R) {
      for (int j = 0; j < R; ++j) o[j] = uniform_of<T>(w[j]);
    } else {
      for (int64_t i = i0; i < i1; ++i) o[i - i0] = uniform_of<T>(w[i - base]);
    }
  }
}

// Bernoulli samples: 1 where u < p, without a branch (a 50/50 branch mispredicts half the time); + (p - p) turns a
// NaN probability into a NaN sample.
template <class T> PMR_INLINE vec<T> bernoulli(vec<T> u, vec<T> p) {
  return mask_to_one<T>(less_mask<T>(u, p)) + (p - p);
}

// ---- normals ---------------------------------------------------------------------------------------------------

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

// The normals of run `run` (normal_at's stream: its 32 elements take the words of normal runs 2 run and 2 run + 1),
// m <= 32 of them.
template <class T> PMR_INLINE void normals_run(const Draw& d, uint64_t run, int64_t m, T* z) {
  uint32_t w[kPairRuns * kRun];
  philox_runs(d, run * 2, w);
  if constexpr (sizeof(T) == 4) {
    normals_f_body(w, m, z);
  } else {
    // element half * 16 + j of the run takes words 2 pair and 2 pair + 1 (pair = j / 8) of block j % 8 of normal
    // run 2 run + half
    for (int64_t i = 0; i < m; ++i) {
      const int64_t half = i >> 4, j = i & 15, l = j & 7, pair = j >> 3;
      z[i] = box_muller<T>(w[half * 32 + (2 * pair) * 8 + l], w[half * 32 + (2 * pair + 1) * 8 + l]);
    }
  }
}

// out[i] = normal_at<T>(seed, offset, start + i) for i < n (float: up to the rounding of log_f / cos_2pi_f).
template <class T> PMR_INLINE void normals(const Draw& d, int64_t start, int64_t n, T* out) {
  const int64_t end = start + n;
  for (int64_t run = start >> 5; run * 32 < end; ++run) {
    const int64_t base = run * 32, i0 = std::max(start, base), i1 = std::min(end, base + kRun);
    if (i0 == base && i1 == base + kRun) {
      normals_run(d, static_cast<uint64_t>(run), kRun, out + (i0 - start));
    } else {
      T z[kRun];
      normals_run(d, static_cast<uint64_t>(run), i1 - base, z);
      std::memcpy(out + (i0 - start), z + (i0 - base), (i1 - i0) * sizeof(T));
    }
  }
}

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

}  // namespace pymusicrbm::simd
