// The metrics every grpo_* process exports (docs/design.md §6), on prometheus-cpp's core
// (Debian 12's prometheus-cpp-dev 1.0.1): its Counter, Gauge and Histogram, its Registry
// and its TextSerializer (format 0.0.4). Its pull Exposer is not used: it cannot start
// inside a process that links LibTorch (civetweb's fixed thread stacks), so
// metrics_server.h serves the serializer's output in every process alike.
//
// This header adds what our components rely on around prometheus-cpp: families created by
// name once and found again (AddCounter twice returns the same family), histogram bucket
// bounds fixed per family, collection hooks that read another component's state at scrape
// time, and IncrementTo for totals another component keeps.
//
// A Registry owns its families; a family owns one child per label set, created on first use
// and kept at a stable address, so components hold `Counter&` and update it without a
// lookup. Updates are thread-safe. Names and label names are constants in our code: an
// invalid one is a programming error and aborts at registration (IsValidMetricName /
// IsValidLabelName say what is valid).
//
// Conventions (Prometheus's): prefix grpo_, base units as suffixes (_seconds, _bytes),
// _total on counters, label values from small fixed sets (never job or prompt ids).
#ifndef GRPO_METRICS_REGISTRY_H_
#define GRPO_METRICS_REGISTRY_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace grpo::metrics {

using Labels = prometheus::Labels;
using Counter = prometheus::Counter;      // only goes up; a negative Increment is ignored
using Gauge = prometheus::Gauge;
using Histogram = prometheus::Histogram;  // buckets cumulative in the exposition

bool IsValidMetricName(absl::string_view name);
bool IsValidLabelName(absl::string_view name);

// Raises `counter` to `total` if it is below: for totals another component keeps (one
// writer).
void IncrementTo(Counter& counter, double total);

// Exponential bucket bounds: start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// One family of a Registry: a metric name with its help and type.
template <typename T>
class Family {
 public:
  Family(prometheus::Family<T>& family, std::vector<double> bounds)
      : family_(family), bounds_(std::move(bounds)) {}
  // The child for `labels`, created on first use. Aborts on an invalid label name.
  T& Add(const Labels& labels = {});

 private:
  prometheus::Family<T>& family_;
  const std::vector<double> bounds_;  // histograms only
};

class Registry {
 public:
  Registry();
  // One family per name; asking again for the same name and type returns it. A name of
  // another type, or an invalid one, aborts.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help);
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help);
  // `bounds` must increase (+Inf is implied).
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> bounds);
  // Called at every scrape before the exposition is written: for values read from
  // another component's state at that moment.
  void OnCollect(std::function<void()> hook);
  // The text exposition format 0.0.4 (prometheus::TextSerializer).
  std::string Serialize() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Entry {
    std::string name;
    Type type;
    void* family;  // the Family<T> of `type`, owned by one of the deques below
  };
  void* Find(const std::string& name, Type type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<prometheus::Registry> registry_;
  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<Family<Counter>> counters_ ABSL_GUARDED_BY(mu_);
  std::deque<Family<Gauge>> gauges_ ABSL_GUARDED_BY(mu_);
  std::deque<Family<Histogram>> histograms_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace grpo::metrics

#endif  // GRPO_METRICS_REGISTRY_H_
