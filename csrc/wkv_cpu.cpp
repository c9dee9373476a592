// WKV forward and backward on the CPU (bi: Restore-RWKV Eq. 8; uni: RWKV's causal WKV).
//
// Shapes: w, u (C); k, v, y, gy, gk, gv, E (B, T, C) contiguous; chunk_state (B, 3, J, C) in double
// with J = ceil(T / kChunk). float32 and float64 inputs; every sum is accumulated in double.
//
// Weights. With m_j the maximum of k over chunk j (per channel) and M the maximum over chunks,
// e_i = exp(k_i - M) = E_i s_j, where E_i = exp(k_i - m_j) is stored in the input dtype (in (0, 1];
// it underflows only for tokens 87 below a token of their own chunk, whose share is then below
// float32's precision) and s_j = exp(m_j - M) in double. The shift by M cancels in the ratio. The
// forward returns E and, per chunk, s_j and the past / future denominators at its boundaries, so
// the backward needs neither exp nor k. Sweeps that run before M is known keep their sums relative
// to a running reference (the maximum so far) and rescale them when it grows.
//
// Recurrences, with d = exp(-w), g = exp(u):
//     A_{t+1} = d A_t + e_t v_t            (sum over i < t of d^(t-1-i) e_i v_i; same for the future)
//     R_{t+1} = d (R_t + S_t)              (the same sum weighted by (t-1-i): d/dw of S is -R)
//
// Layout of the work. A slice is kW channels of one batch row, held as one GCC vector (a zmm
// register of doubles with AVX-512, two ymm with AVX2); every per-channel operation is a vector
// operation. A task (one per thread when B is small) owns several slices and sweeps the chunks in
// order, each chunk of each slice copied into small local buffers first; between chunks only the
// recurrences' states are kept. Sweeps per call: bi forward 2 (backwards: E and the future sums at
// chunk boundaries; forwards: y), uni forward 1, bi backward 2 (forwards: the past sums of the
// gradients at chunk boundaries; backwards: everything else), uni backward 1. Each sweep rebuilds
// what it needs from the other direction within the chunk from the saved boundary values.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__) && defined(__AVX2__) && defined(__GLIBC__) && defined(MEDIR_LIBMVEC)
#include <immintrin.h>
// glibc's libmvec: exp of 8 floats / 4 doubles in AVX2 registers, without -ffast-math.
extern "C" __m256 _ZGVdN8v_expf(__m256);
extern "C" __m256d _ZGVdN4v_exp(__m256d);
#define MEDIR_VECTOR_EXP 1
#endif

