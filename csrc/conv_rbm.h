// Device-independent parts of the convolutional RBM ops: argument checks and the orchestration of the CD-k step
// around two fused passes that each device provides.
//
// Model (Lee, Grosse, Ranganath & Ng 2009). Visible maps v (B, C, Hv, Wv), K filters W (K, C, fh, fw), hidden
// biases c (K), visible biases b (C), optional per-channel sigma (C) for Gaussian visible units.
//   energy of hidden unit (k, y, x):  e = c_k + sum_{c,dy,dx} W[k,c,dy,dx] * v[c, y+dy, x+dx] / sigma_c
//   (a valid 2-D correlation: the hidden map is Hh x Wh = (Hv-fh+1) x (Wv-fw+1)).
//   pool == 1: p(h = 1 | v) = sigmoid(e).
//   pool == P > 1 (probabilistic max-pooling): the hidden map is cut into P x P blocks; in each block at most one
//   unit is on: p(unit i on) = exp(e_i) / (1 + sum_j exp(e_j)), p(all off) = 1 / (1 + sum_j exp(e_j)); the pooled
//   unit is on when any unit of its block is, with probability 1 - p(all off). P must divide Hh and Wh (checked;
//   the error says how to crop the input).
//   visible: a = sum_k full_conv(h_k, W[k, c]); Bernoulli p(v = 1 | h) = sigmoid(b_c + a),
//            Gaussian p(v | h) = N(b_c + sigma_c * a, sigma_c^2).
//
// Randomness: every sampling phase takes one draw (seed, offset) from the generator. The hidden sample of a
// block (or of a unit when pool == 1) uses element i = its index in the (B, K, Hh/P, Wh/P) pooled map of the
// Philox uniform stream; the units of the block are walked in row-major order and unit j is on when
// cum_{j-1} <= u < cum_j (cum_j = sum of the probabilities of units 0..j); all off when u >= cum_last. Visible
// samples use element i = the index in (B, C, Hv, Wv) of the uniform (Bernoulli, on when u < p) or normal stream.
//
// A device provides a struct K with:
//   static Draw draw(const std::optional<at::Generator>&);
//   static void hidden_pass(const ConvHidden&);
//   static void visible_pass(const ConvVisible&);
//   static Tensor channel_sums(const Tensor& x, double scale);  (C) scale * sums of x (B, C, H, W) per channel
//   static Tensor sq_err(const Tensor& a, const Tensor& b);      0-d sum of squared differences
//   static bool / Tensor apply(const UpdateArgs&);               the update of cd_apply_ (rbm.h)
// (the last two in a fixed summation order on the CPU, so that a CD step does not depend on the thread count).
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>

#include "rbm.h"  // Draw, Visible, parse_visible

namespace pymusicrbm {

// One fused hidden pass: energies, (pooled) probabilities, optionally a sample, optionally the statistics that a
// CD step needs. Undefined tensors are not computed.
struct ConvHidden {
  Tensor v;        // (B, C, Hv, Wv), contiguous
  Tensor W;        // (K, C, fh, fw), contiguous, already divided by sigma_c along C for Gaussian visible units
  Tensor c;        // (K), contiguous
  int64_t pool = 1;
  Tensor P;        // out (B, K, Hh, Wh): hidden probabilities
  Tensor H;        // out (B, K, Hh, Wh): hidden sample (uses draw)
  Tensor Q;        // out (B, K, Hh/pool, Wh/pool): pooled-unit probabilities
  Draw draw{0, 0};
  // Statistics, accumulated (+=) in a fixed order so that they do not depend on the number of threads:
  Tensor gW;       // (K, C, fh, fw): += scale * sum_{b,y,x} v[b, c, y+dy, x+dx] * P[b, k, y, x]
  Tensor gc;       // (K): += scale * sum_{b,y,x} P[b, k, y, x]
  Tensor q;        // (K): += qscale * sum of the pooled probabilities (pool > 1) or of P (pool == 1)
  double scale = 1.0, qscale = 1.0;
};

// One fused visible pass: full convolution of the hidden maps with the filters, bias, mean and optional sample.
struct ConvVisible {
  Tensor H;        // (B, K, Hh, Wh), contiguous
  Tensor W;        // (K, C, fh, fw), contiguous
  Tensor b;        // (C), contiguous
  Tensor sigma;    // (C) or undefined (= 1); Gaussian only
  Visible kind = Visible::Bernoulli;
  Tensor mean;     // out (B, C, Hv, Wv)
  Tensor S;        // out (B, C, Hv, Wv): sample (uses draw), or undefined
  Draw draw{0, 0};
};

namespace conv_detail {

inline void check_dtype_device(const char* op, const char* name, const Tensor& t, const char* ref_name,
                               const Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), " but ",
              ref_name, " has dtype ", ref.scalar_type(), "; all tensors must share one dtype");
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device(), "; all tensors must be on one device");
}

