// WKV forward and backward on CUDA: the algorithm of wkv_cpu.cpp (read its header for the math),
// one thread per (batch, channel) sweeping the tokens; neighbouring threads read neighbouring
// channels, so every load of a token row is coalesced.
//
// Inputs float32, float16, bfloat16 or float64. Accumulation: float32 for bi_wkv (its global-max
// shift keeps every sum within float range for |w| (T-1) <= 80, checked by the caller); float64
// for uni_wkv and float64 inputs (a causal token can see keys ~120 below the maximum, whose
// weights underflow float32). w and u come in the accumulation type (w / T would be subnormal in
// float16). Scratch: (2, B, T, C) in the accumulation type.
#include <torch/extension.h>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <vector>

namespace {

constexpr int kThreads = 128;

template <typename acc_t>
__device__ __forceinline__ acc_t exp_(acc_t x) { return exp(x); }
template <>
__device__ __forceinline__ float exp_<float>(float x) { return expf(x); }

template <typename scalar_t, typename acc_t>
__device__ acc_t channel_max(const scalar_t* k, int T, int C) {
  acc_t m = -INFINITY;
  for (int t = 0; t < T; ++t) m = max(m, static_cast<acc_t>(k[t * C]));
  return m;
}

// k, v, y point at (b, 0, c); consecutive tokens are C apart.
template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(int B, int T, int C, bool causal, const acc_t* __restrict__ w,
                               const acc_t* __restrict__ u, const scalar_t* __restrict__ k,
                               const scalar_t* __restrict__ v, scalar_t* __restrict__ y,
                               acc_t* __restrict__ past_den) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * C) return;
  const int b = idx / C, c = idx % C;
  const long base = static_cast<long>(b) * T * C + c;
  k += base; v += base; y += base;
  const acc_t m = channel_max<scalar_t, acc_t>(k, T, C);
  const acc_t d = exp_(-static_cast<acc_t>(w[c])), g = exp_(static_cast<acc_t>(u[c]));
  acc_t* past_num = causal ? nullptr : past_den + static_cast<long>(B) * T * C;  // second scratch plane
  acc_t num = 0, den = 0;
  for (int t = 0; t < T; ++t) {  // past sweep: causal -> the output; bi -> the past sums, kept
    const long i = static_cast<long>(t) * C;
    const acc_t e = exp_(static_cast<acc_t>(k[i]) - m), ev = e * static_cast<acc_t>(v[i]);
    if (causal) {
      y[i] = static_cast<scalar_t>((num + g * ev) / (den + g * e));
    } else {
      past_num[base + i] = num;
      past_den[base + i] = den;
    }
    num = d * num + ev;
    den = d * den + e;
  }
  if (causal) return;
  num = 0;
  den = 0;
  for (int t = T - 1; t >= 0; --t) {  // future sweep, combined with the past sums
    const long i = static_cast<long>(t) * C;
    const acc_t e = exp_(static_cast<acc_t>(k[i]) - m), ev = e * static_cast<acc_t>(v[i]);
    y[i] = static_cast<scalar_t>((past_num[base + i] + num + g * ev) / (past_den[base + i] + den + g * e));
    num = d * num + ev;
    den = d * den + e;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(int B, int T, int C, bool causal, const acc_t* __restrict__ w,
                                const acc_t* __restrict__ u, const scalar_t* __restrict__ k,
                                const scalar_t* __restrict__ v, const scalar_t* __restrict__ y,
                                const scalar_t* __restrict__ gy, scalar_t* __restrict__ gk,
                                scalar_t* __restrict__ gv, acc_t* __restrict__ gw, acc_t* __restrict__ gu,
                                acc_t* __restrict__ P, acc_t* __restrict__ Q) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * C) return;
  const int b = idx / C, c = idx % C;
  const long base = static_cast<long>(b) * T * C + c;
  k += base; v += base; y += base; gy += base; gk += base; gv += base; P += base; Q += base;
  const acc_t m = channel_max<scalar_t, acc_t>(k, T, C);
  const acc_t d = exp_(-static_cast<acc_t>(w[c])), g = exp_(static_cast<acc_t>(u[c]));
  acc_t den = 0, sum_u = 0, sum_w = 0;
  for (int t = 0; t < T; ++t) {  // 1. past denominators, kept in P
    const long i = static_cast<long>(t) * C;
    P[i] = den;
    den = d * den + exp_(static_cast<acc_t>(k[i]) - m);
  }
  den = 0;
  for (int step = 0; step < T; ++step) {  // 2. future denominators (bi); p, q and gu
    const long i = static_cast<long>(causal ? step : T - 1 - step) * C;
    const acc_t e = exp_(static_cast<acc_t>(k[i]) - m);
    const acc_t total = P[i] + (causal ? acc_t(0) : den) + g * e;
    const acc_t p = static_cast<acc_t>(gy[i]) / total, q = -p * static_cast<acc_t>(y[i]);
    P[i] = p;
    Q[i] = q;
    sum_u += g * e * (static_cast<acc_t>(v[i]) * p + q);
    den = d * den + e;
  }
  // 3. decayed sums of p and q from the future (every op), then from the past (bi)
  for (int pass = 0; pass < (causal ? 1 : 2); ++pass) {
    const bool descending = pass == 0, first = pass == 0, last = causal || pass == 1;
    acc_t sp = 0, sq = 0, rp = 0, rq = 0;
    for (int step = 0; step < T; ++step) {
      const long i = static_cast<long>(descending ? T - 1 - step : step) * C;
      const acc_t e = exp_(static_cast<acc_t>(k[i]) - m), vi = static_cast<acc_t>(v[i]);
      const acc_t p = P[i], q = Q[i];
      const acc_t G = sp + (first ? g * p : static_cast<acc_t>(gv[i]));
      const acc_t H = sq + (first ? g * q : static_cast<acc_t>(gk[i]));
      gv[i] = static_cast<scalar_t>(last ? e * G : G);
      gk[i] = static_cast<scalar_t>(last ? e * (vi * G + H) : H);
      sum_w -= e * (vi * rp + rq);
      rp = d * (rp + sp);
      rq = d * (rq + sq);
      sp = d * sp + p;
      sq = d * sq + q;
    }
  }
  gw[idx] = sum_w;
  gu[idx] = sum_u;
}

