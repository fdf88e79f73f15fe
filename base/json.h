// JSON string literals for the JSON this project writes by hand (log lines, metrics lines,
// safetensors headers): quotes, backslashes and control characters escaped, and invalid
// UTF-8 replaced by U+FFFD so that any JSON reader accepts the output.
#ifndef GRPO_BASE_JSON_H_
#define GRPO_BASE_JSON_H_

#include <string>

#include "absl/strings/string_view.h"

namespace grpo {

// Appends `s` as a quoted JSON string.
void AppendJsonString(absl::string_view s, std::string& out);

}  // namespace grpo

#endif  // GRPO_BASE_JSON_H_
