// Chat prompt formats: the text a chat model is trained to see before it answers, for a
// system message and one user turn, ending where the assistant's reply begins (what
// `apply_chat_template(..., add_generation_prompt=True)` renders for these models).
//
// The templates in tokenizer_config.json are Jinja; this service does not run Jinja but
// writes the two formats its supported models use, with their special tokens as text, so
// that BpeTokenizer::Encode (allow_special) turns them into the special ids:
//   - kChatMl (Qwen2, Qwen2.5, Qwen3):
//       <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n
//       <|im_start|>assistant\n
//     with the system turn left out when `system` is empty (Qwen3's template adds no
//     default system prompt; Qwen2.5's would, so pass it explicitly there);
//   - kLlama3 (Llama 3, 3.1, 3.2):
//       <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
//       <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>
//       <|start_header_id|>assistant<|end_header_id|>\n\n
//     with the system turn left out when `system` is empty (Llama 3.1's template would add
//     a "Cutting Knowledge Date" system turn: pass it explicitly if a model needs it).
//     Llama 3's template also trims each message; this does not (pass trimmed text);
//   - kRaw: `user` as it is (base models, the built-in tasks); `system` is ignored.
// Messages are inserted verbatim: text in them that spells a special token becomes that
// token when encoded with allow_special (encode untrusted text separately with
// allow_special false where that matters).
#ifndef GRPO_HF_CHAT_FORMAT_H_
#define GRPO_HF_CHAT_FORMAT_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpo::hf {

enum class ChatFormat { kRaw, kChatMl, kLlama3 };

// The generation prompt for one system message (may be empty) and one user message.
std::string FormatPrompt(ChatFormat format, absl::string_view system, absl::string_view user);

// "raw", "chatml", "llama3" (as in job specs and flags); INVALID_ARGUMENT naming any other
// value and the accepted ones.
absl::StatusOr<ChatFormat> ParseChatFormat(absl::string_view name);

// The name ParseChatFormat accepts for `format`.
absl::string_view ChatFormatName(ChatFormat format);

// The format a Hugging Face config.json's model_type implies: "qwen2", "qwen2_moe",
// "qwen3", "qwen3_moe" -> kChatMl; "llama" -> kLlama3 (Llama 2 shares the model_type but
// not the format; its tokenizer is not byte-level BPE, so BpeTokenizer refuses it anyway).
// nullopt for any other type: the caller must then name the format.
std::optional<ChatFormat> GuessChatFormat(absl::string_view model_type);

}  // namespace grpo::hf

#endif  // GRPO_HF_CHAT_FORMAT_H_
