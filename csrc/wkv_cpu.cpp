// WKV forward and backward on the CPU (bi: Restore-RWKV Eq. 8; uni: RWKV's causal WKV).
//
// Shapes: w, u (C); k, v, y, gy, gk, gv (B, T, C) contiguous; gw, gu (B, C) in double, summed
// over B by the caller. float32 and float64 inputs; every sum is accumulated in double.
//
// Per channel, with e_i = exp(k_i - max_t k_t) (the shift cancels in the ratio), d = exp(-w),
// g = exp(u), the past and future sums are first-order recurrences:
//     A_{t+1} = d A_t + e_t v_t            (sum over i < t of d^(t-1-i) e_i v_i)
//     R_{t+1} = d (R_t + A_t)              (the same with the weight (t-1-i): d/dw of A is -R)
// Each task owns one batch row and a block of kBlock channels; it sweeps t sequentially while the
// inner loops run over its contiguous channels (vectorizable). Tasks run in parallel.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

// Declares that glibc's libmvec has vector variants of exp, so the exp loops vectorize without
// -ffast-math (which would also assume no NaN / inf and is therefore not used).
#if defined(__x86_64__) && defined(__GLIBC__) && defined(MEDIR_LIBMVEC)
#pragma omp declare simd notinbranch
extern "C" double exp(double) noexcept;
#define MEDIR_EXP ::exp
#else
#define MEDIR_EXP std::exp
#endif

namespace {

constexpr int64_t kBlock = 8;

struct Task {
  int64_t T, C, c0, n;  // sequence length, channels, first channel of the block, block width
  int64_t at(int64_t t) const { return t * C + c0; }
};

template <typename scalar_t>
void channel_max(const Task& s, const scalar_t* k, double* m) {
  for (int64_t c = 0; c < s.n; ++c) m[c] = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < s.T; ++t) {
    const scalar_t* kt = k + s.at(t);
    for (int64_t c = 0; c < s.n; ++c) m[c] = std::max(m[c], static_cast<double>(kt[c]));
  }
}

template <typename scalar_t>
void exp_row(const Task& s, const scalar_t* kt, const double* m, double* e) {
  for (int64_t c = 0; c < s.n; ++c) e[c] = MEDIR_EXP(static_cast<double>(kt[c]) - m[c]);
}

// ---------------------------------------------------------------------------------------------
// forward

