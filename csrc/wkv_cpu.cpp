// WKV forward and backward on the CPU (bi: Restore-RWKV Eq. 8; uni: RWKV's causal WKV).
//
// Shapes: w, u (C); k, v, y, gy, gk, gv, E (B, T, C) contiguous; float32 and float64.
//
// Recurrences, with d = exp(-w), g = exp(u), x_t = e_t v_t (numerator) or e_t (denominator):
//     A_{t+1} = d A_t + x_t                (sum over i < t of d^(t-1-i) x_i; the future likewise)
//     R_{t+1} = d (R_t + S_t)              (the same sum weighted by (t-1-i): d/dw of S is -R)
// Both are linear, so L steps of one from a state z with inputs x give d^L z + (the L steps from
// zero): a chunk's effect on the state is known from the chunk alone, and the state at every chunk
// boundary follows from a short scan over the chunks. (For R: L steps from (S, R) with zero inputs
// give (d^L S, d^L (R + L S)).)
//
// So the work is chunk-parallel. Each call makes three passes: (1) each chunk of kChunk tokens,
// independently, computes its own sums from a zero state; (2) per channel, a scan over the chunks,
// in double, turns them into the states at each chunk's first and last token; (3) each chunk,
// independently again, runs its recurrences from those states and writes its outputs. Threads take
// whole chunks (B x J of them), so they are balanced for any C and read contiguous memory.
//
// Precision. The work within a chunk (at most kChunk steps of each recurrence, from states the scan
// computed in double) runs in the accumulation type A: double for float64 inputs and for uni_wkv;
// for float32 inputs of bi_wkv, float when the decay span |w| (T - 1) and |u| are at most kFloatSpan
// (the range Restore-RWKV uses: Eq. 8 divides w and u by T), and double otherwise. In that range
// every token sees the maximum of k with weight >= exp(-20), so D_t and all sums stay well inside
// float's range; the results differ from the float64 oracle by ~1e-6 relative (float32 rounding of
// d compounded over a chunk). The chunk state's dtype records A, so the backward uses the forward's.
//
// Weights. With m_j the maximum of k over chunk j (per channel) and M the maximum over all chunks,
// e_i = exp(k_i - M) = E_i s_j, where E_i = exp(k_i - m_j) is stored in the input dtype (in (0, 1];
// it underflows only for tokens 87 below a token of their own chunk, whose share is then below
// float32's precision) and s_j = exp(m_j - M) (flushed to 0 below A's normal range: such a chunk's
// share is below A's precision too). The shift by M cancels in the ratio. Pass 1 of the forward works
// in the chunk's own frame (E); the scan rescales by s_j. The forward returns E and, per chunk, s_j
// and the boundary states, so the backward needs neither exp nor k.
//
// Layout within a chunk: a vector is kW channels in one 64-byte GCC vector of A (a zmm register with
// AVX-512); a group is up to kMaxVectors vectors, and the loops over tokens update all vectors of a
// group per token, so its recurrences are independent chains the CPU overlaps.
// ATen and torch's pybind casters only: <torch/extension.h> (the whole C++ frontend) doubles the
// build time (27 s of header parsing against 14 s on the 2-core CPU).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "simd.h"

namespace {

using medir::ElementOf;
using medir::Vec;
using medir::exp_row;

constexpr int kMaxVectors = 4;   // vectors per group: independent chains in every token loop
constexpr int64_t kChunk = 64;   // tokens per chunk
constexpr double kFloatSpan = 20.0;

// a / b to the precision of the output dtype S. vdivps/vdivpd are the slowest instructions of the
// loops; with AVX-512 a reciprocal estimate (relative error 2^-14) refined by one Newton step
// (2^-28) is enough for float32 outputs, and two more steps with a residual correction give the
// quotient to ~1 ulp of double.
template <typename S, typename V>
inline V divide(V a, V b) {
#if defined(__AVX512F__) && defined(MEDIR_VECTOR_EXP)
  if constexpr (sizeof(V) == 64) {
    V r;
    if constexpr (std::is_same_v<ElementOf<V>, float>) {
      __m512 wide;
      std::memcpy(&wide, &b, sizeof(b));
      wide = _mm512_rcp14_ps(wide);
      std::memcpy(&r, &wide, sizeof(r));
    } else {
      __m512d wide;
      std::memcpy(&wide, &b, sizeof(b));
      wide = _mm512_rcp14_pd(wide);
      std::memcpy(&r, &wide, sizeof(r));
    }
    r = r * (2 - b * r);
    if constexpr (std::is_same_v<S, float>) return a * r;
    r = r * (2 - b * r);
    const V q = a * r;
    return q + (a - b * q) * r;
  }
#endif
  return a / b;
}

// Outputs are fresh allocations that the first write page-faults in, 4 KiB at a time: for the
// 12 MB of a 256x256x48 tensor that took longer than computing it. Asking for transparent huge pages
// (a hint; where THP is off or set to "never" nothing changes) makes that 2 MiB at a time.
at::Tensor with_huge_pages(at::Tensor t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr()), end = begin + t.nbytes();
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = end & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#endif
  return t;
}

