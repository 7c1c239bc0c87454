// Device-independent parts of the dense RBM ops: argument checks and the orchestration of GEMMs (through ATen,
// so MKL/cuBLAS do them) around the fused element-wise kernels that each device provides.
//
// A device provides a struct K with:
//   static Draw draw(const std::optional<at::Generator>&);            one draw per sampling phase
//   static void fill_uniform(Tensor out, Draw);  fill_normal(Tensor out, Draw)
//   static void sigmoid_sample(Tensor p, Tensor s, Draw);            p <- sigmoid(p); s <- (u < p) if s defined
//   static void gaussian_sample(Tensor m, Tensor b, Tensor sigma, Tensor s, Draw);
//                                                                    m <- b + sigma*m; s <- m + sigma*z
//   static bool / Tensor apply(const UpdateArgs&);                   the update of cd_apply_ (below); true / a 0-d
//                                                                    bool device tensor (no sync) when applied
//   static bool all_finite(const Tensor&);
// and optionally static Tensor sq_err(const Tensor& a, const Tensor& b) (0-d sum of squared differences), static
// bool gather_rows(Tensor out, const Tensor& data, const Tensor& idx) (out <- data[idx], true if all finite), bool
// copy_finite(Tensor out, const Tensor& src) (out <- src, true if all finite), weighted_column_sums,
// sparse_rows_product and sparse_weight_statistic (binary_times, weight_statistic below), else ATen's.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "common.h"

namespace pymusicrbm {

inline void check_float(const char* op, const char* name, const Tensor& t, const Tensor& W) {
  check_dtype_device(op, name, t, "W", W);
}

inline void check_vector(const char* op, const char* name, const Tensor& t, int64_t n, const Tensor& W) {
  check_float(op, name, t, W);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, op, ": ", name, " must be 1-D of size ", n, ", got shape ", t.sizes());
}

// x is (batch, cols) data; W is (n_visible, n_hidden).
inline void check_data(const char* op, const char* name, const Tensor& x, int64_t cols, const char* what,
                       const Tensor& W) {
  TORCH_CHECK(W.dim() == 2, op, ": W must be 2-D (n_visible, n_hidden), got shape ", W.sizes());
  check_float(op, "W", W, W);
  check_float(op, name, x, W);
  TORCH_CHECK(x.dim() == 2, op, ": ", name, " must be 2-D (batch, ", what, "), got shape ", x.sizes());
  TORCH_CHECK(x.size(1) == cols, op, ": ", name, " has ", x.size(1), " columns but W implies ", what, " = ", cols);
  TORCH_CHECK(x.size(0) > 0, op, ": ", name, " is an empty batch");
}

inline void check_sigma(const char* op, const std::optional<Tensor>& sigma, const Tensor& W) {
  if (!sigma) return;
  check_vector(op, "sigma", *sigma, W.size(0), W);
  // (not checked on a GPU, where it would stall the stream; sigma is a model parameter the estimators keep > 0)
  if (cheap_to_check(*sigma)) TORCH_CHECK((*sigma > 0).all().item<bool>(), op, ": sigma must be > 0 everywhere");
}

template <class K>
std::tuple<Tensor, Tensor> sample_hidden(const Tensor& v, const Tensor& W, const Tensor& c,
                                         const std::optional<Tensor>& sigma, std::optional<at::Generator> gen) {
  const char* op = "sample_hidden";
  check_data(op, "v", v, W.size(0), "n_visible", W);
  check_vector(op, "c", c, W.size(1), W);
  check_sigma(op, sigma, W);
  TORCH_CHECK(!cheap_to_check(v) || K::all_finite(v), op, ": v contains NaN or Inf");
  const Tensor x = sigma ? v / *sigma : v.contiguous();
  Tensor p = at::addmm(c, x, W);
  Tensor h = at::empty_like(p);
  K::sigmoid_sample(p, h, K::draw(gen));
  return {p, h};
}

