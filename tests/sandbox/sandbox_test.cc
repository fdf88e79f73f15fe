// The code sandbox against hostile programs: each is contained, ends with the right
// outcome, and leaves nothing behind; the machine's files, network and processes stay out
// of reach; correct programs run and 64 at once finish with correct results.
#include "sandbox/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

constexpr char kPython[] = "/usr/bin/python3";

SandboxLimits TestLimits() {
  SandboxLimits l;
  l.cpu_seconds = 2;
  l.wall_seconds = 4;
  l.memory_bytes = 256 << 20;
  l.processes = 16;
  l.file_bytes = 1 << 20;
  l.output_bytes = 16 << 10;
  return l;
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Sandbox>> s = Sandbox::Create(TestLimits());
    // A machine without user namespaces gets the refusal the product promises, never an
    // unsandboxed run; there is nothing to contain then.
    if (absl::IsFailedPrecondition(s.status())) GTEST_SKIP() << s.status();
    ASSERT_TRUE(s.ok()) << s.status();
    sandbox_ = *std::move(s);
  }

  // `file`: the program's name, which its processes' command lines show.
  SandboxResult Python(const std::string& program, const std::string& stdin_text = "",
                       const std::string& file = "main.py") {
    absl::StatusOr<SandboxResult> r =
        sandbox_->Run({kPython, "-I", file}, {{file, program}}, stdin_text);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : SandboxResult{};
  }

  // Processes of this machine whose command line holds `marker`.
  static int ProcessesWith(const std::string& marker) {
    int found = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      std::ifstream in(entry.path() / "cmdline", std::ios::binary);
      std::string cmdline((std::istreambuf_iterator<char>(in)), {});
      found += cmdline.find(marker) != std::string::npos;
    }
    return found;
  }

  std::unique_ptr<Sandbox> sandbox_;
};

TEST_F(SandboxTest, ACorrectProgramRunsWithItsStdinAndFiles) {
  SandboxResult r = Python("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n",
                           "1 2 3\n");
  EXPECT_EQ(r.outcome, SandboxOutcome::kExited);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "6\n");
  SandboxResult failing = Python("assert 1 == 2, 'nope'\n");
  EXPECT_EQ(failing.outcome, SandboxOutcome::kExited);
  EXPECT_EQ(failing.exit_code, 1);
  EXPECT_THAT(failing.err, HasSubstr("AssertionError: nope"));
}

TEST_F(SandboxTest, AnInfiniteLoopRunsOutOfCpuTime) {
  SandboxResult r = Python("while True:\n    pass\n");
  EXPECT_EQ(r.outcome, SandboxOutcome::kTimeout) << "signal " << r.signal << ", " << r.seconds << " s";
  EXPECT_LT(r.seconds, TestLimits().wall_seconds + 1);
}

TEST_F(SandboxTest, SleepingPastTheDeadlineIsKilledAtIt) {
  SandboxResult r = Python("import time\ntime.sleep(60)\n");
  EXPECT_EQ(r.outcome, SandboxOutcome::kTimeout);
  EXPECT_GE(r.seconds, TestLimits().wall_seconds);
  EXPECT_LT(r.seconds, TestLimits().wall_seconds + 2);
}

TEST_F(SandboxTest, AForkBombIsContainedAndLeavesNothingBehind) {
  const std::string marker = absl::StrCat("forkbomb", getpid());
  SandboxResult r = Python("import os, time\n"
                           "while True:\n"
                           "    try:\n        os.fork()\n"
                           "    except OSError:\n        time.sleep(0.01)\n",
                           "", marker + ".py");
  EXPECT_EQ(r.outcome, SandboxOutcome::kTimeout);
  // Its init is dead, so the kernel has killed every process of its namespace.
  EXPECT_EQ(ProcessesWith(marker), 0);
  // And the server still starts programs.
  EXPECT_EQ(Python("print('alive')\n").out, "alive\n");
}

TEST_F(SandboxTest, AllocatingTenGigabytesRunsOutOfMemory) {
  SandboxResult r = Python("x = bytearray(10 * 1024**3)\n");
  EXPECT_EQ(r.outcome, SandboxOutcome::kMemory) << r.err;
}

