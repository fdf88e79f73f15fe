#include "hf/job_model.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "hf/bpe_tokenizer.h"
#include "hf/chat_format.h"
#include "hf/hf_config.h"
#include "jobspec/job_spec.h"

namespace grpo::hf {
namespace {

absl::StatusOr<HfModelConfig> ReadConfig(const v1::JobSpec& spec) {
  const std::string path = (std::filesystem::path(spec.model().hf_dir()) / "config.json").string();
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("model.hf_dir: cannot open ", path));
  const int cap = spec.model().has_max_seq_len() ? spec.model().max_seq_len() : kDefaultHfMaxSeqLen;
  return ParseHfConfig(*text, path, cap);
}

// BpeTokenizer behind the pipeline's interface. Dataset prompts go into the chat format
// as the user turn, encoded without special tokens, so a prompt that contains
// "<|im_end|>" cannot end its turn early; the template around it keeps its specials.
class BpeTextTokenizer final : public TextTokenizer {
 public:
  BpeTextTokenizer(BpeTokenizer bpe, ChatFormat format, std::string system, int32_t eos,
                   int32_t pad)
      : bpe_(std::move(bpe)), format_(format), system_(std::move(system)), eos_(eos), pad_(pad) {
    // The template split where the user text goes: a marker no template contains.
    const std::string marker = "\x01user\x01";
    const std::string whole = FormatPrompt(format_, system_, marker);
    const size_t at = whole.find(marker);
    before_ = bpe_.Encode(whole.substr(0, at), /*allow_special=*/true);
    after_ = bpe_.Encode(whole.substr(at + marker.size()), /*allow_special=*/true);
  }

  absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view prompt) const override {
    std::vector<int32_t> ids = before_;
    const std::vector<int32_t> user = bpe_.Encode(absl::string_view(prompt.data(), prompt.size()), /*allow_special=*/false);
    ids.insert(ids.end(), user.begin(), user.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
    if (ids.empty()) return absl::InvalidArgumentError("empty prompt");
    return ids;
  }
  absl::StatusOr<std::vector<int32_t>> EncodeText(std::string_view text) const override {
    return bpe_.Encode(absl::string_view(text.data(), text.size()), /*allow_special=*/false);
  }
  std::string Decode(absl::Span<const int32_t> ids) const override {
    // Up to the end token; ids the tokenizer does not know (embedding rows past its
    // vocabulary, which sampling masks anyway) are left out rather than failing.
    return DecodeWithEnds(ids).text;
  }
  DecodedCompletion DecodeWithEnds(absl::Span<const int32_t> ids) const override {
    DecodedCompletion out;
    out.text = bpe_.DecodeWithEnds(ids, /*skip_special=*/true, eos_, &out.token_ends);
    return out;
  }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  int vocab_size() const override { return bpe_.vocab_size(); }
  bool character_level() const override { return false; }

 private:
  BpeTokenizer bpe_;
  ChatFormat format_;
  std::string system_;
  int32_t eos_, pad_;
  std::vector<int32_t> before_, after_;
};

}  // namespace

absl::StatusOr<ModelConfig> JobModelConfig(const v1::JobSpec& spec) {
  if (spec.model().hf_dir().empty()) return ModelConfigFromSpec(spec.model());
  absl::StatusOr<HfModelConfig> config = ReadConfig(spec);
  if (!config.ok()) return config.status();
  return config->model;
}

absl::StatusOr<JobModel> LoadJobModel(const v1::JobSpec& spec) {
  if (spec.model().hf_dir().empty()) {
    return JobModel{ModelConfigFromSpec(spec.model()), std::make_unique<CharTextTokenizer>(),
                    std::nullopt};
  }
  const std::string& dir = spec.model().hf_dir();
  absl::StatusOr<HfModelConfig> config = ReadConfig(spec);
  if (!config.ok()) return config.status();
  absl::StatusOr<BpeTokenizer> bpe = BpeTokenizer::FromDirectory(dir);
  if (!bpe.ok()) return bpe.status();
  if (bpe->vocab_size() > config->model.vocab_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, ": tokenizer.json has ", bpe->vocab_size(), " tokens, the model only ",
        config->model.vocab_size, " embedding rows"));
  }
  ChatFormat format = ChatFormat::kRaw;
  if (!spec.model().prompt_format().empty()) {
    absl::StatusOr<ChatFormat> parsed = ParseChatFormat(spec.model().prompt_format());
    if (!parsed.ok()) return parsed.status();
    format = *parsed;
  } else if (auto guessed = GuessChatFormat(ModelTypeName(config->family))) {
    format = *guessed;
  }
  // A chat format needs its markers as single tokens; written as plain text they would
  // only look like a template to us, not to the model.
  std::vector<const char*> markers;
  if (format == ChatFormat::kChatMl) markers = {"<|im_start|>", "<|im_end|>"};
  if (format == ChatFormat::kLlama3)
    markers = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
  for (const char* marker : markers) {
    if (!bpe->TokenToId(marker).has_value())
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": prompt format ", ChatFormatName(format), " needs the token ", marker,
          ", which tokenizer.json does not have (set model.prompt_format)"));
  }
  // A chat turn ends with the format's end-of-turn token, which the instruct models emit;
  // otherwise tokenizer_config.json's eos_token, then config.json's.
  std::optional<int32_t> eos;
  if (format == ChatFormat::kChatMl) eos = bpe->TokenToId("<|im_end|>");
  if (format == ChatFormat::kLlama3) eos = bpe->TokenToId("<|eot_id|>");
  if (!eos) eos = bpe->eos_id();
  if (!eos && !config->eos_token_ids.empty()) eos = config->eos_token_ids[0];
  if (!eos) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, ": no end token: neither tokenizer_config.json's eos_token nor config.json's "
             "eos_token_id names one"));
  }
  const int32_t pad = bpe->pad_id().value_or(*eos);
  return JobModel{config->model,
                  std::make_unique<BpeTextTokenizer>(*std::move(bpe), format,
                                                     spec.model().system_prompt(), *eos, pad),
                  *config};
}

}  // namespace grpo::hf
