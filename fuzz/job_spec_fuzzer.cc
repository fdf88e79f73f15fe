// Fuzzes job-spec handling (jobspec/job_spec.h) with the text a user submits: `grpoctl submit`
// sends it to the coordinator, which parses (JSON or text proto), resolves over the
// defaults and validates it before anything is queued.
//
// Checks, besides "no crash, no sanitizer report":
//   - ParseJobSpec, ValidateJobSpec on the raw spec and ResolveJobSpec answer a status
//     (INVALID_ARGUMENT on failure), never anything else;
//   - a resolved spec is valid, and survives the coordinator's own round trip: written
//     with JobSpecToJson (spec.json, the state file), parsed and resolved again, it is the
//     same spec. A spec that could be submitted but not read back would fail the job at
//     restart.
// LoadJobData is not called: it reads the files a spec names, and for the arithmetic task
// builds a 20000-prompt pool, neither of which is about hostile text.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpo/v1/job.pb.h"
#include "jobspec/job_spec.h"

namespace {

// Prints why and aborts, so that libFuzzer saves the input as a crash.
[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "job_spec_fuzzer: %s\n%s\n", what, detail.c_str());
  std::abort();
}

void CheckFailureCode(const char* what, const absl::Status& status) {
  if (!status.ok() && status.code() != absl::StatusCode::kInvalidArgument)
    Fail(what, status.ToString());
}

}  // namespace

// protobuf logs every string that is not UTF-8 as it parses one: on most inputs, and at a
// cost that would dominate the run. What matters is what the code under test does.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<grpo::v1::JobSpec> parsed = grpo::ParseJobSpec(text);
  CheckFailureCode("ParseJobSpec: unexpected status code", parsed.status());
  if (!parsed.ok()) return 0;

  // The raw spec has no defaults merged in: zeros and empty strings everywhere, which
  // validation must reject (not divide by, index with, ...).
  CheckFailureCode("ValidateJobSpec(raw): unexpected status code",
                   grpo::ValidateJobSpec(*parsed));
  (void)grpo::ModelConfigFromSpec(parsed->model());

  absl::StatusOr<grpo::v1::JobSpec> resolved = grpo::ResolveJobSpec(*parsed);
  CheckFailureCode("ResolveJobSpec: unexpected status code", resolved.status());
  if (!resolved.ok()) return 0;
  if (absl::Status valid = grpo::ValidateJobSpec(*resolved); !valid.ok())
    Fail("a resolved spec does not validate", valid.ToString());

  const std::string json = grpo::JobSpecToJson(*resolved);
  absl::StatusOr<grpo::v1::JobSpec> reparsed = grpo::ParseJobSpec(json);
  if (!reparsed.ok())
    Fail("JobSpecToJson output does not parse", reparsed.status().ToString() + "\n" + json);
  absl::StatusOr<grpo::v1::JobSpec> reresolved = grpo::ResolveJobSpec(*reparsed);
  if (!reresolved.ok())
    Fail("a resolved spec read back from JSON does not resolve",
         reresolved.status().ToString() + "\n" + json);
  if (!google::protobuf::util::MessageDifferencer::Equals(*resolved, *reresolved))
    Fail("the JSON round trip changes a resolved spec",
         resolved->DebugString() + "\n---\n" + reresolved->DebugString());
  return 0;
}