namespace {

constexpr int kW = 8;            // channels per block
constexpr int64_t kChunk = 64;  // tokens per chunk: a chunk's buffers stay in L1 / L2

// A slice's kW channels as one GCC vector (one AVX-512 or two AVX2 registers of double): every
// operation below is a vector operation.
typedef float RowF __attribute__((vector_size(kW * sizeof(float))));
typedef double RowD __attribute__((vector_size(kW * sizeof(double))));
template <typename S>
struct RowOf;
template <>
struct RowOf<float> { using type = RowF; };
template <>
struct RowOf<double> { using type = RowD; };
template <typename S>
using Row = typename RowOf<S>::type;
using Lanes = RowD;
using Block = Lanes[kChunk];

struct Slice {
  int64_t T, C, c0, n;  // one batch row: sequence length, channels, the first of its channels, how many
  int64_t chunks() const { return (T + kChunk - 1) / kChunk; }
  int64_t start(int64_t j) const { return j * kChunk; }
  int64_t len(int64_t j) const { return std::min(kChunk, T - j * kChunk); }
};

// The slice's channels of one token (lanes >= n get `pad`), and back.
template <typename S>
Row<S> load(const Slice& s, const S* src, int64_t t, S pad = S(0)) {
  const S* row = src + t * s.C + s.c0;
  Row<S> out;
  if (s.n == kW) {
    std::memcpy(&out, row, sizeof(out));
  } else {
    for (int c = 0; c < kW; ++c) out[c] = c < s.n ? row[c] : pad;
  }
  return out;
}

template <typename S>
void store(const Slice& s, Row<S> value, int64_t t, S* dst) {
  S* row = dst + t * s.C + s.c0;
  if (s.n == kW) {
    std::memcpy(row, &value, sizeof(value));
  } else {
    for (int c = 0; c < s.n; ++c) row[c] = value[c];
  }
}

template <typename S>
void gather(const Slice& s, const S* src, int64_t t0, int64_t len, Block& dst, double pad = 0.0) {
  for (int64_t t = 0; t < len; ++t) dst[t] = __builtin_convertvector(load(s, src, t0 + t, S(pad)), Lanes);
}

template <typename S>
void scatter(const Slice& s, const Block& src, int64_t t0, int64_t len, S* dst) {
  for (int64_t t = 0; t < len; ++t) store(s, __builtin_convertvector(src[t], Row<S>), t0 + t, dst);
}

// exp of every lane: libmvec's AVX2 exp on each 256-bit piece, else the scalar exp per lane.
#ifdef MEDIR_VECTOR_EXP
template <typename V, typename Piece, Piece (*exp_piece)(Piece)>
V exp_pieces(V x) {
  Piece piece[sizeof(V) / sizeof(Piece)];
  std::memcpy(piece, &x, sizeof(x));
  for (auto& p : piece) p = exp_piece(p);
  std::memcpy(&x, piece, sizeof(x));
  return x;
}
RowF exp_row(RowF x) { return exp_pieces<RowF, __m256, _ZGVdN8v_expf>(x); }
RowD exp_row(RowD x) { return exp_pieces<RowD, __m256d, _ZGVdN4v_exp>(x); }
#else
template <typename V>
V exp_row(V x) {
  for (int c = 0; c < kW; ++c) x[c] = std::exp(x[c]);
  return x;
}
#endif

// a / b. vdivpd is the slowest instruction of the loops; with AVX-512 a reciprocal estimate (2^-14)
// refined by two Newton steps and a final residual correction gives the same result to ~1 ulp.
inline Lanes divide(Lanes a, Lanes b) {
#if defined(__AVX512F__) && defined(MEDIR_VECTOR_EXP)
  static_assert(sizeof(Lanes) == sizeof(__m512d));
  __m512d wide;
  std::memcpy(&wide, &b, sizeof(b));
  wide = _mm512_rcp14_pd(wide);
  Lanes r;
  std::memcpy(&r, &wide, sizeof(r));
  r = r * (2.0 - b * r);
  r = r * (2.0 - b * r);
  const Lanes q = a * r;
  return q + (a - b * q) * r;
#else
  return a / b;
#endif
}

template <typename scalar_t>
void decay_and_bonus(const Slice& s, const scalar_t* w, const scalar_t* u, Lanes& d, Lanes& g) {
  for (int c = 0; c < kW; ++c) {
    d[c] = c < s.n ? std::exp(-static_cast<double>(w[s.c0 + c])) : 1.0;
    g[c] = c < s.n ? std::exp(static_cast<double>(u[s.c0 + c])) : 1.0;
  }
}

// The weights e_t = E_t s_j of chunk j, as doubles.
template <typename scalar_t>
void weights(const Slice& s, const scalar_t* E, int64_t j, Lanes scale, Block& e) {
  gather(s, E, s.start(j), s.len(j), e, 1.0);
  for (int64_t t = 0; t < s.len(j); ++t) e[t] *= scale;
}

// Per-chunk scratch of a thread: the slice's values of one chunk as dense double vectors.
template <typename scalar_t>
struct Scratch {
  Row<scalar_t> raw[kChunk];
  Block e, vl, yl, side, P, Q, G, H;
};

// Runs step(slice, j) for every chunk j, in order (or backwards) and for every slice of the group
// within one chunk, so that a thread reads whole rows of its channels one chunk at a time.
template <typename Slices, typename Step>
void sweep(Slices& slices, bool backwards, Step&& step) {
  const int64_t J = slices.front().s.chunks();
  for (int64_t i = 0; i < J; ++i) {
    for (auto& slice : slices) step(slice, backwards ? J - 1 - i : i);
  }
}

// The per-chunk state the forward hands to the backward, (B, 3, J, C) in double: the scales s_j and
// the past and future denominators at the chunk's first and last token (in the frame of M).
struct ChunkState {
  double *scale, *past_den, *future_den;
  ChunkState(double* base, int64_t J, int64_t C) : scale(base), past_den(base + J * C), future_den(base + 2 * J * C) {}
};

// Moves the states to the reference max(ref, m) (the exponent their values are relative to) and
// returns the factor exp(m - reference) that takes a chunk's E to that frame.
Lanes rebase(Lanes m, Lanes& ref, std::initializer_list<Lanes*> states) {
  const Lanes next = ref > m ? ref : m;
  const Lanes shrink = exp_row(ref - next);  // ref = -inf before the first chunk: the states are 0
  for (Lanes* state : states) *state *= shrink;
  ref = next;
  return exp_row(m - next);
}

// ---------------------------------------------------------------------------------------------
// forward. bi: a sweep backwards computes E and the future sums at the chunk boundaries with a
// running reference; a sweep forwards produces y in the frame of M. uni: one sweep forwards.

template <typename scalar_t>
struct ForwardSlice {
  Slice s;
  const scalar_t *k, *v;
  scalar_t *y, *E;
  ChunkState out;
  Scratch<scalar_t>* buf;
  // Between chunks: decay, bonus, the running reference and sums. The chunk loops copy them into
  // locals, which the compiler keeps in registers (members could alias the buffers they write).
  Lanes decay, bonus, ref = Lanes{} - std::numeric_limits<double>::infinity();
  Lanes carry_num{}, carry_den{};
  // per chunk: its maximum of k; the boundary sums and the reference they were taken in
  std::vector<Lanes> chunk_max, boundary_num, boundary_den, boundary_ref;