template <typename scalar_t>
void forward_task(const Task& s, bool causal, const scalar_t* w, const scalar_t* u, const scalar_t* k,
                  const scalar_t* v, scalar_t* y, double* past_den) {
  double m[kBlock], d[kBlock], g[kBlock], e[kBlock], num[kBlock], den[kBlock];
  channel_max(s, k, m);
  for (int64_t c = 0; c < s.n; ++c) {
    d[c] = std::exp(-static_cast<double>(w[s.c0 + c]));
    g[c] = std::exp(static_cast<double>(u[s.c0 + c]));
    num[c] = den[c] = 0.0;
  }
  // past sweep: causal -> the output; bi -> past sums kept in y (numerator) and past_den
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t i = s.at(t);
    exp_row(s, k + i, m, e);
    for (int64_t c = 0; c < s.n; ++c) {
      const double ev = e[c] * static_cast<double>(v[i + c]);
      if (causal) {
        y[i + c] = static_cast<scalar_t>((num[c] + g[c] * ev) / (den[c] + g[c] * e[c]));
      } else {
        y[i + c] = static_cast<scalar_t>(num[c]);
        past_den[i + c] = den[c];
      }
      num[c] = d[c] * num[c] + ev;
      den[c] = d[c] * den[c] + e[c];
    }
  }
  if (causal) return;
  for (int64_t c = 0; c < s.n; ++c) num[c] = den[c] = 0.0;
  for (int64_t t = s.T - 1; t >= 0; --t) {  // future sweep, combined with the past sums
    const int64_t i = s.at(t);
    exp_row(s, k + i, m, e);
    for (int64_t c = 0; c < s.n; ++c) {
      const double ev = e[c] * static_cast<double>(v[i + c]);
      const double total_num = static_cast<double>(y[i + c]) + num[c] + g[c] * ev;
      const double total_den = past_den[i + c] + den[c] + g[c] * e[c];
      y[i + c] = static_cast<scalar_t>(total_num / total_den);
      num[c] = d[c] * num[c] + ev;
      den[c] = d[c] * den[c] + e[c];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// backward: p_t = gy_t / D_t and q_t = -gy_t y_t / D_t are the gradients of the numerator and the
// denominator of y_t; G_i = g p_i + sum_{t != i} d^(|t-i|-1) p_t (H_i the same with q) give
//     gv_i = e_i G_i,   gk_i = e_i (v_i G_i + H_i),   gu = sum_t g e_t (v_t p_t + q_t),
//     gw = -sum_i e_i sum_{t != i} (|t-i|-1) d^(|t-i|-1) (v_i p_t + q_t).

// One sweep over the tokens on one side of each i (the future side when `descending`): adds that
// side's decayed sums of p and q to G_i and H_i and its share of gw. The first sweep starts
// G, H from the bonus terms g p_i, g q_i and parks them in gv / gk; the last writes the gradients.
template <typename scalar_t>
void gradient_sweep(const Task& s, bool descending, bool first, bool last, const double* m, const double* d,
                    const double* g, const scalar_t* k, const scalar_t* v, const double* P, const double* Q,
                    scalar_t* gk, scalar_t* gv, double* gw) {
  double sp[kBlock], sq[kBlock], rp[kBlock], rq[kBlock], e[kBlock];
  for (int64_t c = 0; c < s.n; ++c) sp[c] = sq[c] = rp[c] = rq[c] = 0.0;
  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t i = s.at(descending ? s.T - 1 - step : step);
    exp_row(s, k + i, m, e);
    for (int64_t c = 0; c < s.n; ++c) {
      const double vi = static_cast<double>(v[i + c]), p = P[i + c], q = Q[i + c];
      double G = sp[c] + (first ? g[c] * p : static_cast<double>(gv[i + c]));
      double H = sq[c] + (first ? g[c] * q : static_cast<double>(gk[i + c]));
      gv[i + c] = static_cast<scalar_t>(last ? e[c] * G : G);
      gk[i + c] = static_cast<scalar_t>(last ? e[c] * (vi * G + H) : H);
      gw[c] -= e[c] * (vi * rp[c] + rq[c]);
      rp[c] = d[c] * (rp[c] + sp[c]);
      rq[c] = d[c] * (rq[c] + sq[c]);
      sp[c] = d[c] * sp[c] + p;
      sq[c] = d[c] * sq[c] + q;
    }
  }
}

template <typename scalar_t>
void backward_task(const Task& s, bool causal, const scalar_t* w, const scalar_t* u, const scalar_t* k,
                   const scalar_t* v, const scalar_t* y, const scalar_t* gy, scalar_t* gk, scalar_t* gv,
                   double* gw, double* gu, double* P, double* Q) {
  double m[kBlock], d[kBlock], g[kBlock], e[kBlock], den[kBlock];
  channel_max(s, k, m);
  for (int64_t c = 0; c < s.n; ++c) {
    d[c] = std::exp(-static_cast<double>(w[s.c0 + c]));
    g[c] = std::exp(static_cast<double>(u[s.c0 + c]));
    den[c] = 0.0;
    gw[c] = gu[c] = 0.0;
  }
  // 1. the past denominator (kept in P until the future half is known)
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t i = s.at(t);
    exp_row(s, k + i, m, e);
    for (int64_t c = 0; c < s.n; ++c) {
      P[i + c] = den[c];
      den[c] = d[c] * den[c] + e[c];
    }
  }
  // 2. for bi the future denominator; then p_t, q_t and gu
  for (int64_t c = 0; c < s.n; ++c) den[c] = 0.0;
  for (int64_t step = 0; step < s.T; ++step) {
    const int64_t i = s.at(causal ? step : s.T - 1 - step);
    exp_row(s, k + i, m, e);
    for (int64_t c = 0; c < s.n; ++c) {
      const double total = P[i + c] + (causal ? 0.0 : den[c]) + g[c] * e[c];
      const double p = static_cast<double>(gy[i + c]) / total;
      const double q = -p * static_cast<double>(y[i + c]);
      P[i + c] = p;
      Q[i + c] = q;
      gu[c] += g[c] * e[c] * (static_cast<double>(v[i + c]) * p + q);
      den[c] = d[c] * den[c] + e[c];
    }
  }
  // 3. the decayed sums of p and q: from the future for every op, from the past for bi
  gradient_sweep(s, /*descending=*/true, /*first=*/true, /*last=*/causal, m, d, g, k, v, P, Q, gk, gv, gw);
  if (!causal) gradient_sweep(s, false, false, true, m, d, g, k, v, P, Q, gk, gv, gw);
}