template <class K>
std::tuple<Tensor, Tensor> sample_visible(const Tensor& h, const Tensor& W, const Tensor& b,
                                          const std::optional<Tensor>& sigma, c10::string_view visible,
                                          std::optional<at::Generator> gen) {
  const char* op = "sample_visible";
  const Visible kind = parse_visible(visible, op);
  check_data(op, "h", h, W.size(1), "n_hidden", W);
  check_vector(op, "b", b, W.size(0), W);
  check_sigma(op, sigma, W);
  TORCH_CHECK(kind == Visible::Gaussian || !sigma, op, ": sigma applies to gaussian visible units only");
  TORCH_CHECK(!cheap_to_check(h) || K::all_finite(h), op, ": h contains NaN or Inf");
  Tensor mean, s;
  if (kind == Visible::Bernoulli) {
    mean = at::addmm(b, h, W.t());
    s = at::empty_like(mean);
    K::sigmoid_sample(mean, s, K::draw(gen));
  } else {
    mean = at::mm(h, W.t());
    s = at::empty_like(mean);
    K::gaussian_sample(mean, b, sigma ? *sigma : Tensor(), s, K::draw(gen));
  }
  return {mean, s};
}

// F(v) = -b.v - sum_j softplus(c_j + v.W_j)                      (Bernoulli visible)
// F(v) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - sum_j softplus(c_j + (v/sigma).W_j)   (Gaussian visible)
inline Tensor free_energy(const Tensor& v, const Tensor& W, const Tensor& b, const Tensor& c,
                          const std::optional<Tensor>& sigma, c10::string_view visible) {
  const char* op = "free_energy";
  const Visible kind = parse_visible(visible, op);
  check_data(op, "v", v, W.size(0), "n_visible", W);
  check_vector(op, "b", b, W.size(0), W);
  check_vector(op, "c", c, W.size(1), W);
  check_sigma(op, sigma, W);
  TORCH_CHECK(kind == Visible::Gaussian || !sigma, op, ": sigma applies to gaussian visible units only");
  const Tensor x = sigma ? v / *sigma : v;
  const Tensor hidden = at::softplus(at::addmm(c, x, W)).sum(1);
  if (kind == Visible::Bernoulli) return -at::mv(v, b) - hidden;
  const Tensor d = sigma ? (v - b) / *sigma : v - b;
  return 0.5 * d.square().sum(1) - hidden;
}

template <class K>
void fill_uniform(Tensor out, std::optional<at::Generator> gen) {
  TORCH_CHECK(out.scalar_type() == at::kFloat || out.scalar_type() == at::kDouble,
              "philox_uniform_: out must be float32 or float64, got ", out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), "philox_uniform_: out must be contiguous");
  K::fill_uniform(out, K::draw(gen));
}

template <class K>
void fill_normal(Tensor out, std::optional<at::Generator> gen) {
  TORCH_CHECK(out.scalar_type() == at::kFloat || out.scalar_type() == at::kDouble,
              "philox_normal_: out must be float32 or float64, got ", out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), "philox_normal_: out must be contiguous");
  K::fill_normal(out, K::draw(gen));
}

// ---- the CD step: statistics (cd_stats), update (cd_apply_), and both fused (cd_step_) -------------------------

// Sum of squared differences of two tensors of one shape, as a 0-d tensor: the device's own reduction when it has one
// (a fixed summation order on the CPU), else ATen's.
template <class K> Tensor squared_error_sum(const Tensor& a, const Tensor& b) {
  if constexpr (requires { K::sq_err(a, b); }) {
    return K::sq_err(a, b);
  } else {
    return at::mse_loss(a, b, at::Reduction::Sum);
  }
}

