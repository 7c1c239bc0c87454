// CPU kernels of the dense RBM ops: the element-wise passes fused around ATen's GEMMs. Work is split in runs of 32
// elements (the Philox stream layout of philox.h), so results do not depend on the number of threads. The Philox
// runs, normals, vector math and instruction-set dispatch come from cpu_simd.h, shared with the conv kernels.
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

// Elements per parallel task (ATen's own grain): below it, waking the thread team costs more than the work saves.
constexpr int64_t kGrain = 32768;
// Elements of one partial sum of sq_err: fixed, so that the sum does not depend on the number of threads.
constexpr int64_t kSumChunk = 4096;

// Runs f(r0, r1) over the runs of 32 elements of [0, n) in parallel chunks.
template <typename F> void parallel_runs(int64_t n, F f) {
  at::parallel_for(0, (n + kRun - 1) / kRun, kGrain / kRun, f);
}

// The element loops, each a clone per instruction set (cpu_simd.h), on runs [r0, r1) of an n-element tensor.

// p <- sigmoid(p), and s <- Bernoulli(p) with the runs' uniforms if s is given; kPairRuns runs at a time (a short
// last one through a full-size copy).
template <typename T> PMR_INLINE void sigmoid_sample_runs(T* p, T* s, int64_t n, const Draw& d, int64_t r0,
                                                         int64_t r1) {
  constexpr int64_t L = kL<T>, R = kPairRuns * kRun;
  for (int64_t run = r0; run < r1; run += kPairRuns) {
    const int64_t i0 = run * kRun, m = std::min({R, n - i0, (r1 - run) * kRun});
    T pb[R], sb[R], u[R];
    T* pp = m == R ? p + i0 : pb;
    T* sp = s && m == R ? s + i0 : sb;
    if (m < R) {
      std::fill(pb, pb + R, T(0));
      std::memcpy(pb, p + i0, m * sizeof(T));
    }
    if (s) {
      uint32_t w[R];
      philox_runs(d, static_cast<uint64_t>(run), w);
      for (int64_t j = 0; j < R; ++j) u[j] = uniform_of<T>(w[j]);
    }
    for (int64_t j = 0; j < R; j += L) {
      const vec<T> pr = vsigmoid<T>(loadu(pp + j));
      storeu(pp + j, pr);
      if (s) storeu(sp + j, bernoulli<T>(loadu(u + j), pr));
    }
    if (m < R) {
      std::memcpy(p + i0, pb, m * sizeof(T));
      if (s) std::memcpy(s + i0, sb, m * sizeof(T));
    }
  }
}
PMR_CLONES void sigmoid_sample_clone(float* p, float* s, int64_t n, const Draw& d, int64_t r0, int64_t r1) {
  sigmoid_sample_runs(p, s, n, d, r0, r1);
}
PMR_CLONES void sigmoid_sample_clone(double* p, double* s, int64_t n, const Draw& d, int64_t r0, int64_t r1) {
  sigmoid_sample_runs(p, s, n, d, r0, r1);
}

// acc[j] = sum over rows r of w_r * x[r * ld + j], j < n (w_r = a for r < B, else z), in row order; with `scale`,
// x's entries become w_r * x too.
template <typename T> PMR_INLINE void column_sums(T* x, int64_t R, int64_t ld, int64_t n, int64_t B, T a, T z,
                                                  bool scale, double* acc) {
  std::fill(acc, acc + n, 0.0);
  auto w = [&](int64_t r) { return r < B ? a : z; };
  int64_t r = 0;
  if (!scale) {  // four rows per pass over acc (still added in row order: the same sums, a quarter of acc's traffic)
    for (; r + 4 <= R; r += 4) {
      const T w0 = w(r), w1 = w(r + 1), w2 = w(r + 2), w3 = w(r + 3);
      const T *x0 = x + r * ld, *x1 = x0 + ld, *x2 = x1 + ld, *x3 = x2 + ld;
      for (int64_t j = 0; j < n; ++j) {
        double t = acc[j];
        t += static_cast<double>(w0 * x0[j]);
        t += static_cast<double>(w1 * x1[j]);
        t += static_cast<double>(w2 * x2[j]);
        t += static_cast<double>(w3 * x3[j]);
        acc[j] = t;
      }
    }
  }
  for (; r < R; ++r) {
    const T wr = w(r);
    T* row = x + r * ld;
    if (scale) {
      for (int64_t j = 0; j < n; ++j) {
        row[j] *= wr;
        acc[j] += static_cast<double>(row[j]);
      }
    } else {
      for (int64_t j = 0; j < n; ++j) acc[j] += static_cast<double>(wr * row[j]);
    }
  }
}
PMR_CLONES void column_sums_clone(float* x, int64_t R, int64_t ld, int64_t n, int64_t B, float a, float z,
                                  bool scale, double* acc) {
  column_sums(x, R, ld, n, B, a, z, scale, acc);
}
PMR_CLONES void column_sums_clone(double* x, int64_t R, int64_t ld, int64_t n, int64_t B, double a, double z,
                                  bool scale, double* acc) {
  column_sums(x, R, ld, n, B, a, z, scale, acc);
}