  ForwardSlice(Slice s_, const scalar_t* w, const scalar_t* u, const scalar_t* k_, const scalar_t* v_, scalar_t* y_,
               scalar_t* E_, ChunkState out_, Scratch<scalar_t>* buf_)
      : s(s_), k(k_), v(v_), y(y_), E(E_), out(out_), buf(buf_), chunk_max(s.chunks()), boundary_num(s.chunks()),
        boundary_den(s.chunks()), boundary_ref(s.chunks()) {
    decay_and_bonus(s, w, u, decay, bonus);
  }

  // E = exp(k - m_j) of chunk j, stored, and the chunk's weights in the running reference's frame
  void exponentials(int64_t j, Block& e) {
    const int64_t t0 = s.start(j), len = s.len(j);
    Row<scalar_t>* kl = buf->raw;
    Lanes top = Lanes{} - std::numeric_limits<double>::infinity();
    for (int64_t t = 0; t < len; ++t) {
      kl[t] = load(s, k, t0 + t);
      const Lanes row = __builtin_convertvector(kl[t], Lanes);
      top = top > row ? top : row;
    }
    chunk_max[j] = top;
    const Row<scalar_t> m = __builtin_convertvector(top, Row<scalar_t>);  // exact: a value of k
    const Lanes to_ref = rebase(chunk_max[j], ref, {&carry_num, &carry_den});
    for (int64_t t = 0; t < len; ++t) {
      const Row<scalar_t> weight = exp_row(kl[t] - m);
      store(s, weight, t0 + t, E);
      e[t] = __builtin_convertvector(weight, Lanes) * to_ref;
    }
  }