inline void check_filters(const char* op, const Tensor& W) {
  TORCH_CHECK(W.dim() == 4, op, ": W must be 4-D (n_filters, channels, filter_height, filter_width), got shape ",
              W.sizes());
  check_dtype_device(op, "W", W, "W", W);
  TORCH_CHECK(W.size(0) > 0 && W.size(1) > 0 && W.size(2) > 0 && W.size(3) > 0, op,
              ": W must have at least one filter, channel, row and column, got shape ", W.sizes());
}

// v: (batch, channels, height, width) maps that W is correlated with.
inline void check_maps(const char* op, const char* name, const Tensor& v, const Tensor& W) {
  check_dtype_device(op, name, v, "W", W);
  TORCH_CHECK(v.dim() == 4, op, ": ", name, " must be 4-D (batch, channels, height, width), got shape ", v.sizes());
  TORCH_CHECK(v.size(0) > 0, op, ": ", name, " is an empty batch");
  TORCH_CHECK(v.size(1) == W.size(1), op, ": ", name, " has ", v.size(1), " channels but W expects ", W.size(1),
              " (W is (n_filters, channels, fh, fw) = ", W.sizes(), ")");
  TORCH_CHECK(W.size(2) <= v.size(2) && W.size(3) <= v.size(3), op, ": the filters (", W.size(2), "x", W.size(3),
              ") are larger than ", name, "'s maps (", v.size(2), "x", v.size(3), ")");
}

inline void check_vec(const char* op, const char* name, const Tensor& t, int64_t n, const char* what,
                      const Tensor& W) {
  check_dtype_device(op, name, t, "W", W);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, op, ": ", name, " must be 1-D of size ", n, " (", what, "), got shape ",
              t.sizes());
}

inline void check_conv_sigma(const char* op, const std::optional<Tensor>& sigma, const Tensor& W) {
  if (!sigma) return;
  check_vec(op, "sigma", *sigma, W.size(1), "one per visible channel", W);
  TORCH_CHECK((*sigma > 0).all().item<bool>(), op, ": sigma must be > 0 everywhere");
}

inline void check_finite(const char* op, const char* name, const Tensor& t, const char* extra = "") {
  TORCH_CHECK(at::isfinite(t).all().item<bool>(), op, ": ", name,
              " contains NaN or Inf (e.g. the log of a zero in a spectrogram: add a floor before the log)", extra);
}

inline void check_pool(const char* op, int64_t pool, int64_t Hv, int64_t Wv, const Tensor& W) {
  TORCH_CHECK(pool >= 1, op, ": pool must be >= 1 (1 = no pooling), got ", pool);
  const int64_t fh = W.size(2), fw = W.size(3), Hh = Hv - fh + 1, Wh = Wv - fw + 1;
  TORCH_CHECK(Hh % pool == 0 && Wh % pool == 0, op, ": pool=", pool, " does not divide the hidden map ", Hh, "x", Wh,
              " (input ", Hv, "x", Wv, ", filter ", fh, "x", fw, "); crop the input to ", (Hh / pool) * pool + fh - 1,
              "x", (Wh / pool) * pool + fw - 1, " (ConvRBM does this for you)");
  TORCH_CHECK(Hh >= pool && Wh >= pool, op, ": pool=", pool, " is larger than the hidden map ", Hh, "x", Wh);
}

// Filters as the hidden pass uses them: divided by sigma along the channel axis (e = conv(v / sigma, W)).
inline Tensor scaled_filters(const Tensor& W, const std::optional<Tensor>& sigma) {
  if (!sigma) return W.contiguous();
  return (W / sigma->view({1, -1, 1, 1})).contiguous();
}

}  // namespace conv_detail

