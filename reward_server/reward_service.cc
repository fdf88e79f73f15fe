#include "reward_server/reward_service.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "rewards/code_tests.h"
#include "rewards/rewards.h"  // SharedRewardFunction; no LibTorch here (fuzz/)

namespace grpo {
namespace {

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

grpc::StatusCode ToGrpc(absl::StatusCode code) {
  // absl and gRPC share the canonical code numbering.
  return static_cast<grpc::StatusCode>(static_cast<int>(code));
}

struct FunctionInfo {
  const char* name;
  const char* description;
  std::vector<std::string> needs;
  bool gives_step_rewards = false;
  bool needs_model = false;  // served only when the server loaded a reward model
};

// What each built-in function reads, so requests missing it are rejected up front.
const std::vector<FunctionInfo>& Infos() {
  static const auto* infos = new std::vector<FunctionInfo>{
      {"exact_answer",
       "1 if the completion's final answer (#### N or \\boxed{N}) equals reference_answer "
       "numerically, else 0",
       {"completion", "reference_answer"}},
      {"format",
       "1 for step lines then a final '#### N' line, 0.5 for a final answer in other text, "
       "else 0",
       {"completion"}},
      {"arithmetic_steps",
       "a reward per step line of the built-in arithmetic task (1 if the step follows the "
       "prompt and is computed right), and their mean as the outcome",
       {"prompt", "completion", "reference_answer"},
       /*gives_step_rewards=*/true},
      {"overlong_penalty",
       "DAPO soft overlong punishment: 0 up to max_length - cache_length characters, then "
       "down to -1 at max_length (params: max_length, cache_length)",
       {"completion"}},
      {"reward_model",
       "neural reward model (--reward_model): scalar head read at the completion's last token",
       {"prompt", "completion"},
       /*gives_step_rewards=*/false,
       /*needs_model=*/true},
      {"process_reward_model",
       "the same model read at the token ending each step (the model's step rule; P(step "
       "right) for a model trained on step labels): a reward per step, their mean as the "
       "outcome",
       {"prompt", "completion"},
       /*gives_step_rewards=*/true,
       /*needs_model=*/true},
      {"code_tests",
       "the completion's code (its last fenced block) run in a sandbox against the sample's "
       "tests: the fraction passed (params: cpu_seconds, wall_seconds, memory_mb, processes, "
       "file_bytes, output_bytes, all_passed_bonus)",
       {"completion", "tests"},
       /*gives_step_rewards=*/false,
       /*needs_model=*/true},
  };
  return *infos;
}

const FunctionInfo* FindInfo(const std::string& name) {
  for (const FunctionInfo& info : Infos()) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

}  // namespace

grpc::Status RewardServiceImpl::Score(grpc::ServerContext* context,
                                      const v1::ScoreRequest* request,
                                      v1::ScoreResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context); !denied.ok()) return denied;
  if (request->samples().empty()) return Invalid("samples: empty batch");
  if (request->samples_size() > limits_.max_batch)
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("samples: ", request->samples_size(),
                                     " samples exceed the server's limit of ",
                                     limits_.max_batch, " per request"));
  if (request->reward_functions().empty())
    return Invalid("reward_functions: at least one function is required");

  std::vector<WeightedRewardFunction> functions;
  bool needs_prompt = false, needs_reference = false, needs_tests = false;
  for (int i = 0; i < request->reward_functions_size(); ++i) {
    const v1::RewardFunctionSpec& f = request->reward_functions(i);
    const FunctionInfo* info = FindInfo(f.name());
    const bool is_model = info != nullptr && info->needs_model;
    if (info == nullptr || (is_model && models_.count(f.name()) == 0))
      return Invalid(absl::StrCat("reward_functions[", i, "].name: unknown function \"",
                                  f.name(), "\"",
                                  f.name() == "code_tests" ? " (this server runs no code)"
                                  : is_model ? " (this server has no --reward_model)" : ""));
    for (const std::string& need : info->needs) {
      needs_prompt = needs_prompt || need == "prompt";
      needs_reference = needs_reference || need == "reference_answer";
      needs_tests = needs_tests || need == "tests";
    }
    std::unique_ptr<RewardFunction> fn;
    if (f.name() == "code_tests") {
      auto code = std::static_pointer_cast<const CodeTestsReward>(models_.at(f.name()));
      absl::StatusOr<CodeTestsCall> call =
          code->CallFromParams(RewardParams(f.params().begin(), f.params().end()));
      if (!call.ok())
        return Invalid(absl::StrCat("reward_functions[", i, "].params: ", call.status().message()));
      fn = CodeTestsReward::Bind(code, *call);
    } else if (is_model) {
      fn = std::make_unique<SharedRewardFunction>(models_.at(f.name()));
    } else {
      absl::StatusOr<std::unique_ptr<RewardFunction>> made =
          MakeRewardFunction(f.name(), RewardParams(f.params().begin(), f.params().end()));
      if (!made.ok())
        return Invalid(absl::StrCat("reward_functions[", i, "]: ", made.status().message()));
      fn = std::move(*made);
    }
    if (absl::Status s = CheckStepDelimiter(f.step_delimiter(), *fn); !s.ok())
      return Invalid(absl::StrCat("reward_functions[", i, "].", s.message()));
    functions.push_back({std::move(fn), f.has_weight() ? f.weight() : 1.0});
  }
  absl::StatusOr<CompositeReward> reward = CompositeReward::CreateFromFunctions(std::move(functions));
  if (!reward.ok()) return Invalid(absl::StrCat("reward_functions: ", reward.status().message()));

  for (int i = 0; i < request->samples_size(); ++i) {
    const v1::RewardSample& s = request->samples(i);
    for (const auto& [field, text] : {std::pair<const char*, const std::string*>{
                                          "prompt", &s.prompt()},
                                      {"completion", &s.completion()},
                                      {"reference_answer", &s.reference_answer()}}) {
      if (static_cast<int64_t>(text->size()) > limits_.max_text_bytes)
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            absl::StrCat("samples[", i, "].", field, ": ", text->size(),
                                         " bytes exceed the server's limit of ",
                                         limits_.max_text_bytes));
    }
    if (needs_prompt && s.prompt().empty())
      return Invalid(absl::StrCat("samples[", i, "].prompt: required by the requested functions"));
    if (needs_reference && s.reference_answer().empty())
      return Invalid(absl::StrCat("samples[", i,
                                  "].reference_answer: required by the requested functions"));
    if (!needs_tests) continue;
    const v1::CodeTests& t = s.tests();
    if (t.asserts().empty() && t.cases().empty())
      return Invalid(absl::StrCat("samples[", i, "].tests: code_tests needs asserts or cases"));
    if (t.asserts_size() + t.cases_size() > 256)
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("samples[", i, "].tests: more than 256 tests"));
    std::vector<const std::string*> texts;
    for (const std::string& a : t.asserts()) texts.push_back(&a);
    for (const v1::CodeTestCase& c : t.cases()) texts.push_back(&c.input()), texts.push_back(&c.output());
    for (const std::string* text : texts)
      if (static_cast<int64_t>(text->size()) > limits_.max_text_bytes)
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            absl::StrCat("samples[", i, "].tests: a test of ", text->size(),
                                         " bytes exceeds the server's limit of ",
                                         limits_.max_text_bytes));
  }

  v1::ScoreResponse scored;
  // Chunks of 64: one batched pass per function each, and the deadline checked between.
  constexpr int kChunk = 64;
  for (int begin = 0; begin < request->samples_size(); begin += kChunk) {
    if (context->IsCancelled())
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat("deadline passed or call cancelled after ", begin, " of ",
                                       request->samples_size(), " samples"));
    const int end = std::min(request->samples_size(), begin + kChunk);
    std::vector<RewardInput> inputs;
    for (int i = begin; i < end; ++i) {
      const v1::RewardSample& s = request->samples(i);
      inputs.push_back(RewardInput{s.prompt(), s.completion(), s.reference_answer(),
                                   needs_tests ? &s.tests() : nullptr});
    }
    absl::StatusOr<std::vector<CompositeOutput>> outs = reward->ScoreBatch(inputs);
    if (!outs.ok())
      return grpc::Status(ToGrpc(outs.status().code()),
                          absl::StrCat("samples[", begin, "..", end - 1, "]: ",
                                       outs.status().message()));
    for (int i = begin; i < end; ++i) {
      const v1::RewardSample& s = request->samples(i);
      const CompositeOutput& out = (*outs)[i - begin];
      v1::SampleScore* score = scored.add_scores();
      score->set_group_id(s.group_id());
      score->set_sample_index(s.sample_index());
      score->set_total(out.total);
      for (double r : out.per_function) score->add_per_function(r);
      for (const StepReward& step : out.steps) {
        v1::StepReward* st = score->add_steps();
        st->set_reward(step.reward);
        st->set_end_offset(step.end_offset);
      }
    }
  }
  response->Swap(&scored);
  return grpc::Status::OK;
}

grpc::Status RewardServiceImpl::ListRewardFunctions(grpc::ServerContext* context,
                                                    const v1::ListRewardFunctionsRequest*,
                                                    v1::ListRewardFunctionsResponse* response) {
  if (grpc::Status denied = authorizer_.Check(*context); !denied.ok()) return denied;
  for (const FunctionInfo& info : Infos()) {
    if (info.needs_model && models_.count(info.name) == 0) continue;
    v1::RewardFunctionInfo* out = response->add_functions();
    out->set_name(info.name);
    out->set_description(info.description);
    for (const std::string& need : info.needs) out->add_needs(need);
    out->set_gives_step_rewards(info.gives_step_rewards);
  }
  return grpc::Status::OK;
}

}  // namespace grpo
