// Structured logs for the long-running binaries: every line a process writes to std::cout
// or std::cerr becomes one event, stamped with the time (UTC, milliseconds) and a level,
// and in JSON the program too, in one of two formats (`--log_format`):
//
//   text  2026-11-26T04:10:00.123Z info step 3/8 ...          (the message as written)
//   json  {"ts":"2026-11-26T04:10:00.123Z","level":"info","component":"grpo_learner",
//          "msg":"step 3/8 ..."}                                         (one line)
//
// The level comes from the stream: standard output is "info"; on standard error a line
// starting "error" is "error" and any other is "warning". Wrapping the streams, rather than
// changing every call site, keeps each component's messages where they are written and
// makes the one-line-per-event rule hold for all of them.
//
// Thread-safety: each thread collects its own partial line, and whole lines are written
// to the underlying stream under a mutex, so lines from two threads never interleave. A
// line without its '\n' is written when its thread writes the newline, or at Flush; one
// left unfinished when its thread exits is lost (every component writes whole lines).
#ifndef GRPO_RPC_STRUCTURED_LOG_H_
#define GRPO_RPC_STRUCTURED_LOG_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <streambuf>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace grpo {

enum class LogFormat { kText, kJson };

// "text" or "json"; INVALID_ARGUMENT naming --log_format and the value otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

// One event as a line (with its '\n'). `message` may hold any bytes: JSON gets invalid
// UTF-8 as U+FFFD and control characters escaped, text gets control characters as '?'.
std::string FormatLogLine(LogFormat format, absl::string_view timestamp,
                          absl::string_view level, absl::string_view component,
                          absl::string_view message);

// A streambuf that formats lines and forwards them to `sink` (not owned; must outlive it).
class StructuredLogBuffer : public std::streambuf {
 public:
  // `is_error_stream`: the levels of standard error (see above) rather than "info".
  StructuredLogBuffer(std::streambuf* sink, LogFormat format, std::string component,
                      bool is_error_stream);
  ~StructuredLogBuffer() override;

  // Writes the calling thread's partial line, if any, as an event.
  void Flush();
  // One whole event with its own level (for libraries that log around the streams).
  void Log(absl::string_view level, absl::string_view message);

 protected:
  int overflow(int ch) override;
  std::streamsize xsputn(const char* data, std::streamsize size) override;

 private:
  std::string* ThreadLine();  // null once the thread's collector is destroyed
  void Emit(absl::string_view line);  // the level from the stream

  const uint64_t id_;
  const LogFormat format_;
  const std::string component_;
  const bool is_error_stream_;
  absl::Mutex mu_;
  std::streambuf* const sink_ ABSL_GUARDED_BY(mu_);
};

// Parses the --log_format flag and wraps std::cout and std::cerr for the rest of the
// process, with `component` (the program name) in every event; gRPC's own log lines
// (written to file descriptor 2, not through std::cerr) are routed into the same events.
// Call once, after flag parsing and before threads start writing.
absl::Status InstallStructuredLogFromFlags(absl::string_view component);

}  // namespace grpo

#endif  // GRPO_RPC_STRUCTURED_LOG_H_
