#include "learner/weight_publisher.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "model/flat_weights.h"
#include "model/weight_transfer.h"

namespace grpo {
namespace {

v1::WeightDtype Normalized(v1::WeightDtype dtype) {
  return dtype == v1::WEIGHT_DTYPE_UNSPECIFIED ? v1::WEIGHT_DTYPE_FLOAT32 : dtype;
}

}  // namespace

// Two buffers per dtype: the version being built and the one before it.
class WeightPublisher::Spares {
 public:
  void Put(v1::WeightDtype dtype, std::string bytes) {
    absl::MutexLock lock(&mu_);
    std::vector<std::string>& list = spare_[dtype];
    if (list.size() < 2) list.push_back(std::move(bytes));
  }
  std::string Take(v1::WeightDtype dtype) {
    absl::MutexLock lock(&mu_);
    std::vector<std::string>& list = spare_[dtype];
    if (list.empty()) return {};
    std::string bytes = std::move(list.back());
    list.pop_back();
    return bytes;
  }

 private:
  absl::Mutex mu_;
  std::map<v1::WeightDtype, std::vector<std::string>> spare_ ABSL_GUARDED_BY(mu_);
};

WeightPublisher::WeightPublisher() : spares_(std::make_shared<Spares>()) {}
WeightPublisher::~WeightPublisher() = default;

std::string WeightPublisher::SpareBuffer(v1::WeightDtype dtype) {
  return spares_->Take(Normalized(dtype));
}

std::shared_ptr<const WeightPayload> WeightPublisher::Chunked(v1::WeightDtype dtype,
                                                              std::string bytes) {
  std::shared_ptr<WeightPayload> payload(new WeightPayload, [spares = spares_](WeightPayload* p) {
    spares->Put(p->dtype, std::move(p->bytes));
    delete p;
  });
  payload->dtype = dtype;
  payload->chunk_checksums = ChunkChecksums(bytes, kWeightChunkBytes);
  payload->checksum = CombineChecksums(payload->chunk_checksums);
  payload->bytes = std::move(bytes);
  return payload;
}

absl::Status WeightPublisher::Publish(const std::string& job_id, int64_t version,
                                      std::string flat) {
  absl::StatusOr<FlatWeights> parsed = ParseFlatWeights(flat);
  if (!parsed.ok()) return parsed.status();
  if (parsed->dtype != v1::WEIGHT_DTYPE_FLOAT32)
    return absl::InvalidArgumentError("WeightPublisher::Publish takes float32 flat weights");
  absl::MutexLock convert(&convert_mu_);
  std::set<v1::WeightDtype> wanted;
  {
    absl::MutexLock lock(&mu_);
    wanted = wanted_;
  }
  // Checksums and conversions outside mu_: streams of the previous version go on.
  ByDtype next;
  for (v1::WeightDtype dtype : wanted) {
    absl::StatusOr<std::string> converted =
        ConvertFlatWeights(flat, dtype, spares_->Take(dtype));
    if (!converted.ok()) return converted.status();
    next[dtype] = Chunked(dtype, std::move(*converted));
  }
  next[v1::WEIGHT_DTYPE_FLOAT32] = Chunked(v1::WEIGHT_DTYPE_FLOAT32, std::move(flat));
  absl::MutexLock lock(&mu_);
  if (version_ >= 0 && job_id == job_id_) {
    for (const auto& [dtype, payload] : latest_) older_[version_][dtype] = payload;
  } else {
    older_.clear();  // another job's versions are not this one's
  }
  for (auto it = older_.begin(); it != older_.end();) {
    bool alive = false;
    for (const auto& [dtype, weak] : it->second) alive |= !weak.expired();
    it = alive ? std::next(it) : older_.erase(it);
  }
  job_id_ = job_id;
  version_ = version;
  latest_ = std::move(next);
  return absl::OkStatus();
}

void WeightPublisher::Clear() {
  absl::MutexLock lock(&mu_);
  job_id_.clear();
  version_ = -1;
  latest_.clear();
  older_.clear();
}

PublishedWeights WeightPublisher::Latest() const {
  absl::MutexLock lock(&mu_);
  PublishedWeights out{job_id_, version_, nullptr};
  if (auto it = latest_.find(v1::WEIGHT_DTYPE_FLOAT32); it != latest_.end())
    out.payload = it->second;
  return out;
}

absl::StatusOr<PublishedWeights> WeightPublisher::Get(int64_t version, v1::WeightDtype dtype) {
  dtype = Normalized(dtype);
  if (dtype != v1::WEIGHT_DTYPE_FLOAT32 && dtype != v1::WEIGHT_DTYPE_BFLOAT16)
    return absl::InvalidArgumentError(
        absl::StrCat("weight dtype ", static_cast<int>(dtype), " is not float32 or bfloat16"));
  std::shared_ptr<const WeightPayload> source;
  int64_t latest;
  std::string job_id;
  {
    absl::MutexLock lock(&mu_);
    if (version_ < 0) return absl::FailedPreconditionError("no weights published yet");
    latest = version_;
    job_id = job_id_;
    if (version < 0 || version == version_) {
      if (auto it = latest_.find(dtype); it != latest_.end())
        return PublishedWeights{job_id_, version_, it->second};
      source = latest_.at(v1::WEIGHT_DTYPE_FLOAT32);
    } else if (auto old = older_.find(version); old != older_.end()) {
      if (auto it = old->second.find(dtype); it != old->second.end())
        if (std::shared_ptr<const WeightPayload> held = it->second.lock())
          return PublishedWeights{job_id_, version, std::move(held)};
    }
  }
  if (source == nullptr)
    return absl::AbortedError(absl::StrCat("weights v", version, " are no longer held (v",
                                           latest, " is the newest): ask again"));
  // The first ask for this dtype: convert the newest version, and every one from now on.
  absl::MutexLock convert(&convert_mu_);
  {
    absl::MutexLock lock(&mu_);
    wanted_.insert(dtype);
    if (version_ == latest && job_id_ == job_id)
      if (auto it = latest_.find(dtype); it != latest_.end())
        return PublishedWeights{job_id_, version_, it->second};  // converted meanwhile
  }
  absl::StatusOr<std::string> converted =
      ConvertFlatWeights(source->bytes, dtype, spares_->Take(dtype));
  if (!converted.ok()) return converted.status();
  std::shared_ptr<const WeightPayload> payload = Chunked(dtype, std::move(*converted));
  absl::MutexLock lock(&mu_);
  if (version_ == latest && job_id_ == job_id) latest_[dtype] = payload;
  return PublishedWeights{std::move(job_id), latest, std::move(payload)};
}

}  // namespace grpo