// The kernel for input dtype S and accumulation type A.
template <typename S, typename A>
struct Kernel {
  static constexpr int kW = 64 / sizeof(A);  // channels per vector
  using Lanes = Vec<A, kW>;
  using Row = Vec<S, kW>;                     // the same channels in the input dtype
  using Wide = Vec<double, kW>;               // and in double, for the scan

  // n values (lanes >= n get `pad`) and back
  static Row load_row(const S* src, int n, S pad) {
    Row out;
    if (n == kW) {
      std::memcpy(&out, src, sizeof(out));
    } else {
      for (int c = 0; c < kW; ++c) out[c] = c < n ? src[c] : pad;
    }
    return out;
  }
  static void store_row(S* dst, int n, Row value) {
    if (n == kW) {
      std::memcpy(dst, &value, sizeof(value));
    } else {
      for (int c = 0; c < n; ++c) dst[c] = value[c];
    }
  }
  static Lanes load_lanes(const S* src, int n, double pad) {
    return __builtin_convertvector(load_row(src, n, S(pad)), Lanes);
  }
  static void store_lanes(S* dst, int n, Lanes value) { store_row(dst, n, __builtin_convertvector(value, Row)); }
  static Lanes load_full(const A* src) {
    Lanes out;
    std::memcpy(&out, src, sizeof(out));
    return out;
  }
  static void store_full(A* dst, Lanes value) { std::memcpy(dst, &value, sizeof(value)); }
  static Wide load_wide(const A* src) { return __builtin_convertvector(load_full(src), Wide); }
  static void store_wide(A* dst, Wide value) { store_full(dst, __builtin_convertvector(value, Lanes)); }

  // -------------------------------------------------------------------------------------------
  // the problem's geometry and the per-channel constants

  struct Group {  // vectors first .. first + count - 1 of a batch row's channels
    int64_t first;
    int count;
  };

  struct Geometry {
    int64_t B, T, C, J, vectors, padded;  // padded = vectors * kW: the channel stride of the planes
    std::vector<Group> groups;

    Geometry(int64_t B_, int64_t T_, int64_t C_)
        : B(B_), T(T_), C(C_), J((T_ + kChunk - 1) / kChunk), vectors((C_ + kW - 1) / kW), padded(vectors * kW) {
      const int64_t n = (vectors + kMaxVectors - 1) / kMaxVectors;  // groups as even as possible
      for (int64_t g = 0, first = 0; g < n; ++g) {
        const int count = static_cast<int>(vectors / n + (g < vectors % n ? 1 : 0));
        groups.push_back(Group{first, count});
        first += count;
      }
    }
    int64_t start(int64_t j) const { return j * kChunk; }
    int64_t len(int64_t j) const { return std::min(kChunk, T - j * kChunk); }
    int lanes(int64_t vector) const { return static_cast<int>(std::min<int64_t>(kW, C - vector * kW)); }
    int64_t offset(int64_t b) const { return b * T * C; }
  };

  // Per-chunk values in A, (B, J, planes, padded): plane p of chunk j of batch row b.
  struct Planes {
    A* base;
    int64_t J, count, padded;
    explicit Planes(at::Tensor& t) : base(t.data_ptr<A>()), J(t.size(1)), count(t.size(2)), padded(t.size(3)) {}
    A* at(int64_t b, int p, int64_t j, int64_t vector) const {
      return base + ((b * J + j) * count + p) * padded + vector * kW;
    }
  };

  // decay d = exp(-w), bonus g = exp(u) per vector (1 in padding), and d^kChunk, d^(the last
  // chunk's length) in double for the scan
  struct Constants {
    std::vector<Lanes> decay, bonus;
    std::vector<Wide> decay_chunk, decay_last;
    Constants(const Geometry& geo, const S* w, const S* u)
        : decay(geo.vectors), bonus(geo.vectors), decay_chunk(geo.vectors), decay_last(geo.vectors) {
      const double last = static_cast<double>(geo.len(geo.J - 1));
      for (int64_t v = 0; v < geo.vectors; ++v) {
        for (int c = 0; c < kW; ++c) {
          const bool real = c < geo.lanes(v);
          const double wc = real ? static_cast<double>(w[v * kW + c]) : 0.0;
          decay[v][c] = static_cast<A>(std::exp(-wc));
          bonus[v][c] = static_cast<A>(real ? std::exp(static_cast<double>(u[v * kW + c])) : 1.0);
          decay_chunk[v][c] = std::exp(-wc * static_cast<double>(kChunk));
          decay_last[v][c] = std::exp(-wc * last);
        }
      }
    }
    Wide decay_over(const Geometry& geo, int64_t v, int64_t j) const {
      return j == geo.J - 1 ? decay_last[v] : decay_chunk[v];
    }
  };

