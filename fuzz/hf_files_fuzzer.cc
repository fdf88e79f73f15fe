// Fuzzes the readers of Hugging Face checkpoint files (hf/safetensors.h, hf/hf_config.h):
// what a learner reads from a model directory a user names in model.hf_dir.
//
// The input is parsed both as a safetensors file and as a config.json. Checks, besides
// "no crash, no sanitizer report":
//   - Parse fails only with INVALID_ARGUMENT, ParseHfConfig only with INVALID_ARGUMENT or
//     UNIMPLEMENTED;
//   - every tensor a successful Parse hands out views bytes inside the input, exactly
//     numel x element size of them;
//   - a config that parses has a model configuration that validates.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "hf/hf_config.h"
#include "hf/safetensors.h"
#include "model/model_config.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "hf_files_fuzzer: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  auto file = grpo::hf::SafetensorsFile::Parse(input, "fuzz.safetensors");
  if (!file.ok()) {
    Check(file.status().code() == absl::StatusCode::kInvalidArgument, "Parse: other code");
  } else {
    for (const auto& [name, view] : (*file)->tensors()) {
      Check(view.bytes.data() >= input.data() &&
                view.bytes.data() + view.bytes.size() <= input.data() + input.size(),
            "a tensor's bytes lie outside the input");
      Check(static_cast<uint64_t>(view.numel()) * grpo::hf::DtypeSize(view.dtype) ==
                view.bytes.size(),
            "a tensor's byte count disagrees with its shape");
    }
  }
  auto config = grpo::hf::ParseHfConfig(input, "fuzz/config.json", 4096);
  if (!config.ok()) {
    Check(config.status().code() == absl::StatusCode::kInvalidArgument ||
              config.status().code() == absl::StatusCode::kUnimplemented,
          "ParseHfConfig: other code");
  } else {
    Check(grpo::ValidateModelConfig(config->model).ok(), "a parsed config does not validate");
  }
  return 0;
}
