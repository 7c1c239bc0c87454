// philox_runs (cpu_simd.h): the Philox4x32-10 rounds written once, over the 8 blocks of a run in vector lanes, and
// instantiated per instruction set with its 32 x 32 -> 64-bit lane multiply. On x86-64 GCC builds an SSE2 and an
// AVX2 version and picks one when the library loads (function multiversioning, the mechanism of target_clones).
// Every version gives the words of philox.h's scalar philox(), bit for bit (tests/test_ops.py checks the version the
// test machine picks against a pure-PyTorch Philox).
#include "cpu_simd.h"

namespace pymusicrbm::simd {
namespace {

// kPairRuns runs from `run`. M: V (the lane vector, 4 or 8 x uint32), kLanes ({0, 1, ...}) and mulhilo(a, m, hi,
// lo): each lane's a * m. The runs' independent chains of multiplies interleave: one run alone leaves the multiplier
// waiting on its latency (two runs take 1.3x the time of one).
template <class M> PMR_INLINE void philox_rounds(const Draw& d, uint64_t run, uint32_t* out) {
  using V = typename M::V;
  constexpr int L = sizeof(V) / 4, G = kPairRuns * 8 / L;  // lanes, and vectors
  V c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; ++g) {
    const uint64_t blk0 = run * 8 + g * L;  // a multiple of L: adding a lane never carries into the high word
    c0[g] = M::kLanes + static_cast<uint32_t>(blk0);
    c1[g] = V{} + static_cast<uint32_t>(blk0 >> 32);
    c2[g] = V{} + static_cast<uint32_t>(d.offset);
    c3[g] = V{} + static_cast<uint32_t>(d.offset >> 32);
  }
  uint32_t k0 = static_cast<uint32_t>(d.seed), k1 = static_cast<uint32_t>(d.seed >> 32);
  for (int r = 0; r < 10; ++r) {
    for (int g = 0; g < G; ++g) {
      V hi0, lo0, hi1, lo1;
      M::mulhilo(c0[g], 0xD2511F53u, hi0, lo0);
      M::mulhilo(c2[g], 0xCD9E8D57u, hi1, lo1);
      c0[g] = hi1 ^ c1[g] ^ k0;
      c1[g] = lo1;
      c2[g] = hi0 ^ c3[g] ^ k1;
      c3[g] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int g = 0; g < G; ++g) {
    uint32_t* o = out + (g * L / 8) * kRun + (g * L) % 8;  // the vector's run, and its lanes' place in the run
    std::memcpy(o + 0, &c0[g], sizeof(V));
    std::memcpy(o + 8, &c1[g], sizeof(V));
    std::memcpy(o + 16, &c2[g], sizeof(V));
    std::memcpy(o + 24, &c3[g], sizeof(V));
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// _mm_mul_epu32 multiplies the even lanes, so the odd lanes are shifted down and multiplied separately, then both
// are interleaved back into lane order.
struct MulSse2 {
  typedef uint32_t V __attribute__((vector_size(16)));
  static constexpr V kLanes = {0, 1, 2, 3};
  static PMR_INLINE void mulhilo(V a, uint32_t m, V& hi, V& lo) {
    const __m128i x = (__m128i)a, mm = _mm_set1_epi32(static_cast<int>(m));
    const __m128i pe = _mm_mul_epu32(x, mm), po = _mm_mul_epu32(_mm_srli_epi64(x, 32), mm);
    const __m128i e = _mm_shuffle_epi32(pe, _MM_SHUFFLE(3, 1, 2, 0));  // lo0 lo2 hi0 hi2
    const __m128i o = _mm_shuffle_epi32(po, _MM_SHUFFLE(3, 1, 2, 0));  // lo1 lo3 hi1 hi3
    lo = (V)_mm_unpacklo_epi32(e, o);
    hi = (V)_mm_unpackhi_epi32(e, o);
  }
};

struct MulAvx2 {
  typedef uint32_t V __attribute__((vector_size(32)));
  static constexpr V kLanes = {0, 1, 2, 3, 4, 5, 6, 7};
  // Not always_inline: GCC inlines it once philox_rounds is inside the AVX2 version (it refuses earlier, into the
  // baseline template).
  __attribute__((target("avx2"))) static inline void mulhilo(V a, uint32_t m, V& hi, V& lo) {
    const __m256i x = (__m256i)a, mm = _mm256_set1_epi32(static_cast<int>(m));
    const __m256i pe = _mm256_mul_epu32(x, mm), po = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), mm);
    lo = (V)_mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    hi = (V)_mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
  }
};
#else
// Elsewhere: the even lanes' products as 64-bit lanes masked to their low word, the odd lanes' shifted down.
struct MulGeneric {
  typedef uint32_t V __attribute__((vector_size(32)));
  typedef uint64_t Q __attribute__((vector_size(32)));
  static constexpr V kLanes = {0, 1, 2, 3, 4, 5, 6, 7};
  static PMR_INLINE void mulhilo(V a, uint32_t m, V& hi, V& lo) {
    Q q;
    std::memcpy(&q, &a, sizeof(q));
    const Q pe = (q & 0xFFFFFFFFull) * m, po = (q >> 32) * m;
    const Q l = (pe & 0xFFFFFFFFull) | (po << 32), h = (pe >> 32) | (po & 0xFFFFFFFF00000000ull);
    std::memcpy(&lo, &l, sizeof(l));
    std::memcpy(&hi, &h, sizeof(h));
  }
};
#endif

#if defined(__x86_64__) && defined(__GNUC__)
// The versions; calls to them from this file go through GCC's load-time resolver (from other files, a call would
// bind to the default version, hence philox_runs below).
__attribute__((target("default"))) void philox_runs_isa(const Draw& d, uint64_t run, uint32_t* out) {
  philox_rounds<MulSse2>(d, run, out);
}
__attribute__((target("avx2"))) void philox_runs_isa(const Draw& d, uint64_t run, uint32_t* out) {
  philox_rounds<MulAvx2>(d, run, out);
}
#else
void philox_runs_isa(const Draw& d, uint64_t run, uint32_t* out) { philox_rounds<MulGeneric>(d, run, out); }
#endif

}  // namespace

void philox_runs(const Draw& d, uint64_t run, uint32_t* out) { philox_runs_isa(d, run, out); }

}  // namespace pymusicrbm::simd
