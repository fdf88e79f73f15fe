#include "hf/chat_format.h"

#include "absl/strings/str_cat.h"

namespace grpo::hf {

std::string FormatPrompt(ChatFormat format, absl::string_view system, absl::string_view user) {
  switch (format) {
    case ChatFormat::kRaw:
      return std::string(user);
    case ChatFormat::kChatMl: {
      std::string prompt;
      if (!system.empty()) absl::StrAppend(&prompt, "<|im_start|>system\n", system, "<|im_end|>\n");
      absl::StrAppend(&prompt, "<|im_start|>user\n", user, "<|im_end|>\n",
                      "<|im_start|>assistant\n");
      return prompt;
    }
    case ChatFormat::kLlama3: {
      std::string prompt = "<|begin_of_text|>";
      if (!system.empty()) {
        absl::StrAppend(&prompt, "<|start_header_id|>system<|end_header_id|>\n\n", system,
                        "<|eot_id|>");
      }
      absl::StrAppend(&prompt, "<|start_header_id|>user<|end_header_id|>\n\n", user,
                      "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n");
      return prompt;
    }
  }
  return std::string(user);  // unreachable: every enumerator returns above
}

absl::StatusOr<ChatFormat> ParseChatFormat(absl::string_view name) {
  for (ChatFormat format : {ChatFormat::kRaw, ChatFormat::kChatMl, ChatFormat::kLlama3}) {
    if (name == ChatFormatName(format)) return format;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat format \"", name, "\" (expected raw, chatml or llama3)"));
}

absl::string_view ChatFormatName(ChatFormat format) {
  switch (format) {
    case ChatFormat::kRaw:
      return "raw";
    case ChatFormat::kChatMl:
      return "chatml";
    case ChatFormat::kLlama3:
      return "llama3";
  }
  return "raw";  // unreachable
}

std::optional<ChatFormat> GuessChatFormat(absl::string_view model_type) {
  if (model_type == "qwen2" || model_type == "qwen2_moe" || model_type == "qwen3" ||
      model_type == "qwen3_moe") {
    return ChatFormat::kChatMl;
  }
  if (model_type == "llama") return ChatFormat::kLlama3;
  return std::nullopt;
}

}  // namespace grpo::hf