void check(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes(), "wkv_cuda: k and v must be (B, T, C) of one shape");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == k.size(2) && u.sizes() == w.sizes(), "wkv_cuda: w, u must be (C,)");
  for (const auto* t : {&w, &u, &k, &v}) {
    TORCH_CHECK(t->is_cuda() && t->is_contiguous() && t->device() == k.device(),
                "wkv_cuda: inputs must be contiguous tensors on one CUDA device");
  }
  TORCH_CHECK(v.scalar_type() == k.scalar_type(), "wkv_cuda: k and v must share one dtype");
  TORCH_CHECK(k.numel() < (1L << 31) * 1L, "wkv_cuda: tensors above 2^31 elements are not supported");
}

at::ScalarType accumulation(const torch::Tensor& k, bool causal) {
  return (causal || k.scalar_type() == at::kDouble) ? at::kDouble : at::kFloat;
}

void check_decay(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k, bool causal) {
  TORCH_CHECK(w.scalar_type() == accumulation(k, causal) && u.scalar_type() == w.scalar_type(),
              "wkv_cuda: w and u must be in the accumulation type (float32 for bi, float64 for uni or float64 k)");
}

template <typename F>
void dispatch(const torch::Tensor& k, bool causal, F&& body) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, k.scalar_type(), "wkv_cuda", [&] {
    if (accumulation(k, causal) == at::kDouble) {
      body(scalar_t(), double());
    } else {
      body(scalar_t(), float());
    }
  });
}

// -> [y, k]: k is what the backward needs besides w, u, v, y.
std::vector<torch::Tensor> forward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v, bool causal) {
  check(w, u, k, v);
  check_decay(w, u, k, causal);
  const c10::cuda::CUDAGuard guard(k.device());
  const int B = k.size(0), T = k.size(1), C = k.size(2);
  auto y = torch::empty_like(v);
  auto scratch = causal ? torch::empty({0}, k.options().dtype(accumulation(k, causal)))
                        : torch::empty({2, B, T, C}, k.options().dtype(accumulation(k, causal)));
  const int blocks = (B * C + kThreads - 1) / kThreads;
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch(k, causal, [&](auto s, auto a) {
    using scalar_t = decltype(s);
    using acc_t = decltype(a);
    forward_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        B, T, C, causal, w.data_ptr<acc_t>(), u.data_ptr<acc_t>(), k.data_ptr<scalar_t>(),
        v.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), causal ? nullptr : scratch.data_ptr<acc_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, k};
}

// saved = [k] from the forward -> [gw, gu, gk, gv]
std::vector<torch::Tensor> backward(torch::Tensor w, torch::Tensor u, torch::Tensor v, torch::Tensor y,
                                    torch::Tensor gy, std::vector<torch::Tensor> saved, bool causal) {
  TORCH_CHECK(saved.size() == 1, "wkv_cuda: backward expects the [k] the forward returned");
  const torch::Tensor& k = saved[0];
  check(w, u, k, v);
  check_decay(w, u, k, causal);
  TORCH_CHECK(y.sizes() == k.sizes() && gy.sizes() == k.sizes() && y.is_contiguous() && gy.is_contiguous() &&
                  y.scalar_type() == k.scalar_type() && gy.scalar_type() == k.scalar_type(),
              "wkv_cuda: y and gy must be contiguous (B, T, C) tensors of the inputs' dtype");
  const c10::cuda::CUDAGuard guard(k.device());
  const int B = k.size(0), T = k.size(1), C = k.size(2);
  auto acc = k.options().dtype(accumulation(k, causal));
  auto gk = torch::empty_like(k), gv = torch::empty_like(v);
  auto gw = torch::empty({B, C}, acc), gu = torch::empty({B, C}, acc);
  auto scratch = torch::empty({2, B, T, C}, acc);
  const long plane = static_cast<long>(B) * T * C;
  const int blocks = (B * C + kThreads - 1) / kThreads;
  auto stream = at::cuda::getCurrentCUDAStream();
  dispatch(k, causal, [&](auto s, auto a) {
    using scalar_t = decltype(s);
    using acc_t = decltype(a);
    backward_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        B, T, C, causal, w.data_ptr<acc_t>(), u.data_ptr<acc_t>(), k.data_ptr<scalar_t>(),
        v.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gk.data_ptr<scalar_t>(),
        gv.data_ptr<scalar_t>(), gw.data_ptr<acc_t>(), gu.data_ptr<acc_t>(), scratch.data_ptr<acc_t>(),
        scratch.data_ptr<acc_t>() + plane);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {gw.sum(0), gu.sum(0), gk, gv};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "WKV forward (w, u, k, v, causal) -> [y, *saved]");
  m.def("backward", &backward, "WKV backward (w, u, v, y, gy, saved, causal) -> [gw, gu, gk, gv]");
}