TEST_F(SandboxTest, WritingTenGigabytesStopsAtTheFileLimitAndTheOutputCap) {
  SandboxResult file = Python(
      "chunk = b'0' * (1 << 20)\nwith open('/tmp/big', 'wb') as f:\n"
      "    for _ in range(10 * 1024):\n        f.write(chunk)\n");
  EXPECT_NE(file.exit_code, 0);  // EFBIG (Python ignores SIGXFSZ), or killed by it
  EXPECT_TRUE(file.outcome == SandboxOutcome::kExited || file.outcome == SandboxOutcome::kCrash)
      << SandboxOutcomeName(file.outcome);
  EXPECT_THAT(file.err + std::to_string(file.signal), testing::AnyOf(HasSubstr("File too large"),
                                                                     HasSubstr("25")));
  SandboxResult out = Python(
      "import sys\nchunk = '0' * (1 << 20)\nfor _ in range(10 * 1024):\n"
      "    sys.stdout.write(chunk)\n");
  EXPECT_EQ(out.outcome, SandboxOutcome::kOutputLimit);
  EXPECT_EQ(static_cast<int64_t>(out.out.size()), TestLimits().output_bytes);
}

TEST_F(SandboxTest, TheMachinesFilesAreNotThere) {
  const std::string secret_dir = ::testing::TempDir() + "/sandbox_secret." + std::to_string(getpid());
  std::filesystem::create_directories(secret_dir);
  const std::string token = secret_dir + "/token";
  std::ofstream(token) << "s3cret\n";
  std::filesystem::permissions(token, std::filesystem::perms::owner_read);
  setenv("GRPO_TEST_SECRET", "s3cret", 1);
  for (const std::string& path : {token, std::string("/etc/shadow"), std::string("/etc/passwd")}) {
    SandboxResult r = Python(absl::StrCat("print(open('", path, "').read())\n"));
    EXPECT_NE(r.exit_code, 0) << path << " was readable: " << r.out;
    EXPECT_THAT(r.err, HasSubstr("No such file")) << path;
  }
  // Its /proc shows its own processes only, with its own environment.
  SandboxResult environ = Python("print(open('/proc/1/environ').read())\n");
  EXPECT_THAT(environ.out, testing::Not(HasSubstr("s3cret")));
  // The root is read-only; only /tmp takes writes, and it is the sandbox's own.
  EXPECT_NE(Python("open('/usr/evil', 'w')\n").exit_code, 0);
  EXPECT_EQ(Python("open('/tmp/ok', 'w').write('x')\n").exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists("/tmp/ok"));
  // Nothing of the server's environment arrives.
  EXPECT_THAT(Python("import os\nprint(dict(os.environ))\n").out,
              testing::Not(HasSubstr("s3cret")));
}

TEST_F(SandboxTest, NoTrafficLeavesIt) {
  // A listener on this machine's loopback that the program tries to reach.
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int port = ntohs(address.sin_port);
  for (const std::string& host : {std::string("127.0.0.1"), std::string("1.1.1.1")}) {
    SandboxResult r = Python(absl::StrCat(
        "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('", host, "', ",
        port, "))\nprint('connected')\n"));
    EXPECT_NE(r.exit_code, 0) << host;
    EXPECT_THAT(r.out, testing::Not(HasSubstr("connected"))) << host;
    // The seccomp filter refuses the socket itself; the network namespace would leave it
    // unreachable.
    EXPECT_THAT(r.err, testing::AnyOf(HasSubstr("not permitted"), HasSubstr("unreachable"),
                                      HasSubstr("refused"), HasSubstr("timed out")))
        << host;
  }
  // Nothing arrived at the listener.
  ASSERT_EQ(fcntl(listener, F_SETFL, O_NONBLOCK), 0);
  EXPECT_LT(accept(listener, nullptr, nullptr), 0);
  close(listener);
}

