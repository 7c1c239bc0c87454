// CPU kernels of the convolutional RBM ops: direct convolutions fused with everything around them.
//
// At the spectrogram shapes (1 channel, 64-96 x 431 maps, 24-64 filters of 3x3 to 10x10) the hidden maps are
// ~100x larger than the input, so memory passes over them, not FLOPs, decide the speed. The hidden pass therefore
// works on one block-row of one (sample, filter) map at a time, in L1: correlation -> pooling softmax -> sample ->
// the CD weight statistic, without ever writing the energies or (in a CD step) the probabilities to memory.
// Inner loops use 64-byte GCC vector types; each tile kernel is compiled per instruction set (cpu_simd.h).
// Thread-count independence: random numbers are Philox counter-based (element i is a function of (seed, i)) and
// the weight statistic is reduced from per-(sample, filter) partial sums in a fixed order.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>
#include <vector>

#include "conv_rbm.h"
#include "cpu_simd.h"

namespace pymusicrbm {
namespace {

using namespace simd;

// ---- hidden pass -----------------------------------------------------------------------------------------------

template <class T> struct HiddenParams {
  const T* v;
  const T* W;
  const T* c;
  int64_t B, C, Hv, Wv, K, fh, fw, Hh, Wh, p, Hp, Wp;
  T* P;
  T* H;
  T* Q;
  Draw draw;
  T* part;  // (B*K, F + 2): per-(sample, filter) sums of corr(v, P) per tap, of P, and of the sparsity quantity
};

template <class T> struct HiddenScratch {
  std::vector<T> e, hb, qx, m, u, w;
  std::vector<int64_t> off;
  std::vector<T> acc;  // F vectors of lane partial sums (a plain array: no over-aligned allocation needed)
};

template <class T> using lane_int = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// Lane permutations for pooling blocks of p consecutive lanes (p a power of two dividing L).
template <class T> struct LaneMasks {
  ivec<T> bfly[8], shr[8], shr_ok[8], expand;
  int steps = 0;
  explicit LaneMasks(int64_t p) {
    for (int64_t d = 1; d < p; d *= 2, ++steps)
      for (int64_t l = 0; l < kL<T>; ++l) {
        bfly[steps][l] = static_cast<lane_int<T>>(l ^ d);
        const bool ok = l % p >= d;
        shr[steps][l] = static_cast<lane_int<T>>(ok ? l - d : l);
        shr_ok[steps][l] = ok ? lane_int<T>(-1) : lane_int<T>(0);
      }
    for (int64_t l = 0; l < kL<T>; ++l) expand[l] = static_cast<lane_int<T>>(l / p);
  }
  // Sum over each block, broadcast to the block's lanes.
  PMR_INLINE vec<T> block_sum(vec<T> x) const {
    for (int j = 0; j < steps; ++j) x += __builtin_shuffle(x, bfly[j]);
    return x;
  }
  // Exclusive prefix sum within each block.
  PMR_INLINE vec<T> block_exclusive_scan(vec<T> x) const {
    vec<T> s = x;
    for (int j = 0; j < steps; ++j) s += mask_and<T>(shr_ok[j], __builtin_shuffle(s, shr[j]));
    return s - x;
  }
};

template <class T> constexpr T kExpSafe = sizeof(T) == 4 ? T(80) : T(700);  // exp(e) cannot overflow below this

// Probabilistic max-pooling of p rows (stride apart) of energies e, in place -> probabilities, without a per-block
// maximum: only valid when every energy is <= kExpSafe, for p a power of two dividing L. hb <- the sample (if u),
// qx[x] <- pooled probability of x's block. Lanes past Wh hold whole dummy blocks and are ignored by the caller.
template <class T>
PMR_INLINE void pool_rows_vector(T* e, T* hb, T* qx, const T* u, int64_t p, int64_t stride, const LaneMasks<T>& lm) {
  constexpr int64_t L = kL<T>;
  for (int64_t x0 = 0; x0 < stride; x0 += L) {
    vec<T> S = {};
    for (int64_t i = 0; i < p; ++i) {
      const vec<T> ex = vexp(loadu(e + i * stride + x0));
      storeu(e + i * stride + x0, ex);
      S += lm.block_sum(ex);
    }
    const vec<T> inv = T(1) / (T(1) + S);
    storeu(qx + x0, S * inv);
    if (!u) {
      for (int64_t i = 0; i < p; ++i) storeu(e + i * stride + x0, loadu(e + i * stride + x0) * inv);
      continue;
    }
    // Units are walked in row-major order within the block: unit on when cum_before <= u < cum_before + p_unit.
    const vec<T> ux = __builtin_shuffle(loadu(u + x0 / p), lm.expand);
    vec<T> cum = {};
    for (int64_t i = 0; i < p; ++i) {
      const vec<T> pr = loadu(e + i * stride + x0) * inv;
      storeu(e + i * stride + x0, pr);
      const vec<T> lo = cum + lm.block_exclusive_scan(pr);
      // lo <= ux < lo + pr: (ux < lo + pr) and not (ux < lo)
      storeu(hb + i * stride + x0, mask_to_one<T>(less_mask<T>(ux, lo + pr) & ~less_mask<T>(ux, lo)) + (pr - pr));
      cum += lm.block_sum(pr);
    }
  }
}

// The same for any p and any energies: per-block maximum (at least 0, the energy of 'all off'), scalar loops.
template <class T>
PMR_INLINE void pool_rows_scalar(T* e, T* hb, T* qx, T* mx, const T* u, int64_t p, int64_t stride, int64_t Wh) {
  constexpr int64_t L = kL<T>;
  const int64_t Wp = Wh / p;
  for (int64_t j = 0; j < Wp; ++j) {
    T m = 0;
    for (int64_t i = 0; i < p; ++i)
      for (int64_t x = j * p; x < (j + 1) * p; ++x) m = std::max(m, e[i * stride + x]);
    for (int64_t x = j * p; x < (j + 1) * p; ++x) mx[x] = m;
  }
  for (int64_t i = 0; i < p; ++i)
    for (int64_t x = 0; x < stride; x += L) storeu(e + i * stride + x, vexp(loadu(e + i * stride + x) - loadu(mx + x)));
  for (int64_t j = 0; j < Wp; ++j) {
    const T m = mx[j * p];
    T z = 0;
    for (int64_t i = 0; i < p; ++i)
      for (int64_t x = j * p; x < (j + 1) * p; ++x) z += e[i * stride + x];
    const T inv = T(1) / (z + std::exp(-m));
    T pooled = 0, cum = 0;
    bool on = false;
    for (int64_t i = 0; i < p; ++i)
      for (int64_t x = j * p; x < (j + 1) * p; ++x) {
        const T pr = e[i * stride + x] * inv;
        e[i * stride + x] = pr;
        pooled += pr;
        if (u) {
          cum += pr;
          const bool hit = !on && u[j] < cum;
          hb[i * stride + x] = (hit ? T(1) : T(0)) + (pr - pr);
          on |= hit;
        }
      }
    qx[j * p] = pooled;
  }
}

// Filters per hidden tile: each input vector loaded feeds kG filters' FMAs (correlation), and each loaded input
// vector of the weight statistic feeds kG filters' probabilities.
constexpr int64_t kG = 4;

// rows[g][x] = bias[g] + sum_t w[g * F + t] * src[off[t] + x] for the kG filters g, x < n (n >= 1).
template <class T>
PMR_INLINE void correlate_rows_group(T* const* rows, const T* src, const int64_t* off, const T* w, int64_t F,
                                     const T* bias, int64_t n) {
  constexpr int64_t L = kL<T>;
  static_assert(kG == 4, "the register blocking below is written for 4 filters");
  int64_t x = 0;
  for (; x + 2 * L <= n; x += 2 * L) {
    vec<T> a00 = splat(bias[0]), a01 = a00, a10 = splat(bias[1]), a11 = a10;
    vec<T> a20 = splat(bias[2]), a21 = a20, a30 = splat(bias[3]), a31 = a30;
    for (int64_t t = 0; t < F; ++t) {
      const T* sp = src + off[t] + x;
      const vec<T> s0 = loadu(sp), s1 = loadu(sp + L);
      const T w0 = w[t], w1 = w[F + t], w2 = w[2 * F + t], w3 = w[3 * F + t];
      a00 += w0 * s0;
      a01 += w0 * s1;
      a10 += w1 * s0;
      a11 += w1 * s1;
      a20 += w2 * s0;
      a21 += w2 * s1;
      a30 += w3 * s0;
      a31 += w3 * s1;
    }
    storeu(rows[0] + x, a00);
    storeu(rows[0] + x + L, a01);
    storeu(rows[1] + x, a10);
    storeu(rows[1] + x + L, a11);
    storeu(rows[2] + x, a20);
    storeu(rows[2] + x + L, a21);
    storeu(rows[3] + x, a30);
    storeu(rows[3] + x + L, a31);
  }
  if (x < n && n >= L) {
    for (; x < n; x += L) {
      if (x + L > n) x = n - L;  // overlap the previous vector: recomputing outputs is harmless
      vec<T> a0 = splat(bias[0]), a1 = splat(bias[1]), a2 = splat(bias[2]), a3 = splat(bias[3]);
      for (int64_t t = 0; t < F; ++t) {
        const vec<T> s0 = loadu(src + off[t] + x);
        a0 += w[t] * s0;
        a1 += w[F + t] * s0;
        a2 += w[2 * F + t] * s0;
        a3 += w[3 * F + t] * s0;
      }
      storeu(rows[0] + x, a0);
      storeu(rows[1] + x, a1);
      storeu(rows[2] + x, a2);
      storeu(rows[3] + x, a3);
    }
  } else if (n < L) {
    for (int64_t g = 0; g < kG; ++g)
      for (int64_t i = 0; i < n; ++i) {
        T acc = bias[g];
        for (int64_t t = 0; t < F; ++t) acc += w[g * F + t] * src[off[t] + i];
        rows[g][i] = acc;
      }
  }
}

// acc[(g * F + t) * L ...] += lane partial sums of sum_x prob[g][x] * src[off[t] + x], x < n, for kG filters:
// two taps at a time, so that 2 input and 4 probability loads feed 8 FMAs.
template <class T>
PMR_INLINE void correlate_stat_group(T* acc, const T* const* prob, const T* src, const int64_t* off, int64_t F,
                                     int64_t n) {
  constexpr int64_t L = kL<T>;
  const int64_t nv = n / L * L, rem = n - nv;
  if (n < L) {  // maps narrower than one vector: plain loops
    for (int64_t g = 0; g < kG; ++g)
      for (int64_t t = 0; t < F; ++t) {
        T sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += prob[g][i] * src[off[t] + i];
        acc[(g * F + t) * L] += sum;
      }
    return;
  }
  // the last, partial vector is read at n - L with the lanes before the tail zeroed in the probabilities
  vec<T> tail[kG] = {};
  if (rem)
    for (int64_t g = 0; g < kG; ++g)
      for (int64_t l = L - rem; l < L; ++l) tail[g][l] = prob[g][n - L + l];
  auto add = [&](int64_t g, int64_t t, vec<T> v) { storeu(acc + (g * F + t) * L, loadu(acc + (g * F + t) * L) + v); };
  int64_t t = 0;
  for (; t + 2 <= F; t += 2) {
    const T* s0 = src + off[t];
    const T* s1 = src + off[t + 1];
    vec<T> a00 = {}, a01 = {}, a10 = {}, a11 = {}, a20 = {}, a21 = {}, a30 = {}, a31 = {};
    for (int64_t x = 0; x < nv; x += L) {
      const vec<T> v0 = loadu(s0 + x), v1 = loadu(s1 + x);
      const vec<T> p0 = loadu(prob[0] + x), p1 = loadu(prob[1] + x), p2 = loadu(prob[2] + x),
                   p3 = loadu(prob[3] + x);
      a00 += p0 * v0;
      a01 += p0 * v1;
      a10 += p1 * v0;
      a11 += p1 * v1;
      a20 += p2 * v0;
      a21 += p2 * v1;
      a30 += p3 * v0;
      a31 += p3 * v1;
    }
    if (rem) {
      const vec<T> v0 = loadu(s0 + n - L), v1 = loadu(s1 + n - L);
      a00 += tail[0] * v0;
      a01 += tail[0] * v1;
      a10 += tail[1] * v0;
      a11 += tail[1] * v1;
      a20 += tail[2] * v0;
      a21 += tail[2] * v1;
      a30 += tail[3] * v0;
      a31 += tail[3] * v1;
    }
    add(0, t, a00);
    add(0, t + 1, a01);
    add(1, t, a10);
    add(1, t + 1, a11);
    add(2, t, a20);
    add(2, t + 1, a21);
    add(3, t, a30);
    add(3, t + 1, a31);
  }
  for (; t < F; ++t) {
    const T* s0 = src + off[t];
    vec<T> a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t x = 0; x < nv; x += L) {
      const vec<T> v0 = loadu(s0 + x);
      a0 += loadu(prob[0] + x) * v0;
      a1 += loadu(prob[1] + x) * v0;
      a2 += loadu(prob[2] + x) * v0;
      a3 += loadu(prob[3] + x) * v0;
    }
    if (rem) {
      const vec<T> v0 = loadu(s0 + n - L);
      a0 += tail[0] * v0;
      a1 += tail[1] * v0;
      a2 += tail[2] * v0;
      a3 += tail[3] * v0;
    }
    add(0, t, a0);
    add(1, t, a1);
    add(2, t, a2);
    add(3, t, a3);
  }
}

// Tile = (sample b, group of kG filters starting at k0). Per block-row of the maps: the kG filters' energies
// (register-blocked correlation), then per filter the pooling, sampling and outputs, then the weight statistic
// of all kG filters at once. A group that runs past K computes zero-filter dummies and discards them.
template <class T> PMR_INLINE void hidden_tile_impl(const HiddenParams<T>& a, int64_t tile, HiddenScratch<T>& s) {
  constexpr int64_t L = kL<T>;
  const int64_t groups = (a.K + kG - 1) / kG;
  const int64_t b = tile / groups, k0 = (tile % groups) * kG, gn = std::min(kG, a.K - k0);
  const int64_t p = a.p, Wh = a.Wh, Wp = a.Wp, F = a.C * a.fh * a.fw;
  const int64_t stride = (Wh + L - 1) / L * L;  // a buffer row, padded to whole vectors
  const T* vb = a.v + b * a.C * a.Hv * a.Wv;
  int64_t* off = s.off.data();
  for (int64_t ch = 0, t = 0; ch < a.C; ++ch)
    for (int64_t dy = 0; dy < a.fh; ++dy)
      for (int64_t dx = 0; dx < a.fw; ++dx) off[t++] = (ch * a.Hv + dy) * a.Wv + dx;
  T* w = s.w.data();  // kG x F filters (zeros for the dummies)
  T bias[kG] = {};
  std::fill(w, w + kG * F, T(0));
  std::memcpy(w, a.W + k0 * F, gn * F * sizeof(T));
  for (int64_t g = 0; g < gn; ++g) bias[g] = a.c[k0 + g];
  T* e0 = s.e.data();  // filter g, row i of the block-row: e0 + (g * p + i) * stride
  T* hb = s.hb.data();
  T* qx = s.qx.data();
  T* u = a.H ? s.u.data() : nullptr;
  T* acc = s.acc.data();
  const bool stat = a.part != nullptr;
  if (stat) std::fill(acc, acc + kG * F * L, T(0));
  const bool pow2 = p > 1 && p <= L && (p & (p - 1)) == 0;
  const LaneMasks<T> lm(pow2 ? p : 1);
  vec<T> sum_p[kG] = {};

  for (int64_t r = 0; r < a.Hp; ++r) {
    for (int64_t i = 0; i < p; ++i) {
      T* rows[kG];
      for (int64_t g = 0; g < kG; ++g) rows[g] = e0 + (g * p + i) * stride;
      correlate_rows_group(rows, vb + (r * p + i) * a.Wv, off, w, F, bias, Wh);
    }
    for (int64_t g = 0; g < gn; ++g) {
      const int64_t bk = b * a.K + k0 + g;
      const int64_t map = bk * a.Hh * Wh, pmap = bk * a.Hp * Wp;
      T* e = e0 + g * p * stride;
      if (p == 1) {
        if (u) uniforms(a.draw, map + r * Wh, Wh, u);
        for (int64_t x = 0; x < stride; x += L) {
          const vec<T> pr = vsigmoid<T>(loadu(e + x));
          storeu(e + x, pr);
          if (u) storeu(hb + x, bernoulli<T>(loadu(u + x), pr));
        }
        std::fill(e + Wh, e + stride, T(0));
        if (a.Q) std::memcpy(a.Q + pmap + r * Wp, e, Wh * sizeof(T));
      } else {
        if (u) uniforms(a.draw, pmap + r * Wp, Wp, u);
        bool safe = pow2;
        if (safe) {
          vec<T> mxv = splat(-kExpSafe<T>);
          for (int64_t i = 0; i < p; ++i)
            for (int64_t x = 0; x < stride; x += L) {
              const vec<T> ev = loadu(e + i * stride + x);
              mxv = ev > mxv ? ev : mxv;
            }
          for (int64_t l = 0; l < L; ++l) safe &= mxv[l] <= kExpSafe<T>;
        }
        if (safe) {
          pool_rows_vector(e, hb, qx, u, p, stride, lm);
        } else {
          pool_rows_scalar(e, hb, qx, s.m.data(), u, p, stride, Wh);
        }
        for (int64_t i = 0; i < p; ++i) std::fill(e + i * stride + Wh, e + (i + 1) * stride, T(0));
        if (a.Q) {
          T* q = a.Q + pmap + r * Wp;
          for (int64_t j = 0; j < Wp; ++j) q[j] = qx[j * p];
        }
      }
      for (int64_t i = 0; i < p; ++i) {
        const int64_t row = map + (r * p + i) * Wh;
        for (int64_t x = 0; x < stride; x += L) sum_p[g] += loadu(e + i * stride + x);
        if (a.P) std::memcpy(a.P + row, e + i * stride, Wh * sizeof(T));
        if (a.H) std::memcpy(a.H + row, hb + i * stride, Wh * sizeof(T));
      }
    }
    if (stat)
      for (int64_t i = 0; i < p; ++i) {
        const T* probs[kG];
        for (int64_t g = 0; g < kG; ++g) probs[g] = e0 + (g * p + i) * stride;  // dummies: ignored below
        correlate_stat_group(acc, probs, vb + (r * p + i) * a.Wv, off, F, Wh);
      }
  }
  if (stat)
    for (int64_t g = 0; g < gn; ++g) {
      T* out = a.part + (b * a.K + k0 + g) * (F + 2);
      for (int64_t t = 0; t < F; ++t) out[t] = hsum<T>(loadu(acc + (g * F + t) * L));
      out[F] = out[F + 1] = hsum<T>(sum_p[g]);  // sum of the pooled probabilities == sum of the hidden ones
    }
}

PMR_CLONES void hidden_tile(const HiddenParams<float>& a, int64_t tile, HiddenScratch<float>& s) {
  hidden_tile_impl(a, tile, s);
}
PMR_CLONES void hidden_tile(const HiddenParams<double>& a, int64_t tile, HiddenScratch<double>& s) {
  hidden_tile_impl(a, tile, s);
}

// ---- visible pass ----------------------------------------------------------------------------------------------

template <class T> struct VisibleParams {
  const T* H;
  const T* W;
  const T* b;
  const T* sigma;  // nullable
  bool gauss;
  int64_t B, C, Hv, Wv, K, fh, fw, Hh, Wh;
  T* mean;
  T* S;  // nullable
  Draw draw;
  int64_t rows;  // output rows per tile
};

template <class T> struct VisibleScratch {
  std::vector<T> hpad, acc, u;
};

// Tile = (sample, block of output rows). The hidden rows it needs are copied into zero-padded rows (fw - 1 zeros
// on both sides), so the full convolution is a correlation with flipped taps and no boundary tests.
template <class T> PMR_INLINE void visible_tile_impl(const VisibleParams<T>& a, int64_t tile, VisibleScratch<T>& s) {
  constexpr int64_t L = kL<T>;
  const int64_t tiles_per_b = (a.Hv + a.rows - 1) / a.rows;
  const int64_t b = tile / tiles_per_b, y0 = (tile % tiles_per_b) * a.rows, y1 = std::min(a.Hv, y0 + a.rows);
  const int64_t fh = a.fh, fw = a.fw, Wh = a.Wh, Wv = a.Wv, K = a.K;
  const int64_t pad = fw - 1, Wpad = (Wh + 2 * pad + L - 1) / L * L + L;  // room for the vector tail
  const int64_t ylo = std::max<int64_t>(0, y0 - fh + 1), yhi = std::min(a.Hh, y1);  // hidden rows [ylo, yhi)
  const int64_t nrows = yhi - ylo;
  T* hp = s.hpad.data();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t yr = 0; yr < nrows; ++yr) {
      T* dst = hp + (k * nrows + yr) * Wpad;
      std::fill(dst, dst + pad, T(0));
      std::memcpy(dst + pad, a.H + ((b * K + k) * a.Hh + ylo + yr) * Wh, Wh * sizeof(T));
      std::fill(dst + pad + Wh, dst + Wpad, T(0));
    }
  const int64_t nv = (Wv + L - 1) / L;  // output vectors per row (the last may run past Wv into the pad)
  T* acc_rows[2] = {s.acc.data(), s.acc.data() + (nv + 4) * L};
  T* u = s.u.data();
  for (int64_t ch = 0; ch < a.C; ++ch) {
    const T bias = a.b[ch];
    const T sd = a.sigma ? a.sigma[ch] : T(1);
    auto finish = [&](int64_t y, T* accrow) {
      const int64_t base = ((b * a.C + ch) * a.Hv + y) * Wv;
      for (int64_t x = 0; x < nv * L; x += L) {
        vec<T> m = loadu(accrow + x);
        m = a.gauss ? bias + sd * m : vsigmoid<T>(bias + m);
        storeu(accrow + x, m);
      }
      std::memcpy(a.mean + base, accrow, Wv * sizeof(T));
      if (!a.S) return;
      T* smp = a.S + base;
      if (a.gauss) {
        normals(a.draw, base, Wv, u);
        for (int64_t x = 0; x < Wv; ++x) smp[x] = accrow[x] + sd * u[x];
      } else {
        uniforms(a.draw, base, Wv, u);
        for (int64_t x = 0; x < Wv; ++x) smp[x] = (u[x] < accrow[x] ? T(1) : T(0)) + (accrow[x] - accrow[x]);
      }
    };
    // Two output rows at a time: out[y][x] = sum_{k,dy,dx} W[k,ch,dy,dx] * H[k, y - dy, x - dx]. A hidden row h
    // feeds row y with dy = y - h and row y + 1 with dy = y + 1 - h, so each loaded vector serves both.
    for (int64_t y = y0; y < y1; y += 2) {
      const bool two = y + 1 < y1;
      const int64_t hlo = std::max<int64_t>(0, y - fh + 1), hhi = std::min(a.Hh - 1, two ? y + 1 : y);
      T* r0 = acc_rows[0];
      T* r1 = acc_rows[1];
      for (int64_t xv = 0; xv < nv; xv += 4) {
        const int64_t x = xv * L, nvec = std::min<int64_t>(4, nv - xv);
        vec<T> a0[4] = {}, a1[4] = {};
        for (int64_t k = 0; k < K; ++k) {
          const T* wk = a.W + (k * a.C + ch) * fh * fw;
          for (int64_t h = hlo; h <= hhi; ++h) {
            const T* src = hp + (k * nrows + (h - ylo)) * Wpad + x + pad;
            const int64_t dy0 = y - h, dy1 = y + 1 - h;
            const T* w0 = dy0 >= 0 && dy0 < fh ? wk + dy0 * fw : nullptr;
            const T* w1 = two && dy1 < fh ? wk + dy1 * fw : nullptr;
            if (nvec == 4 && w0 && w1) {
              for (int64_t dx = 0; dx < fw; ++dx) {
                const T* sp = src - dx;
                const vec<T> v0 = loadu(sp), v1 = loadu(sp + L), v2 = loadu(sp + 2 * L), v3 = loadu(sp + 3 * L);
                const T c0 = w0[dx], c1 = w1[dx];
                a0[0] += c0 * v0;
                a0[1] += c0 * v1;
                a0[2] += c0 * v2;
                a0[3] += c0 * v3;
                a1[0] += c1 * v0;
                a1[1] += c1 * v1;
                a1[2] += c1 * v2;
                a1[3] += c1 * v3;
              }
            } else {
              for (int64_t dx = 0; dx < fw; ++dx)
                for (int64_t j = 0; j < nvec; ++j) {
                  const vec<T> v = loadu(src - dx + j * L);
                  if (w0) a0[j] += w0[dx] * v;
                  if (w1) a1[j] += w1[dx] * v;
                }
            }
          }
        }
        for (int64_t j = 0; j < nvec; ++j) {
          storeu(r0 + x + j * L, a0[j]);
          storeu(r1 + x + j * L, a1[j]);
        }
      }
      finish(y, r0);
      if (two) finish(y + 1, r1);
    }
  }
}

