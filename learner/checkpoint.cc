#include "learner/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/failpoint.h"

namespace grpo {
namespace fs = std::filesystem;

absl::Status WriteCheckpoint(const std::string& run_dir, int64_t step,
                             const std::function<absl::Status(const std::string&)>& write) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", run_dir, ": ", ec.message()));
  const std::string name = absl::StrCat("step-", step);
  const std::string final_dir = (fs::path(run_dir) / name).string();
  const std::string tmp_dir = (fs::path(run_dir) / (".tmp-" + name)).string();
  fs::remove_all(tmp_dir, ec);
  fs::create_directory(tmp_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("creating ", tmp_dir, ": ", ec.message()));

  if (absl::Status s = write(tmp_dir); !s.ok()) {
    fs::remove_all(tmp_dir, ec);
    return s;
  }
  for (const auto& entry : fs::directory_iterator(tmp_dir)) {
    if (absl::Status s = FsyncPath(entry.path().string(), false); !s.ok()) return s;
  }
  if (absl::Status s = FsyncPath(tmp_dir, true); !s.ok()) return s;
  Failpoint("checkpoint_before_rename");
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming ", tmp_dir, ": ", ec.message()));
  Failpoint("checkpoint_before_latest");
  return WriteFileDurably((fs::path(run_dir) / "latest").string(), name + "\n");
}

absl::Status PruneCheckpoints(const std::string& run_dir, int keep) {
  if (keep < 1) return absl::OkStatus();
  absl::StatusOr<std::string> latest = LatestCheckpoint(run_dir);
  std::vector<std::pair<int64_t, fs::path>> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    int64_t step = 0;
    if (absl::StartsWith(name, "step-") && absl::SimpleAtoi(name.substr(5), &step))
      steps.emplace_back(step, entry.path());
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", run_dir, ": ", ec.message()));
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + keep < steps.size(); ++i) {
    if (latest.ok() && fs::equivalent(steps[i].second, *latest, ec)) continue;
    fs::remove_all(steps[i].second, ec);
    if (ec) return absl::InternalError(absl::StrCat("removing ", steps[i].second.string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LatestCheckpoint(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / "latest");
  std::string name;
  if (!(in >> name)) return absl::NotFoundError(absl::StrCat("no checkpoint in ", run_dir));
  const std::string dir = (fs::path(run_dir) / name).string();
  if (!fs::is_directory(dir))
    return absl::DataLossError(absl::StrCat(run_dir, "/latest names missing ", name));
  return dir;
}

}  // namespace grpo
