// Runs a shell command for a test, stdout and stderr together, under `timeout` so that a
// hung command fails the test instead of hanging it.
#ifndef GRPO_TESTS_TESTING_COMMAND_H_
#define GRPO_TESTS_TESTING_COMMAND_H_

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace grpo::testing_util {

struct CommandResult {
  int exit_code = -1;  // -1: did not exit normally
  std::string output;
};

inline CommandResult RunCommand(const std::string& command, int timeout_seconds = 300) {
  CommandResult result;
  // `timeout` runs the command's first program; its redirections stay the shell's.
  const std::string line = "timeout " + std::to_string(timeout_seconds) + " " + command + " 2>&1";
  FILE* pipe = popen(line.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) result.output.append(buffer, n);
  const int status = pclose(pipe);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

}  // namespace grpo::testing_util

#endif  // GRPO_TESTS_TESTING_COMMAND_H_
