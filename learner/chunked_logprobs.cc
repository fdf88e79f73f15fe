#include "learner/chunked_logprobs.h"

#include <torch/torch.h>

#include <algorithm>

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class ChunkedLogprobFunction : public torch::autograd::Function<ChunkedLogprobFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden,
                               const at::Tensor& head, const at::Tensor& targets,
                               double temperature, int64_t chunk) {
    const int64_t rows = hidden.size(0);
    at::Tensor logprobs = at::empty({rows}, hidden.options());
    at::Tensor entropy = at::empty({rows}, hidden.options());
    at::Tensor logsumexp = at::empty({rows}, hidden.options());
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t n = std::min(chunk, rows - start);
      at::Tensor z = at::matmul(hidden.narrow(0, start, n), head.t()) / temperature;  // [n, V]
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
    at::Tensor grad_hidden = at::empty_like(hidden);
    at::Tensor grad_head = at::zeros_like(head);
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t n = std::min(chunk, rows - start);
      at::Tensor h = hidden.narrow(0, start, n);
      at::Tensor g = grad.narrow(0, start, n).unsqueeze(1);  // [n, 1]
      at::Tensor z = at::matmul(h, head.t()) / temperature;
      // ∂z = g·(onehot(y) − softmax(z)) / T.
      at::Tensor dz = (z - logsumexp.narrow(0, start, n).unsqueeze(1)).exp().mul_(g).neg_();
      dz.scatter_add_(1, targets.narrow(0, start, n).unsqueeze(1), g);
      dz.div_(temperature);
      grad_hidden.narrow(0, start, n).copy_(at::matmul(dz, head));
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