  // A thread's buffers: whole chunks of rows in A, [token][vector] (all of a row's vectors, so that
  // reading a chunk of a tensor is one contiguous stream), and the raw k of a chunk. A skew of one
  // cache line more between consecutive buffers keeps a load from one from waiting on a store to
  // another at the same offset modulo 4 KiB (4K aliasing).
  struct Buffers {
    static constexpr int kCount = 7;
    std::vector<Row> raw, top;  // k of the chunk; its maximum per vector
    std::vector<Lanes> storage;
    Lanes* buf[kCount];

    explicit Buffers(const Geometry& geo) : raw(kChunk * geo.vectors), top(geo.vectors) {
      const int64_t size = kChunk * geo.vectors;
      storage.resize(kCount * size + kCount * (kCount + 1) / 2);
      for (int64_t i = 0, offset = 0; i < kCount; ++i) {
        offset += i + 1;
        buf[i] = storage.data() + offset;
        offset += size;
      }
    }
  };

  // Tokens t0 .. t0 + len - 1 of a batch row (all channels) into dst[t * vectors + vector] (padding
  // lanes get `pad`), and back.
  static void gather(const Geometry& geo, const S* src, int64_t t0, int64_t len, Lanes* dst, double pad) {
    const S* row = src + t0 * geo.C;
    const int tail = geo.lanes(geo.vectors - 1);
    for (int64_t t = 0; t < len; ++t, row += geo.C, dst += geo.vectors) {
      for (int64_t vec = 0; vec + 1 < geo.vectors; ++vec) dst[vec] = load_lanes(row + vec * kW, kW, pad);
      dst[geo.vectors - 1] = load_lanes(row + (geo.vectors - 1) * kW, tail, pad);
    }
  }

  static void scatter(const Geometry& geo, const Lanes* src, int64_t t0, int64_t len, S* dst) {
    S* row = dst + t0 * geo.C;
    const int tail = geo.lanes(geo.vectors - 1);
    for (int64_t t = 0; t < len; ++t, row += geo.C, src += geo.vectors) {
      for (int64_t vec = 0; vec + 1 < geo.vectors; ++vec) store_lanes(row + vec * kW, kW, src[vec]);
      store_lanes(row + (geo.vectors - 1) * kW, tail, src[geo.vectors - 1]);
    }
  }