template <class K>
std::tuple<Tensor, Tensor, Tensor> conv_sample_hidden(const Tensor& v, const Tensor& W, const Tensor& c,
                                                      int64_t pool, const std::optional<Tensor>& sigma,
                                                      std::optional<at::Generator> gen) {
  using namespace conv_detail;
  const char* op = "conv_sample_hidden";
  check_filters(op, W);
  check_maps(op, "v", v, W);
  check_vec(op, "c", c, W.size(0), "one hidden bias per filter", W);
  check_conv_sigma(op, sigma, W);
  check_pool(op, pool, v.size(2), v.size(3), W);
  if (cheap_to_check(v)) check_finite(op, "v", v);  // on a GPU: NaN propagates into the samples (see rbm.h)
  const int64_t B = v.size(0), Kf = W.size(0), Hh = v.size(2) - W.size(2) + 1, Wh = v.size(3) - W.size(3) + 1;
  ConvHidden a;
  a.v = v.contiguous();
  a.W = scaled_filters(W, sigma);
  a.c = c.contiguous();
  a.pool = pool;
  a.P = at::empty({B, Kf, Hh, Wh}, v.options());
  a.H = at::empty({B, Kf, Hh, Wh}, v.options());
  a.Q = at::empty({B, Kf, Hh / pool, Wh / pool}, v.options());
  a.draw = K::draw(gen);
  K::hidden_pass(a);
  return {a.P, a.H, a.Q};
}

template <class K>
std::tuple<Tensor, Tensor> conv_sample_visible(const Tensor& h, const Tensor& W, const Tensor& b,
                                               const std::optional<Tensor>& sigma, c10::string_view visible,
                                               std::optional<at::Generator> gen) {
  using namespace conv_detail;
  const char* op = "conv_sample_visible";
  const Visible kind = parse_visible(visible, op);
  check_filters(op, W);
  check_dtype_device(op, "h", h, "W", W);
  TORCH_CHECK(h.dim() == 4, op, ": h must be 4-D (batch, n_filters, height, width), got shape ", h.sizes());
  TORCH_CHECK(h.size(0) > 0, op, ": h is an empty batch");
  TORCH_CHECK(h.size(1) == W.size(0), op, ": h has ", h.size(1), " maps but W has ", W.size(0), " filters");
  TORCH_CHECK(h.size(2) > 0 && h.size(3) > 0, op, ": h has empty maps, shape ", h.sizes());
  check_vec(op, "b", b, W.size(1), "one visible bias per channel", W);
  check_conv_sigma(op, sigma, W);
  TORCH_CHECK(kind == Visible::Gaussian || !sigma, op, ": sigma applies to gaussian visible units only");
  if (cheap_to_check(h)) check_finite(op, "h", h);
  const int64_t B = h.size(0), C = W.size(1);
  ConvVisible a;
  a.H = h.contiguous();
  a.W = W.contiguous();
  a.b = b.contiguous();
  a.sigma = sigma ? sigma->contiguous() : Tensor();
  a.kind = kind;
  a.mean = at::empty({B, C, h.size(2) + W.size(2) - 1, h.size(3) + W.size(3) - 1}, h.options());
  a.S = at::empty_like(a.mean);
  a.draw = K::draw(gen);
  K::visible_pass(a);
  return {a.mean, a.S};
}

// Checks shared by conv_cd_stats and conv_cd_step_.
inline void check_conv_cd_inputs(const char* op, const Tensor& W, const Tensor& b, const Tensor& c, const Tensor& v,
                                 const std::optional<Tensor>& chains, const std::optional<Tensor>& sigma,
                                 Visible kind, int64_t pool, int64_t k, double sparsity_target,
                                 double sparsity_cost) {
  using namespace conv_detail;
  check_filters(op, W);
  check_maps(op, "v", v, W);
  check_vec(op, "b", b, W.size(1), "one visible bias per channel", W);
  check_vec(op, "c", c, W.size(0), "one hidden bias per filter", W);
  check_conv_sigma(op, sigma, W);
  TORCH_CHECK(kind == Visible::Gaussian || !sigma, op, ": sigma applies to gaussian visible units only");
  if (chains) {
    check_maps(op, "chains", *chains, W);
    TORCH_CHECK(chains->size(1) == v.size(1) && chains->size(2) == v.size(2) && chains->size(3) == v.size(3), op,
                ": chains must be (n_chains, ", v.size(1), ", ", v.size(2), ", ", v.size(3), ") like v's maps, got ",
                chains->sizes());
    TORCH_CHECK(chains->is_contiguous(), op, ": chains are advanced in place and must be contiguous");
  }
  check_pool(op, pool, v.size(2), v.size(3), W);
  check_cd_sampling(op, k, sparsity_target, sparsity_cost);
}