PMR_CLONES void visible_tile(const VisibleParams<float>& a, int64_t tile, VisibleScratch<float>& s) {
  visible_tile_impl(a, tile, s);
}
PMR_CLONES void visible_tile(const VisibleParams<double>& a, int64_t tile, VisibleScratch<double>& s) {
  visible_tile_impl(a, tile, s);
}

// ---- the device struct ---------------------------------------------------------------------------------------

struct CpuConvKernels {
  static Draw draw(const std::optional<at::Generator>& gen) {
    // Same as the dense ops' draw, so philox_uniform_ / philox_normal_ reproduce every phase's numbers.
    auto* g = at::get_generator_or_default<at::CPUGeneratorImpl>(gen, at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(g->mutex_);
    return {g->random64(), 0};
  }

  static void hidden_pass(const ConvHidden& a) {
    const int64_t B = a.v.size(0), C = a.v.size(1), Hv = a.v.size(2), Wv = a.v.size(3);
    const int64_t K = a.W.size(0), fh = a.W.size(2), fw = a.W.size(3), F = C * fh * fw;
    const int64_t Hh = Hv - fh + 1, Wh = Wv - fw + 1, p = a.pool;
    const bool stat = a.gW.defined() || a.gc.defined() || a.q.defined();
    Tensor part = stat ? at::empty({B * K, F + 2}, a.v.options()) : Tensor();
    AT_DISPATCH_FLOATING_TYPES(a.v.scalar_type(), "conv_hidden_pass", [&] {
      using T = scalar_t;
      constexpr int64_t L = kL<T>;
      HiddenParams<T> hp{a.v.data_ptr<T>(), a.W.data_ptr<T>(), a.c.data_ptr<T>(), B, C, Hv, Wv, K, fh, fw, Hh, Wh, p,
                         Hh / p, Wh / p,
                         a.P.defined() ? a.P.data_ptr<T>() : nullptr, a.H.defined() ? a.H.data_ptr<T>() : nullptr,
                         a.Q.defined() ? a.Q.data_ptr<T>() : nullptr, a.draw,
                         stat ? part.data_ptr<T>() : nullptr};
      const int64_t stride = (Wh + L - 1) / L * L;
      at::parallel_for(0, B * ((K + kG - 1) / kG), 1, [&](int64_t i0, int64_t i1) {
        HiddenScratch<T> s;
        s.e.assign(kG * p * stride, T(0));
        s.hb.assign(p * stride, T(0));
        s.qx.assign(stride, T(0));
        s.m.assign(stride, T(0));
        s.u.assign(stride + L, T(0));
        s.w.assign(kG * F, T(0));
        s.off.resize(F);
        s.acc.resize(kG * F * L);
        for (int64_t i = i0; i < i1; ++i) hidden_tile(hp, i, s);
      });
      if (!stat) return;
      // Fixed-order reduction over the batch (in double) of the per-(sample, filter) partial sums.
      const T* pp = part.data_ptr<T>();
      std::vector<double> red(K * (F + 2), 0.0);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < K * (F + 2); ++i) red[i] += pp[b * K * (F + 2) + i];
      auto add = [&](const Tensor& t, int64_t col0, int64_t ncols, double scale) {
        if (!t.defined()) return;
        T* tp = t.data_ptr<T>();
        for (int64_t kk = 0; kk < K; ++kk)
          for (int64_t j = 0; j < ncols; ++j)
            tp[kk * ncols + j] += static_cast<T>(scale * red[kk * (F + 2) + col0 + j]);
      };
      add(a.gW, 0, F, a.scale);
      add(a.gc, F, 1, a.scale);
      add(a.q, F + 1, 1, a.qscale);
    });
  }