  // bi, backwards: E and the future sums at each chunk's last token
  void future(int64_t j) {
    const Block &e = buf->e, &vl = buf->vl;
    exponentials(j, buf->e);
    gather(s, v, s.start(j), s.len(j), buf->vl);
    boundary_num[j] = carry_num;
    boundary_den[j] = carry_den;
    boundary_ref[j] = ref;
    const Lanes d = decay;
    Lanes num = carry_num, den = carry_den;
    for (int64_t t = s.len(j) - 1; t >= 0; --t) {
      num = d * num + e[t] * vl[t];
      den = d * den + e[t];
    }
    carry_num = num;
    carry_den = den;
  }

  // bi, forwards, after `future`: y from the past sums and the chunk's future sums rebuilt from
  // its boundary; all in the frame of M (= ref after the backward sweep)
  void output(int64_t j) {
    const int64_t len = s.len(j);
    Block &e = buf->e, &vl = buf->vl, &fn = buf->G, &fd = buf->H;
    const Lanes scale = exp_row(chunk_max[j] - ref), to_top = exp_row(boundary_ref[j] - ref);
    store(s, scale, j, out.scale);
    weights(s, E, j, scale, e);
    gather(s, v, s.start(j), len, vl);
    const Lanes d = decay, g = bonus;
    Lanes fnum = boundary_num[j] * to_top, fden = boundary_den[j] * to_top;
    store(s, fden, j, out.future_den);
    store(s, carry_den, j, out.past_den);
    for (int64_t t = len - 1; t >= 0; --t) {
      fn[t] = fnum;
      fd[t] = fden;
      fnum = d * fnum + e[t] * vl[t];
      fden = d * fden + e[t];
    }
    Lanes num = carry_num, den = carry_den;
    for (int64_t t = 0; t < len; ++t) {
      const Lanes ev = e[t] * vl[t];
      const Lanes top = num + g * ev + fn[t], bottom = den + g * e[t] + fd[t];
      num = d * num + ev;
      den = d * den + e[t];
      vl[t] = divide(top, bottom);  // y, in place of v
    }
    carry_num = num;
    carry_den = den;
    scatter(s, vl, s.start(j), len, y);
  }

  // uni, forwards: E and y in one sweep (the ratio does not depend on the frame)
  void causal_output(int64_t j) {
    const int64_t len = s.len(j);
    Block &e = buf->e, &vl = buf->vl;
    exponentials(j, e);
    gather(s, v, s.start(j), len, vl);
    boundary_den[j] = carry_den;
    boundary_ref[j] = ref;
    const Lanes d = decay, g = bonus;
    Lanes num = carry_num, den = carry_den;
    for (int64_t t = 0; t < len; ++t) {
      const Lanes ev = e[t] * vl[t];
      const Lanes top = num + g * ev, bottom = den + g * e[t];
      num = d * num + ev;
      den = d * den + e[t];
      vl[t] = divide(top, bottom);
    }
    carry_num = num;
    carry_den = den;
    scatter(s, vl, s.start(j), len, y);
  }

