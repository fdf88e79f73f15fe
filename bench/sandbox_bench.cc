// sandbox_bench: what the code sandbox costs. Runs a trivial passing Python program
// (`print(1 + 1)`) --runs times at concurrency 1, 2 and 8 through Sandbox::Run, and the
// same interpreter bare (posix_spawn, no namespaces), and prints one JSON line per
// configuration: runs per second and the mean seconds per run; the sandbox's start-up
// overhead is the difference of the concurrency-1 means.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "sandbox/sandbox.h"

ABSL_FLAG(int, runs, 100, "runs per configuration");

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// `runs` calls of `run` over `threads` threads; false if any failed.
bool Time(int runs, int threads, const std::function<bool()>& run, double* seconds) {
  std::atomic<int> next{0};
  std::atomic<bool> ok{true};
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      while (next.fetch_add(1) < runs)
        if (!run()) ok = false;
    });
  for (std::thread& t : pool) t.join();
  *seconds = Seconds(start);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int runs = absl::GetFlag(FLAGS_runs);
  absl::StatusOr<std::unique_ptr<grpo::Sandbox>> sandbox = grpo::Sandbox::Create({});
  if (!sandbox.ok()) {
    std::fprintf(stderr, "sandbox_bench: %s\n", sandbox.status().ToString().c_str());
    return 1;
  }
  const std::string program = "print(1 + 1)\n";
  auto sandboxed = [&] {
    absl::StatusOr<grpo::SandboxResult> r =
        (*sandbox)->Run({"/usr/bin/python3", "-I", "main.py"}, {{"main.py", program}}, "");
    return r.ok() && r->exit_code == 0 && r->out == "2\n";
  };
  auto bare = [&] {
    const char* args[] = {"/usr/bin/python3", "-I", "-c", "print(1 + 1)", nullptr};
    pid_t pid;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    const int error = posix_spawn(&pid, args[0], &actions, nullptr, const_cast<char**>(args), environ);
    posix_spawn_file_actions_destroy(&actions);
    int status = 0;
    return error == 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
           WEXITSTATUS(status) == 0;
  };
  for (const auto& [name, run] : {std::pair<const char*, std::function<bool()>>{"bare", bare},
                                  {"sandboxed", sandboxed}}) {
    for (int threads : {1, 2, 8}) {
      if (std::string(name) == "bare" && threads != 1) continue;
      double seconds = 0;
      if (!Time(runs, threads, run, &seconds)) {
        std::fprintf(stderr, "sandbox_bench: a %s run failed\n", name);
        return 1;
      }
      std::printf("{\"bench\":\"sandbox\",\"mode\":\"%s\",\"concurrency\":%d,\"runs\":%d,"
                  "\"runs_per_s\":%.1f,\"mean_s\":%.4f}\n",
                  name, threads, runs, runs / seconds, seconds * threads / runs);
      std::fflush(stdout);
    }
  }
  return 0;
}