  static void visible_pass(const ConvVisible& a) {
    const int64_t B = a.H.size(0), K = a.H.size(1), Hh = a.H.size(2), Wh = a.H.size(3);
    const int64_t C = a.W.size(1), fh = a.W.size(2), fw = a.W.size(3), Hv = Hh + fh - 1, Wv = Wh + fw - 1;
    AT_DISPATCH_FLOATING_TYPES(a.H.scalar_type(), "conv_visible_pass", [&] {
      using T = scalar_t;
      constexpr int64_t L = kL<T>;
      const int64_t rows = 8;
      VisibleParams<T> vp{a.H.data_ptr<T>(), a.W.data_ptr<T>(), a.b.data_ptr<T>(),
                          a.sigma.defined() ? a.sigma.data_ptr<T>() : nullptr, a.kind == Visible::Gaussian,
                          B, C, Hv, Wv, K, fh, fw, Hh, Wh, a.mean.data_ptr<T>(),
                          a.S.defined() ? a.S.data_ptr<T>() : nullptr, a.draw, rows};
      const int64_t tiles = B * ((Hv + rows - 1) / rows);
      const int64_t Wpad = (Wh + 2 * (fw - 1) + L - 1) / L * L + L;
      const int64_t nrows = std::min(Hh, rows + fh - 1);
      at::parallel_for(0, tiles, 1, [&](int64_t i0, int64_t i1) {
        VisibleScratch<T> s;
        s.hpad.assign(K * nrows * Wpad, T(0));
        s.acc.assign(2 * ((Wv + L - 1) / L + 4) * L, T(0));
        s.u.assign(Wv, T(0));
        for (int64_t i = i0; i < i1; ++i) visible_tile(vp, i, s);
      });
    });
  }

