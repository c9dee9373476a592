// Vector helpers shared by the CPU kernels: GCC vector types and a lane-wise exp (glibc's libmvec
// on 256- or 512-bit pieces where available, the scalar exp per lane otherwise).
#pragma once

#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__x86_64__) && defined(__AVX2__) && defined(__GLIBC__) && defined(MEDIR_LIBMVEC)
#include <immintrin.h>
// glibc's libmvec: vector exp without -ffast-math.
extern "C" __m256 _ZGVdN8v_expf(__m256);
extern "C" __m256d _ZGVdN4v_exp(__m256d);
#if defined(__AVX512F__)
extern "C" __m512 _ZGVeN16v_expf(__m512);
extern "C" __m512d _ZGVeN8v_exp(__m512d);
#endif
#define MEDIR_VECTOR_EXP 1
#endif

namespace medir {

template <typename T, int N>
struct VecOf {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T, int N>
using Vec = typename VecOf<T, N>::type;  // N values of T, one GCC vector

template <typename V>
using ElementOf = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>;

// exp of every lane: libmvec on 512- or 256-bit pieces when available, else the scalar exp per lane.
template <typename V>
V exp_row(V x) {
  using T = ElementOf<V>;
#ifdef MEDIR_VECTOR_EXP
#if defined(__AVX512F__)
  if constexpr (sizeof(V) % 64 == 0) {
    using Piece = std::conditional_t<std::is_same_v<T, float>, __m512, __m512d>;
    Piece piece[sizeof(V) / 64];
    std::memcpy(piece, &x, sizeof(x));
    for (auto& p : piece) {
      if constexpr (std::is_same_v<T, float>) p = _ZGVeN16v_expf(p); else p = _ZGVeN8v_exp(p);
    }
    std::memcpy(&x, piece, sizeof(x));
    return x;
  }
#endif
  if constexpr (sizeof(V) % 32 == 0) {
    using Piece = std::conditional_t<std::is_same_v<T, float>, __m256, __m256d>;
    Piece piece[sizeof(V) / 32];
    std::memcpy(piece, &x, sizeof(x));
    for (auto& p : piece) {
      if constexpr (std::is_same_v<T, float>) p = _ZGVdN8v_expf(p); else p = _ZGVdN4v_exp(p);
    }
    std::memcpy(&x, piece, sizeof(x));
    return x;
  }
#endif
  for (size_t c = 0; c < sizeof(V) / sizeof(T); ++c) x[c] = std::exp(x[c]);
  return x;
}

}  // namespace medir
