#include "base/failpoint.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace grpo {
namespace {

struct Armed {
  std::mutex mu;
  std::map<std::string, int> remaining;  // hits left before the crash, by name
};

// Parsed once; null when the variable is unset or names nothing valid.
Armed* ArmedPoints() {
  static Armed* armed = [] () -> Armed* {
    const char* spec = std::getenv("GRPO_FAILPOINTS");
    if (spec == nullptr || *spec == '\0') return nullptr;
    auto* a = new Armed;
    for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, ':');
      int n = 1;
      if (!kv.second.empty() && (!absl::SimpleAtoi(kv.second, &n) || n < 1)) {
        std::fprintf(stderr, "GRPO_FAILPOINTS: ignoring \"%.*s\" (want name:N, N >= 1)\n",
                     static_cast<int>(item.size()), item.data());
        continue;
      }
      a->remaining[std::string(kv.first)] = n;
    }
    return a;
  }();
  return armed;
}

}  // namespace

void Failpoint(const char* name) {
  Armed* armed = ArmedPoints();
  if (armed == nullptr) return;
  std::lock_guard<std::mutex> lock(armed->mu);
  auto it = armed->remaining.find(name);
  if (it == armed->remaining.end() || --it->second > 0) return;
  std::fprintf(stderr, "failpoint %s: exiting with %d\n", name, kFailpointExitCode);
  _exit(kFailpointExitCode);
}

}  // namespace grpo
