// The metrics every grpo_* process exports (DESIGN.md §6): a small registry in the shape
// of prometheus-cpp's (Registry, Family, Counter, Gauge, Histogram), which Debian 12 does
// not package, and its Prometheus text exposition (format 0.0.4).
//
// A Registry owns its families; a Family owns one child per label set, created on first
// use and kept at a stable address, so components hold `Counter&` and update it without a
// lookup. Updates are thread-safe and lock-free for counters and gauges. Names and label
// names are constants in our code: an invalid one is a programming error and aborts at
// registration (IsValidMetricName / IsValidLabelName say what is valid).
//
// Conventions (Prometheus's): prefix grpo_, base units as suffixes (_seconds, _bytes),
// _total on counters, label values from small fixed sets (never job or prompt ids).
#ifndef GRPO_METRICS_REGISTRY_H_
#define GRPO_METRICS_REGISTRY_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace grpo::metrics {

using Labels = std::map<std::string, std::string>;

bool IsValidMetricName(absl::string_view name);
bool IsValidLabelName(absl::string_view name);

// Only goes up (Increment with a negative value is ignored).
class Counter {
 public:
  void Increment(double by = 1);
  // Raises the counter to `total` if it is below: for totals another component keeps.
  void IncrementTo(double total);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double by = 1);
  void Decrement(double by = 1) { Increment(-by); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // `bounds`: upper bounds of the buckets, increasing; +Inf is implied.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Collect() const;

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// Exponential bucket bounds: start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

enum class MetricType { kCounter, kGauge, kHistogram };

class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type)
      : name_(std::move(name)), help_(std::move(help)), type_(type) {}
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  MetricType type() const { return type_; }
  // Appends this family's exposition (HELP, TYPE, one line per child or bucket).
  virtual void Serialize(std::string* out) const = 0;

 private:
  const std::string name_, help_;
  const MetricType type_;
};

template <typename T>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, MetricType type, std::vector<double> bounds = {})
      : FamilyBase(std::move(name), std::move(help), type), bounds_(std::move(bounds)) {}

  // The child for `labels`, created on first use. Aborts on an invalid label name.
  T& Add(const Labels& labels = {});
  void Serialize(std::string* out) const override;

 private:
  const std::vector<double> bounds_;  // histograms only
  mutable absl::Mutex mu_;
  std::map<Labels, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

class Registry {
 public:
  // One family per name; asking again for the same name and type returns it.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help);
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help);
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> bounds);
  // Called at every scrape before the exposition is written: for values read from
  // another component's state at that moment.
  void OnCollect(std::function<void()> hook);

  // The text exposition format 0.0.4, families in registration order.
  std::string Serialize() const;

 private:
  FamilyBase* Find(const std::string& name, MetricType type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace grpo::metrics

#endif  // GRPO_METRICS_REGISTRY_H_
