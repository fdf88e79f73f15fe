// weight_stream_bench: how fast policy weights get from learner rank 0 to rollout workers
// over loopback gRPC, the path every worker takes on every policy version. For a model
// shape (random weights) it measures, --repeats times:
//   export:   Transformer::ExportFlat(float32) and WeightPublisher::Publish (chunk
//             checksums, and the conversion to the workers' dtype once they asked for it)
//   transfer: --workers WeightReceivers pulling the version at once, each over --streams
//             parallel StreamWeights streams on its own channel, every chunk verified
//   import:   Transformer::ImportFlat into worker 0's model (in --dtype)
// One JSON line per repeat, then the medians: the payload's MB, seconds, MB/s per worker
// and over all workers, and delivered_seconds = worker 0's transfer + import (what a
// worker waits before it samples with the new version). The --warmup versions come first
// and stay out of the medians: they allocate the buffers every later version reuses (the
// learner's two generations of payloads, each worker's receive buffer), and the first
// ask converts to bfloat16.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_shapes.h"
#include "learner/ingest_buffer.h"
#include "learner/learner_service.h"
#include "learner/weight_publisher.h"
#include "model/flat_weights.h"
#include "model/model.h"
#include "model/runtime.h"
#include "rollout_worker/weight_client.h"
#include "rpc/grpc_server.h"

ABSL_FLAG(std::string, shape, "bench-26m", "bench-26m, qwen2.5-0.5b, qwen2.5-1.5b or qwen2.5-7b");
ABSL_FLAG(std::string, dtype, "bfloat16", "the workers' dtype, which the weights travel in");
ABSL_FLAG(int, streams, 4, "parallel streams per worker");
ABSL_FLAG(int, workers, 1, "workers pulling each version at once");
ABSL_FLAG(int, repeats, 3, "versions to publish and pull, timed");
ABSL_FLAG(int, warmup, 2,
          "versions published and pulled first, reported but left out of the medians: the "
          "first ones build their buffers in fresh memory (and the first ask converts)");

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "weight_stream_bench: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 1;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  grpo::EnsureThreadEnvironment(argv);
  absl::ParseCommandLine(argc, argv);
  grpo::ConfigureRuntime(0);
  const std::string shape = absl::GetFlag(FLAGS_shape);
  absl::StatusOr<grpo::ModelConfig> config = grpo::BenchShape(shape, 512);
  if (!config.ok()) return Fail("--shape", config.status());
  absl::StatusOr<grpo::v1::WeightDtype> dtype = grpo::ParseWeightDtype(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) return Fail("--dtype", dtype.status());
  const int streams = absl::GetFlag(FLAGS_streams), workers = absl::GetFlag(FLAGS_workers);
  const int repeats = absl::GetFlag(FLAGS_repeats), warmup = absl::GetFlag(FLAGS_warmup);
  if (streams < 1 || streams > 64 || workers < 1 || workers > 64 || repeats < 1 || warmup < 0)
    return Fail("--streams/--workers/--repeats/--warmup",
                absl::InvalidArgumentError(
                    "streams and workers in [1, 64], repeats >= 1, warmup >= 0"));
  std::fprintf(stderr,
               "weight_stream_bench: %s, %.0fM parameters, %s, %d worker(s) x %d stream(s)\n",
               shape.c_str(), config->NumParameters() / 1e6, absl::GetFlag(FLAGS_dtype).c_str(),
               workers, streams);
  grpo::Transformer learner_policy(*config, 1), worker_policy(*config, 2);
  if (absl::Status s = worker_policy.To("cpu", absl::GetFlag(FLAGS_dtype)); !s.ok())
    return Fail("worker model", s);

  grpo::IngestBuffer buffer(1);
  grpo::WeightPublisher publisher;
  grpo::LearnerServiceImpl service(&buffer, &publisher);
  grpo::GrpcServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  auto server = grpo::GrpcServer::Start(server_options, {&service});
  if (!server.ok()) return Fail("server", server.status());
  // One channel (one TCP connection) per worker, as separate worker processes have.
  std::vector<std::unique_ptr<grpo::v1::LearnerService::Stub>> stubs;
  std::vector<grpo::WeightReceiver> receivers(workers);
  for (int w = 0; w < workers; ++w) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(grpo::kMaxWeightChunkMessage);
    args.SetInt("grpo.bench_worker", w);  // distinct arguments: no shared connection
    stubs.push_back(grpo::v1::LearnerService::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                  grpc::InsecureChannelCredentials(), args)));
  }

  std::vector<double> delivered, transfers, exports;
  for (int r = 0; r < warmup + repeats; ++r) {
    auto start = Clock::now();
    absl::StatusOr<std::string> flat = learner_policy.ExportFlat(
        grpo::v1::WEIGHT_DTYPE_FLOAT32, publisher.SpareBuffer(grpo::v1::WEIGHT_DTYPE_FLOAT32));
    if (!flat.ok()) return Fail("export", flat.status());
    const double flat_seconds = Seconds(start);
    if (absl::Status s = publisher.Publish("bench", r, std::move(*flat)); !s.ok())
      return Fail("publish", s);
    const double export_seconds = Seconds(start);

    start = Clock::now();
    std::vector<absl::StatusOr<grpo::PulledWeights>> pulled(workers);
    std::vector<double> seconds(workers);
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w)
      threads.emplace_back([&, w] {
        grpo::PullOptions options;
        options.dtype = *dtype;
        options.streams = streams;
        options.deadline = std::chrono::minutes(5);
        const auto mine = Clock::now();
        pulled[w] = receivers[w].Pull(stubs[w].get(), "bench", options);
        seconds[w] = Seconds(mine);
      });
    for (std::thread& t : threads) t.join();
    const double transfer = Seconds(start);
    for (int w = 0; w < workers; ++w)
      if (!pulled[w].ok()) return Fail(absl::StrCat("worker ", w), pulled[w].status());
    const double mb = pulled[0]->payload.size() / 1e6;

    start = Clock::now();
    if (absl::Status s = worker_policy.ImportFlat(pulled[0]->payload); !s.ok())
      return Fail("import", s);
    const double import_seconds = Seconds(start);
    if (r >= warmup) {
      delivered.push_back(seconds[0] + import_seconds);
      transfers.push_back(transfer);
      exports.push_back(export_seconds);
    }
    std::printf(
        "{\"bench\":\"weight_stream\",\"shape\":\"%s\",\"dtype\":\"%s\",\"workers\":%d,"
        "\"streams\":%d,\"repeat\":%d,\"warmup\":%s,\"mb\":%.1f,\"export_flat_seconds\":%.3f,"
        "\"export_seconds\":%.3f,"
        "\"transfer_seconds\":%.3f,\"mb_per_s_per_worker\":%.0f,\"mb_per_s_all\":%.0f,"
        "\"import_seconds\":%.3f,\"delivered_seconds\":%.3f}\n",
        shape.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), workers, streams, r,
        r < warmup ? "true" : "false", mb, flat_seconds, export_seconds, transfer,
        mb / Median(seconds), mb * workers / transfer, import_seconds,
        seconds[0] + import_seconds);
    std::fflush(stdout);
  }
  std::printf(
      "{\"bench\":\"weight_stream\",\"shape\":\"%s\",\"dtype\":\"%s\",\"workers\":%d,"
      "\"streams\":%d,\"median_export_seconds\":%.3f,\"median_transfer_seconds\":%.3f,"
      "\"median_delivered_seconds\":%.3f}\n",
      shape.c_str(), absl::GetFlag(FLAGS_dtype).c_str(), workers, streams, Median(exports),
      Median(transfers), Median(delivered));
  return 0;
}
