// Mamba's selective scan (S6) on the CPU, forward and backward.
//
// For batch b, channel d of group g (the D channels split into G equal groups that share B and C)
// and state n, with the step delta already shifted by its bias and passed through softplus:
//     h_t = exp(delta_t A_dn) h_{t-1} + delta_t u_t B_gnt,        y_t = sum_n C_gnt h_t[n]
// The D skip (y += D u) is elementwise and stays outside, in PyTorch.
//
// Shapes: u, delta, y, gy: (B, D, L) as Mamba passes them; A: (D, N); Bm, Cm: (B, G, L, N) (a token's
// N values together). All contiguous, one dtype: float32 or float64.
//
// Work split. A tile is W channels of one group (W = one 64-byte vector: 16 floats, 8 doubles); the
// recurrence of a tile runs over the tokens with its W channels in one vector, so the exp is
// vectorised and B_t, C_t are read once per tile. Threads take whole (batch, tile) items: B * D / W
// independent items (96 and more at every shape of MambaIR), balanced without splitting the
// sequence, so no chunk summaries are needed (they would double the work of the forward). Tokens
// are staged kChunk at a time: the W rows of a chunk are read as W contiguous runs into a
// [token][lane] buffer and results written back the same way, so memory is read in streams (one
// strided load per token would cost a cache miss each).
// Padded lanes of a ragged last tile get delta = u = A = 0: their state stays 0 and they add 0.
//
// Backward. The adjoint of h runs backwards in time (Mamba's S6 backward):
//     g_t = C_t gy_t + exp(delta_{t+1} A) g_{t+1}
//     gu_t = delta_t sum_n g_t B_t,   gdelta_t = sum_n g_t (A exp(delta_t A) h_{t-1} + u_t B_t)
//     gA += g_t delta_t exp(delta_t A) h_{t-1},   gB_t += g_t delta_t u_t,   gC_t += gy_t h_t
// It needs h_{t-1}: a first forward pass saves the state at the start of every chunk of kChunk
// tokens, then the chunks are visited last to first, each recomputing its states (and decays)
// from its saved start before walking back through it. Memory per item: L / kChunk + 2 kChunk
// states, not L. gB and gC sum over the channels of a group, which several items share: each item
// writes its own partial (B, G, tiles, L, N), summed over tiles by the caller. gA accumulates in
// double (a sum over all B * L tokens), flushed from the working precision once per chunk.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "simd.h"

namespace {

using medir::exp_row;
using medir::Vec;

constexpr int64_t kChunk = 64;  // tokens per chunk of the backward's recomputation

struct Geometry {
  int64_t B, L, D, N, G, per_group, tiles;  // tiles per group
  int64_t items() const { return B * G * tiles; }
};

template <typename T>
struct Scan {
  static constexpr int W = 64 / sizeof(T);
  using V = Vec<T, W>;
  using Wide = Vec<double, W>;

  // One (batch, tile) item: where its channels and its group's B and C are.
  struct Item {
    int64_t b, g, tile, c0;
    int count;
    Item(const Geometry& geo, int64_t index) {
      b = index / (geo.G * geo.tiles);
      g = (index / geo.tiles) % geo.G;
      tile = index % geo.tiles;
      c0 = g * geo.per_group + tile * W;
      count = static_cast<int>(std::min<int64_t>(W, geo.per_group - tile * W));
    }
  };

