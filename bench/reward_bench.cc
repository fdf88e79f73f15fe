// reward_bench: rule-based scoring throughput of the reward server over loopback gRPC, at 1
// and 8 concurrent clients, each sending batches of --batch samples (exact_answer, format
// and arithmetic_steps on worked arithmetic solutions, half of them corrupted) for
// --seconds. With --reward_model DIR it then measures the neural reward model the same
// way. Prints one JSON line per function set and client count: samples/s and requests/s.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "data/arithmetic_task.h"
#include "grpo/v1/reward.grpc.pb.h"
#include "model/runtime.h"
#include "reward_server/server.h"

ABSL_FLAG(int, batch, 256, "samples per request");
ABSL_FLAG(double, seconds, 3.0, "measured time per client count");
ABSL_FLAG(std::string, reward_model, "",
          "also measure the neural reward model in this directory (grpo_train_rm --out)");

namespace {

struct Throughput {
  double samples_per_s = 0;
  double requests_per_s = 0;
  int64_t errors = 0;
};

// `clients` threads, each with its own channel (as separate rollout workers would have),
// send `request` back to back for `seconds`.
Throughput Measure(const std::string& target, const grpo::v1::ScoreRequest& request,
                   int clients, double seconds) {
  std::atomic<int64_t> requests{0}, errors{0};
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);
      auto stub = grpo::v1::RewardService::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      while (std::chrono::steady_clock::now() < end) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        grpo::v1::ScoreResponse response;
        if (stub->Score(&context, request, &response).ok()) {
          ++requests;
        } else {
          ++errors;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {static_cast<double>(requests) * request.samples_size() / elapsed,
          static_cast<double>(requests) / elapsed, errors.load()};
}

}  // namespace

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  absl::ParseCommandLine(argc, argv);
  grpo::ConfigureRuntime(0);
  grpo::RewardServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.reward_model_dir = absl::GetFlag(FLAGS_reward_model);
  auto server = grpo::RewardServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  grpo::ArithmeticTask task(grpo::ArithmeticOptions{}, 1);
  grpo::v1::ScoreRequest request;
  const int batch = absl::GetFlag(FLAGS_batch);
  std::vector<grpo::Problem> problems = task.TrainSet(batch, 2);
  for (int i = 0; i < batch; ++i) {
    auto* s = request.add_samples();
    s->set_prompt(problems[i].prompt);
    std::string completion = problems[i].solution;
    if (i % 2) completion[completion.find('=') + 1] = '7';
    s->set_completion(completion);
    s->set_reference_answer(problems[i].answer);
  }
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());
  std::vector<std::pair<std::string, std::vector<std::string>>> sets = {
      {"rule_based", {"exact_answer", "format", "arithmetic_steps"}}};
  if (!options.reward_model_dir.empty()) sets.push_back({"reward_model", {"reward_model"}});
  for (const auto& [set_name, names] : sets) {
    request.clear_reward_functions();
    for (const std::string& name : names) {
      auto* f = request.add_reward_functions();
      f->set_name(name);
      f->set_weight(1.0);
    }
    for (int clients : {1, 8}) {
      const Throughput t = Measure(target, request, clients, absl::GetFlag(FLAGS_seconds));
      std::printf(
          "{\"functions\":\"%s\",\"clients\":%d,\"batch\":%d,\"samples_per_s\":%.0f,"
          "\"requests_per_s\":%.1f,\"errors\":%lld}\n",
          set_name.c_str(), clients, batch, t.samples_per_s, t.requests_per_s,
          static_cast<long long>(t.errors));
      std::fflush(stdout);
    }
  }
  (*server)->Shutdown(std::chrono::seconds(1));
  return 0;
}