// m <- b + sd * m, and s <- m + sd * s if s is given (sd = 1 without sigma), over n elements of one row.
template <typename T> PMR_INLINE void gaussian_affine(T* m, const T* b, const T* sd, T* s, int64_t n) {
  if (sd && s) {
    for (int64_t j = 0; j < n; ++j) {
      m[j] = b[j] + sd[j] * m[j];
      s[j] = m[j] + sd[j] * s[j];
    }
  } else if (sd) {
    for (int64_t j = 0; j < n; ++j) m[j] = b[j] + sd[j] * m[j];
  } else if (s) {
    for (int64_t j = 0; j < n; ++j) {
      m[j] = b[j] + m[j];
      s[j] = m[j] + s[j];
    }
  } else {
    for (int64_t j = 0; j < n; ++j) m[j] = b[j] + m[j];
  }
}
PMR_CLONES void gaussian_affine_clone(float* m, const float* b, const float* sd, float* s, int64_t n) {
  gaussian_affine(m, b, sd, s, n);
}
PMR_CLONES void gaussian_affine_clone(double* m, const double* b, const double* sd, double* s, int64_t n) {
  gaussian_affine(m, b, sd, s, n);
}

// Products over the nonzeros of a matrix X of binary units (a batch, a chain's sample: at 513 -> 50 a third to a
// half of the entries nonzero), in tiles of 64 along the sum: a 64-bit word per output and tile marks the nonzero
// terms, found by bit scans, and the tile of the dense factor M (64 rows of whole vectors) stays in L1 while every
// output's terms in it are added. Each output element sums in a fixed order on one thread. Two forms:
//   out = bias + X M      (the hidden units' input, M = W, or the visible means, M a W^T view whose tiles are
//                          gathered from W's rows: an output per row of X, words over 64 columns of a row),
//   out = X^T Y           (the weight statistic: an output per column of X, words over 64 rows of a column).
// Words are found by integer operations on the values' bits: GCC vectorises these loops, where it would scalarise
// float comparisons in a clone. They also tell whether some nonzero differs from 1 (else no value need be read).

template <typename T> struct Bits {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static constexpr int kB = 8 * sizeof(T);
  static constexpr U kAbs = U(-1) >> 1, kOne = sizeof(T) == 4 ? U(0x3f800000u) : U(0x3ff0000000000000ull);
  // 1 if x != 0, and 1 if x is neither 0 nor 1
  static PMR_INLINE U nonzero(const T* x, U& other) {
    U a;
    std::memcpy(&a, x, sizeof(a));
    const U m = a & kAbs, d = a ^ kOne;
    const U nz = (m | (U(0) - m)) >> (kB - 1);
    other |= nz & ((d | (U(0) - d)) >> (kB - 1));
    return nz;
  }
};

// OR of the lanes of a vector of 16 x 32 or 8 x 64 bits, by halving.
template <typename UV> PMR_INLINE auto or_lanes(UV x) {
  if constexpr (sizeof(x[0]) == 4) {
    x |= __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    x |= __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    x |= __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    x |= __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  } else {
    x |= __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3);
    x |= __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5);
    x |= __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6);
  }
  return x[0];
}

