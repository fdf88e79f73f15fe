#include "learner/chunked_logprobs.h"

#include <torch/torch.h>

#include <algorithm>

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Mixed precision: the matmuls run in the hidden states' dtype, the softmax, log-probs and
// entropy in float32 at least (bfloat16 sums over 151,936 logits lose too much).
at::ScalarType SoftmaxDtype(const at::Tensor& hidden) {
  return at::promote_types(hidden.scalar_type(), at::kFloat);
}

at::Tensor InComputeDtype(const at::Tensor& head, const at::Tensor& hidden) {
  return head.scalar_type() == hidden.scalar_type() ? head : head.to(hidden.scalar_type());
}

at::Tensor Logits(const at::Tensor& h, const at::Tensor& w, double temperature) {
  return at::matmul(h, w.t()).to(SoftmaxDtype(h)) / temperature;
}

class ChunkedLogprobFunction : public torch::autograd::Function<ChunkedLogprobFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden,
                               const at::Tensor& head, const at::Tensor& targets,
                               double temperature, int64_t chunk) {
    const int64_t rows = hidden.size(0);
    const at::TensorOptions wide = hidden.options().dtype(SoftmaxDtype(hidden));
    at::Tensor logprobs = at::empty({rows}, wide);
    at::Tensor entropy = at::empty({rows}, wide);
    at::Tensor logsumexp = at::empty({rows}, wide);
    const at::Tensor w = InComputeDtype(head, hidden);
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t n = std::min(chunk, rows - start);
      at::Tensor z = Logits(hidden.narrow(0, start, n), w, temperature);  // [n, V]
      at::Tensor lse = z.logsumexp(-1);
      logprobs.narrow(0, start, n)
          .copy_(z.gather(1, targets.narrow(0, start, n).unsqueeze(1)).squeeze(1) - lse);
      // H = −Σ p log p = lse − Σ p z.
      entropy.narrow(0, start, n).copy_(lse - ((z - lse.unsqueeze(1)).exp() * z).sum(-1));
      logsumexp.narrow(0, start, n).copy_(lse);
    }
    ctx->save_for_backward({hidden, head, targets, logsumexp});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk"] = chunk;
    ctx->mark_non_differentiable({entropy});
    return {logprobs, entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &head = saved[1], &targets = saved[2],
                     &logsumexp = saved[3];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const at::Tensor& grad = grads[0];  // [R]
    if (!grad.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
                                 at::Tensor()};
    const int64_t rows = hidden.size(0);
    const at::Tensor w = InComputeDtype(head, hidden);
    at::Tensor grad_hidden = at::empty_like(hidden);
    at::Tensor grad_head = at::zeros_like(head);  // the master dtype: sums kept wide
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t n = std::min(chunk, rows - start);
      at::Tensor h = hidden.narrow(0, start, n);
      at::Tensor g = grad.narrow(0, start, n).unsqueeze(1).to(logsumexp.scalar_type());
      at::Tensor z = Logits(h, w, temperature);
      // ∂z = g·(onehot(y) − softmax(z)) / T.
      at::Tensor dz = (z - logsumexp.narrow(0, start, n).unsqueeze(1)).exp().mul_(g).neg_();
      dz.scatter_add_(1, targets.narrow(0, start, n).unsqueeze(1), g);
      dz.div_(temperature);
      dz = dz.to(h.scalar_type());
      grad_hidden.narrow(0, start, n).copy_(at::matmul(dz, w));
      grad_head.add_(at::matmul(dz.t(), h));
    }
    return {grad_hidden, grad_head, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

LogprobsAndEntropy ChunkedTokenLogprobs(const at::Tensor& hidden, const at::Tensor& head,
                                        const at::Tensor& targets, double temperature,
                                        int64_t chunk) {
  const int64_t rows = hidden.size(0);
  if (chunk <= 0 || chunk > rows) chunk = std::max<int64_t>(rows, 1);
  variable_list out = ChunkedLogprobFunction::apply(hidden, head, targets, temperature, chunk);
  return {out[0], out[1]};
}

}  // namespace grpo