// The seccomp filter: each refused call fails with an ordinary error (the program can
// report it), the calls ordinary programs make still work. System call numbers: x86-64.
TEST_F(SandboxTest, TheKernelSurfaceIsFiltered) {
  SandboxResult r = Python(R"py(import ctypes, errno, os, socket, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    result = getattr(libc, name)(*args)
    return errno.errorcode[ctypes.get_errno()] if result == -1 else "allowed"
def sock(family):
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
        return "allowed"
    except OSError as e:
        return errno.errorcode[e.errno]
print("inet", sock(socket.AF_INET))
print("inet6", sock(socket.AF_INET6))
print("unix", sock(socket.AF_UNIX))
print("unshare", call("unshare", 0x10000000))
print("ptrace", call("ptrace", 0, 0, 0, 0))
print("mount", call("mount", b"none", b"/tmp", b"tmpfs", 0, None))
print("keyctl", call("syscall", 250, 0, 0, 0, 0))
print("bpf", call("syscall", 321, 0, 0, 0))
print("io_uring", call("syscall", 425, 1, 0))
print("child", subprocess.run(["/usr/bin/python3", "-c", "print(6 * 7)"],
                              capture_output=True, text=True).stdout.strip())
pid = os.fork()
if pid == 0:
    os._exit(0)
print("pid", os.waitpid(pid, 0)[1] == 0)
)py");
  EXPECT_EQ(r.outcome, SandboxOutcome::kExited);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* line : {"inet EPERM", "inet6 EPERM", "unix allowed", "unshare EPERM",
                           "ptrace EPERM", "mount EPERM", "keyctl EPERM", "bpf EPERM",
                           "io_uring EPERM", "child 42", "pid True"})
    EXPECT_THAT(r.out, HasSubstr(std::string(line) + "\n")) << r.out << r.err;
}

TEST_F(SandboxTest, KillingItsParentReachesNoOne) {
  SandboxResult r = Python(
      "import os, signal\n"
      "for target in (os.getppid(), 0, -1):\n"
      "    try:\n        os.kill(target, signal.SIGKILL)\n"
      "    except OSError as e:\n        print(target, e.errno)\n"
      "print('still here')\n");
  // kill(0) and kill(-1) reach only its own namespace (itself: init ignores them).
  EXPECT_THAT(r.out, HasSubstr("still here"));
  EXPECT_EQ(Python("print('alive')\n").out, "alive\n");  // and this process lives on
}

TEST_F(SandboxTest, ABackgroundProcessIsGoneAfterwards) {
  const std::string marker = absl::StrCat("lingering", getpid());
  SandboxResult r = Python(absl::StrCat(
      "import os, time, sys\n"
      "if os.fork() == 0:\n"
      "    os.setsid()\n"
      "    os.execv('/usr/bin/sleep', ['/usr/bin/sleep', '30', '", marker, "'])\n"
      "print('parent done')\n"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ProcessesWith(marker), 0);
}

TEST_F(SandboxTest, SixtyFourAtOnceFinishWithTheirOwnResults) {
  std::vector<std::thread> threads;
  std::vector<std::string> outputs(64);
  for (int i = 0; i < 64; ++i)
    threads.emplace_back([&, i] {
      absl::StatusOr<SandboxResult> r = sandbox_->Run(
          {kPython, "-I", "main.py"}, {{"main.py", absl::StrCat("print(", i, " * ", i, ")\n")}},
          "");
      outputs[i] = r.ok() ? r->out : r.status().ToString();
    });
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 64; ++i) EXPECT_EQ(outputs[i], absl::StrCat(i * i, "\n")) << i;
}

TEST(SandboxArgumentsTest, BadLimitsAndArgumentsAreRefused) {
  SandboxLimits bad = TestLimits();
  bad.memory_bytes = 1024;
  EXPECT_TRUE(absl::IsInvalidArgument(Sandbox::Create(bad).status()));
  auto sandbox = Sandbox::Create(TestLimits());
  if (absl::IsFailedPrecondition(sandbox.status())) {
    EXPECT_THAT(sandbox.status().message(), HasSubstr("namespaces"));  // it says why
    GTEST_SKIP() << sandbox.status();
  }
  ASSERT_TRUE(sandbox.ok());
  EXPECT_TRUE(absl::IsInvalidArgument((*sandbox)->Run({"python3"}, {}, "").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      (*sandbox)->Run({kPython}, {{"../escape", "x"}}, "").status()));
}

}  // namespace
}  // namespace grpo