// The row words of n values: word[g] bit j <-> x[64 g + j] != 0, their ones added to count; true if some nonzero
// differs from 1. Each lane's bit is shifted to its place within the vector's lanes, and the lanes ORed together.
template <typename T> PMR_INLINE bool row_bits(const T* x, int64_t n, uint64_t* word, int64_t& count) {
  using U = typename Bits<T>::U;
  typedef U UV __attribute__((vector_size(64)));
  constexpr int L = kL<T>, kB = Bits<T>::kB;
  UV lane, other{};
  for (int l = 0; l < L; ++l) lane[l] = static_cast<U>(l);
  for (int64_t g = 0; g * 64 < n; ++g) {
    const T* p = x + g * 64;
    T pad[64];
    if (n - g * 64 < 64) {
      std::fill(pad, pad + 64, T(0));
      std::memcpy(pad, p, (n - g * 64) * sizeof(T));
      p = pad;
    }
    UV part[64 / kB] = {};  // bits [32 h, 32 h + 32) (float) or all 64 (double)
    for (int v = 0; v < 64 / L; ++v) {
      UV a;
      std::memcpy(&a, p + v * L, sizeof(a));
      const UV m = a & Bits<T>::kAbs, d = a ^ Bits<T>::kOne;
      const UV nz = (m | (UV{} - m)) >> (kB - 1);
      other |= nz & ((d | (UV{} - d)) >> (kB - 1));
      part[v * L / kB] |= nz << (lane + static_cast<U>((v * L) % kB));
    }
    uint64_t w = or_lanes(part[0]);
    if constexpr (kB == 32) w |= static_cast<uint64_t>(or_lanes(part[1])) << 32;
    word[g] = w;
    count += __builtin_popcountll(w);  // (one instruction in the clones that have it, a call in the baseline)
  }
  return or_lanes(other) != 0;
}
PMR_CLONES bool row_bits_clone(const float* x, int64_t n, uint64_t* word, int64_t& count) {
  return row_bits(x, n, word, count);
}
PMR_CLONES bool row_bits_clone(const double* x, int64_t n, uint64_t* word, int64_t& count) {
  return row_bits(x, n, word, count);
}

// The column words of a tile of rows (rows <= 64 rows of x, row stride V) over 64 columns: word[j] bit k <-> x[k,
// j] != 0 (n < 64 columns through a zero-padded copy), their ones added to count; true if some nonzero differs
// from 1.
template <typename T> PMR_INLINE bool tile_bits(const T* x, int64_t V, int64_t rows, int64_t n, uint64_t* word,
                                                int64_t& count) {
  using U = typename Bits<T>::U;
  constexpr int kB = Bits<T>::kB;
  U part[64 / kB][64] = {}, other = 0;
  T pad[64] = {};
  for (int64_t k = 0; k < rows; ++k) {
    const T* row = x + k * V;
    if (n < 64) {
      std::memcpy(pad, row, n * sizeof(T));
      row = pad;
    }
    U* p = part[k / kB];
    const int sh = static_cast<int>(k % kB);
    for (int j = 0; j < 64; ++j) p[j] |= Bits<T>::nonzero(row + j, other) << sh;
  }
  for (int j = 0; j < 64; ++j) {
    uint64_t w = part[0][j];
    if constexpr (kB == 32) w |= static_cast<uint64_t>(part[1][j]) << 32;
    word[j] = w;
    count += __builtin_popcountll(w);
  }
  return other != 0;
}
PMR_CLONES bool tile_bits_clone(const float* x, int64_t V, int64_t rows, int64_t n, uint64_t* word,
                                int64_t& count) {
  return tile_bits(x, V, rows, n, word, count);
}
PMR_CLONES bool tile_bits_clone(const double* x, int64_t V, int64_t rows, int64_t n, uint64_t* word,
                                int64_t& count) {
  return tile_bits(x, V, rows, n, word, count);
}

