#include "model/sampler.h"

#include <torch/torch.h>

#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "model/static_decode.h"
#include "model/token_choice.h"
#include "model/torch_status.h"

namespace grpo {
namespace {

absl::Status Validate(const ModelConfig& c, const std::vector<std::vector<int32_t>>& prompts,
                      const SamplingOptions& o) {
  if (prompts.empty()) return absl::InvalidArgumentError("prompts: empty batch");
  if (!(o.temperature >= 0) || o.temperature > 100)
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature = ", o.temperature, ": must be in [0, 100]"));
  if (!(o.top_p > 0 && o.top_p <= 1))
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_p = ", o.top_p, ": must be in (0, 1]"));
  if (o.top_k < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_k = ", o.top_k, ": must be >= 0"));
  if (o.max_new_tokens < 1)
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling.max_new_tokens = ", o.max_new_tokens, ": must be >= 1"));
  if (o.stop_token >= c.vocab_size)
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: stop token ", o.stop_token, " outside the vocabulary"));
  if (o.sync_every < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.sync_every = ", o.sync_every, ": must be >= 1"));
  if (o.pad_token < 0 || o.pad_token >= c.vocab_size)
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: pad token ", o.pad_token, " outside the vocabulary"));
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  if (static_cast<int64_t>(longest) + o.max_new_tokens > c.max_seq_len)
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", longest, " tokens + sampling.max_new_tokens ", o.max_new_tokens,
        " exceeds the model's max_seq_len ", c.max_seq_len));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SamplingOptions::Decode> ParseDecode(const std::string& name) {
  if (name == "auto") return SamplingOptions::Decode::kAuto;
  if (name == "eager") return SamplingOptions::Decode::kEager;
  if (name == "static") return SamplingOptions::Decode::kStatic;
  return absl::InvalidArgumentError(
      absl::StrCat("decode \"", name, "\": auto, eager or static"));
}

std::vector<int32_t> SampleResult::Completion(int64_t row) const {
  at::Tensor mask = completion_mask[row].to(at::kBool);
  at::Tensor ids = tokens[row].narrow(0, prompt_length, mask.size(0)).masked_select(mask);
  ids = ids.to(at::kInt).contiguous();
  return std::vector<int32_t>(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
}

std::vector<float> SampleResult::CompletionLogprobs(int64_t row) const {
  at::Tensor lp = logprobs[row].masked_select(completion_mask[row].to(at::kBool)).contiguous();
  return std::vector<float>(lp.data_ptr<float>(), lp.data_ptr<float>() + lp.numel());
}

absl::StatusOr<PromptBatch> MakePromptBatch(const std::vector<std::vector<int32_t>>& prompts,
                                            int pad_token) {
  if (prompts.empty()) return absl::InvalidArgumentError("prompts: empty batch");
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty())
      return absl::InvalidArgumentError(absl::StrCat("prompts[", i, "]: empty prompt"));
    longest = std::max(longest, prompts[i].size());
  }
  const int64_t n = prompts.size(), p = longest;
  PromptBatch batch;
  batch.tokens = at::full({n, p}, pad_token, at::kLong);
  batch.is_pad = at::ones({n, p}, at::kBool);
  auto tokens = batch.tokens.accessor<int64_t, 2>();
  auto is_pad = batch.is_pad.accessor<bool, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t offset = p - static_cast<int64_t>(prompts[i].size());
    for (size_t j = 0; j < prompts[i].size(); ++j) {
      tokens[i][offset + j] = prompts[i][j];
      is_pad[i][offset + j] = false;
    }
  }
  return batch;
}

namespace {

// The eager decode loop: one Forward per token (the fused CPU kernels on a CPU float32
// model), the draw and the bookkeeping on the host each step. `rows`: the original row of
// each batch row. A finished row stays in the batch, fed padding, until it is compacted
// away (or, without compaction, until every row is done). Returns the columns used.
int64_t DecodeEager(const Transformer& model, KvCache* cache, at::Tensor logits,
                    const SamplingOptions& o, at::Generator& gen, SampleResult* r) {
  const int64_t n = r->tokens.size(0), p = r->prompt_length, m = o.max_new_tokens;
  const c10::Device device = model.tensor_options().device();
  const TokenDraw multinomial = [&gen](const at::Tensor& probs) {
    return at::multinomial(probs, 1, false, gen);
  };
  at::Tensor rows = at::arange(n, at::kLong);
  at::Tensor finished = at::zeros({n}, at::kBool);  // of the batch rows
  int64_t used = 0;
  for (int64_t step = 0; step < m; ++step) {
    auto [next_on_device, logprob_on_device] = ChooseTokens(logits, o, multinomial);
    const at::Tensor next = next_on_device.to(at::kCPU);
    const at::Tensor logprob = logprob_on_device.to(at::kCPU);
    const at::Tensor active = finished.logical_not();
    const at::Tensor column = at::full({rows.size(0)}, step, at::kLong);
    r->tokens.index_put_({rows, column + p}, at::where(active, next, o.pad_token));
    r->is_pad.index_put_({rows, column + p}, finished);
    r->logprobs.index_put_({rows, column}, at::where(active, logprob, 0.0f));
    r->completion_mask.index_put_({rows, column}, active.to(at::kFloat));
    finished = finished | (next == o.stop_token);
    used = step + 1;
    if (step + 1 == m || finished.all().item<bool>()) break;
    at::Tensor fed = at::where(finished, o.pad_token, next);
    // Compacting copies the whole cache, so it waits until a quarter of the batch is
    // done: the copies then cost at most a few decode steps' worth of cache reads.
    const int64_t done = finished.sum().item<int64_t>();
    if (o.compact_finished && done > 0 && 4 * done >= finished.size(0)) {
      const at::Tensor keep = finished.logical_not().nonzero().squeeze(1);
      rows = rows.index_select(0, keep);
      fed = fed.index_select(0, keep);
      finished = finished.index_select(0, keep);
      cache->SelectRows(keep.to(device));
    }
    at::Tensor hidden = model.Forward(fed.view({-1, 1}).to(device),
                                      finished.view({-1, 1}).to(device), cache);
    logits = model.Logits(hidden.select(1, 0)).to(at::kFloat);
  }
  return used;
}

bool DecodesStatically(const SamplingOptions& o, const c10::Device& device) {
  return o.decode == SamplingOptions::Decode::kStatic ||
         (o.decode == SamplingOptions::Decode::kAuto && !device.is_cpu());
}

}  // namespace

absl::StatusOr<SampleResult> Sample(const Transformer& model,
                                    const std::vector<std::vector<int32_t>>& prompts,
                                    const SamplingOptions& o) {
  if (absl::Status s = Validate(model.config(), prompts, o); !s.ok()) return s;
  absl::StatusOr<PromptBatch> batch = MakePromptBatch(prompts, o.pad_token);
  if (!batch.ok()) return batch.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int32_t id : prompts[i]) {
      if (id < 0 || id >= model.config().vocab_size)
        return absl::InvalidArgumentError(
            absl::StrCat("prompts[", i, "]: token id ", id, " outside the vocabulary"));
    }
  }

  SampleResult r;
  absl::Status status = CatchTorch("sampling", [&] {
    // NoGrad rather than InferenceMode: the trainer later feeds these tensors to autograd.
    at::NoGradGuard no_grad;
    const int64_t n = batch->tokens.size(0), p = batch->tokens.size(1);
    const int64_t m = o.max_new_tokens;
    // Bookkeeping stays on the CPU; the model's inputs go to its device, and the draw is
    // made there (float32 logits) with a generator of that device seeded from o.seed, so
    // only the chosen ids and their log-probs come back.
    const c10::Device device = model.tensor_options().device();
    r.tokens = at::full({n, p + m}, o.pad_token, at::kLong);
    r.tokens.narrow(1, 0, p).copy_(batch->tokens);
    r.is_pad = at::ones({n, p + m}, at::kBool);
    r.is_pad.narrow(1, 0, p).copy_(batch->is_pad);
    r.logprobs = at::zeros({n, m});
    r.completion_mask = at::zeros({n, m});
    r.prompt_length = p;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
    if (!device.is_cpu()) {
      at::Generator device_default = at::globalContext().defaultGenerator(device);
      {
        // The default generator is shared by the process; clone it under its own lock.
        std::lock_guard<std::mutex> lock(device_default.mutex());
        gen = device_default.clone();
      }
      gen.set_current_seed(o.seed);
    }

    // --- Prefill: each distinct prompt once, its cache rows and logits then copied to
    // every row that has it.
    std::vector<int64_t> distinct, row_of(n);
    if (o.share_prefixes) {
      std::map<std::vector<int32_t>, int64_t> index;
      for (int64_t i = 0; i < n; ++i) {
        auto [it, inserted] = index.emplace(prompts[i], static_cast<int64_t>(distinct.size()));
        if (inserted) distinct.push_back(i);
        row_of[i] = it->second;
      }
    }
    const bool shared = o.share_prefixes && static_cast<int64_t>(distinct.size()) < n;
    at::Tensor prefill_tokens = batch->tokens, prefill_pad = batch->is_pad;
    if (shared) {
      const at::Tensor pick = at::tensor(distinct, at::kLong);
      prefill_tokens = prefill_tokens.index_select(0, pick);
      prefill_pad = prefill_pad.index_select(0, pick);
    }
    const bool static_decode = DecodesStatically(o, device);
    KvCache cache(model.config(), prefill_tokens.size(0), p + m, model.cache_options(),
                  /*zeroed=*/static_decode);
    at::Tensor hidden = model.Forward(prefill_tokens.to(device), prefill_pad.to(device), &cache);
    at::Tensor logits = model.Logits(hidden.select(1, p - 1)).to(at::kFloat);
    if (shared) {
      const at::Tensor groups = at::tensor(row_of, at::kLong);
      const at::Tensor expand = groups.to(device);
      cache.SelectRows(expand);
      // Read by the CPU's eager decode step only (DecodeAttention).
      if (device.is_cpu() && !static_decode) cache.SharePrefix(groups, p);
      logits = logits.index_select(0, expand);
    }

    // --- Decode.
    const int64_t used = static_decode ? DecodeStatic(model, &cache, logits, o, gen, &r)
                                       : DecodeEager(model, &cache, logits, o, gen, &r);
    // Drop the columns no row reached.
    r.tokens = r.tokens.narrow(1, 0, p + used).clone();
    r.is_pad = r.is_pad.narrow(1, 0, p + used).clone();
    r.logprobs = r.logprobs.narrow(1, 0, used).clone();
    r.completion_mask = r.completion_mask.narrow(1, 0, used).clone();
    r.generated_tokens = static_cast<int64_t>(r.completion_mask.sum().item<double>());
  });
  if (!status.ok()) return status;
  return r;
}

}  // namespace grpo