  static V load(const T* p, int count) {
    V v = {};
    if (count == W) {
      std::memcpy(&v, p, sizeof(V));
    } else {
      for (int i = 0; i < count; ++i) v[i] = p[i];
    }
    return v;
  }
  static void store(T* p, V v, int count) {
    if (count == W) {
      std::memcpy(p, &v, sizeof(V));
    } else {
      for (int i = 0; i < count; ++i) p[i] = v[i];
    }
  }
  // Tokens [t0, t0 + len) of the item's W rows of x (B, D, L) -> buf[token] (padded lanes 0), and back.
  static void gather(const T* x, const Geometry& geo, const Item& item, int64_t t0, int64_t len, V* buf) {
    for (int64_t s = 0; s < len; ++s) buf[s] = V{};
    for (int i = 0; i < item.count; ++i) {
      const T* row = x + (item.b * geo.D + item.c0 + i) * geo.L + t0;
      for (int64_t s = 0; s < len; ++s) buf[s][i] = row[s];
    }
  }
  static void scatter(T* x, const Geometry& geo, const Item& item, int64_t t0, int64_t len, const V* buf) {
    for (int i = 0; i < item.count; ++i) {
      T* row = x + (item.b * geo.D + item.c0 + i) * geo.L + t0;
      for (int64_t s = 0; s < len; ++s) row[s] = buf[s][i];
    }
  }
  static T lane_sum(V v) {
    T s = 0;
    for (int i = 0; i < W; ++i) s += v[i];
    return s;
  }

  static std::vector<V> load_A(const T* A, const Geometry& geo, const Item& item) {
    std::vector<V> a(geo.N, V{});
    for (int i = 0; i < item.count; ++i)
      for (int64_t n = 0; n < geo.N; ++n) a[n][i] = A[(item.c0 + i) * geo.N + n];
    return a;
  }

  // One step of the recurrence at token t: h <- exp(delta A) h + delta u B_t; returns C_t . h.
  // decay (optional) receives exp(delta A) per state.
  static V step(V dl, V du, const std::vector<V>& A, const T* Bt, const T* Ct, V* h, V* decay, int64_t N) {
    V acc = {};
    for (int64_t n = 0; n < N; ++n) {
      const V a = exp_row(dl * A[n]);
      if (decay) decay[n] = a;
      h[n] = a * h[n] + du * Bt[n];
      acc += Ct[n] * h[n];
    }
    return acc;
  }

  static at::Tensor forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& Bm,
                            const at::Tensor& Cm, const Geometry& geo) {
    at::Tensor y = at::empty_like(u);
    const T *pu = u.data_ptr<T>(), *pd = delta.data_ptr<T>(), *pA = A.data_ptr<T>();
    const T *pB = Bm.data_ptr<T>(), *pC = Cm.data_ptr<T>();
    T* py = y.data_ptr<T>();
    at::parallel_for(0, geo.items(), 1, [&](int64_t begin, int64_t end) {
      std::vector<V> h(geo.N), dl(kChunk), uu(kChunk), out(kChunk);
      for (int64_t index = begin; index < end; ++index) {
        const Item item(geo, index);
        const std::vector<V> a = load_A(pA, geo, item);
        std::fill(h.begin(), h.end(), V{});
        const T* BC = pB + (item.b * geo.G + item.g) * geo.L * geo.N;
        const T* CC = pC + (item.b * geo.G + item.g) * geo.L * geo.N;
        for (int64_t t0 = 0; t0 < geo.L; t0 += kChunk) {
          const int64_t len = std::min(kChunk, geo.L - t0);
          gather(pd, geo, item, t0, len, dl.data());
          gather(pu, geo, item, t0, len, uu.data());
          for (int64_t s = 0; s < len; ++s) {
            const int64_t t = t0 + s;
            out[s] = step(dl[s], dl[s] * uu[s], a, BC + t * geo.N, CC + t * geo.N, h.data(), nullptr, geo.N);
          }
          scatter(py, geo, item, t0, len, out.data());
        }
      }
    });
    return y;
  }

