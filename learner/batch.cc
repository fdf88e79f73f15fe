#include "learner/batch.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "learner/chunked_logprobs.h"
#include "rl/grpo.h"

namespace grpo {

absl::StatusOr<TokenBatch> PackBatch(const std::vector<std::vector<int32_t>>& prompts,
                                     const std::vector<std::vector<int32_t>>& completions,
                                     int pad_token, int vocab_size) {
  if (prompts.empty() || prompts.size() != completions.size())
    return absl::InvalidArgumentError(absl::StrCat("batch: ", prompts.size(), " prompts and ",
                                                   completions.size(), " completions"));
  size_t p = 0, m = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty() || completions[i].empty())
      return absl::InvalidArgumentError(absl::StrCat("batch row ", i, ": empty prompt or completion"));
    for (const auto* row : {&prompts[i], &completions[i]}) {
      for (int32_t id : *row) {
        if (id < 0 || id >= vocab_size)
          return absl::InvalidArgumentError(
              absl::StrCat("batch row ", i, ": token id ", id, " outside the vocabulary"));
      }
    }
    p = std::max(p, prompts[i].size());
    m = std::max(m, completions[i].size());
  }
  const int64_t n = prompts.size();
  TokenBatch b;
  b.prompt_length = p;
  b.completion_length = m;
  b.tokens = at::full({n, static_cast<int64_t>(p + m)}, pad_token, at::kLong);
  b.is_pad = at::ones({n, static_cast<int64_t>(p + m)}, at::kBool);
  b.mask = at::zeros({n, static_cast<int64_t>(m)});
  auto tokens = b.tokens.accessor<int64_t, 2>();
  auto is_pad = b.is_pad.accessor<bool, 2>();
  auto mask = b.mask.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const size_t offset = p - prompts[i].size();
    for (size_t j = 0; j < prompts[i].size(); ++j) {
      tokens[i][offset + j] = prompts[i][j];
      is_pad[i][offset + j] = false;
    }
    for (size_t j = 0; j < completions[i].size(); ++j) {
      tokens[i][p + j] = completions[i][j];
      is_pad[i][p + j] = false;
      mask[i][j] = 1.0f;
    }
  }
  std::vector<int64_t> positions;
  for (int64_t i = 0; i < n; ++i)
    for (size_t j = 0; j < completions[i].size(); ++j)
      positions.push_back(i * static_cast<int64_t>(m) + static_cast<int64_t>(j));
  b.positions = at::tensor(positions, at::kLong);
  return b;
}

at::Tensor PadRows(const std::vector<std::vector<float>>& rows, int64_t width) {
  at::Tensor out = at::zeros({static_cast<int64_t>(rows.size()), width});
  auto a = out.accessor<float, 2>();
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i].size() && static_cast<int64_t>(j) < width; ++j) {
      a[i][j] = rows[i][j];
    }
  }
  return out;
}

at::Tensor CompletionLogprobs(const Transformer& model, const TokenBatch& b,
                              double temperature) {
  const int64_t p = b.prompt_length, m = b.completion_length;
  // Position t predicts token t + 1, so the last token is never an input.
  at::Tensor hidden =
      model.Forward(b.tokens.narrow(1, 0, p + m - 1), b.is_pad.narrow(1, 0, p + m - 1));
  // Only completion positions need the LM head.
  return TokenLogprobs(model.Logits(hidden.narrow(1, p - 1, m)), b.tokens.narrow(1, p, m),
                       temperature);
}

CompletionOutputs CompletionLogprobsChunked(const Transformer& model, const TokenBatch& b,
                                            double temperature, int64_t chunk) {
  const int64_t n = b.tokens.size(0), p = b.prompt_length, m = b.completion_length;
  at::Tensor hidden =
      model.Forward(b.tokens.narrow(1, 0, p + m - 1), b.is_pad.narrow(1, 0, p + m - 1));
  // The completion positions that carry a token: padding never reaches the LM head.
  const at::Tensor positions = b.positions.defined()
                                   ? b.positions.to(b.mask.device())
                                   : b.mask.reshape({-1}).nonzero().squeeze(1);
  at::Tensor normed = model.FinalNorm(hidden.narrow(1, p - 1, m)).reshape({n * m, -1});
  at::Tensor targets = b.tokens.narrow(1, p, m).reshape({-1}).index_select(0, positions);
  LogprobsAndEntropy rows = ChunkedTokenLogprobs(normed.index_select(0, positions),
                                                 model.LmHeadWeight(), targets, temperature,
                                                 chunk);
  at::Tensor zeros = at::zeros({n * m}, rows.logprobs.options());
  return {zeros.index_put({positions}, rows.logprobs).view({n, m}),
          zeros.index_put({positions}, rows.entropy).view({n, m})};
}

}  // namespace grpo