  // Sums over each (sample, channel) map in parallel, each in one fixed order (in double), then over the maps in
  // order: the same result for any number of threads.
  template <class F> static std::vector<double> map_sums(int64_t maps, int64_t len, F term) {
    std::vector<double> out(maps, 0.0);
    at::parallel_for(0, maps, 1, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        double acc = 0.0;
        for (int64_t i = 0; i < len; ++i) acc += term(m * len + i);
        out[m] = acc;
      }
    });
    return out;
  }

  static Tensor channel_sums(const Tensor& x_in, double scale) {
    const Tensor x = x_in.contiguous();
    const int64_t B = x.size(0), C = x.size(1), len = x.size(2) * x.size(3);
    Tensor out = at::empty({C}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "channel_sums", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const auto sums = map_sums(B * C, len, [&](int64_t i) { return static_cast<double>(xp[i]); });
      scalar_t* op = out.data_ptr<scalar_t>();
      for (int64_t c = 0; c < C; ++c) {
        double acc = 0.0;
        for (int64_t b = 0; b < B; ++b) acc += sums[b * C + c];
        op[c] = narrow_float<scalar_t>(scale * acc);
      }
    });
    return out;
  }

  static Tensor sq_err(const Tensor& a_in, const Tensor& b_in) {
    const Tensor a = a_in.contiguous(), b = b_in.contiguous();
    const int64_t maps = a.size(0) * a.size(1), len = a.numel() / maps;
    Tensor out = at::empty({}, a.options());
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "conv_sq_err", [&] {
      const scalar_t* ap = a.data_ptr<scalar_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      const auto sums = map_sums(maps, len, [&](int64_t i) {
        const double d = static_cast<double>(ap[i]) - static_cast<double>(bp[i]);
        return d * d;
      });
      double acc = 0.0;
      for (double s : sums) acc += s;
      *out.data_ptr<scalar_t>() = narrow_float<scalar_t>(acc);
    });
    return out;
  }

  static bool apply(const UpdateArgs& a) { return apply_update_cpu(a); }
};

}  // namespace

TORCH_LIBRARY_IMPL(pymusicrbm, CPU, m) {
  m.impl("conv_sample_hidden", &conv_sample_hidden<CpuConvKernels>);
  m.impl("conv_sample_visible", &conv_sample_visible<CpuConvKernels>);
  m.impl("conv_cd_stats", &conv_cd_stats<CpuConvKernels>);
  m.impl("conv_cd_step_", &conv_cd_step<CpuConvKernels>);
}

}  // namespace pymusicrbm