  // -> [gu, gdelta, gA (double), gB partial, gC partial]
  static std::vector<at::Tensor> backward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                          const at::Tensor& Bm, const at::Tensor& Cm, const at::Tensor& gy,
                                          const Geometry& geo) {
    at::Tensor gu = at::empty_like(u), gdelta = at::empty_like(delta);
    at::Tensor gA = at::zeros({geo.D, geo.N}, A.options().dtype(at::kDouble));
    at::Tensor gB = at::empty({geo.B, geo.G, geo.tiles, geo.L, geo.N}, u.options());
    at::Tensor gC = at::empty({geo.B, geo.G, geo.tiles, geo.L, geo.N}, u.options());
    const T *pu = u.data_ptr<T>(), *pd = delta.data_ptr<T>(), *pA = A.data_ptr<T>();
    const T *pB = Bm.data_ptr<T>(), *pC = Cm.data_ptr<T>(), *pgy = gy.data_ptr<T>();
    T *pgu = gu.data_ptr<T>(), *pgd = gdelta.data_ptr<T>(), *pgB = gB.data_ptr<T>(), *pgC = gC.data_ptr<T>();
    double* pgA = gA.data_ptr<double>();
    const int64_t N = geo.N, chunks = (geo.L + kChunk - 1) / kChunk;
    // gA of one channel sums over every batch row: items of different rows add into it in turn.
    std::vector<std::vector<Wide>> gA_rows(geo.items());
    at::parallel_for(0, geo.items(), 1, [&](int64_t begin, int64_t end) {
      std::vector<V> starts(chunks * N), states(kChunk * N), decays(kChunk * N), h(N), carry(N), gA_chunk(N);
      std::vector<V> dl(kChunk), uu(kChunk), gyt(kChunk), gu_out(kChunk), gd_out(kChunk);
      for (int64_t index = begin; index < end; ++index) {
        const Item item(geo, index);
        const std::vector<V> a = load_A(pA, geo, item);
        const int64_t bg = item.b * geo.G + item.g;
        const T* BC = pB + bg * geo.L * N;
        const T* CC = pC + bg * geo.L * N;
        T* gBp = pgB + (bg * geo.tiles + item.tile) * geo.L * N;
        T* gCp = pgC + (bg * geo.tiles + item.tile) * geo.L * N;
        // pass 1: the state at the start of every chunk
        std::fill(h.begin(), h.end(), V{});
        for (int64_t j = 0; j < chunks; ++j) {
          const int64_t t0 = j * kChunk, len = std::min(kChunk, geo.L - t0);
          std::copy(h.begin(), h.end(), starts.begin() + j * N);
          gather(pd, geo, item, t0, len, dl.data());
          gather(pu, geo, item, t0, len, uu.data());
          for (int64_t s = 0; s < len; ++s)
            step(dl[s], dl[s] * uu[s], a, BC + (t0 + s) * N, CC + (t0 + s) * N, h.data(), nullptr, N);
        }
        // pass 2: chunks last to first
        std::fill(carry.begin(), carry.end(), V{});
        std::vector<Wide> gA_total(N, Wide{});
        for (int64_t j = chunks - 1; j >= 0; --j) {
          const int64_t t0 = j * kChunk, len = std::min(kChunk, geo.L - t0);
          gather(pd, geo, item, t0, len, dl.data());
          gather(pu, geo, item, t0, len, uu.data());
          gather(pgy, geo, item, t0, len, gyt.data());
          std::copy(starts.begin() + j * N, starts.begin() + (j + 1) * N, h.begin());
          for (int64_t s = 0; s < len; ++s) {
            step(dl[s], dl[s] * uu[s], a, BC + (t0 + s) * N, CC + (t0 + s) * N, h.data(), decays.data() + s * N, N);
            std::copy(h.begin(), h.end(), states.begin() + s * N);
          }
          std::fill(gA_chunk.begin(), gA_chunk.end(), V{});
          for (int64_t s = len - 1; s >= 0; --s) {
            const int64_t t = t0 + s;
            const V du = dl[s] * uu[s];
            const V* now = states.data() + s * N;
            const V* before = s == 0 ? starts.data() + j * N : states.data() + (s - 1) * N;
            const V* decay = decays.data() + s * N;
            const T *Bt = BC + t * N, *Ct = CC + t * N;
            V gdl = {}, gB_dot = {};
            for (int64_t n = 0; n < N; ++n) {
              const V g = carry[n] + gyt[s] * Ct[n];       // adjoint of h_t[n]
              const V through_decay = g * decay[n] * before[n];
              gCp[t * N + n] = lane_sum(gyt[s] * now[n]);
              gBp[t * N + n] = lane_sum(g * du);
              gdl += through_decay * a[n] + g * uu[s] * Bt[n];
              gA_chunk[n] += through_decay * dl[s];
              gB_dot += g * Bt[n];
              carry[n] = decay[n] * g;
            }
            gu_out[s] = dl[s] * gB_dot;
            gd_out[s] = gdl;
          }
          scatter(pgu, geo, item, t0, len, gu_out.data());
          scatter(pgd, geo, item, t0, len, gd_out.data());
          for (int64_t n = 0; n < N; ++n) gA_total[n] += __builtin_convertvector(gA_chunk[n], Wide);
        }
        gA_rows[index] = std::move(gA_total);
      }
    });
    // gA: each channel's sum over batch rows, in a fixed order (deterministic for any thread count)
    for (int64_t index = 0; index < geo.items(); ++index) {
      const Item item(geo, index);
      for (int i = 0; i < item.count; ++i)
        for (int64_t n = 0; n < N; ++n) pgA[(item.c0 + i) * N + n] += gA_rows[index][n][i];
    }
    return {gu, gdelta, gA, gB, gC};
  }
};

