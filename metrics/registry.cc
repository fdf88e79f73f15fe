#include "metrics/registry.h"

#include <prometheus/check_names.h>
#include <prometheus/text_serializer.h>

#include <algorithm>

#include "absl/base/internal/raw_logging.h"

namespace grpo::metrics {
namespace {

// prometheus-cpp 1.0.1 writes HELP text as it is given: a newline in it would end the
// line and break the exposition. Escaped here, as the text format asks: \\ and \n.
std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace


bool IsValidMetricName(absl::string_view name) {
  return prometheus::CheckMetricName(std::string(name));
}

bool IsValidLabelName(absl::string_view name) {
  // Names starting with "__" are reserved for Prometheus's own use.
  return prometheus::CheckLabelName(std::string(name)) && name.substr(0, 2) != "__";
}

void IncrementTo(Counter& counter, double total) {
  const double now = counter.Value();
  if (total > now) counter.Increment(total - now);
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double b = start;
  for (int i = 0; i < count; ++i, b *= factor) bounds.push_back(b);
  return bounds;
}

template <typename T>
T& Family<T>::Add(const Labels& labels) {
  for (const auto& [name, value] : labels)
    if (!IsValidLabelName(name)) ABSL_RAW_LOG(FATAL, "invalid label name \"%s\"", name.c_str());
  if constexpr (std::is_same_v<T, Histogram>) {
    return family_.Add(labels, Histogram::BucketBoundaries(bounds_));
  } else {
    return family_.Add(labels);
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

Registry::Registry() : registry_(std::make_shared<prometheus::Registry>()) {}

void* Registry::Find(const std::string& name, Type type) {
  for (const Entry& e : entries_) {
    if (e.name != name) continue;
    if (e.type != type)
      ABSL_RAW_LOG(FATAL, "metric %s registered twice with different types", name.c_str());
    return e.family;
  }
  if (!IsValidMetricName(name)) ABSL_RAW_LOG(FATAL, "invalid metric name \"%s\"", name.c_str());
  return nullptr;
}

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help) {
  absl::MutexLock lock(&mu_);
  if (void* f = Find(name, Type::kCounter)) return *static_cast<Family<Counter>*>(f);
  counters_.emplace_back(
      prometheus::BuildCounter().Name(name).Help(EscapeHelp(help)).Register(*registry_),
      std::vector<double>{});
  entries_.push_back({name, Type::kCounter, &counters_.back()});
  return counters_.back();
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help) {
  absl::MutexLock lock(&mu_);
  if (void* f = Find(name, Type::kGauge)) return *static_cast<Family<Gauge>*>(f);
  gauges_.emplace_back(
      prometheus::BuildGauge().Name(name).Help(EscapeHelp(help)).Register(*registry_),
      std::vector<double>{});
  entries_.push_back({name, Type::kGauge, &gauges_.back()});
  return gauges_.back();
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  if (!std::is_sorted(bounds.begin(), bounds.end()) ||
      std::adjacent_find(bounds.begin(), bounds.end()) != bounds.end())
    ABSL_RAW_LOG(FATAL, "histogram %s: bucket bounds must increase", name.c_str());
  if (void* f = Find(name, Type::kHistogram)) return *static_cast<Family<Histogram>*>(f);
  histograms_.emplace_back(
      prometheus::BuildHistogram().Name(name).Help(EscapeHelp(help)).Register(*registry_),
      std::move(bounds));
  entries_.push_back({name, Type::kHistogram, &histograms_.back()});
  return histograms_.back();
}

void Registry::OnCollect(std::function<void()> hook) {
  absl::MutexLock lock(&mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::Serialize() const {
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock lock(&mu_);
    hooks = hooks_;
  }
  for (const auto& hook : hooks) hook();  // outside the lock: hooks may add children
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace grpo::metrics
