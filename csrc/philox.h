// Philox4x32-10 (Salmon et al., SC'11): a counter-based generator. Each random number is a pure function of
// (seed, counter), so a kernel can give element i its own stream position and produce the same numbers for any
// number of threads, on the CPU and on the GPU alike.
#pragma once
#include <cstdint>
#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PMR_HD __host__ __device__ __forceinline__
#else
#define PMR_HD inline
#endif

namespace pymusicrbm {

struct Philox4 {
  uint32_t x[4];
};

PMR_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Block `block` of the stream selected by (seed, offset): four 32-bit words.
PMR_HD Philox4 philox(uint64_t seed, uint64_t offset, uint64_t block) {
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(offset), c3 = static_cast<uint32_t>(offset >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in the open interval (0, 1) at the precision of T, so log(u) is always finite.
template <typename T> PMR_HD T to_uniform(uint32_t x);
template <> PMR_HD float to_uniform<float>(uint32_t x) {
  return (static_cast<float>(x >> 8) + 0.5f) * (1.0f / 16777216.0f);
}
template <> PMR_HD double to_uniform<double>(uint32_t x) {
  return (static_cast<double>(x) + 0.5) * (1.0 / 4294967296.0);
}

// Stream layout. Element i of a stream takes word (i % 32) / 8 of block (i / 32) * 8 + i % 8: a run of 32 elements
// comes from 8 consecutive blocks, each output word filling 8 consecutive elements, so a CPU kernel computes the
// 8 blocks in SIMD lanes and stores whole vectors, and a GPU thread computes one block.
PMR_HD uint64_t block_of(uint64_t i) { return (i >> 5) * 8 + (i & 7); }
PMR_HD int word_of(uint64_t i) { return static_cast<int>((i >> 3) & 3); }

template <typename T> PMR_HD T uniform_at(uint64_t seed, uint64_t offset, uint64_t i) {
  return to_uniform<T>(philox(seed, offset, block_of(i)).x[word_of(i)]);
}

// Standard normals by Box-Muller (cosine branch), two words per normal: element i takes words 2j and 2j + 1,
// j = (i % 16) / 8, of block (i / 16) * 8 + i % 8.
template <typename T> PMR_HD T box_muller(uint32_t a, uint32_t b) {
  const T u1 = to_uniform<T>(a), u2 = to_uniform<T>(b);
  return std::sqrt(T(-2) * std::log(u1)) * std::cos(T(6.283185307179586) * u2);
}

template <typename T> PMR_HD T normal_at(uint64_t seed, uint64_t offset, uint64_t i) {
  const Philox4 r = philox(seed, offset, (i >> 4) * 8 + (i & 7));
  const int j = static_cast<int>((i >> 3) & 1) * 2;
  return box_muller<T>(r.x[j], r.x[j + 1]);
}

}  // namespace pymusicrbm
