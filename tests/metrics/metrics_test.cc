// The metrics registry and its exposition: the exact text format (escaping, one HELP and
// TYPE per family, cumulative buckets ending in +Inf, _sum and _count), updates from many
// threads, the HTTP endpoint, and promtool's verdict on the output.
#include "metrics/registry.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/metrics_server.h"
#include "tests/testing/command.h"
#include "tests/testing/http_get.h"

namespace grpo::metrics {
namespace {

using ::testing::HasSubstr;
using ::grpo::testing_util::HttpGet;
using ::testing::StartsWith;

// prometheus-cpp writes the exposition; what our components rely on is checked line by
// line (children of a family come in no fixed order).
TEST(RegistryTest, ExpositionHasEveryFamilyChildAndBucket) {
  Registry registry;
  auto& requests = registry.AddCounter("grpo_test_requests_total", "Requests by \"code\"\\n.");
  requests.Add({{"code", "OK"}}).Increment(3);
  requests.Add({{"code", "a\\b\"c\nd"}}).Increment();
  registry.AddGauge("grpo_test_temperature_celsius", "Line one\nline two \\ end").Add().Set(-1.5);
  auto& latency = registry.AddHistogram("grpo_test_latency_seconds", "Latency.", {0.1, 1, 2.5});
  Histogram& h = latency.Add({{"role", "worker"}});
  for (double v : {0.05, 0.1, 0.7, 3.0}) h.Observe(v);

  const std::string text = registry.Serialize();
  for (const char* line : {
           "# HELP grpo_test_requests_total Requests by \"code\"\\\\n.\n",
           "# TYPE grpo_test_requests_total counter\n",
           "grpo_test_requests_total{code=\"OK\"} 3\n",
           "grpo_test_requests_total{code=\"a\\\\b\\\"c\\nd\"} 1\n",
           "# HELP grpo_test_temperature_celsius Line one\\nline two \\\\ end\n",
           "# TYPE grpo_test_temperature_celsius gauge\n",
           "grpo_test_temperature_celsius -1.5\n",
           "# TYPE grpo_test_latency_seconds histogram\n",
           "grpo_test_latency_seconds_bucket{role=\"worker\",le=\"0.1\"} 2\n",
           "grpo_test_latency_seconds_bucket{role=\"worker\",le=\"1\"} 3\n",
           "grpo_test_latency_seconds_bucket{role=\"worker\",le=\"2.5\"} 3\n",
           "grpo_test_latency_seconds_bucket{role=\"worker\",le=\"+Inf\"} 4\n",
           "grpo_test_latency_seconds_sum{role=\"worker\"} 3.85\n",
           "grpo_test_latency_seconds_count{role=\"worker\"} 4\n"})
    EXPECT_THAT(text, HasSubstr(line)) << text;
}

// Cumulative bucket counts, as a scrape reads them.
struct Buckets {
  std::vector<double> bounds;
  std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
  double sum = 0;
  uint64_t count = 0;
};
Buckets Read(const Histogram& h) {
  const prometheus::ClientMetric m = h.Collect();
  Buckets b;
  for (const auto& bucket : m.histogram.bucket) {
    if (!std::isinf(bucket.upper_bound)) b.bounds.push_back(bucket.upper_bound);
    b.cumulative.push_back(bucket.cumulative_count);
  }
  b.sum = m.histogram.sample_sum;
  b.count = m.histogram.sample_count;
  return b;
}

TEST(RegistryTest, BucketsAreCumulativeAndSpecialValuesReadAsPrometheusReadsThem) {
  Histogram h(ExponentialBuckets(1, 2, 4));  // 1 2 4 8
  for (double v : {0.5, 1.0, 1.5, 3.0, 3.0, 7.0, 100.0}) h.Observe(v);
  const Buckets s = Read(h);
  EXPECT_THAT(s.bounds, ::testing::ElementsAre(1, 2, 4, 8));
  EXPECT_THAT(s.cumulative, ::testing::ElementsAre(2, 3, 5, 6, 7));
  EXPECT_EQ(s.count, 7u);
  EXPECT_DOUBLE_EQ(s.sum, 116);

  Registry registry;
  auto& g = registry.AddGauge("grpo_test_values", "Special values.");
  g.Add({{"v", "inf"}}).Set(1.0 / 0.0);
  g.Add({{"v", "nan"}}).Set(std::nan(""));
  g.Add({{"v", "tiny"}}).Set(1e-300);
  const std::string text = registry.Serialize();
  EXPECT_THAT(text, HasSubstr("grpo_test_values{v=\"inf\"} +Inf\n"));
  EXPECT_THAT(text, HasSubstr("grpo_test_values{v=\"nan\"} Nan\n"));
  EXPECT_THAT(text, HasSubstr("grpo_test_values{v=\"tiny\"} 1e-300\n"));
}

TEST(RegistryTest, CountersOnlyGoUpAndFamiliesAreRegisteredOnce) {
  Registry registry;
  Counter& c = registry.AddCounter("grpo_test_total", "A counter.").Add();
  c.Increment(2);
  c.Increment(-5);  // ignored
  IncrementTo(c, 1);  // below: ignored
  EXPECT_EQ(c.Value(), 2);
  IncrementTo(c, 7);
  EXPECT_EQ(c.Value(), 7);
  EXPECT_EQ(&registry.AddCounter("grpo_test_total", "Again.").Add(), &c);
  EXPECT_EQ(&registry.AddCounter("grpo_test_total", "").Add({{"a", "1"}}),
            &registry.AddCounter("grpo_test_total", "").Add({{"a", "1"}}));
}

TEST(RegistryTest, NamesFollowPrometheusRules) {
  EXPECT_TRUE(IsValidMetricName("grpo_step_seconds"));
  EXPECT_TRUE(IsValidMetricName("a:b_c1"));
  EXPECT_FALSE(IsValidMetricName("1abc"));
  EXPECT_FALSE(IsValidMetricName("grpo-step"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_TRUE(IsValidLabelName("code"));
  EXPECT_FALSE(IsValidLabelName("__name"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_FALSE(IsValidLabelName("9a"));
}

TEST(RegistryTest, ConcurrentUpdatesLoseNothing) {
  Registry registry;
  auto& counters = registry.AddCounter("grpo_test_ops_total", "Ops.");
  auto& histograms = registry.AddHistogram("grpo_test_op_seconds", "Op time.", {0.5});
  Gauge& gauge = registry.AddGauge("grpo_test_in_flight", "In flight.").Add();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50000; ++i) {
        counters.Add({{"kind", t % 2 ? "odd" : "even"}}).Increment();
        histograms.Add().Observe(i % 2);
        gauge.Increment();
        gauge.Decrement(0.5);
        if (i % 5000 == 0) (void)registry.Serialize();  // scrapes meanwhile
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(counters.Add({{"kind", "odd"}}).Value(), 100000);
  EXPECT_EQ(counters.Add({{"kind", "even"}}).Value(), 100000);
  const Buckets s = Read(histograms.Add());
  EXPECT_EQ(s.count, 200000u);
  EXPECT_EQ(s.cumulative[0], 100000u);
  EXPECT_DOUBLE_EQ(s.sum, 100000);
  EXPECT_DOUBLE_EQ(gauge.Value(), 100000);
}

TEST(MetricsServerTest, ServesTheExpositionAtSlashMetrics) {
  Registry registry;
  Counter& scrapes = registry.AddCounter("grpo_test_scrapes_total", "Scrapes.").Add();
  registry.OnCollect([&] { scrapes.Increment(); });
  auto server = MetricsServer::Start("127.0.0.1:0", &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  const std::string response = HttpGet((*server)->port(), "/metrics");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(response, HasSubstr("\r\n\r\n# HELP grpo_test_scrapes_total Scrapes.\n"));
  EXPECT_THAT(response, HasSubstr("grpo_test_scrapes_total 1\n"));
  EXPECT_THAT(HttpGet((*server)->port(), "/other"), StartsWith("HTTP/1.1 404"));
  EXPECT_FALSE(MetricsServer::Start(absl::StrCat("127.0.0.1:", (*server)->port()), &registry).ok())
      << "a port in use must be refused";
}

// promtool (Debian's prometheus package) lints the exposition: names, types, units,
// HELP and histogram shape.
TEST(PromtoolTest, ExpositionPassesPromtoolCheckMetrics) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  Registry registry;
  registry.AddCounter("grpo_test_requests_total", "Requests.").Add({{"code", "OK"}}).Increment();
  registry.AddGauge("grpo_test_queue_depth", "Queued items.").Add().Set(3);
  registry.AddHistogram("grpo_test_step_seconds", "Step time.", ExponentialBuckets(0.01, 4, 6))
      .Add({{"role", "learner"}})
      .Observe(0.3);
  const std::string path = ::testing::TempDir() + "/metrics_promtool.txt";
  std::ofstream(path) << registry.Serialize();
  const testing_util::CommandResult r =
      testing_util::RunCommand(absl::StrCat("promtool check metrics < ", path));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "") << "promtool's findings";
}

}  // namespace
}  // namespace grpo::metrics
