// Fuzzes the JSONL loaders (data/dataset.h): LoadJsonl, which reads a job's training and
// held-out files (the coordinator and the learner both load them from a user's spec), and
// LoadPreferenceJsonl (reward-model training data). The input is the file's content; it
// is handed over as a real file (a memfd, named by its /proc/self/fd path) so that the
// reading, BOM and line splitting of ForEachJsonlLine are under test too, without disk.
//
// Checks, besides "no crash, no sanitizer report", the contract in data/dataset.h:
//   - a failure is INVALID_ARGUMENT with a message "<path>:<line>: ...", the line a real
//     line of the input;
//   - every example loaded has a non-blank prompt and answer, and there are no more
//     examples than non-blank lines;
//   - every preference pair has non-blank prompt, chosen and rejected.

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "data/dataset.h"

namespace {

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "jsonl_fuzzer: %s\n%s\n", what, detail.c_str());
  std::abort();
}

// The one file every input is written to, reused: creating one per input would cost more
// than the parse.
struct MemFile {
  int fd;
  std::string path;  // what LoadJsonl opens
};

const MemFile& File() {
  static const MemFile* file = [] {
    const int fd = memfd_create("jsonl_fuzzer", 0);
    if (fd < 0) Fail("memfd_create failed", "");
    return new MemFile{fd, absl::StrCat("/proc/self/fd/", fd)};
  }();
  return *file;
}

bool Blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

// The number of lines of `text` (as ForEachJsonlLine counts them) and of non-blank ones.
void CountLines(std::string_view text, int* lines, int* non_blank) {
  *lines = *non_blank = 0;
  while (!text.empty()) {
    ++*lines;
    const size_t newline = text.find('\n');
    if (!Blank(text.substr(0, newline))) ++*non_blank;
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
  }
}

void CheckError(const absl::Status& status, const std::string& path, int lines) {
  if (status.code() != absl::StatusCode::kInvalidArgument)
    Fail("unexpected status code", status.ToString());
  // "<path>:<line>: <reason>" with 1 <= line <= lines.
  const absl::string_view message = status.message();
  const std::string prefix = path + ":";
  const size_t colon = message.find(':', prefix.size());
  int line = 0;
  if (!absl::StartsWith(message, prefix) || colon == absl::string_view::npos ||
      !absl::SimpleAtoi(message.substr(prefix.size(), colon - prefix.size()), &line) ||
      line < 1 || line > lines)
    Fail("error does not name path:line of the input", status.ToString());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const MemFile& file = File();
  if (ftruncate(file.fd, 0) != 0 ||
      pwrite(file.fd, data, size, 0) != static_cast<ssize_t>(size))
    Fail("writing the memfd failed", "");
  const std::string& path = file.path;

  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  int lines, non_blank;
  CountLines(text, &lines, &non_blank);

  absl::StatusOr<std::vector<grpo::Example>> examples = grpo::LoadJsonl(path);
  if (!examples.ok()) {
    CheckError(examples.status(), path, lines);
  } else {
    if (static_cast<int>(examples->size()) > non_blank)
      Fail("more examples than non-blank lines", "");
    for (const grpo::Example& e : *examples) {
      if (Blank(e.prompt) || Blank(e.answer))
        Fail("an example breaks the contract", e.prompt + "\n" + e.answer);
    }
  }

  absl::StatusOr<std::vector<grpo::PreferencePair>> pairs = grpo::LoadPreferenceJsonl(path);
  if (!pairs.ok()) {
    CheckError(pairs.status(), path, lines);
  } else {
    for (const grpo::PreferencePair& p : *pairs) {
      if (Blank(p.prompt) || Blank(p.chosen) || Blank(p.rejected))
        Fail("a preference pair breaks the contract", p.prompt);
    }
  }
  return 0;
}