  // uni, after the sweep: the scales and past denominators in the frame of M
  void causal_finish() {
    for (int64_t j = 0; j < s.chunks(); ++j) {
      store(s, exp_row(chunk_max[j] - ref), j, out.scale);
      store(s, boundary_den[j] * exp_row(boundary_ref[j] - ref), j, out.past_den);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// backward: p_t = gy_t / D_t and q_t = -gy_t y_t / D_t are the gradients of the numerator and the
// denominator of y_t; G_i = g p_i + sum_{t != i} d^(|t-i|-1) p_t (H_i the same with q) give
//     gv_i = e_i G_i,   gk_i = e_i (v_i G_i + H_i),   gu = sum_t g e_t (v_t p_t + q_t),
//     gw = -sum_i e_i sum_{t != i} (|t-i|-1) d^(|t-i|-1) (v_i p_t + q_t).
// bi: a sweep forwards keeps only the past sums of p and q at each chunk's first token; the sweep
// backwards rebuilds, per chunk, D (from the denominators the forward saved), p, q and the chunk's
// past sums from that boundary, adds the future sums and writes the gradients. uni: the latter only.

struct Sums {  // decayed sums of p and q from one side, and their (|t-i|-1)-weighted versions
  Lanes sp{}, sq{}, rp{}, rq{};

  void advance(Lanes d, Lanes p, Lanes q) {
    rp = d * (rp + sp);
    rq = d * (rq + sq);
    sp = d * sp + p;
    sq = d * sq + q;
  }
};

template <typename scalar_t>
struct BackwardSlice {
  Slice s;
  bool causal;
  const scalar_t *v, *y, *gy, *E;
  scalar_t *gk, *gv;
  ChunkState saved;
  Scratch<scalar_t>* buf;
  Lanes decay, bonus, grad_w{}, grad_u{};  // copied into locals by the chunk loops (see ForwardSlice)
  Sums carry;
  std::vector<Sums> past_sums;  // bi: the past sums at each chunk's first token

  BackwardSlice(Slice s_, bool causal_, const scalar_t* w, const scalar_t* u, const scalar_t* v_, const scalar_t* y_,
                const scalar_t* gy_, const scalar_t* E_, ChunkState saved_, scalar_t* gk_, scalar_t* gv_,
                Scratch<scalar_t>* buf_)
      : s(s_), causal(causal_), v(v_), y(y_), gy(gy_), E(E_), gk(gk_), gv(gv_), saved(saved_), buf(buf_),
        past_sums(causal ? 0 : s.chunks()) {
    decay_and_bonus(s, w, u, decay, bonus);
  }

  // p and q of chunk j into buf->P, buf->Q; D from the past denominator at the chunk's first token
  // and the future one at its last (bi)
  void gradients_of_ratio(int64_t j, Lanes past, Lanes future) {
    const int64_t t0 = s.start(j), len = s.len(j);
    Block &e = buf->e, &yl = buf->yl, &P = buf->P, &Q = buf->Q, &side = buf->side;
    weights(s, E, j, load(s, saved.scale, j, 1.0), e);
    gather(s, y, t0, len, yl);
    gather(s, gy, t0, len, P);
    const Lanes d = decay, g = bonus;
    for (int64_t t = 0; t < len; ++t) {
      side[t] = past + g * e[t];
      past = d * past + e[t];
    }
    if (!causal) {
      for (int64_t t = len - 1; t >= 0; --t) {
        side[t] += future;
        future = d * future + e[t];
      }
    }
    for (int64_t t = 0; t < len; ++t) {
      P[t] = divide(P[t], side[t]);
      Q[t] = -P[t] * yl[t];
    }
  }

  // bi, forwards: the past sums at each chunk's first token
  void past(int64_t j) {
    past_sums[j] = carry;
    gradients_of_ratio(j, load(s, saved.past_den, j), load(s, saved.future_den, j));
    const Lanes d = decay;
    Sums sums = carry;
    for (int64_t t = 0; t < s.len(j); ++t) sums.advance(d, buf->P[t], buf->Q[t]);
    carry = sums;
  }

  // backwards (after `past` for bi): the chunk's past halves (bi) and future halves of G, H and
  // gw, and the gradients
  void gradients(int64_t j) {
    const int64_t t0 = s.start(j), len = s.len(j);
    Block &e = buf->e, &vl = buf->vl, &P = buf->P, &Q = buf->Q, &G = buf->G, &H = buf->H;
    gradients_of_ratio(j, load(s, saved.past_den, j), causal ? Lanes{} : load(s, saved.future_den, j));
    gather(s, v, t0, len, vl);
    const Lanes d = decay, g = bonus;
    Lanes gw = grad_w, gu = grad_u;
    if (!causal) {
      Sums before = past_sums[j];
      for (int64_t t = 0; t < len; ++t) {
        G[t] = before.sp;
        H[t] = before.sq;
        gw -= e[t] * (vl[t] * before.rp + before.rq);
        before.advance(d, P[t], Q[t]);
      }
    }
    Sums after = carry;
    for (int64_t t = len - 1; t >= 0; --t) {
      const Lanes ge = g * e[t];
      gu += ge * (vl[t] * P[t] + Q[t]);
      Lanes Gt = g * P[t] + after.sp, Ht = g * Q[t] + after.sq;
      if (!causal) {
        Gt += G[t];
        Ht += H[t];
      }
      G[t] = e[t] * Gt;
      H[t] = e[t] * (vl[t] * Gt + Ht);
      gw -= e[t] * (vl[t] * after.rp + after.rq);
      after.advance(d, P[t], Q[t]);
    }
    carry = after;
    grad_w = gw;
    grad_u = gu;
    scatter(s, G, t0, len, gv);
    scatter(s, H, t0, len, gk);
  }
};

// ---------------------------------------------------------------------------------------------
// dispatch

void check_same(const torch::Tensor& ref, std::initializer_list<const torch::Tensor*> tensors, const char* what) {
  for (const auto* t : tensors) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == ref.scalar_type(),
                "wkv_cpu: ", what, " must be contiguous CPU tensors of one dtype");
  }
}

void check_params(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& v) {
  TORCH_CHECK(v.dim() == 3, "wkv_cpu: k, v must be (B, T, C)");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == v.size(2) && u.sizes() == w.sizes(), "wkv_cpu: w, u must be (C,)");
  check_same(v, {&w, &u}, "w, u, k and v");
}

// Outputs are fresh allocations that the first write page-faults in, 4 KiB at a time: for the
// 12 MB of a 256x256x48 tensor that took longer than computing it. Asking for transparent huge pages
// (a hint; where THP is off or set to "never" nothing changes) makes that 2 MiB at a time.
torch::Tensor with_huge_pages(torch::Tensor t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr()), end = begin + t.nbytes();
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = end & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#endif
  return t;
}

