// grpoctl: the user's command line for the coordinator (docs/design.md §2).
//
//   grpoctl [--coordinator HOST:PORT] submit SPEC_FILE [--watch]
//   grpoctl list | get JOB_ID | cancel JOB_ID | watch JOB_ID
//
// Spec files (JSON or text proto) are parsed and validated here first, so a typo is
// reported before anything is queued. Exit status: 0 success (for watch: the job
// SUCCEEDED), 1 the coordinator said no or the job did not succeed, 2 bad usage or a bad
// spec file.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "coordinator/coordinator_client.h"
#include "jobspec/job_spec.h"
#include "rpc/security.h"

namespace {

std::string ShortState(grpo::v1::JobState state) {
  return std::string(absl::StripPrefix(grpo::v1::JobState_Name(state), "JOB_STATE_"));
}

std::string DefaultCoordinator() {
  const char* env = std::getenv("GRPO_COORDINATOR");
  return env != nullptr && *env != '\0' ? env : "localhost:50050";
}

}  // namespace

ABSL_FLAG(std::string, coordinator, DefaultCoordinator(),
          "coordinator address (default: $GRPO_COORDINATOR, else localhost:50050)");
ABSL_FLAG(bool, watch, false, "submit: follow the job until it ends");
ABSL_FLAG(int, timeout_seconds, 10, "deadline of each call to the coordinator");

namespace grpo {
namespace {

constexpr char kUsage[] =
    "grpoctl [--coordinator HOST:PORT] COMMAND\n"
    "  submit SPEC_FILE [--watch]   queue a job (JSON or text proto); prints its id\n"
    "  list                         every job, in submission order\n"
    "  get JOB_ID                   one job as JSON\n"
    "  cancel JOB_ID                cancel a queued or running job\n"
    "  watch JOB_ID                 follow a job until it ends (exit 0 if it succeeded)";

int UsageError(const std::string& message) {
  std::cerr << "error: " << message << "\nusage: " << kUsage << "\n";
  return 2;
}

int ServerError(const absl::Status& status) {
  std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
  return 1;
}

int Watch(CoordinatorClient& client, const std::string& job_id) {
  const bool tty = isatty(STDOUT_FILENO) != 0;
  v1::Job last;
  bool pending_line = false;
  absl::Status s = client.Watch(job_id, [&](const v1::Job& job) {
    last = job;
    if (tty) {
      // Rewrites one line in place; \033[K clears what a longer previous line left.
      std::cout << "\r" << FormatProgress(job) << "\033[K" << std::flush;
      pending_line = true;
    } else {
      std::cout << FormatProgress(job) << std::endl;
    }
  });
  if (pending_line) std::cout << "\n";
  if (!s.ok()) return ServerError(s);
  std::cout << last.job_id() << " " << ShortState(last.state()) << "\n";
  if (!last.error().empty()) std::cout << "error: " << last.error() << "\n";
  if (!last.run_dir().empty()) std::cout << "run_dir: " << last.run_dir() << "\n";
  if (!last.result_json().empty()) std::cout << "result: " << last.result_json() << "\n";
  std::cout << std::flush;
  return last.state() == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}

int Run(const std::vector<std::string>& args) {
  if (args.empty()) return UsageError("no command");
  const std::string& command = args[0];
  const size_t want_args = command == "list" ? 1 : 2;
  if (command != "submit" && command != "list" && command != "get" && command != "cancel" &&
      command != "watch") {
    return UsageError(absl::StrCat("unknown command \"", command, "\""));
  }
  if (args.size() != want_args) {
    return UsageError(absl::StrCat(command, " takes ", want_args - 1, " argument(s)"));
  }

  CoordinatorClientOptions options;
  options.call_timeout = std::chrono::seconds(absl::GetFlag(FLAGS_timeout_seconds));
  absl::StatusOr<Security> security = Security::Load(SecurityOptionsFromFlags());
  if (!security.ok()) {
    std::cerr << "error: " << security.status().message() << "\n";
    return 2;
  }
  options.security = *std::move(security);
  std::unique_ptr<CoordinatorClient> client =
      CoordinatorClient::Connect(absl::GetFlag(FLAGS_coordinator), options);

  if (command == "submit") {
    absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(args[1]);
    if (!spec.ok()) {
      std::cerr << "error: " << spec.status().message() << "\n";
      return 2;
    }
    // The coordinator validates again; checking here names the file in the message.
    if (absl::StatusOr<v1::JobSpec> resolved = ResolveJobSpec(*spec); !resolved.ok()) {
      std::cerr << "error: " << args[1] << ": " << resolved.status().message() << "\n";
      return 2;
    }
    absl::StatusOr<v1::Job> job = client->Submit(*spec);
    if (!job.ok()) return ServerError(job.status());
    std::cout << job->job_id() << std::endl;
    return absl::GetFlag(FLAGS_watch) ? Watch(*client, job->job_id()) : 0;
  }
  if (command == "list") {
    absl::StatusOr<std::vector<v1::Job>> jobs = client->ListJobs();
    if (!jobs.ok()) return ServerError(jobs.status());
    for (const v1::Job& job : *jobs) std::cout << FormatJobLine(job) << "\n";
    return 0;
  }
  if (command == "get") {
    absl::StatusOr<v1::Job> job = client->GetJob(args[1]);
    if (!job.ok()) return ServerError(job.status());
    google::protobuf::util::JsonPrintOptions print;
    print.add_whitespace = true;
    print.preserve_proto_field_names = true;  // as spec files spell them
    std::string json;
    if (auto s = google::protobuf::util::MessageToJsonString(*job, &json, print); !s.ok()) {
      std::cerr << "error: cannot print the job as JSON: " << s.ToString() << "\n";
      return 1;
    }
    std::cout << json;
    if (json.empty() || json.back() != '\n') std::cout << "\n";
    return 0;
  }
  if (command == "cancel") {
    absl::StatusOr<v1::Job> job = client->Cancel(args[1]);
    if (!job.ok()) return ServerError(job.status());
    if (job->state() == v1::JOB_STATE_RUNNING) {
      std::cout << job->job_id() << " RUNNING: cancel requested, it stops at the next step\n";
    } else {
      std::cout << job->job_id() << " " << ShortState(job->state()) << "\n";
    }
    return 0;
  }
  return Watch(*client, args[1]);
}

}  // namespace
}  // namespace grpo

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(grpo::kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  return grpo::Run(args);
}