// The statistics of one CD-k (chains undefined) or PCD-k step, parameters untouched (arguments checked). With
// dw / cw the data / chain weights and L = Hh * Wh hidden positions, Lv = Hv * Wv visible ones:
//   dW = dw / L * sum_{b,y,x} v/sigma * p(h|v) over the data - cw / L * the same over the chains' v_k,
//   dc = dw / L * sum p_data - cw / L * sum p_model + sparsity_cost * (dw * B * target - dw * pool^2 / L * sum q),
//   db = (dw / Lv * sum_data v - cw / Lv * sum_chains v_k) / sigma^2 (per channel),
// where q are the pooled-unit probabilities (pool > 1) or the hidden ones (pool == 1) of the data; sq_err = sum of
// squared differences between the batch and its first mean-field reconstruction E[v | h0].
template <class K>
CDStats conv_cd_statistics(const char* op, const Tensor& W, const Tensor& b, const Tensor& c, const Tensor& v_in,
                           const std::optional<Tensor>& chains, const std::optional<Tensor>& sigma, Visible kind,
                           int64_t pool, int64_t k, double sparsity_target, double sparsity_cost, double dw, double cw,
                           const std::optional<at::Generator>& gen) {
  using namespace conv_detail;
  const int64_t Kf = W.size(0), C = W.size(1), B = v_in.size(0);
  const int64_t Hv = v_in.size(2), Wv = v_in.size(3), Hh = Hv - W.size(2) + 1, Wh = Wv - W.size(3) + 1;
  const bool persistent = chains.has_value();
  const Tensor v = v_in.contiguous();
  // On a GPU the checks would stall the stream: NaN data then gives NaN statistics (and a rejected update).
  if (cheap_to_check(v)) check_finite(op, "v", v, "; the parameters were not changed");
  if (persistent && cheap_to_check(v)) check_finite(op, "chains", *chains, "; the parameters were not changed");

  const Tensor Ws = scaled_filters(W, sigma);
  const Tensor sig = sigma ? sigma->contiguous() : Tensor();
  Tensor gW = at::zeros_like(W), gc = at::zeros_like(c), q = at::zeros_like(c);
  const double L = static_cast<double>(Hh) * Wh;

  auto hidden = [&](const Tensor& x, bool sample, double scale, bool positive) -> Tensor {
    ConvHidden a;
    a.v = x;
    a.W = Ws;
    a.c = c;
    a.pool = pool;
    if (sample) {
      a.H = at::empty({x.size(0), Kf, Hh, Wh}, x.options());
      a.draw = K::draw(gen);
    }
    if (scale != 0) {
      a.gW = gW;
      a.gc = gc;
      a.scale = scale;
    }
    if (positive && sparsity_cost > 0) {
      a.q = q;
      a.qscale = dw * static_cast<double>(pool * pool) / L;
    }
    K::hidden_pass(a);
    return a.H;
  };
  auto visible_pass = [&](const Tensor& h, Tensor* sample) -> Tensor {
    ConvVisible a;
    a.H = h;
    a.W = W;
    a.b = b;
    a.sigma = sig;
    a.kind = kind;
    a.mean = at::empty({h.size(0), C, Hv, Wv}, h.options());
    if (sample) {
      a.S = at::empty_like(a.mean);
      a.draw = K::draw(gen);
    }
    K::visible_pass(a);
    if (sample) *sample = a.S;
    return a.mean;
  };

  // Positive phase: statistics from p(h | data) and a sample h0.
  Tensor h = hidden(v, true, dw / L, true);
  Tensor sq, vs;
  if (!persistent) {
    sq = K::sq_err(visible_pass(h, &vs), v);
  } else {
    sq = K::sq_err(visible_pass(h, nullptr), v);
    h = hidden(*chains, true, 0.0, false);
    visible_pass(h, &vs);
  }
  for (int64_t t = 1; t < k; ++t) {
    h = hidden(vs, true, 0.0, false);
    visible_pass(h, &vs);
  }
  hidden(vs, false, -cw / L, false);  // negative statistics from p(h | v_k)

  // Positive and negative statistics were computed with raw v, so divide by sigma_c (d e / d W = v / sigma).
  if (sigma) gW.div_(sig.view({1, C, 1, 1}));
  if (sparsity_cost > 0) gc.add_(q.neg_().add_(sparsity_target * dw * static_cast<double>(B)), sparsity_cost);
  const double Lv = static_cast<double>(Hv) * Wv;
  Tensor gb = K::channel_sums(v, dw / Lv).sub_(K::channel_sums(vs, cw / Lv));
  if (sigma) gb.div_(sig.square());
  return {gW, gb, gc, sq, vs};
}