// The terms of one tile for outputs [o0, o1): acc[o] (+)= sum over the set bits k of word[o * wo] of a(o, k) *
// mt[k, :], a(o, k) = x[o * xo + k * xk] (not read when `ones`), mt 64 rows of NV vectors. The first tile starts
// from init (NV vectors) or zero.
template <typename T, int NV, bool ones>
PMR_INLINE void tile_product(const uint64_t* word, int64_t wo, const T* x, int64_t xo, int64_t xk, const T* mt,
                             const T* init, bool first, int64_t o0, int64_t o1, T* acc) {
  constexpr int64_t L = kL<T>;
  for (int64_t o = o0; o < o1; ++o) {
    T* ac = acc + (o - o0) * NV * L;
    vec<T> a[NV];
    for (int v = 0; v < NV; ++v) a[v] = !first ? loadu(ac + v * L) : init ? loadu(init + v * L) : vec<T>{};
    for (uint64_t m = word[o * wo]; m; m &= m - 1) {
      const int64_t k = __builtin_ctzll(m);
      const T* y = mt + k * NV * L;
      if constexpr (ones) {
        for (int v = 0; v < NV; ++v) a[v] += loadu(y + v * L);
      } else {
        const vec<T> s = splat(x[o * xo + k * xk]);
        for (int v = 0; v < NV; ++v) a[v] += s * loadu(y + v * L);
      }
    }
    for (int v = 0; v < NV; ++v) storeu(ac + v * L, a[v]);
  }
}

// Outputs [o0, o1), columns [c0, c0 + w) (w <= 4 vectors): out[o, :] = bias + sum over k < K of a(o, k) M[k, :]
// (a as in tile_product, M (K x H) with strides ms, mc), tile t's words at words[t * wt + o * wo]; acc: (o1 - o0) *
// 4 * L.
template <typename T> PMR_INLINE void sparse_product(const uint64_t* words, int64_t wt, int64_t wo, const T* x,
                                                     int64_t xo, int64_t xk, int64_t K, const T* M, int64_t ms,
                                                     int64_t mc, int64_t H, int64_t c0, const T* bias, bool ones,
                                                     int64_t o0, int64_t o1, T* acc, T* out) {
  constexpr int64_t L = kL<T>;
  const int64_t w = std::min<int64_t>(4 * L, H - c0), NV = (w + L - 1) / L;
  alignas(64) T mt[64 * 4 * L], init[4 * L] = {};
  if (bias) std::memcpy(init, bias + c0, w * sizeof(T));
  for (int64_t k0 = 0; k0 < K; k0 += 64) {
    const int64_t rows = std::min<int64_t>(64, K - k0);
    std::fill(mt, mt + 64 * NV * L, T(0));  // whole vectors, zero past w and below the last row
    if (mc == 1) {
      for (int64_t k = 0; k < rows; ++k) std::memcpy(mt + k * NV * L, M + (k0 + k) * ms + c0, w * sizeof(T));
    } else {  // M a transposed view (W^T): read along its columns, W's rows
      for (int64_t c = 0; c < w; ++c)
        for (int64_t k = 0; k < rows; ++k) mt[k * NV * L + c] = M[(k0 + k) * ms + (c0 + c) * mc];
    }
    const uint64_t* word = words + (k0 / 64) * wt;
    const T* xt = x + k0 * xk;
    const T* in = bias ? init : nullptr;
    const bool first = k0 == 0;
#define PMR_TILE(nv)                                                                                   \
  (ones ? tile_product<T, nv, true>(word, wo, xt, xo, xk, mt, in, first, o0, o1, acc)                  \
        : tile_product<T, nv, false>(word, wo, xt, xo, xk, mt, in, first, o0, o1, acc))
    switch (NV) {
      case 4: PMR_TILE(4); break;
      case 3: PMR_TILE(3); break;
      case 2: PMR_TILE(2); break;
      default: PMR_TILE(1); break;
    }
#undef PMR_TILE
  }
  for (int64_t o = o0; o < o1; ++o) std::memcpy(out + o * H + c0, acc + (o - o0) * NV * L, w * sizeof(T));
}
PMR_CLONES void sparse_product_clone(const uint64_t* words, int64_t wt, int64_t wo, const float* x, int64_t xo,
                                     int64_t xk, int64_t K, const float* M, int64_t ms, int64_t mc, int64_t H,
                                     int64_t c0, const float* bias, bool ones, int64_t o0, int64_t o1, float* acc,
                                     float* out) {
  sparse_product(words, wt, wo, x, xo, xk, K, M, ms, mc, H, c0, bias, ones, o0, o1, acc, out);
}
PMR_CLONES void sparse_product_clone(const uint64_t* words, int64_t wt, int64_t wo, const double* x, int64_t xo,
                                     int64_t xk, int64_t K, const double* M, int64_t ms, int64_t mc, int64_t H,
                                     int64_t c0, const double* bias, bool ones, int64_t o0, int64_t o1, double* acc,
                                     double* out) {
  sparse_product(words, wt, wo, x, xo, xk, K, M, ms, mc, H, c0, bias, ones, o0, o1, acc, out);
}