// Column sums of X (rows, cols) with weight w0 for rows < B and w1 for the others; with `scale`, X's rows are
// scaled by their weights in place too. The device's fused pass when it has one, else ATen's (a few calls).
template <class K> Tensor weighted_column_sums(Tensor& X, int64_t B, double w0, double w1, bool scale) {
  if constexpr (requires { K::weighted_column_sums(X, B, w0, w1, scale); }) {
    return K::weighted_column_sums(X, B, w0, w1, scale);
  } else {
    const int64_t R = X.size(0);
    if (scale) {
      X.narrow(0, 0, B).mul_(w0);
      X.narrow(0, B, R - B).mul_(w1);
      return X.sum(0);
    }
    Tensor weights = at::empty({R}, X.options());
    weights.narrow(0, 0, B).fill_(w0);
    weights.narrow(0, B, R - B).fill_(w1);
    return at::mv(X.t(), weights);
  }
}

// Checks shared by cd_stats and cd_step_.
inline void check_cd_inputs(const char* op, const Tensor& W, const Tensor& b, const Tensor& c, const Tensor& v,
                            const std::optional<Tensor>& chains, const std::optional<Tensor>& sigma, Visible kind,
                            int64_t k, double sparsity_target, double sparsity_cost) {
  check_data(op, "v", v, W.size(0), "n_visible", W);
  check_vector(op, "b", b, W.size(0), W);
  check_vector(op, "c", c, W.size(1), W);
  check_sigma(op, sigma, W);
  TORCH_CHECK(kind == Visible::Gaussian || !sigma, op, ": sigma applies to gaussian visible units only");
  if (chains) {
    check_data(op, "chains", *chains, W.size(0), "n_visible", W);
    TORCH_CHECK(chains->is_contiguous(), op, ": chains are advanced in place and must be contiguous");
  }
  check_cd_sampling(op, k, sparsity_target, sparsity_cost);
}

// Multiply-adds of the GEMMs of one CD-k / PCD-k step of B data rows and N chains.
inline double step_multiply_adds(const Tensor& W, int64_t B, int64_t N, int64_t k) {
  return static_cast<double>(W.size(0)) * static_cast<double>(W.size(1)) *
         static_cast<double>(3 * B + 2 * k * N);
}

// Scratch memory that a run of steps (cd_steps_) reuses instead of allocating each step's anew (at 513 -> 50 the
// step's large buffers are fresh mappings from the system, page-faulted in every step). Each slot keeps the largest
// buffer asked of it and hands out its leading elements in the shape asked, contiguous.
struct Workspace {
  enum Slot { kX, kY, kH0, kMean, kH, kVs, kDW, kDWt, kSlots };
  Tensor flat[kSlots], shaped[kSlots];  // the buffer, and the view last handed out (most steps ask the same shape)
  bool batch_checked = false;  // the next step's batch, gathered into X0, is known finite (cd_steps_ checked it)
};

inline Tensor scratch(Workspace* ws, Workspace::Slot slot, at::IntArrayRef sizes, const at::TensorOptions& o) {
  if (!ws) return at::empty(sizes, o);
  Tensor& view = ws->shaped[slot];
  if (view.defined() && view.sizes() == sizes) return view;
  Tensor& t = ws->flat[slot];
  const int64_t n = c10::multiply_integers(sizes);
  if (!t.defined() || t.numel() < n) t = at::empty({n}, o);
  return view = t.narrow(0, 0, n).view(sizes);
}

// out <- bias + S M (bias possibly undefined) for S a matrix of binary units (a batch, a Gibbs sample) and M = W (the
// hidden units' input) or a view W^T (the visible units' means): over S's nonzeros where the device has such a
// product and S is sparse enough (K::sparse_rows_product), else ATen's GEMM. Below 64 rows the tiles of a W^T view,
// gathered from W's rows, cost more than skipping zeros saves (513 -> 50 at batch 10: a step 10% slower).
template <class K> void binary_times(Tensor& out, const Tensor& S, const Tensor& M, const Tensor& bias) {
  if constexpr (requires(Tensor t) { K::sparse_rows_product(t, S, M, bias); }) {
    if ((M.stride(1) == 1 || S.size(0) >= 64) && K::sparse_rows_product(out, S, M, bias)) return;
  }
  if (bias.defined()) at::addmm_out(out, bias, S, M); else at::mm_out(out, S, M);
}