  // For every chunk of every batch row (in parallel): body.prepare(buffers, b, j) (reads the chunk),
  // body.run<NV>(buffers, b, j, first) for every group of vectors, body.finish(buffers, b, j) (writes).
  template <typename Body>
  static void for_each_chunk(const Geometry& geo, const Body& body) {
    if (geo.vectors == 0) return;  // C = 0: nothing to compute
    at::parallel_for(0, geo.B * geo.J, 1, [&](int64_t begin, int64_t end) {
      Buffers buffers(geo);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / geo.J, j = task % geo.J;
        body.prepare(buffers, b, j);
        for (const Group& group : geo.groups) {
          switch (group.count) {
            case 1: body.template run<1>(buffers, b, j, group.first); break;
            case 2: body.template run<2>(buffers, b, j, group.first); break;
            case 3: body.template run<3>(buffers, b, j, group.first); break;
            default: body.template run<4>(buffers, b, j, group.first); break;
          }
        }
        body.finish(buffers, b, j);
      }
    });
  }

  // Runs scan(b, vector) for every vector of channels of every batch row (in parallel).
  template <typename Scan>
  static void for_each_vector(const Geometry& geo, Scan&& scan) {
    at::parallel_for(0, geo.B * geo.vectors, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) scan(task / geo.vectors, task % geo.vectors);
    });
  }

  // -------------------------------------------------------------------------------------------
  // forward. Planes of the chunk state (B, J, 5, padded): the chunk maximum m_j, then the scale s_j;
  // the past numerator and denominator, first the chunk's own sums (in its frame, to its last token),
  // then the state at its first token; the future numerator and denominator, likewise (from its
  // first token; then the state after its last token). The states are in the frame of M.

  enum ForwardPlane { kScale = 0, kPastNum = 1, kPastDen = 2, kFutureNum = 3, kFutureDen = 4, kForwardPlanes = 5 };

  struct ForwardPass {
    const Geometry& geo;
    const Constants& cst;
    const S *k, *v;
    S *y, *E;
    Planes planes;
    bool causal;
  };

  // pass 1: E, m_j and the chunk's own sums
  struct ForwardLocal : ForwardPass {
    // buf[0] = e (in the chunk's frame), buf[1] = v
    void prepare(Buffers& buf, int64_t b, int64_t j) const {
      const Geometry& geo = this->geo;
      const int64_t t0 = geo.start(j), len = geo.len(j), V = geo.vectors;
      const S* k = this->k + geo.offset(b) + t0 * geo.C;
      S* E = this->E + geo.offset(b) + t0 * geo.C;
      for (int64_t vec = 0; vec < V; ++vec) buf.top[vec] = Row{} - std::numeric_limits<S>::infinity();
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t vec = 0; vec < V; ++vec) {
          const Row value = load_row(k + t * geo.C + vec * kW, geo.lanes(vec), S(0));
          buf.raw[t * V + vec] = value;
          buf.top[vec] = buf.top[vec] > value ? buf.top[vec] : value;
        }
      }
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t vec = 0; vec < V; ++vec) {
          const Row weight = exp_row(buf.raw[t * V + vec] - buf.top[vec]);
          store_row(E + t * geo.C + vec * kW, geo.lanes(vec), weight);
          buf.buf[0][t * V + vec] = __builtin_convertvector(weight, Lanes);
        }
      }
      gather(geo, this->v + geo.offset(b), t0, len, buf.buf[1], 0.0);
    }

    template <int NV>
    void run(Buffers& buf, int64_t b, int64_t j, int64_t first) const {
      const int64_t len = this->geo.len(j), V = this->geo.vectors;
      const bool causal = this->causal;
      const Lanes *e = buf.buf[0] + first, *vl = buf.buf[1] + first;
      Lanes d[NV], pn[NV], pd[NV], fn[NV], fd[NV];
      for (int i = 0; i < NV; ++i) {
        d[i] = this->cst.decay[first + i];
        pn[i] = pd[i] = fn[i] = fd[i] = Lanes{};
      }
      for (int64_t t = 0; t < len; ++t) {
        const int64_t now = t * V, back = (len - 1 - t) * V;  // the future sums run from the chunk's end
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) {
          pn[i] = d[i] * pn[i] + e[now + i] * vl[now + i];
          pd[i] = d[i] * pd[i] + e[now + i];
          if (!causal) {
            fn[i] = d[i] * fn[i] + e[back + i] * vl[back + i];
            fd[i] = d[i] * fd[i] + e[back + i];
          }
        }
      }
      for (int i = 0; i < NV; ++i) {
        const int64_t vec = first + i;
        store_full(this->planes.at(b, kScale, j, vec), __builtin_convertvector(buf.top[vec], Lanes));
        store_full(this->planes.at(b, kPastNum, j, vec), pn[i]);
        store_full(this->planes.at(b, kPastDen, j, vec), pd[i]);
        store_full(this->planes.at(b, kFutureNum, j, vec), fn[i]);
        store_full(this->planes.at(b, kFutureDen, j, vec), fd[i]);
      }
    }

    void finish(Buffers&, int64_t, int64_t) const {}
  };

  // pass 2: per channel, the scales s_j and the states at the chunk boundaries, in place, in double
  static void forward_scan(const Geometry& geo, const Constants& cst, const Planes& planes, bool causal, int64_t b,
                           int64_t vec) {
    const Wide tiny = Wide{} + static_cast<double>(std::numeric_limits<A>::min());
    Wide top = Wide{} - std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < geo.J; ++j) {
      const Wide m = load_wide(planes.at(b, kScale, j, vec));
      top = top > m ? top : m;
    }
    Wide num{}, den{};
    for (int64_t j = 0; j < geo.J; ++j) {
      A *scale = planes.at(b, kScale, j, vec), *pn = planes.at(b, kPastNum, j, vec), *pd = planes.at(b, kPastDen, j, vec);
      Wide s = exp_row(load_wide(scale) - top);
      s = s < tiny ? Wide{} : s;  // no subnormal A
      const Wide own_num = load_wide(pn), own_den = load_wide(pd), dL = cst.decay_over(geo, vec, j);
      store_wide(scale, s);
      store_wide(pn, num);
      store_wide(pd, den);
      num = dL * num + s * own_num;
      den = dL * den + s * own_den;
    }
    if (causal) return;
    num = den = Wide{};
    for (int64_t j = geo.J - 1; j >= 0; --j) {
      A *fn = planes.at(b, kFutureNum, j, vec), *fd = planes.at(b, kFutureDen, j, vec);
      const Wide s = load_wide(planes.at(b, kScale, j, vec)), own_num = load_wide(fn), own_den = load_wide(fd);
      const Wide dL = cst.decay_over(geo, vec, j);
      store_wide(fn, num);
      store_wide(fd, den);
      num = dL * num + s * own_num;
      den = dL * den + s * own_den;
    }
  }

  // pass 3: y from the boundary states
  struct ForwardOutput : ForwardPass {
    // buf[0] = E, then e; buf[1] = v; buf[2], buf[3]: the future sums; buf[4] = y
    void prepare(Buffers& buf, int64_t b, int64_t j) const {
      const Geometry& geo = this->geo;
      gather(geo, this->E + geo.offset(b), geo.start(j), geo.len(j), buf.buf[0], 1.0);
      gather(geo, this->v + geo.offset(b), geo.start(j), geo.len(j), buf.buf[1], 0.0);
    }

    template <int NV>
    void run(Buffers& buf, int64_t b, int64_t j, int64_t first) const {
      const int64_t len = this->geo.len(j), V = this->geo.vectors;
      const bool causal = this->causal;
      Lanes *e = buf.buf[0] + first, *vl = buf.buf[1] + first, *fnb = buf.buf[2] + first,
            *fdb = buf.buf[3] + first, *out = buf.buf[4] + first;
      Lanes d[NV], g[NV], s[NV], num[NV], den[NV];
      for (int i = 0; i < NV; ++i) {
        const int64_t vec = first + i;
        d[i] = this->cst.decay[vec];
        g[i] = this->cst.bonus[vec];
        s[i] = load_full(this->planes.at(b, kScale, j, vec));
        num[i] = load_full(this->planes.at(b, kFutureNum, j, vec));
        den[i] = load_full(this->planes.at(b, kFutureDen, j, vec));
      }
      for (int64_t t = 0; t < len; ++t) {
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) e[t * V + i] *= s[i];
      }
      if (!causal) {
        for (int64_t t = len - 1; t >= 0; --t) {
#pragma GCC unroll 4
          for (int i = 0; i < NV; ++i) {
            const int64_t at = t * V + i;
            fnb[at] = num[i];
            fdb[at] = den[i];
            num[i] = d[i] * num[i] + e[at] * vl[at];
            den[i] = d[i] * den[i] + e[at];
          }
        }
      }
      for (int i = 0; i < NV; ++i) {
        num[i] = load_full(this->planes.at(b, kPastNum, j, first + i));
        den[i] = load_full(this->planes.at(b, kPastDen, j, first + i));
      }
      for (int64_t t = 0; t < len; ++t) {
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) {
          const int64_t at = t * V + i;
          const Lanes ev = e[at] * vl[at];
          Lanes top = num[i] + g[i] * ev, bottom = den[i] + g[i] * e[at];
          if (!causal) {
            top += fnb[at];
            bottom += fdb[at];
          }
          num[i] = d[i] * num[i] + ev;
          den[i] = d[i] * den[i] + e[at];
          out[at] = divide<S>(top, bottom);
        }
      }
    }

    void finish(Buffers& buf, int64_t b, int64_t j) const {
      const Geometry& geo = this->geo;
      scatter(geo, buf.buf[4], geo.start(j), geo.len(j), this->y + geo.offset(b));
    }
  };

  // -------------------------------------------------------------------------------------------
  // backward: p_t = gy_t / D_t and q_t = -gy_t y_t / D_t are the gradients of the numerator and the
  // denominator of y_t; G_i = g p_i + sum_{t != i} d^(|t-i|-1) p_t (H_i the same with q) give
  //     gv_i = e_i G_i,   gk_i = e_i (v_i G_i + H_i),   gu = sum_t g e_t (v_t p_t + q_t),
  //     gw = -sum_i e_i sum_{t != i} (|t-i|-1) d^(|t-i|-1) (v_i p_t + q_t).
  // The sums over t < i and t > i are the recurrences S, R above on the inputs p and q, kept in Sums.
  // Pass 1 computes p and q and keeps them in the memory of the outputs (gv holds p, gk holds q)
  // for pass 3. Planes of the backward (B, J, 10, padded): the past Sums (4 planes: the chunk's own,
  // then the state at its first token; bi only), the future Sums (4: likewise, the state after its
  // last token), and the chunk's shares of gw and gu.

  enum BackwardPlane { kPastSums = 0, kFutureSums = 4, kGradW = 8, kGradU = 9, kBackwardPlanes = 10 };

  template <typename V>
  struct Sums {  // decayed sums of p and q from one side, and their (|t-i|-1)-weighted versions
    V sp{}, sq{}, rp{}, rq{};

    void advance(V d, V p, V q) {
      rp = d * (rp + sp);
      rq = d * (rq + sq);
      sp = d * sp + p;
      sq = d * sq + q;
    }
  };

  template <typename V>
  static Sums<V> load_sums(const Planes& planes, int64_t b, int p, int64_t j, int64_t vec) {
    auto load = [&](int plane) {
      if constexpr (std::is_same_v<V, Wide>) return load_wide(planes.at(b, plane, j, vec));
      else return load_full(planes.at(b, plane, j, vec));
    };
    return Sums<V>{load(p), load(p + 1), load(p + 2), load(p + 3)};
  }

  template <typename V>
  static void store_sums(const Planes& planes, int64_t b, int p, int64_t j, int64_t vec, const Sums<V>& sums) {
    auto store = [&](int plane, V value) {
      if constexpr (std::is_same_v<V, Wide>) store_wide(planes.at(b, plane, j, vec), value);
      else store_full(planes.at(b, plane, j, vec), value);
    };
    store(p, sums.sp);
    store(p + 1, sums.sq);
    store(p + 2, sums.rp);
    store(p + 3, sums.rq);
  }

  struct BackwardPass {
    const Geometry& geo;
    const Constants& cst;
    const S *v, *y, *gy, *E;
    S *gk, *gv;
    Planes saved, planes;
    bool causal;
  };

  // pass 1: p and q, and the chunk's own Sums in both directions
  struct BackwardLocal : BackwardPass {
    // buf[0] = E, then e (in the frame of M); buf[1] = gy, then p; buf[2] = y, then q; buf[3]: D
    void prepare(Buffers& buf, int64_t b, int64_t j) const {
      const Geometry& geo = this->geo;
      const int64_t t0 = geo.start(j), len = geo.len(j), at = geo.offset(b);
      gather(geo, this->E + at, t0, len, buf.buf[0], 1.0);
      gather(geo, this->gy + at, t0, len, buf.buf[1], 0.0);
      gather(geo, this->y + at, t0, len, buf.buf[2], 0.0);
    }

    template <int NV>
    void run(Buffers& buf, int64_t b, int64_t j, int64_t first) const {
      const int64_t len = this->geo.len(j), V = this->geo.vectors;
      const bool causal = this->causal;
      Lanes *e = buf.buf[0] + first, *P = buf.buf[1] + first, *Q = buf.buf[2] + first, *side = buf.buf[3] + first;
      Lanes d[NV], g[NV], s[NV], past[NV], future[NV];
      for (int i = 0; i < NV; ++i) {
        const int64_t vec = first + i;
        d[i] = this->cst.decay[vec];
        g[i] = this->cst.bonus[vec];
        s[i] = load_full(this->saved.at(b, kScale, j, vec));
        past[i] = load_full(this->saved.at(b, kPastDen, j, vec));
        future[i] = causal ? Lanes{} : load_full(this->saved.at(b, kFutureDen, j, vec));
      }
      // D from the past denominator at the chunk's first token and the future one after its last
      for (int64_t t = 0; t < len; ++t) {
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) {
          const int64_t at = t * V + i;
          e[at] *= s[i];
          side[at] = past[i] + g[i] * e[at];
          past[i] = d[i] * past[i] + e[at];
        }
      }
      if (!causal) {
        for (int64_t t = len - 1; t >= 0; --t) {
#pragma GCC unroll 4
          for (int i = 0; i < NV; ++i) {
            const int64_t at = t * V + i;
            side[at] += future[i];
            future[i] = d[i] * future[i] + e[at];
          }
        }
      }
      Sums<Lanes> before[NV], after[NV];
      for (int64_t t = 0; t < len; ++t) {
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) {
          const int64_t at = t * V + i;
          P[at] = divide<S>(P[at], side[at]);
          Q[at] = -P[at] * Q[at];  // Q held y
          if (!causal) before[i].advance(d[i], P[at], Q[at]);
        }
      }
      for (int64_t t = len - 1; t >= 0; --t) {
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) after[i].advance(d[i], P[t * V + i], Q[t * V + i]);
      }
      for (int i = 0; i < NV; ++i) {
        if (!causal) store_sums(this->planes, b, kPastSums, j, first + i, before[i]);
        store_sums(this->planes, b, kFutureSums, j, first + i, after[i]);
      }
    }

    void finish(Buffers& buf, int64_t b, int64_t j) const {
      const Geometry& geo = this->geo;
      const int64_t t0 = geo.start(j), len = geo.len(j);
      scatter(geo, buf.buf[1], t0, len, this->gv + geo.offset(b));
      scatter(geo, buf.buf[2], t0, len, this->gk + geo.offset(b));
    }
  };

  // pass 2: the Sums at the chunk boundaries, in place, in double
  static void backward_scan(const Geometry& geo, const Constants& cst, const Planes& planes, bool causal, int64_t b,
                            int64_t vec) {
    auto step = [&](int p, int64_t j, Sums<Wide>& state) {  // store the state, then move it over chunk j
      const Sums<Wide> own = load_sums<Wide>(planes, b, p, j, vec);
      store_sums(planes, b, p, j, vec, state);
      const Wide dL = cst.decay_over(geo, vec, j);
      const double steps = static_cast<double>(geo.len(j));
      state.rp = dL * (state.rp + steps * state.sp) + own.rp;
      state.rq = dL * (state.rq + steps * state.sq) + own.rq;
      state.sp = dL * state.sp + own.sp;
      state.sq = dL * state.sq + own.sq;
    };
    Sums<Wide> state;
    if (!causal) {
      for (int64_t j = 0; j < geo.J; ++j) step(kPastSums, j, state);
    }
    state = Sums<Wide>{};
    for (int64_t j = geo.J - 1; j >= 0; --j) step(kFutureSums, j, state);
  }

  // pass 3: gk, gv and the chunk's shares of gw, gu
  struct BackwardGradients : BackwardPass {
    // buf[0] = E, then e; buf[1] = p and buf[2] = q (from pass 1, in gv and gk); buf[3] = v;
    // buf[4] = gv, buf[5] = gk
    void prepare(Buffers& buf, int64_t b, int64_t j) const {
      const Geometry& geo = this->geo;
      const int64_t t0 = geo.start(j), len = geo.len(j), at = geo.offset(b);
      gather(geo, this->E + at, t0, len, buf.buf[0], 1.0);
      gather(geo, this->gv + at, t0, len, buf.buf[1], 0.0);
      gather(geo, this->gk + at, t0, len, buf.buf[2], 0.0);
      gather(geo, this->v + at, t0, len, buf.buf[3], 0.0);
    }

    template <int NV>
    void run(Buffers& buf, int64_t b, int64_t j, int64_t first) const {
      const int64_t len = this->geo.len(j), V = this->geo.vectors;
      const bool causal = this->causal;
      Lanes *e = buf.buf[0] + first, *vl = buf.buf[3] + first, *G = buf.buf[4] + first, *H = buf.buf[5] + first;
      const Lanes *P = buf.buf[1] + first, *Q = buf.buf[2] + first;
      Lanes d[NV], g[NV], s[NV], gw[NV], gu[NV];
      Sums<Lanes> sums[NV];
      for (int i = 0; i < NV; ++i) {
        d[i] = this->cst.decay[first + i];
        g[i] = this->cst.bonus[first + i];
        s[i] = load_full(this->saved.at(b, kScale, j, first + i));
        gw[i] = gu[i] = Lanes{};
        if (!causal) sums[i] = load_sums<Lanes>(this->planes, b, kPastSums, j, first + i);
      }
      for (int64_t t = 0; t < len; ++t) {
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) {
          const int64_t at = t * V + i;
          e[at] *= s[i];
          if (!causal) {
            G[at] = sums[i].sp;
            H[at] = sums[i].sq;
            gw[i] -= e[at] * (vl[at] * sums[i].rp + sums[i].rq);
            sums[i].advance(d[i], P[at], Q[at]);
          }
        }
      }
      for (int i = 0; i < NV; ++i) sums[i] = load_sums<Lanes>(this->planes, b, kFutureSums, j, first + i);
      for (int64_t t = len - 1; t >= 0; --t) {
#pragma GCC unroll 4
        for (int i = 0; i < NV; ++i) {
          const int64_t at = t * V + i;
          const Lanes ge = g[i] * e[at];
          gu[i] += ge * (vl[at] * P[at] + Q[at]);
          Lanes Gt = g[i] * P[at] + sums[i].sp, Ht = g[i] * Q[at] + sums[i].sq;
          if (!causal) {
            Gt += G[at];
            Ht += H[at];
          }
          G[at] = e[at] * Gt;
          H[at] = e[at] * (vl[at] * Gt + Ht);
          gw[i] -= e[at] * (vl[at] * sums[i].rp + sums[i].rq);
          sums[i].advance(d[i], P[at], Q[at]);
        }
      }
      for (int i = 0; i < NV; ++i) {
        store_full(this->planes.at(b, kGradW, j, first + i), gw[i]);
        store_full(this->planes.at(b, kGradU, j, first + i), gu[i]);
      }
    }

    void finish(Buffers& buf, int64_t b, int64_t j) const {
      const Geometry& geo = this->geo;
      const int64_t t0 = geo.start(j), len = geo.len(j);
      scatter(geo, buf.buf[4], t0, len, this->gv + geo.offset(b));
      scatter(geo, buf.buf[5], t0, len, this->gk + geo.offset(b));
    }
  };

  // -------------------------------------------------------------------------------------------

  static std::vector<at::Tensor> forward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k,
                                            const at::Tensor& v, bool causal) {
    const Geometry geo(k.size(0), k.size(1), k.size(2));
    auto y = with_huge_pages(at::empty_like(v)), E = with_huge_pages(at::empty_like(k));
    // every plane a pass reads is written first (the future planes only for bi, which reads them)
    auto state = at::empty({geo.B, geo.J, kForwardPlanes, geo.padded}, k.options().dtype(c10::CppTypeToScalarType<A>::value));
    const Constants cst(geo, w.data_ptr<S>(), u.data_ptr<S>());
    const ForwardPass pass{geo, cst, k.data_ptr<S>(), v.data_ptr<S>(), y.data_ptr<S>(), E.data_ptr<S>(), Planes(state),
                           causal};
    for_each_chunk(geo, ForwardLocal{pass});
    for_each_vector(geo, [&](int64_t b, int64_t vec) { forward_scan(geo, cst, pass.planes, causal, b, vec); });
    for_each_chunk(geo, ForwardOutput{pass});
    return {y, E, state};
  }

  static std::vector<at::Tensor> backward(const at::Tensor& w, const at::Tensor& u, const at::Tensor& v,
                                             const at::Tensor& y, const at::Tensor& gy, const at::Tensor& E,
                                             at::Tensor state, bool causal) {
    const Geometry geo(v.size(0), v.size(1), v.size(2));
    TORCH_CHECK(state.is_contiguous() && state.sizes() == at::IntArrayRef({geo.B, geo.J, kForwardPlanes, geo.padded}),
                "wkv_cpu: chunk_state must be the contiguous (B, J, 5, padded C) tensor of the forward");
    auto gk = with_huge_pages(at::empty_like(v)), gv = with_huge_pages(at::empty_like(v));
    auto sums = at::empty({geo.B, geo.J, kBackwardPlanes, geo.padded}, state.options());
    const Constants cst(geo, w.data_ptr<S>(), u.data_ptr<S>());
    const BackwardPass pass{geo, cst, v.data_ptr<S>(), y.data_ptr<S>(), gy.data_ptr<S>(), E.data_ptr<S>(),
                            gk.data_ptr<S>(), gv.data_ptr<S>(), Planes(state), Planes(sums), causal};
    for_each_chunk(geo, BackwardLocal{pass});
    for_each_vector(geo, [&](int64_t b, int64_t vec) { backward_scan(geo, cst, pass.planes, causal, b, vec); });
    for_each_chunk(geo, BackwardGradients{pass});
    // the chunks' shares summed in a fixed order (in double): the result does not depend on the
    // thread count
    auto shares = sums.narrow(3, 0, geo.C).to(at::kDouble);
    return {shares.select(2, kGradW).sum(at::IntArrayRef{0, 1}), shares.select(2, kGradU).sum(at::IntArrayRef{0, 1}), gk, gv};
  }
};