int64_t chunks(int64_t T) { return (T + kChunk - 1) / kChunk; }

// Splits the B x ceil(C / kW) slices into tasks of whole batch rows, or, when there are fewer rows
// than threads, of a row's channels cut at cache-line boundaries (two threads writing one line
// would pass it back and forth on every token), and runs body(b, slices) for each in parallel.
template <typename scalar_t, typename F>
void for_each_group(int64_t B, int64_t T, int64_t C, F&& body) {
  constexpr int64_t per_line = std::max<int64_t>(1, 64 / sizeof(scalar_t) / kW);  // blocks per cache line
  const int64_t blocks = (C + kW - 1) / kW, lines = (blocks + per_line - 1) / per_line;
  const int64_t groups = std::clamp<int64_t>((at::get_num_threads() + B - 1) / B, 1, lines);
  at::parallel_for(0, B * groups, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / groups, group = job % groups;
      const int64_t first = group * lines / groups * per_line;
      const int64_t last = std::min(blocks, (group + 1) * lines / groups * per_line);
      std::vector<Slice> slices;
      for (int64_t block = first; block < last; ++block) {
        slices.push_back(Slice{T, C, block * kW, std::min<int64_t>(kW, C - block * kW)});
      }
      body(b, slices);
    }
  });
}

// -> [y, E, chunk_state]: what the backward needs besides w, u, v, y.
std::vector<torch::Tensor> forward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v, bool causal) {
  check_params(w, u, v);
  check_same(v, {&k, &v}, "w, u, k and v");
  TORCH_CHECK(k.sizes() == v.sizes(), "wkv_cpu: k and v must have one shape");
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2), J = chunks(T);
  auto y = with_huge_pages(torch::empty_like(v)), E = with_huge_pages(torch::empty_like(k));
  auto state = torch::zeros({B, 3, J, C}, k.options().dtype(torch::kFloat64));
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_cpu_forward", [&] {
    for_each_group<scalar_t>(B, T, C, [&](int64_t b, const std::vector<Slice>& group) {
      const int64_t off = b * T * C;
      Scratch<scalar_t> buf;
      std::vector<ForwardSlice<scalar_t>> slices;
      for (const Slice& s : group) {
        slices.emplace_back(s, w.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), k.data_ptr<scalar_t>() + off,
                            v.data_ptr<scalar_t>() + off, y.data_ptr<scalar_t>() + off, E.data_ptr<scalar_t>() + off,
                            ChunkState(state.data_ptr<double>() + b * 3 * J * C, J, C), &buf);
      }
      if (causal) {
        sweep(slices, false, [](auto& slice, int64_t j) { slice.causal_output(j); });
        for (auto& slice : slices) slice.causal_finish();
      } else {
        sweep(slices, true, [](auto& slice, int64_t j) { slice.future(j); });
        for (auto& slice : slices) slice.carry_num = slice.carry_den = Lanes{};
        sweep(slices, false, [](auto& slice, int64_t j) { slice.output(j); });
      }
    });
  });
  return {y, E, state};
}