// out[i] = uniform_at / normal_at(seed, offset, start + i) for i < n.
PMR_CLONES void uniforms_clone(const Draw& d, int64_t start, int64_t n, float* out) { uniforms(d, start, n, out); }
PMR_CLONES void uniforms_clone(const Draw& d, int64_t start, int64_t n, double* out) { uniforms(d, start, n, out); }
PMR_CLONES void normals_clone(const Draw& d, int64_t start, int64_t n, float* out) { normals(d, start, n, out); }
PMR_CLONES void normals_clone(const Draw& d, int64_t start, int64_t n, double* out) { normals(d, start, n, out); }

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
      const int64_t n = out.numel();
      parallel_runs(n, [&](int64_t r0, int64_t r1) {
        const int64_t i0 = r0 * kRun, i1 = std::min(n, r1 * kRun);
        uniforms_clone(d, i0, i1 - i0, o + i0);
      });
    });
  }

  static void fill_normal(Tensor out, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "philox_normal_", [&] {
      scalar_t* o = out.data_ptr<scalar_t>();
      const int64_t n = out.numel();
      parallel_runs(n, [&](int64_t r0, int64_t r1) {
        const int64_t i0 = r0 * kRun, i1 = std::min(n, r1 * kRun);
        normals_clone(d, i0, i1 - i0, o + i0);
      });
    });
  }

  static void sigmoid_sample(Tensor p, Tensor s, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "sigmoid_sample", [&] {
      scalar_t* pp = p.data_ptr<scalar_t>();
      scalar_t* sp = s.defined() ? s.data_ptr<scalar_t>() : nullptr;
      const int64_t n = p.numel();
      parallel_runs(n, [&](int64_t r0, int64_t r1) { sigmoid_sample_clone(pp, sp, n, d, r0, r1); });
    });
  }

  static void gaussian_sample(Tensor m, Tensor b, Tensor sigma, Tensor s, Draw d) {
    AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "gaussian_sample", [&] {
      const int64_t V = m.size(1);
      scalar_t* mp = m.data_ptr<scalar_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      const scalar_t* sg = sigma.defined() ? sigma.data_ptr<scalar_t>() : nullptr;
      scalar_t* sp = s.defined() ? s.data_ptr<scalar_t>() : nullptr;
      const int64_t n = m.numel();
      parallel_runs(n, [&](int64_t r0, int64_t r1) {
        const int64_t i0 = r0 * kRun, i1 = std::min(n, r1 * kRun);
        if (sp) normals_clone(d, i0, i1 - i0, sp + i0);  // the noise, then the sample in place
        for (int64_t i = i0; i < i1;) {  // by row segments: one division a segment, not one an element
          const int64_t col = i % V, m = std::min(i1 - i, V - col);
          gaussian_affine_clone(mp + i, bp + col, sg ? sg + col : nullptr, sp ? sp + i : nullptr, m);
          i += m;
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
        std::vector<double> acc(c1 - c0);
        column_sums_clone(x + c0, R, C, c1 - c0, B, a, z, scale, acc.data());
        for (int64_t c = c0; c < c1; ++c) o[c] = static_cast<scalar_t>(acc[c - c0]);
      });
    });
    return out;
  }

  // The products over X's nonzeros (sparse_product), if few enough of them for that to pay; else false, out
  // untouched. The words come first, and with them the density. A step of 513 -> 50 (batch 256, one thread) with
  // data and chain of density d, by this product against MKL's GEMM: the weight statistic alone 1.00 against 1.20
  // ms at d = 0.5, 1.06 / 1.15 at 0.7, 1.07 / 1.14 at 0.8, even from 0.9 (values read or not); the hidden units'
  // input alone 0.89 / 1.06 at 0.5, 1.03 / 1.14 at 0.7, 1.17 / 1.30 at 0.8, even at 0.9.
  static constexpr double kMaxDensity = 0.8;

  // Whether X is sparse enough: its words built by build(i0, i1, count) over [0, n) in parallel (each call adding its
  // words' ones to count and returning true if some nonzero differs from 1), then X's density; `ones`: every nonzero
  // is 1.
  template <typename Build> static bool sparse_enough(const Tensor& X, int64_t n, int64_t grain, Build build,
                                                      bool& ones) {
    std::atomic<int64_t> nonzeros{0};
    std::atomic<bool> all_ones{true};
    at::parallel_for(0, n, grain, [&](int64_t i0, int64_t i1) {
      int64_t count = 0;
      if (build(i0, i1, count)) all_ones = false;
      nonzeros += count;
    });
    ones = all_ones;
    return static_cast<double>(nonzeros) <= kMaxDensity * static_cast<double>(X.numel());
  }

  // out <- bias + X M (X (R, V), out (R, H) contiguous; M (V, H) any strides (W, or W^T as a view); bias (H) or
  // undefined).
  static bool sparse_rows_product(Tensor& out, const Tensor& X, const Tensor& M, const Tensor& bias) {
    const int64_t R = X.size(0), V = X.size(1), H = M.size(1), G = (V + 63) / 64;
    thread_local std::vector<uint64_t> words;
    words.resize(R * G);
    uint64_t* wp = words.data();  // (inside the parallel regions `words` would name the running thread's own)
    bool done = false;
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "sparse_rows_product", [&] {
      const scalar_t* x = X.data_ptr<scalar_t>();
      bool ones;
      done = sparse_enough(X, R, std::max<int64_t>(1, kGrain / V), [&](int64_t r0, int64_t r1, int64_t& count) {
        bool other = false;
        for (int64_t r = r0; r < r1; ++r) other |= row_bits_clone(x + r * V, V, wp + r * G, count);
        return other;
      }, ones);
      if (done)
        multiply<scalar_t>(wp, 1, G, x, V, 1, V, M.data_ptr<scalar_t>(), M.stride(0), M.stride(1), H,
                           bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, ones, R, out.data_ptr<scalar_t>());
    });
    return done;
  }

  // gW <- X^T Y (X (R, V), Y (R, H), gW (V, H), contiguous); tile_bits's words, column blocks split between threads.
  static bool sparse_weight_statistic(Tensor& gW, const Tensor& X, const Tensor& Y) {
    const int64_t R = X.size(0), V = X.size(1), H = Y.size(1), Q = (R + 63) / 64, ldw = (V + 63) / 64 * 64;
    thread_local std::vector<uint64_t> words;
    words.resize(Q * ldw);
    uint64_t* wp = words.data();
    bool done = false;
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "sparse_weight_statistic", [&] {
      const scalar_t* x = X.data_ptr<scalar_t>();
      bool ones;
      done = sparse_enough(X, ldw / 64, std::max<int64_t>(1, kGrain / (64 * R)), [&](int64_t g0, int64_t g1,
                                                                                     int64_t& count) {
        bool other = false;
        for (int64_t g = g0; g < g1; ++g)
          for (int64_t q = 0; q < Q; ++q)
            other |= tile_bits_clone(x + q * 64 * V + g * 64, V, std::min<int64_t>(64, R - q * 64),
                                     std::min<int64_t>(64, V - g * 64), wp + q * ldw + g * 64, count);
        return other;
      }, ones);
      if (done)
        multiply<scalar_t>(wp, ldw, 1, x, 1, V, R, Y.data_ptr<scalar_t>(), H, 1, H, nullptr, ones, V,
                           gW.data_ptr<scalar_t>());
    });
    return done;
  }

  // sparse_product for outputs [0, n), split between threads, in blocks of 4 vectors of M's H columns.
  template <typename T> static void multiply(const uint64_t* words, int64_t wt, int64_t wo, const T* x, int64_t xo,
                                             int64_t xk, int64_t K, const T* M, int64_t ms, int64_t mc, int64_t H,
                                             const T* bias, bool ones, int64_t n, T* out) {
    constexpr int64_t L = kL<T>, kBlock = 512;  // outputs at a time: acc stays in L2 whatever the batch
    at::parallel_for(0, n, std::max<int64_t>(1, kGrain / std::max<int64_t>(K * H / 2, 1)), [&](int64_t o0,
                                                                                              int64_t o1) {
      thread_local std::vector<T> acc;  // kept: a fresh buffer is page-faulted in every step
      acc.resize(std::min(o1 - o0, kBlock) * 4 * L);
      for (int64_t b0 = o0; b0 < o1; b0 += kBlock)
        for (int64_t c0 = 0; c0 < H; c0 += 4 * L)
          sparse_product_clone(words, wt, wo, x, xo, xk, K, M, ms, mc, H, c0, bias, ones, b0,
                               std::min(o1, b0 + kBlock), acc.data(), out);
    });
  }

  // Sum of squared differences of two contiguous tensors of one shape. Partial sums over fixed kSumChunk-element
  // chunks, added in order, so the result does not depend on the number of threads either.
  static Tensor sq_err(const Tensor& a, const Tensor& b) {
    const int64_t n = a.numel(), chunks = (n + kSumChunk - 1) / kSumChunk;
    std::vector<double> partial(chunks);
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "mse", [&] {
      const scalar_t* ap = a.data_ptr<scalar_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      at::parallel_for(0, chunks, kGrain / kSumChunk, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          scalar_t acc[8] = {};  // 8 independent sums vectorise; one would be a serial chain
          const int64_t i0 = c * kSumChunk, i1 = std::min(n, i0 + kSumChunk);
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

  // out <- data[idx] (rows), in parallel, and whether every value gathered is finite: one pass for both (out and
  // data contiguous, of one dtype).
  static bool gather_rows(Tensor& out, const Tensor& data, const Tensor& idx) {
    const Tensor ic = idx.contiguous();
    const int64_t* ip = ic.data_ptr<int64_t>();
    return copy_rows_finite(out, data.contiguous(), ic.numel(), [ip](int64_t r) { return ip[r]; });
  }

  // out <- src (2-D, contiguous, one shape and dtype), and whether every value is finite: one pass for both.
  static bool copy_finite(Tensor& out, const Tensor& src) {
    const Tensor sc = src.contiguous();
    return copy_rows_finite(out, sc, sc.size(0), [](int64_t r) { return r; });
  }

  // Row r of out <- row from(r) of data (2-D, contiguous), R rows, in parallel; true if every value copied is finite.
  template <typename From> static bool copy_rows_finite(Tensor& out, const Tensor& data, int64_t R, From from) {
    const int64_t C = data.size(1);
    std::atomic<bool> finite{true};
    AT_DISPATCH_FLOATING_TYPES(data.scalar_type(), "copy_rows_finite", [&] {
      const scalar_t* src = data.data_ptr<scalar_t>();
      scalar_t* dst = out.data_ptr<scalar_t>();
      at::parallel_for(0, R, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
        uint32_t bad = 0;
        for (int64_t r = r0; r < r1; ++r) {
          const scalar_t* row = src + from(r) * C;
          scalar_t* to = dst + r * C;
          for (int64_t j = 0; j < C; ++j) {
            to[j] = row[j];
            bad |= nonfinite(row[j]);
          }
        }
        if (bad) finite = false;
      });
    });
    return finite;
  }

  static bool all_finite(const Tensor& t) {
    std::atomic<bool> finite{true};
    const Tensor x = t.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "all_finite", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t i0, int64_t i1) {
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