// gW <- X^T Y, the weight statistic (X = [v0; vk]): for binary units over X's nonzeros where the device has such a
// product (K::sparse_weight_statistic, which declines when X is too dense for it to pay), else ATen's GEMM. The sparse
// product was measured to pay at every shape tried (one thread, binary data of density 0.5): 50 -> 50 at batch 10
// and 256 (-7%, -9% a step), 513 -> 50 at batch 10, 32 and 256 (-17% to -22%), 513 -> 512 at batch 10 and 256 (-8%,
// -16%), 1024 -> 1024 at batch 512 (-17%).
template <class K> void weight_statistic(Tensor& gW, const Tensor& X, const Tensor& Y, bool binary, Workspace* ws) {
  if constexpr (requires(Tensor t) { K::sparse_weight_statistic(t, X, Y); }) {
    if (binary && K::sparse_weight_statistic(gW, X, Y)) return;
  }
  const int64_t V = X.size(1), H = Y.size(1);
  if (V > 2 * H && cheap_to_check(X)) {
    // a wide product is the faster GEMM on the CPU (measured at 513 -> 50: Y^T X 20% faster than X^T Y), and
    // the transposition back costs a pass over the small result
    Tensor gWt = scratch(ws, Workspace::kDWt, {H, V}, X.options());
    gW.copy_(at::mm_out(gWt, Y.t(), X).t());
  } else {
    at::mm_out(gW, X.t(), Y);
  }
}