Geometry check(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& Bm,
               const at::Tensor& Cm) {
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "selective_scan_cpu: u and delta must be (B, D, L) alike");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "selective_scan_cpu: A must be (D, N)");
  TORCH_CHECK(Bm.dim() == 4 && Bm.sizes() == Cm.sizes() && Bm.size(0) == u.size(0) && Bm.size(2) == u.size(2) &&
                  Bm.size(3) == A.size(1),
              "selective_scan_cpu: B and C must be (B, G, L, N)");
  const int64_t G = Bm.size(1);
  TORCH_CHECK(G > 0 && u.size(1) % G == 0, "selective_scan_cpu: the D channels must split into the G groups");
  for (const at::Tensor* t : {&u, &delta, &A, &Bm, &Cm}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == u.scalar_type(),
                "selective_scan_cpu: every input must be a contiguous CPU tensor of u's dtype");
  }
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
              "selective_scan_cpu: float32 or float64 inputs");
  const int64_t W = u.scalar_type() == at::kFloat ? Scan<float>::W : Scan<double>::W;
  const int64_t per_group = u.size(1) / G;
  return Geometry{u.size(0), u.size(2), u.size(1), A.size(1), G, per_group, (per_group + W - 1) / W};
}

at::Tensor forward(at::Tensor u, at::Tensor delta, at::Tensor A, at::Tensor Bm, at::Tensor Cm) {
  const Geometry geo = check(u, delta, A, Bm, Cm);
  if (u.scalar_type() == at::kDouble) return Scan<double>::forward(u, delta, A, Bm, Cm, geo);
  return Scan<float>::forward(u, delta, A, Bm, Cm, geo);
}

std::vector<at::Tensor> backward(at::Tensor u, at::Tensor delta, at::Tensor A, at::Tensor Bm, at::Tensor Cm,
                                 at::Tensor gy) {
  const Geometry geo = check(u, delta, A, Bm, Cm);
  TORCH_CHECK(gy.sizes() == u.sizes() && gy.is_contiguous() && gy.scalar_type() == u.scalar_type(),
              "selective_scan_cpu: gy must be a contiguous tensor like u");
  if (u.scalar_type() == at::kDouble) return Scan<double>::backward(u, delta, A, Bm, Cm, gy, geo);
  return Scan<float>::backward(u, delta, A, Bm, Cm, gy, geo);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "selective scan forward (u, delta, A, B, C) -> y");
  m.def("backward", &backward, "selective scan backward (u, delta, A, B, C, gy) -> [gu, gdelta, gA, gB, gC]");
}
