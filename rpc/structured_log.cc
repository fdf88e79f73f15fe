#include "rpc/structured_log.h"

#include <atomic>
#include <cstdint>
#include <iostream>
#include <unordered_map>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/json.h"
#include "grpc/support/log.h"

ABSL_FLAG(std::string, log_format, "text",
          "log lines as 'text' (time, level, message) or 'json' (one object per line)");

namespace grpo {
namespace {

StructuredLogBuffer* grpc_log_buffer = nullptr;

std::atomic<uint64_t> next_buffer_id{1};

// Each thread's partial lines, by buffer id (not address: a buffer made where a destroyed
// one lived must not inherit its half line). The flag is trivially destructible, so it can
// still be read once the map is gone (a thread's last writes, static destructors): those
// writes then go out as events at once instead of being collected.
thread_local bool thread_lines_destroyed = false;
struct ThreadLines {
  ~ThreadLines() { thread_lines_destroyed = true; }
  std::unordered_map<uint64_t, std::string> lines;
};

void LogGrpcEvent(gpr_log_func_args* args) {
  const absl::string_view level = args->severity == GPR_LOG_SEVERITY_ERROR  ? "error"
                                  : args->severity == GPR_LOG_SEVERITY_INFO ? "info"
                                                                            : "debug";
  grpc_log_buffer->Log(level, absl::StrCat("grpc ", args->file, ":", args->line, ": ",
                                           args->message));
}

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_format: '", name, "' is neither 'text' nor 'json'"));
}

std::string FormatLogLine(LogFormat format, absl::string_view timestamp,
                          absl::string_view level, absl::string_view component,
                          absl::string_view message) {
  std::string line;
  if (format == LogFormat::kJson) {
    line = "{\"ts\":";
    AppendJsonString(timestamp, line);
    line += ",\"level\":";
    AppendJsonString(level, line);
    line += ",\"component\":";
    AppendJsonString(component, line);
    line += ",\"msg\":";
    AppendJsonString(message, line);
    line += "}\n";
    return line;
  }
  line = absl::StrCat(timestamp, " ", level, " ");
  for (const char c : message) {
    // A control character could forge a second event (a '\r' or escape sequence).
    line += (static_cast<uint8_t>(c) < 0x20 && c != '\t') || c == 0x7F ? '?' : c;
  }
  line += '\n';
  return line;
}

StructuredLogBuffer::StructuredLogBuffer(std::streambuf* sink, LogFormat format,
                                         std::string component, bool is_error_stream)
    : id_(next_buffer_id.fetch_add(1)),
      format_(format),
      component_(std::move(component)),
      is_error_stream_(is_error_stream),
      sink_(sink) {}

StructuredLogBuffer::~StructuredLogBuffer() { Flush(); }

std::string* StructuredLogBuffer::ThreadLine() {
  // Per thread and per buffer, so that a thread's half-written line is never completed by
  // another thread's bytes.
  if (thread_lines_destroyed) return nullptr;
  thread_local ThreadLines lines;
  return &lines.lines[id_];
}

void StructuredLogBuffer::Flush() {
  std::string* line = ThreadLine();
  if (line == nullptr || line->empty()) return;
  std::string pending = std::move(*line);
  line->clear();
  Emit(pending);
}

int StructuredLogBuffer::overflow(int ch) {
  if (ch == traits_type::eof()) return traits_type::not_eof(ch);
  const char c = traits_type::to_char_type(ch);
  xsputn(&c, 1);
  return ch;
}

std::streamsize StructuredLogBuffer::xsputn(const char* data, std::streamsize size) {
  std::string scratch;  // the thread's line once its collector is gone
  std::string* line = ThreadLine();
  if (line == nullptr) line = &scratch;
  absl::string_view rest(data, static_cast<size_t>(size));
  for (size_t newline = rest.find('\n'); newline != absl::string_view::npos;
       newline = rest.find('\n')) {
    line->append(rest.data(), newline);
    std::string complete = std::move(*line);
    line->clear();
    Emit(complete);
    rest.remove_prefix(newline + 1);
  }
  line->append(rest.data(), rest.size());
  if (line == &scratch && !scratch.empty()) Emit(scratch);
  return size;
}

void StructuredLogBuffer::Emit(absl::string_view message) {
  if (!message.empty() && message.back() == '\r') message.remove_suffix(1);
  absl::string_view level = "info";
  if (is_error_stream_) {
    level = absl::StartsWithIgnoreCase(message, "error") ? "error" : "warning";
  }
  Log(level, message);
}

void StructuredLogBuffer::Log(absl::string_view level, absl::string_view message) {
  const std::string timestamp =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  const std::string line = FormatLogLine(format_, timestamp, level, component_, message);
  absl::MutexLock lock(&mu_);
  sink_->sputn(line.data(), static_cast<std::streamsize>(line.size()));
  sink_->pubsync();
}

absl::Status InstallStructuredLogFromFlags(absl::string_view component) {
  absl::StatusOr<LogFormat> format = ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) return format.status();
  // Leaked on purpose: the streams are used until the very end of the process, after
  // static destructors would have run.
  auto* out = new StructuredLogBuffer(std::cout.rdbuf(), *format, std::string(component),
                                      /*is_error_stream=*/false);
  auto* err = new StructuredLogBuffer(std::cerr.rdbuf(), *format, std::string(component),
                                      /*is_error_stream=*/true);
  std::cout.rdbuf(out);
  std::cerr.rdbuf(err);
  grpc_log_buffer = err;
  gpr_set_log_function(LogGrpcEvent);
  return absl::OkStatus();
}

}  // namespace grpo