// ---------------------------------------------------------------------------------------------
// dispatch

void check_same(const at::Tensor& ref, std::initializer_list<const at::Tensor*> tensors, const char* what) {
  for (const auto* t : tensors) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == ref.scalar_type(),
                "wkv_cpu: ", what, " must be contiguous CPU tensors of one dtype");
  }
}

void check_params(const at::Tensor& w, const at::Tensor& u, const at::Tensor& v) {
  TORCH_CHECK(v.dim() == 3, "wkv_cpu: k, v must be (B, T, C)");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == v.size(2) && u.sizes() == w.sizes(), "wkv_cpu: w, u must be (C,)");
  check_same(v, {&w, &u}, "w, u, k and v");
}

// float32 inputs of bi_wkv accumulate in float within a chunk when nothing can leave float's range
// (see the top). Not for uni_wkv: there the maximum of k may lie in a token's future, and its
// e_t = exp(k_t - M) then underflows float (0 / 0) where double still holds it.
bool float_is_enough(const at::Tensor& w, const at::Tensor& u, int64_t T) {
  const double span = w.abs().max().item<double>() * static_cast<double>(T - 1);
  return span <= kFloatSpan && u.abs().max().item<double>() <= kFloatSpan;
}

// -> [y, E, chunk_state]: what the backward needs besides w, u, v, y.
std::vector<at::Tensor> forward(at::Tensor w, at::Tensor u, at::Tensor k, at::Tensor v, bool causal) {
  check_params(w, u, v);
  check_same(v, {&k, &v}, "w, u, k and v");
  TORCH_CHECK(k.sizes() == v.sizes(), "wkv_cpu: k and v must have one shape");
  if (k.scalar_type() == at::kDouble) return Kernel<double, double>::forward(w, u, k, v, causal);
  TORCH_CHECK(k.scalar_type() == at::kFloat, "wkv_cpu: k and v must be float32 or float64");
  if (!causal && k.size(2) > 0 && float_is_enough(w, u, k.size(1))) return Kernel<float, float>::forward(w, u, k, v, causal);
  return Kernel<float, double>::forward(w, u, k, v, causal);
}