// saved = [E, chunk_state] from the forward -> [gw, gu, gk, gv]
std::vector<torch::Tensor> backward(torch::Tensor w, torch::Tensor u, torch::Tensor v, torch::Tensor y,
                                    torch::Tensor gy, std::vector<torch::Tensor> saved, bool causal) {
  check_params(w, u, v);
  TORCH_CHECK(saved.size() == 2, "wkv_cpu: backward expects the [E, chunk_state] the forward returned");
  const torch::Tensor &E = saved[0], &state = saved[1];
  check_same(v, {&y, &gy, &E}, "v, y, gy and E");
  TORCH_CHECK(y.sizes() == v.sizes() && gy.sizes() == v.sizes() && E.sizes() == v.sizes(),
              "wkv_cpu: v, y, gy and E must have one shape");
  const int64_t B = v.size(0), T = v.size(1), C = v.size(2), J = chunks(T);
  TORCH_CHECK(state.scalar_type() == torch::kFloat64 && state.is_contiguous() &&
                  state.sizes() == torch::IntArrayRef({B, 3, J, C}),
              "wkv_cpu: chunk_state must be the contiguous (B, 3, J, C) float64 tensor of the forward");
  auto gk = with_huge_pages(torch::empty_like(v)), gv = with_huge_pages(torch::empty_like(v));
  auto f64 = v.options().dtype(torch::kFloat64);
  auto gw = torch::empty({B, C}, f64), gu = torch::empty({B, C}, f64);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "wkv_cpu_backward", [&] {
    for_each_group<scalar_t>(B, T, C, [&](int64_t b, const std::vector<Slice>& group) {
      const int64_t off = b * T * C;
      Scratch<scalar_t> buf;
      std::vector<BackwardSlice<scalar_t>> slices;
      for (const Slice& s : group) {
        slices.emplace_back(s, causal, w.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), v.data_ptr<scalar_t>() + off,
                            y.data_ptr<scalar_t>() + off, gy.data_ptr<scalar_t>() + off, E.data_ptr<scalar_t>() + off,
                            ChunkState(state.data_ptr<double>() + b * 3 * J * C, J, C),
                            gk.data_ptr<scalar_t>() + off, gv.data_ptr<scalar_t>() + off, &buf);
      }
      if (!causal) {
        sweep(slices, false, [](auto& slice, int64_t j) { slice.past(j); });
        for (auto& slice : slices) slice.carry = Sums{};
      }
      sweep(slices, true, [](auto& slice, int64_t j) { slice.gradients(j); });
      for (auto& slice : slices) {
        for (int c = 0; c < slice.s.n; ++c) {
          gw.data_ptr<double>()[b * C + slice.s.c0 + c] = slice.grad_w[c];
          gu.data_ptr<double>()[b * C + slice.s.c0 + c] = slice.grad_u[c];
        }
      }
    });
  });
  return {gw.sum(0), gu.sum(0), gk, gv};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "WKV forward (w, u, k, v, causal) -> [y, *saved]");
  m.def("backward", &backward, "WKV backward (w, u, v, y, gy, saved, causal) -> [gw, gu, gk, gv]");
}
