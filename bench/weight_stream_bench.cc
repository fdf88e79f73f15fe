// weight_stream_bench: how fast policy weights get from learner rank 0 to a rollout
// worker over loopback gRPC — the path a worker takes on every policy version. For the
// chosen model preset it measures, --repeats times:
//   serialize: Transformer::SaveToString + checksum (learner side, once per version)
//   transfer:  StreamWeights -> PullWeights, chunks assembled and checksum verified
//   load:      Transformer::LoadFromString into the worker's model
// and prints one JSON line per repeat plus the median: MB, seconds, MB/s of the transfer,
// and "delivered_seconds" = transfer + load (what the worker waits before sampling).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "learner/ingest_buffer.h"
#include "learner/learner_service.h"
#include "learner/weight_publisher.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/runtime.h"
#include "rollout_worker/weight_client.h"
#include "rpc/grpc_server.h"

ABSL_FLAG(std::string, model, "bench-26m", "model preset");
ABSL_FLAG(int, repeats, 5, "transfers to time");

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  absl::ParseCommandLine(argc, argv);
  grpo::ConfigureRuntime(0);
  absl::StatusOr<grpo::ModelConfig> config = grpo::ModelPreset(absl::GetFlag(FLAGS_model));
  if (!config.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  grpo::Transformer learner_policy(*config, 1), worker_policy(*config, 2);
  grpo::IngestBuffer buffer(1);
  grpo::WeightPublisher publisher;
  grpo::LearnerServiceImpl service(&buffer, &publisher);
  grpo::GrpcServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  auto server = grpo::GrpcServer::Start(server_options, {&service});
  if (!server.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  auto stub = grpo::v1::LearnerService::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials(), args));

  std::vector<double> delivered;
  for (int r = 0; r < absl::GetFlag(FLAGS_repeats); ++r) {
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::string> bytes = learner_policy.SaveToString();
    if (!bytes.ok()) return 1;
    const double mb = bytes->size() / 1e6;
    publisher.Publish("bench", r, std::move(*bytes));
    const double serialize = Seconds(start);
    start = std::chrono::steady_clock::now();
    absl::StatusOr<grpo::PulledWeights> pulled =
        grpo::PullWeights(stub.get(), "bench", std::chrono::seconds(60));
    if (!pulled.ok()) {
      std::fprintf(stderr, "error: %s\n", pulled.status().ToString().c_str());
      return 1;
    }
    const double transfer = Seconds(start);
    start = std::chrono::steady_clock::now();
    if (absl::Status s = worker_policy.LoadFromString(pulled->payload); !s.ok()) return 1;
    const double load = Seconds(start);
    delivered.push_back(transfer + load);
    std::printf(
        "{\"model\":\"%s\",\"repeat\":%d,\"mb\":%.1f,\"serialize_seconds\":%.3f,"
        "\"transfer_seconds\":%.3f,\"transfer_mb_per_s\":%.0f,\"load_seconds\":%.3f,"
        "\"delivered_seconds\":%.3f}\n",
        absl::GetFlag(FLAGS_model).c_str(), r, mb, serialize, transfer, mb / transfer, load,
        transfer + load);
    std::fflush(stdout);
  }
  std::sort(delivered.begin(), delivered.end());
  std::printf("{\"model\":\"%s\",\"median_delivered_seconds\":%.3f}\n",
              absl::GetFlag(FLAGS_model).c_str(), delivered[delivered.size() / 2]);
  return 0;
}