// saved = [E, chunk_state] from the forward -> [gw, gu, gk, gv]
std::vector<at::Tensor> backward(at::Tensor w, at::Tensor u, at::Tensor v, at::Tensor y,
                                    at::Tensor gy, std::vector<at::Tensor> saved, bool causal) {
  check_params(w, u, v);
  TORCH_CHECK(saved.size() == 2, "wkv_cpu: backward expects the [E, chunk_state] the forward returned");
  const at::Tensor &E = saved[0], &state = saved[1];
  check_same(v, {&y, &gy, &E}, "v, y, gy and E");
  TORCH_CHECK(y.sizes() == v.sizes() && gy.sizes() == v.sizes() && E.sizes() == v.sizes(),
              "wkv_cpu: v, y, gy and E must have one shape");
  if (v.scalar_type() == at::kDouble) {
    TORCH_CHECK(state.scalar_type() == at::kDouble, "wkv_cpu: chunk_state of a float64 forward must be float64");
    return Kernel<double, double>::backward(w, u, v, y, gy, E, state, causal);
  }
  TORCH_CHECK(v.scalar_type() == at::kFloat, "wkv_cpu: v must be float32 or float64");
  if (state.scalar_type() == at::kFloat) return Kernel<float, float>::backward(w, u, v, y, gy, E, state, causal);
  TORCH_CHECK(state.scalar_type() == at::kDouble, "wkv_cpu: chunk_state must be float32 or float64");
  return Kernel<float, double>::backward(w, u, v, y, gy, E, state, causal);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "WKV forward (w, u, k, v, causal) -> [y, *saved]");
  m.def("backward", &backward, "WKV backward (w, u, v, y, gy, saved, causal) -> [gw, gu, gk, gv]");
}
