#include "metrics/registry.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace grpo::metrics {
namespace {

void AtomicAdd(std::atomic<double>& value, double by) {
  double old = value.load(std::memory_order_relaxed);
  while (!value.compare_exchange_weak(old, old + by, std::memory_order_relaxed)) {
  }
}

bool IsNameChar(char c, bool first, bool colon_ok) {
  return absl::ascii_isalpha(c) || c == '_' || (colon_ok && c == ':') ||
         (!first && absl::ascii_isdigit(c));
}

// Numbers as Prometheus parses them: shortest round-trip form, and +Inf / -Inf / NaN.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, v);
    if (std::strtod(buffer, nullptr) == v) break;
  }
  return buffer;
}

// Label values: backslash, double quote and line feed escaped.
std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// HELP text: backslash and line feed escaped (a quote is fine there).
std::string EscapeHelp(absl::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// {a="x",b="y"} with `extra` (le="...") last; empty when there is nothing to show.
std::string LabelText(const Labels& labels, const std::string& extra = "") {
  std::string out;
  for (const auto& [name, value] : labels)
    absl::StrAppend(&out, out.empty() ? "" : ",", name, "=\"", EscapeLabelValue(value), "\"");
  if (!extra.empty()) absl::StrAppend(&out, out.empty() ? "" : ",", extra);
  return out.empty() ? out : absl::StrCat("{", out, "}");
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

void Header(const FamilyBase& f, std::string* out) {
  absl::StrAppend(out, "# HELP ", f.name(), " ", EscapeHelp(f.help()), "\n# TYPE ", f.name(),
                  " ", TypeName(f.type()), "\n");
}

void CheckLabels(const std::string& family, const Labels& labels, bool histogram) {
  for (const auto& entry : labels) {
    const std::string& name = entry.first;
    if (!IsValidLabelName(name) || (histogram && name == "le"))
      ABSL_RAW_LOG(FATAL, "metric %s: invalid label name \"%s\"", family.c_str(), name.c_str());
  }
}

}  // namespace

bool IsValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!IsNameChar(name[i], i == 0, /*colon_ok=*/true)) return false;
  return true;
}

bool IsValidLabelName(absl::string_view name) {
  if (name.empty() || absl::StartsWith(name, "__")) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!IsNameChar(name[i], i == 0, /*colon_ok=*/false)) return false;
  return true;
}

void Counter::Increment(double by) {
  if (by > 0) AtomicAdd(value_, by);
}

void Counter::IncrementTo(double total) {
  double old = value_.load(std::memory_order_relaxed);
  while (total > old &&
         !value_.compare_exchange_weak(old, total, std::memory_order_relaxed)) {
  }
}

void Gauge::Increment(double by) { AtomicAdd(value_, by); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  // The first bucket whose upper bound is >= value (bounds are inclusive, as Prometheus's).
  const size_t bucket =
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot s;
  s.bounds = bounds_;
  absl::MutexLock lock(&mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) s.cumulative.push_back(running += c);
  s.count = running;
  s.sum = sum_;
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  for (int i = 0; i < count; ++i, start *= factor) bounds.push_back(start);
  return bounds;
}

template <typename T>
T& Family<T>::Add(const Labels& labels) {
  absl::MutexLock lock(&mu_);
  auto it = children_.find(labels);
  if (it != children_.end()) return *it->second;
  CheckLabels(name(), labels, type() == MetricType::kHistogram);
  std::unique_ptr<T> child;
  if constexpr (std::is_same_v<T, Histogram>) {
    child = std::make_unique<Histogram>(bounds_);
  } else {
    child = std::make_unique<T>();
  }
  return *children_.emplace(labels, std::move(child)).first->second;
}

template <typename T>
void Family<T>::Serialize(std::string* out) const {
  absl::MutexLock lock(&mu_);
  Header(*this, out);
  for (const auto& [labels, child] : children_) {
    if constexpr (std::is_same_v<T, Histogram>) {
      const Histogram::Snapshot s = child->Collect();
      for (size_t i = 0; i < s.bounds.size(); ++i)
        absl::StrAppend(out, name(), "_bucket",
                        LabelText(labels, absl::StrCat("le=\"", FormatValue(s.bounds[i]), "\"")),
                        " ", s.cumulative[i], "\n");
      absl::StrAppend(out, name(), "_bucket", LabelText(labels, "le=\"+Inf\""), " ", s.count,
                      "\n", name(), "_sum", LabelText(labels), " ", FormatValue(s.sum), "\n",
                      name(), "_count", LabelText(labels), " ", s.count, "\n");
    } else {
      absl::StrAppend(out, name(), LabelText(labels), " ", FormatValue(child->Value()), "\n");
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

FamilyBase* Registry::Find(const std::string& name, MetricType type) {
  for (auto& f : families_) {
    if (f->name() != name) continue;
    if (f->type() != type)
      ABSL_RAW_LOG(FATAL, "metric %s registered twice with different types", name.c_str());
    return f.get();
  }
  if (!IsValidMetricName(name)) ABSL_RAW_LOG(FATAL, "invalid metric name \"%s\"", name.c_str());
  return nullptr;
}

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help) {
  absl::MutexLock lock(&mu_);
  if (FamilyBase* f = Find(name, MetricType::kCounter)) return *static_cast<Family<Counter>*>(f);
  families_.push_back(std::make_unique<Family<Counter>>(name, help, MetricType::kCounter));
  return *static_cast<Family<Counter>*>(families_.back().get());
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help) {
  absl::MutexLock lock(&mu_);
  if (FamilyBase* f = Find(name, MetricType::kGauge)) return *static_cast<Family<Gauge>*>(f);
  families_.push_back(std::make_unique<Family<Gauge>>(name, help, MetricType::kGauge));
  return *static_cast<Family<Gauge>*>(families_.back().get());
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  if (!std::is_sorted(bounds.begin(), bounds.end()) ||
      std::adjacent_find(bounds.begin(), bounds.end()) != bounds.end())
    ABSL_RAW_LOG(FATAL, "histogram %s: bucket bounds must increase", name.c_str());
  if (FamilyBase* f = Find(name, MetricType::kHistogram))
    return *static_cast<Family<Histogram>*>(f);
  families_.push_back(std::make_unique<Family<Histogram>>(name, help, MetricType::kHistogram,
                                                          std::move(bounds)));
  return *static_cast<Family<Histogram>*>(families_.back().get());
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
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& f : families_) f->Serialize(&out);
  return out;
}

}  // namespace grpo::metrics