// ---------------------------------------------------------------------------------------------
// dispatch

void check(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes(), "wkv_cpu: k and v must be (B, T, C) of one shape");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == k.size(2) && u.sizes() == w.sizes(), "wkv_cpu: w, u must be (C,)");
  for (const auto* t : {&w, &u, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), "wkv_cpu: inputs must be contiguous CPU tensors");
    TORCH_CHECK(t->scalar_type() == k.scalar_type(), "wkv_cpu: inputs must share one dtype");
  }
}

template <typename F>
void for_each_task(int64_t B, int64_t T, int64_t C, F&& body) {
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / blocks, c0 = (job % blocks) * kBlock;
      body(b, Task{T, C, c0, std::min(kBlock, C - c0)});
    }
  });
}

torch::Tensor forward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v, bool causal) {
  check(w, u, k, v);
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
  auto y = torch::empty_like(v);
  auto past_den = causal ? torch::Tensor() : torch::empty(k.sizes(), k.options().dtype(torch::kFloat64));
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_cpu_forward", [&] {
    for_each_task(B, T, C, [&](int64_t b, const Task& s) {
      const int64_t off = b * T * C;
      forward_task<scalar_t>(s, causal, w.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), k.data_ptr<scalar_t>() + off,
                             v.data_ptr<scalar_t>() + off, y.data_ptr<scalar_t>() + off,
                             causal ? nullptr : past_den.data_ptr<double>() + off);
    });
  });
  return y;
}

std::vector<torch::Tensor> backward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v,
                                    torch::Tensor y, torch::Tensor gy, bool causal) {
  check(w, u, k, v);
  TORCH_CHECK(y.sizes() == k.sizes() && gy.sizes() == k.sizes() && y.is_contiguous() && gy.is_contiguous() &&
                  y.scalar_type() == k.scalar_type() && gy.scalar_type() == k.scalar_type(),
              "wkv_cpu: y and gy must be contiguous (B, T, C) tensors of the inputs' dtype");
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
  auto gk = torch::empty_like(k), gv = torch::empty_like(v);
  auto f64 = k.options().dtype(torch::kFloat64);
  auto gw = torch::empty({B, C}, f64), gu = torch::empty({B, C}, f64);
  auto scratch = torch::empty({2, B, T, C}, f64);  // p, q
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_cpu_backward", [&] {
    for_each_task(B, T, C, [&](int64_t b, const Task& s) {
      const int64_t off = b * T * C, plane = B * T * C;
      double* base = scratch.data_ptr<double>() + off;
      backward_task<scalar_t>(s, causal, w.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                              k.data_ptr<scalar_t>() + off, v.data_ptr<scalar_t>() + off,
                              y.data_ptr<scalar_t>() + off, gy.data_ptr<scalar_t>() + off,
                              gk.data_ptr<scalar_t>() + off, gv.data_ptr<scalar_t>() + off,
                              gw.data_ptr<double>() + b * C + s.c0, gu.data_ptr<double>() + b * C + s.c0, base,
                              base + plane);
    });
  });
  return {gw.sum(0), gu.sum(0), gk, gv};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "WKV forward (w, u, k, v, causal) -> y");
  m.def("backward", &backward, "WKV backward (w, u, k, v, y, gy, causal) -> [gw, gu, gk, gv]");
}