template <class K>
std::tuple<Tensor, Tensor, Tensor, Tensor> conv_cd_stats(const Tensor& W, const Tensor& b, const Tensor& c,
                                                         const Tensor& v, const std::optional<Tensor>& chains,
                                                         const std::optional<Tensor>& sigma, c10::string_view visible,
                                                         int64_t pool, int64_t k, double sparsity_target,
                                                         double sparsity_cost, double data_weight,
                                                         double chain_weight, std::optional<at::Generator> gen) {
  const char* op = "conv_cd_stats";
  const Visible kind = parse_visible(visible, op);
  check_conv_cd_inputs(op, W, b, c, v, chains, sigma, kind, pool, k, sparsity_target, sparsity_cost);
  const double dw = phase_weight(op, "data_weight", data_weight, v.size(0));
  const double cw = phase_weight(op, "chain_weight", chain_weight, chains ? chains->size(0) : v.size(0));
  CDStats s = conv_cd_statistics<K>(op, W, b, c, v, chains, sigma, kind, pool, k, sparsity_target, sparsity_cost,
                                    dw, cw, gen);
  if (chains) chains->copy_(s.vs);
  return {s.dW, s.db, s.dc, s.sq_err};
}

// conv_cd_step_: conv_cd_stats with the default weights, then cd_apply_ (as cd_step_ in rbm.h, the same policy for
// a non-finite update). Returns the mean squared reconstruction error (sq_err / v.numel()).
template <class K>
Tensor conv_cd_step(Tensor& W, Tensor& b, Tensor& c, Tensor& W_vel, Tensor& b_vel, Tensor& c_vel, const Tensor& v,
                    const std::optional<Tensor>& chains, const std::optional<Tensor>& sigma,
                    c10::string_view visible, int64_t pool, int64_t k, double lr, double momentum,
                    double weight_decay, double sparsity_target, double sparsity_cost,
                    std::optional<at::Generator> gen) {
  using namespace conv_detail;
  const char* op = "conv_cd_step_";
  const Visible kind = parse_visible(visible, op);
  check_conv_cd_inputs(op, W, b, c, v, chains, sigma, kind, pool, k, sparsity_target, sparsity_cost);
  check_dtype_device(op, "W_vel", W_vel, "W", W);
  TORCH_CHECK(W_vel.sizes() == W.sizes(), op, ": W_vel must have W's shape ", W.sizes(), ", got ", W_vel.sizes());
  check_vec(op, "b_vel", b_vel, W.size(1), "b's shape", W);
  check_vec(op, "c_vel", c_vel, W.size(0), "c's shape", W);
  for (const auto& [t, name] : {std::pair{&W, "W"}, {&b, "b"}, {&c, "c"}, {&W_vel, "W_vel"}, {&b_vel, "b_vel"},
                                {&c_vel, "c_vel"}})
    TORCH_CHECK(t->is_contiguous(), op, ": ", name, " is updated in place and must be contiguous");
  check_update_hyperparameters(op, lr, momentum, weight_decay);
  const int64_t B = v.size(0), N = chains ? chains->size(0) : B;
  CDStats s = conv_cd_statistics<K>(op, W, b, c, v, chains, sigma, kind, pool, k, sparsity_target, sparsity_cost,
                                    1.0 / static_cast<double>(B), 1.0 / static_cast<double>(N), gen);
  Tensor recon = s.sq_err.div_(static_cast<double>(v.numel()));
  auto ok = K::apply(UpdateArgs{{{W, W_vel, s.dW, weight_decay}, {b, b_vel, s.db, 0.0}, {c, c_vel, s.dc, 0.0}},
                                lr, momentum, recon});
  if constexpr (std::is_same_v<decltype(ok), bool>) {
    TORCH_CHECK(ok, op, ": the update is not finite (training diverged); the parameters were not changed. "
                        "Lower lr, standardise the data (Gaussian visible units expect zero mean, unit variance) "
                        "or add weight_decay");
  }
  if (chains) chains->copy_(s.vs);
  return recon;
}

}  // namespace pymusicrbm
