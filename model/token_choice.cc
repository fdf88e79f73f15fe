#include "model/token_choice.h"

#include <torch/torch.h>

#include <limits>

namespace grpo {

std::pair<at::Tensor, at::Tensor> ChooseTokens(const at::Tensor& logits,
                                               const SamplingOptions& o,
                                               const TokenDraw& draw) {
  const int64_t vocab = logits.size(-1);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const bool limit = o.sample_vocab > 0 && o.sample_vocab < vocab;
  auto within_vocab = [&](const at::Tensor& x) {
    if (!limit) return x;
    at::Tensor out = x.clone();
    out.narrow(-1, o.sample_vocab, vocab - o.sample_vocab).fill_(neg_inf);
    return out;
  };
  if (o.temperature == 0) {
    at::Tensor next = within_vocab(logits).argmax(-1, /*keepdim=*/true);
    return {next.squeeze(1), at::log_softmax(logits, -1).gather(1, next).squeeze(1)};
  }
  at::Tensor scaled = o.temperature == 1.0f ? logits : logits / o.temperature;
  at::Tensor logp = at::log_softmax(scaled, -1);
  if (o.top_k == 0 && o.top_p >= 1.0f && !limit) {
    at::Tensor next = draw(logp.exp());
    return {next.squeeze(1), logp.gather(1, next).squeeze(1)};
  }
  at::Tensor filtered = within_vocab(scaled);
  if (o.top_k > 0 && o.top_k < vocab) {
    // Of what sample_vocab left: k candidates among the ids that may be drawn.
    at::Tensor kth = std::get<0>(filtered.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    filtered = filtered.masked_fill(filtered < kth, neg_inf);
  }
  if (o.top_p < 1.0f) {
    auto [sorted, order] = filtered.sort(-1, /*descending=*/true);
    at::Tensor probs = at::softmax(sorted, -1);
    // Drop a token when the mass before it already reaches top_p; the first always stays.
    at::Tensor drop_sorted = (probs.cumsum(-1) - probs) >= o.top_p;
    at::Tensor drop = at::zeros_like(drop_sorted).scatter_(-1, order, drop_sorted);
    filtered = filtered.masked_fill(drop, neg_inf);
  }
  at::Tensor next = draw(at::softmax(filtered, -1));
  return {next.squeeze(1), logp.gather(1, next).squeeze(1)};
}

}  // namespace grpo