// The statistics of one CD-k (chains undefined) or PCD-k step, parameters untouched (arguments checked):
//   dW = dw * X0^T p0 - cw * Xk^T pk,  db = (dw * colsum X0 - cw * colsum Xk) / sigma,
//   dc = dw * colsum p0 - cw * colsum pk + sparsity_cost * dw * colsum (sparsity_target - p0),
// with X = v / sigma (Gaussian units with sigma) or v, dw / cw the data / chain weights; sq_err = sum of squared
// differences between the batch and its first mean-field reconstruction. With a workspace, dW (and every
// intermediate) lives in it, valid until its next use.
template <class K>
CDStats cd_statistics(const char* op, const Tensor& W, const Tensor& b, const Tensor& c, const Tensor& v_in,
                      const std::optional<Tensor>& chains, const std::optional<Tensor>& sigma, Visible kind,
                      int64_t k, double sparsity_target, double sparsity_cost, double dw, double cw,
                      const std::optional<at::Generator>& gen, Workspace* ws = nullptr) {
  using S = Workspace;
  const auto o = W.options();
  const int64_t V = W.size(0), H = W.size(1), B = v_in.size(0);
  const bool persistent = chains.has_value();
  const Tensor v = v_in.contiguous();
  if (persistent && cheap_to_check(*chains)) TORCH_CHECK(K::all_finite(*chains), op, ": chains contain NaN or Inf");
  const bool gauss = kind == Visible::Gaussian;
  const Tensor sig = sigma ? *sigma : Tensor();

  // X = [v0; vk] (scaled by 1/sigma for Gaussian units) and Y = [dw p0; -cw pk], so that the positive and negative
  // weight statistics come out of one GEMM: X^T Y.
  const int64_t N = persistent ? chains->size(0) : B;
  Tensor X = scratch(ws, S::kX, {B + N, V}, o);
  Tensor Y = scratch(ws, S::kY, {B + N, H}, o);
  Tensor X0 = X.narrow(0, 0, B), Xk = X.narrow(0, B, N);
  Tensor Y0 = Y.narrow(0, 0, B), Yk = Y.narrow(0, B, N);
  // X0 is known finite when cd_steps_ checked the batch it gathered straight into it, or the copy checked it
  bool checked = ws && ws->batch_checked && v.data_ptr() == X0.data_ptr();
  if (ws) ws->batch_checked = false;
  if (gauss && sigma) {
    at::div_out(X0, v, sig);
  } else if (v.data_ptr() != X0.data_ptr()) {
    if constexpr (requires { K::copy_finite(X0, v); }) checked = K::copy_finite(X0, v); else X0.copy_(v);
  }
  // On a GPU the check would stall the stream: NaN data then gives NaN statistics (and a rejected update).
  if (cheap_to_check(v) && !checked)
    TORCH_CHECK(K::all_finite(X0), op, ": v contains NaN or Inf; the parameters were not changed");

  // Positive phase: p0 = p(h | v0) and a sample h0.
  if (gauss) at::addmm_out(Y0, c, X0, W); else binary_times<K>(Y0, X0, W, c);  // (Gaussian data: no zeros)
  Tensor h0 = scratch(ws, S::kH0, {B, H}, o);
  K::sigmoid_sample(Y0, h0, K::draw(gen));

  // The chain's visible state: sampled straight into Xk, except Gaussian units with sigma, which keep their raw
  // sample apart and put v / sigma into Xk.
  const bool scaled = gauss && sigma;
  Tensor vs = scaled ? scratch(ws, S::kVs, {N, V}, o) : Xk;
  auto scale_into_X = [&] {
    if (scaled) at::div_out(Xk, vs, sig);
  };
  // Mean of p(v | h) (returned), and a sample into vs when `sample`.
  auto visible_step = [&](const Tensor& h, bool sample) -> Tensor {
    Tensor m = scratch(ws, S::kMean, {h.size(0), V}, o);
    binary_times<K>(m, h, W.t(), gauss ? Tensor() : b);
    const Tensor s = sample ? vs : Tensor();
    const Draw d = sample ? K::draw(gen) : Draw{0, 0};
    if (gauss) K::gaussian_sample(m, b, sig, s, d); else K::sigmoid_sample(m, s, d);
    if (sample) scale_into_X();
    return m;
  };
  // pk = p(h | chain state) into Yk, and a sample when `sample`.
  auto hidden_step = [&](bool sample) -> Tensor {
    if (gauss) at::addmm_out(Yk, c, Xk, W); else binary_times<K>(Yk, Xk, W, c);
    Tensor h = sample ? scratch(ws, S::kH, {N, H}, o) : Tensor();
    K::sigmoid_sample(Yk, h, sample ? K::draw(gen) : Draw{0, 0});
    return h;
  };

  Tensor sq, h;
  if (!persistent) {  // CD: the chain starts at the data
    sq = squared_error_sum<K>(visible_step(h0, true), v);
  } else {            // PCD: reconstruct the data for monitoring, then advance the persistent chains
    sq = squared_error_sum<K>(visible_step(h0, false), v);
    vs.copy_(*chains);
    scale_into_X();
    h = hidden_step(true);
    visible_step(h, true);
  }
  h = hidden_step(k > 1);
  for (int64_t t = 1; t < k; ++t) {
    visible_step(h, true);
    h = hidden_step(t + 1 < k);
  }

  // With Y = [dw p0; -cw pk], X^T Y is the weight statistic and the column sums of Y the hidden-bias one. The
  // sparsity term is a sum over data rows too (dw * (target - p0) per row), so that shards of a batch add up.
  Tensor gc = weighted_column_sums<K>(Y, B, dw, -cw, true);
  Tensor gW = scratch(ws, S::kDW, {V, H}, o);
  weight_statistic<K>(gW, X, Y, !gauss, ws);  // (a Gaussian sample has no zeros)
  if (sparsity_cost > 0) gc.add_(Y0.sum(0).neg_().add_(sparsity_target * dw * static_cast<double>(B)), sparsity_cost);
  Tensor gb = weighted_column_sums<K>(X, B, dw, -cw, false);
  if (scaled) gb.div_(sig);
  return {gW, gb, gc, sq, vs};
}

