#include "learner/ingest_buffer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "rl/scored_group_proto.h"

namespace grpo {

namespace {

// INVALID_ARGUMENT naming the prompt and sample whose tokens the model cannot take.
absl::Status CheckTokens(const ScoredGroup& group, int max_tokens, int vocab_size) {
  auto out_of_vocab = [&](const std::vector<int32_t>& tokens) {
    return vocab_size > 0 && std::any_of(tokens.begin(), tokens.end(), [&](int32_t t) {
             return t < 0 || t >= vocab_size;
           });
  };
  if (out_of_vocab(group.prompt))
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt ", group.prompt_id, ": a prompt token is outside the vocabulary [0, ",
        vocab_size, ")"));
  for (size_t i = 0; i < group.samples.size(); ++i) {
    const std::vector<int32_t>& completion = group.samples[i].completion;
    if (out_of_vocab(completion))
      return absl::InvalidArgumentError(
          absl::StrCat("prompt ", group.prompt_id, " sample ", i,
                       ": a completion token is outside the vocabulary [0, ", vocab_size, ")"));
    const size_t length = group.prompt.size() + completion.size();
    if (max_tokens > 0 && length > static_cast<size_t>(max_tokens))
      return absl::InvalidArgumentError(
          absl::StrCat("prompt ", group.prompt_id, " sample ", i, ": ", length,
                       " tokens, the model takes at most ", max_tokens));
  }
  return absl::OkStatus();
}

}  // namespace

void IngestBuffer::StartJob(const std::string& job_id, int group_size,
                            const std::vector<std::string>& seen, int max_tokens,
                            int vocab_size) {
  absl::MutexLock lock(&mu_);
  job_id_ = job_id;
  group_size_ = group_size;
  max_tokens_ = max_tokens;
  vocab_size_ = vocab_size;
  groups_.clear();
  seen_.clear();
  seen_.insert(seen.begin(), seen.end());
  new_ids_.clear();
  new_stale_ = 0;
  counters_ = IngestCounters{};
}

void IngestBuffer::EndJob() {
  absl::MutexLock lock(&mu_);
  job_id_.clear();
  groups_.clear();
}

absl::StatusOr<SubmitResult> IngestBuffer::Submit(
    const std::vector<v1::ScoredGroupProto>& protos) {
  // Convert and check outside the lock; the buffer changes only once everything passed.
  std::vector<ScoredGroup> groups;
  groups.reserve(protos.size());
  for (const v1::ScoredGroupProto& proto : protos) {
    absl::StatusOr<ScoredGroup> group = FromProto(proto);
    if (!group.ok()) return group.status();
    groups.push_back(std::move(*group));
  }
  absl::MutexLock lock(&mu_);
  if (job_id_.empty())
    return absl::FailedPreconditionError("the learner is not running a job");
  SubmitResult result;
  absl::flat_hash_set<std::string> fresh;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (protos[i].job_id() != job_id_)
      return absl::FailedPreconditionError(absl::StrCat(
          "group for job '", protos[i].job_id(), "': the learner runs ", job_id_));
    if (static_cast<int>(groups[i].samples.size()) != group_size_)
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt ", groups[i].prompt_id, ": ", groups[i].samples.size(),
          " samples, the job's group_size is ", group_size_));
    if (absl::Status s = CheckTokens(groups[i], max_tokens_, vocab_size_); !s.ok()) return s;
    if (seen_.contains(groups[i].prompt_id) || !fresh.insert(groups[i].prompt_id).second) {
      ++result.duplicates;
      if (seen_.contains(groups[i].prompt_id)) resend_.push_back(groups[i].prompt_id);
    }
  }
  if (groups_.size() + fresh.size() > capacity_) {
    resend_.clear();
    ++counters_.rejected_full;
    return absl::ResourceExhaustedError(absl::StrCat(
        "ingest buffer full: ", groups_.size(), " of ", capacity_, " groups held, ",
        fresh.size(), " offered"));
  }
  for (ScoredGroup& group : groups) {
    if (!fresh.contains(group.prompt_id) || seen_.contains(group.prompt_id)) continue;
    seen_.insert(group.prompt_id);
    new_ids_.push_back(group.prompt_id);
    groups_.push_back(std::move(group));
    ++result.accepted;
  }
  // A duplicate means its lease is still out at the coordinator: acknowledge it again.
  new_ids_.insert(new_ids_.end(), resend_.begin(), resend_.end());
  resend_.clear();
  counters_.accepted_groups += result.accepted;
  counters_.duplicate_groups += result.duplicates;
  return result;
}

std::vector<ScoredGroup> IngestBuffer::Take(int count, int64_t min_version,
                                            absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Stale groups leave first, so they never count towards `count`.
    const size_t before = groups_.size();
    groups_.erase(std::remove_if(groups_.begin(), groups_.end(),
                                 [&](const ScoredGroup& g) {
                                   for (const ScoredSample& s : g.samples)
                                     if (s.policy_version < min_version) return true;
                                   return false;
                                 }),
                  groups_.end());
    const size_t dropped = before - groups_.size();
    counters_.stale_groups_dropped += dropped;
    new_stale_ += dropped;
    return groups_.size() >= static_cast<size_t>(count);
  };
  // Await re-evaluates the condition whenever a Submit releases the mutex.
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (groups_.size() < static_cast<size_t>(count)) return {};
  std::vector<ScoredGroup> out(std::make_move_iterator(groups_.begin()),
                               std::make_move_iterator(groups_.begin() + count));
  groups_.erase(groups_.begin(), groups_.begin() + count);
  counters_.groups_taken += count;
  return out;
}

std::vector<std::string> IngestBuffer::DrainNewIds() {
  absl::MutexLock lock(&mu_);
  return std::exchange(new_ids_, {});
}

void IngestBuffer::ReturnIds(const std::vector<std::string>& ids) {
  absl::MutexLock lock(&mu_);
  new_ids_.insert(new_ids_.end(), ids.begin(), ids.end());
}

int64_t IngestBuffer::DrainStaleCount() {
  absl::MutexLock lock(&mu_);
  return std::exchange(new_stale_, 0);
}

std::vector<std::string> IngestBuffer::SeenIds() const {
  absl::MutexLock lock(&mu_);
  return std::vector<std::string>(seen_.begin(), seen_.end());
}

IngestCounters IngestBuffer::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

size_t IngestBuffer::size() const {
  absl::MutexLock lock(&mu_);
  return groups_.size();
}

}  // namespace grpo