template <class K>
std::tuple<Tensor, Tensor, Tensor, Tensor> cd_stats(const Tensor& W, const Tensor& b, const Tensor& c,
                                                    const Tensor& v, const std::optional<Tensor>& chains,
                                                    const std::optional<Tensor>& sigma, c10::string_view visible,
                                                    int64_t k, double sparsity_target, double sparsity_cost,
                                                    double data_weight, double chain_weight,
                                                    std::optional<at::Generator> gen) {
  const char* op = "cd_stats";
  const Visible kind = parse_visible(visible, op);
  check_cd_inputs(op, W, b, c, v, chains, sigma, kind, k, sparsity_target, sparsity_cost);
  const double dw = phase_weight(op, "data_weight", data_weight, v.size(0));
  const double cw = phase_weight(op, "chain_weight", chain_weight, chains ? chains->size(0) : v.size(0));
  SerialIfSmall serial(W, step_multiply_adds(W, v.size(0), chains ? chains->size(0) : v.size(0), k));
  CDStats s = cd_statistics<K>(op, W, b, c, v, chains, sigma, kind, k, sparsity_target, sparsity_cost, dw, cw, gen);
  if (chains) chains->copy_(s.vs);
  return {s.dW, s.db, s.dc, s.sq_err};
}

// cd_step_: cd_stats with the default weights, then cd_apply_, in one call (apply_fused_step in common.h: the policy
// for a non-finite update). Returns the mean squared reconstruction error (sq_err / v.numel()).
template <class K>
Tensor cd_step_in(Workspace* ws, Tensor& W, Tensor& b, Tensor& c, Tensor& W_vel, Tensor& b_vel, Tensor& c_vel,
                  const Tensor& v, const std::optional<Tensor>& chains, const std::optional<Tensor>& sigma,
                  c10::string_view visible, int64_t k, double lr, double momentum, double weight_decay,
                  double sparsity_target, double sparsity_cost, const std::optional<at::Generator>& gen) {
  const char* op = "cd_step_";
  const Visible kind = parse_visible(visible, op);
  check_cd_inputs(op, W, b, c, v, chains, sigma, kind, k, sparsity_target, sparsity_cost);
  check_float(op, "W_vel", W_vel, W);
  TORCH_CHECK(W_vel.sizes() == W.sizes(), op, ": W_vel must have W's shape ", W.sizes(), ", got ", W_vel.sizes());
  check_vector(op, "b_vel", b_vel, W.size(0), W);
  check_vector(op, "c_vel", c_vel, W.size(1), W);
  check_in_place(op, W, b, c, W_vel, b_vel, c_vel);
  check_update_hyperparameters(op, lr, momentum, weight_decay);
  const int64_t B = v.size(0), N = chains ? chains->size(0) : B;
  SerialIfSmall serial(W, step_multiply_adds(W, B, N, k));
  CDStats s = cd_statistics<K>(op, W, b, c, v, chains, sigma, kind, k, sparsity_target, sparsity_cost,
                               1.0 / static_cast<double>(B), 1.0 / static_cast<double>(N), gen, ws);
  return apply_fused_step<K>(op, s, W, b, c, W_vel, b_vel, c_vel, chains, v.numel(), lr, momentum, weight_decay);
}

// The scratch memory of the calling thread's cd_step_ calls on the CPU, one workspace per dtype, kept between calls:
// a step allocates megabytes (at 513 -> 50, batch 256: 1.6 MB), which fresh from the system cost page faults every
// call. It holds what the largest step so far asked for. (On a GPU the caching allocator already reuses blocks.)
inline Workspace* thread_workspace(const Tensor& W) {
  thread_local Workspace f32, f64;
  if (!W.is_cpu()) return nullptr;
  return W.scalar_type() == at::kFloat ? &f32 : &f64;
}

template <class K>
Tensor cd_step(Tensor& W, Tensor& b, Tensor& c, Tensor& W_vel, Tensor& b_vel, Tensor& c_vel, const Tensor& v,
               const std::optional<Tensor>& chains, const std::optional<Tensor>& sigma, c10::string_view visible,
               int64_t k, double lr, double momentum, double weight_decay, double sparsity_target,
               double sparsity_cost, std::optional<at::Generator> gen) {
  return cd_step_in<K>(thread_workspace(W), W, b, c, W_vel, b_vel, c_vel, v, chains, sigma, visible, k, lr,
                       momentum, weight_decay, sparsity_target, sparsity_cost, gen);
}

// cd_steps_: the steps of an epoch in one call (no interpreter between them): step i is exactly cd_step_ on
// data.index_select(0, order[i * batch_size : (i + 1) * batch_size]) (the last batch may be shorter), drawing from
// the generator in the same order. Returns the steps' errors, shape (n_batches,). On the CPU a diverging step
// raises cd_step_'s error, the steps before it applied (as a loop over cd_step_ would leave them).
template <class K>
Tensor cd_steps(Tensor& W, Tensor& b, Tensor& c, Tensor& W_vel, Tensor& b_vel, Tensor& c_vel, const Tensor& data,
                const Tensor& order, int64_t batch_size, const std::optional<Tensor>& chains,
                const std::optional<Tensor>& sigma, c10::string_view visible, int64_t k, double lr, double momentum,
                double weight_decay, double sparsity_target, double sparsity_cost, std::optional<at::Generator> gen) {
  const char* op = "cd_steps_";
  check_data(op, "data", data, W.size(0), "n_visible", W);
  TORCH_CHECK(batch_size >= 1, op, ": batch_size must be >= 1, got ", batch_size);
  TORCH_CHECK(order.dim() == 1 && order.scalar_type() == at::kLong && order.numel() > 0, op,
              ": order must be a non-empty 1-D int64 tensor of row indices, got ", order.scalar_type(), " of shape ",
              order.sizes());
  TORCH_CHECK(order.device() == data.device(), op, ": order is on ", order.device(), " but data is on ",
              data.device());
  if (cheap_to_check(order)) {  // before any step, so that a bad index changes nothing
    const auto [lo, hi] = at::aminmax(order);
    TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < data.size(0), op,
                ": order must index rows of data (0 <= i < ", data.size(0), ")");
  }
  const int64_t n = order.numel(), V = data.size(1);
  const Tensor rows_of = data.contiguous();  // once, not per batch
  // Each batch is gathered straight into the first rows of the step's X = [v0; vk] (where X0 is v itself: not for
  // Gaussian units with sigma, whose X0 is v / sigma).
  const bool into_X = !(parse_visible(visible, op) == Visible::Gaussian && sigma);
  Tensor rows = into_X ? Tensor() : at::empty({std::min(batch_size, n), V}, data.options());
  Workspace ws;
  std::vector<Tensor> errors;
  errors.reserve((n + batch_size - 1) / batch_size);
  for (int64_t i = 0; i < n; i += batch_size) {
    const int64_t B = std::min(batch_size, n - i), N = chains ? chains->size(0) : B;
    SerialIfSmall serial(W, step_multiply_adds(W, B, N, k));  // the gather too: at batch 10 it is 5k elements
    Tensor v = into_X ? scratch(&ws, Workspace::kX, {B + N, V}, W.options()).narrow(0, 0, B) : rows.narrow(0, 0, B);
    const Tensor idx = order.narrow(0, i, B);
    if constexpr (requires { K::gather_rows(v, rows_of, idx); }) {
      // the gather and the step's finite check in one pass (a batch found non-finite is checked, and refused, again)
      ws.batch_checked = K::gather_rows(v, rows_of, idx);
    } else {
      at::index_select_out(v, rows_of, 0, idx);
    }
    errors.push_back(cd_step_in<K>(&ws, W, b, c, W_vel, b_vel, c_vel, v, chains, sigma, visible, k, lr, momentum,
                                   weight_decay, sparsity_target, sparsity_cost, gen));
  }
  return at::stack(errors);
}

}  // namespace pymusicrbm
