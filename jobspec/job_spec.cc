#include "jobspec/job_spec.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "data/step_split.h"
#include "rewards/code_tests.h"
#include "rewards/rewards.h"
#include "tokenizer/tokenizer.h"

namespace grpo {
namespace {

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = absl::StrCat("line ", line + 1, ":", column + 1, ": ", message);
  }
  std::string first;
};

template <typename T>
absl::Status Bad(absl::string_view field, T value, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, ": ", why));
}

absl::Status InRange(absl::string_view field, double value, double lo, double hi) {
  if (!std::isfinite(value) || value < lo || value > hi)
    return Bad(field, value, absl::StrCat("must be in [", lo, ", ", hi, "]"));
  return absl::OkStatus();
}

#define RETURN_IF_ERROR(expr)                \
  do {                                       \
    if (absl::Status s_ = (expr); !s_.ok()) \
      return s_;                             \
  } while (0)

absl::Status ValidateOptimizer(absl::string_view prefix, const v1::OptimizerSpec& o) {
  auto f = [&](absl::string_view name) { return absl::StrCat(prefix, ".", name); };
  RETURN_IF_ERROR(InRange(f("learning_rate"), o.learning_rate(), 1e-12, 1.0));
  RETURN_IF_ERROR(InRange(f("weight_decay"), o.weight_decay(), 0, 10));
  RETURN_IF_ERROR(InRange(f("beta1"), o.beta1(), 0, 0.999999));
  RETURN_IF_ERROR(InRange(f("beta2"), o.beta2(), 0, 0.999999));
  RETURN_IF_ERROR(InRange(f("epsilon"), o.epsilon(), 1e-20, 1));
  RETURN_IF_ERROR(InRange(f("max_grad_norm"), o.max_grad_norm(), 0, 1e6));
  RETURN_IF_ERROR(InRange(f("warmup_steps"), o.warmup_steps(), 0, 1e7));
  return absl::OkStatus();
}

// Well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points past
// U+10FFFF), what protobuf requires of proto3 strings.
bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t more;                          // continuation bytes
    unsigned char lo = 0x80, hi = 0xBF;  // the range of the first one
    if (c >= 0xC2 && c <= 0xDF) {
      more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      more = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      more = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (s.size() - i <= more) return false;
    const unsigned char first = static_cast<unsigned char>(s[i + 1]);
    if (first < lo || first > hi) return false;
    for (size_t k = 2; k <= more; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += more + 1;
  }
  return true;
}

// The text-format parser only logs a string that is not UTF-8 and keeps it (the JSON
// parser refuses one); such a spec would then be refused by the coordinator's wire-format
// parser with an error naming nothing, and come out changed in spec.json. Enums are open:
// a number no value has survives every parser. Names the first such field.
absl::Status CheckStringsAndEnums(const google::protobuf::Message& m, const std::string& prefix) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      const std::string name = f->is_repeated() ? absl::StrCat(prefix, f->name(), "[", i, "]")
                                                : absl::StrCat(prefix, f->name());
      if (f->type() == FieldDescriptor::TYPE_STRING) {
        std::string scratch;
        const std::string& value = f->is_repeated()
                                       ? r->GetRepeatedStringReference(m, f, i, &scratch)
                                       : r->GetStringReference(m, f, &scratch);
        if (!IsValidUtf8(value))
          return absl::InvalidArgumentError(absl::StrCat(name, ": not valid UTF-8"));
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
        // Open (proto3) enums keep numbers they do not know; code would then fall back to
        // a default silently.
        const int value = f->is_repeated() ? r->GetRepeatedEnumValue(m, f, i)
                                           : r->GetEnumValue(m, f);
        if (f->enum_type()->FindValueByNumber(value) == nullptr)
          return absl::InvalidArgumentError(
              absl::StrCat(name, ": ", value, " is not a ", f->enum_type()->name()));
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        RETURN_IF_ERROR(CheckStringsAndEnums(
            f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f),
            name + "."));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text) {
  v1::JobSpec spec;
  absl::string_view trimmed = absl::StripLeadingAsciiWhitespace(text);
  if (!trimmed.empty() && trimmed.front() == '{') {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    auto status = google::protobuf::util::JsonStringToMessage(
        std::string(text), &spec, options);
    if (!status.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("job spec (JSON): ", std::string(status.message())));
    return spec;
  }
  google::protobuf::TextFormat::Parser parser;
  CollectErrors errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &spec))
    return absl::InvalidArgumentError(absl::StrCat("job spec (text proto): ", errors.first));
  if (absl::Status utf8 = CheckStringsAndEnums(spec, ""); !utf8.ok())
    return absl::InvalidArgumentError(absl::StrCat("job spec (text proto): ", utf8.message()));
  return spec;
}

absl::StatusOr<v1::JobSpec> LoadJobSpecFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("cannot open job spec ", path));
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(*text);
  if (!spec.ok())
    return absl::Status(spec.status().code(),
                        absl::StrCat(path, ": ", spec.status().message()));
  return spec;
}

v1::JobSpec DefaultJobSpec() {
  v1::JobSpec s;
  s.set_name("arithmetic-grpo");
  s.set_seed(1);
  s.set_steps(120);
  s.set_checkpoint_every(0);
  s.set_checkpoint_every_seconds(300);
  s.mutable_model()->set_preset("tiny");

  v1::DatasetSpec* d = s.mutable_dataset();
  d->set_kind("arithmetic");
  d->mutable_arithmetic()->set_min_ops(2);
  d->mutable_arithmetic()->set_max_ops(3);
  d->mutable_arithmetic()->set_max_operand(9);
  d->mutable_arithmetic()->set_split_seed(1234);

  for (auto [name, weight] : {std::pair<const char*, double>{"exact_answer", 1.0},
                              {"format", 0.1}}) {
    v1::RewardFunctionSpec* r = s.add_rewards();
    r->set_name(name);
    r->set_weight(weight);
  }

  v1::SamplingSpec* sampling = s.mutable_sampling();
  sampling->set_temperature(1.0f);
  sampling->set_top_p(1.0f);
  sampling->set_top_k(0);
  sampling->set_max_new_tokens(48);

  v1::GrpoSpec* g = s.mutable_grpo();
  g->set_group_size(8);
  g->set_prompts_per_step(16);
  g->set_epsilon_low(0.2f);
  g->set_epsilon_high(0.2f);
  g->set_beta(0.04f);
  g->set_kl_estimator(v1::KL_ESTIMATOR_K3);
  g->set_aggregation(v1::LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN);
  g->set_advantage_estimator(v1::ADVANTAGE_ESTIMATOR_OUTCOME);
  g->set_advantage_scale(v1::ADVANTAGE_SCALE_GROUP);
  g->set_filter_zero_variance_groups(false);
  g->set_inner_iterations(1);
  g->set_reference_refresh_steps(0);
  g->set_rft_negative(0.0f);
  g->set_max_policy_lag(0);
  g->set_reward_failure(v1::REWARD_FAILURE_RETRY);
  g->set_importance_ratio(v1::IMPORTANCE_RATIO_TOKEN);
  g->set_correct_threshold(1.0f);

  v1::TrainingSpec* t = s.mutable_training();
  t->set_micro_batch_tokens(16384);
  t->set_logprob_chunk_positions(1024);
  t->set_precision(v1::TRAINING_PRECISION_FLOAT32);
  t->set_activation_checkpointing(false);
  t->set_shard_optimizer(false);
  t->set_tis_cap(0.0f);

  s.set_algorithm(v1::ALGORITHM_GRPO);
  v1::PpoSpec* ppo = s.mutable_ppo();
  ppo->set_gamma(1.0f);
  ppo->set_gae_lambda(0.95f);
  ppo->set_value_clip(0.2f);
  ppo->set_critic_init("");
  ppo->set_critic_learning_rate(0.0f);
  ppo->set_whiten_advantages(true);

  v1::OptimizerSpec* o = s.mutable_optimizer();
  o->set_learning_rate(1e-4f);
  o->set_weight_decay(0.0f);
  o->set_beta1(0.9f);
  o->set_beta2(0.99f);
  o->set_epsilon(1e-8f);
  o->set_max_grad_norm(1.0f);
  o->set_warmup_steps(3);

  v1::SftSpec* sft = s.mutable_sft();
  sft->set_steps(1000);
  sft->set_batch_size(32);
  *sft->mutable_optimizer() = *o;
  sft->mutable_optimizer()->set_learning_rate(2e-3f);
  sft->mutable_optimizer()->set_warmup_steps(20);
  sft->mutable_optimizer()->set_weight_decay(0.01f);

  v1::EvalSpec* e = s.mutable_eval();
  e->set_num_prompts(200);
  e->set_k(8);
  e->set_temperature(1.0f);
  e->set_every_steps(0);
  return s;
}

namespace {

// model.hf_dir brings the shape: the fields that would contradict it stay unset.
absl::Status CheckHfModelSpec(const v1::ModelSpec& m) {
  const std::pair<const char*, bool> shape_fields[] = {
      {"preset", m.has_preset()},         {"d_model", m.has_d_model()},
      {"n_layers", m.has_n_layers()},     {"n_heads", m.has_n_heads()},
      {"n_kv_heads", m.has_n_kv_heads()}, {"ffn_hidden", m.has_ffn_hidden()},
      {"vocab_size", m.has_vocab_size()}, {"tie_embeddings", m.has_tie_embeddings()},
      {"rope_theta", m.has_rope_theta()}, {"init_checkpoint", m.has_init_checkpoint()}};
  for (const auto& [field, set] : shape_fields) {
    if (set)
      return absl::InvalidArgumentError(absl::StrCat(
          "model.", field, ": leave it unset with model.hf_dir (config.json gives the model)"));
  }
  if (m.has_max_seq_len()) RETURN_IF_ERROR(InRange("model.max_seq_len", m.max_seq_len(), 2, 131072));
  const std::string& format = m.prompt_format();
  if (!format.empty() && format != "raw" && format != "chatml" && format != "llama3")
    return Bad("model.prompt_format", absl::StrCat("\"", format, "\""),
               "must be raw, chatml or llama3 (or empty: from config.json)");
  return absl::OkStatus();
}

}  // namespace

ModelConfig ModelConfigFromSpec(const v1::ModelSpec& m) {
  ModelConfig c = ModelPreset(m.preset()).value_or(ModelConfig{});
  if (m.has_d_model()) c.d_model = m.d_model();
  if (m.has_n_layers()) c.n_layers = m.n_layers();
  if (m.has_n_heads()) c.n_heads = m.n_heads();
  if (m.has_n_kv_heads()) c.n_kv_heads = m.n_kv_heads();
  if (m.has_ffn_hidden()) c.ffn_hidden = m.ffn_hidden();
  if (m.has_vocab_size()) c.vocab_size = m.vocab_size();
  if (m.has_max_seq_len()) c.max_seq_len = m.max_seq_len();
  if (m.has_tie_embeddings()) c.tie_embeddings = m.tie_embeddings();
  if (m.has_rope_theta()) c.rope_theta = m.rope_theta();
  return c;
}

namespace {

// Defaults that depend on other fields, filled after the user's spec is merged in.
void ResolveDependentDefaults(v1::JobSpec* s) {
  v1::TrainingSpec* t = s->mutable_training();
  if (t->old_logprobs() == v1::OLD_LOGPROBS_UNSPECIFIED) {
    // Past the first inner iteration the policy has moved, and a bfloat16 learner's
    // log-probs differ from any sampler's: either way the ratio needs the learner's own.
    // Otherwise each group's own precision decides (a bfloat16 worker's log-probs are not
    // a float32 learner's).
    const bool recompute = s->grpo().inner_iterations() > 1 ||
                           t->precision() == v1::TRAINING_PRECISION_BF16_MIXED;
    t->set_old_logprobs(recompute ? v1::OLD_LOGPROBS_RECOMPUTE : v1::OLD_LOGPROBS_AUTO);
  }
}

// PPO's settings, and the GRPO settings that PPO cannot honour.
absl::Status ValidatePpo(const v1::JobSpec& s) {
  const v1::PpoSpec& p = s.ppo();
  RETURN_IF_ERROR(InRange("ppo.gamma", p.gamma(), 0, 1));
  RETURN_IF_ERROR(InRange("ppo.gae_lambda", p.gae_lambda(), 0, 1));
  if (!(p.value_clip() > 0 && p.value_clip() <= 1e3))
    return Bad("ppo.value_clip", p.value_clip(), "must be in (0, 1000]");
  RETURN_IF_ERROR(InRange("ppo.critic_learning_rate", p.critic_learning_rate(), 0, 1));
  if (s.grpo().advantage_estimator() != v1::ADVANTAGE_ESTIMATOR_OUTCOME)
    return Bad("grpo.advantage_estimator",
               v1::AdvantageEstimator_Name(s.grpo().advantage_estimator()),
               "algorithm PPO estimates advantages with its critic from the outcome reward; "
               "use ADVANTAGE_ESTIMATOR_OUTCOME (or algorithm GRPO)");
  if (s.grpo().importance_ratio() == v1::IMPORTANCE_RATIO_SEQUENCE)
    return Bad("grpo.importance_ratio", "IMPORTANCE_RATIO_SEQUENCE",
               "GSPO's sequence ratio wants one advantage per sequence; PPO's are per token");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::JobSpec> ResolveJobSpec(const v1::JobSpec& user) {
  v1::JobSpec out = DefaultJobSpec();
  // A user's reward list replaces the default one rather than appending to it.
  if (user.rewards_size() > 0) out.clear_rewards();
  if (!user.model().hf_dir().empty()) {
    // The shape is config.json's, read where the directory is (hf/job_model.h); nothing
    // of the built-in preset applies.
    RETURN_IF_ERROR(CheckHfModelSpec(user.model()));
    out.clear_model();
    out.MergeFrom(user);
    // A pretrained model starts GRPO as it is, unless the spec asks for SFT.
    if (!user.sft().has_steps()) out.mutable_sft()->set_steps(0);
    ResolveDependentDefaults(&out);
    RETURN_IF_ERROR(ValidateJobSpec(out));
    return out;
  }
  // The preset is the base of the model's shape; explicit user fields override it.
  const std::string preset =
      user.model().has_preset() ? user.model().preset() : out.model().preset();
  if (absl::StatusOr<ModelConfig> c = ModelPreset(preset); !c.ok())
    return absl::InvalidArgumentError(absl::StrCat("model.preset: ", c.status().message()));
  out.MergeFrom(user);
  v1::ModelSpec* m = out.mutable_model();
  const ModelConfig c = ModelConfigFromSpec(*m);
  m->set_d_model(c.d_model);
  m->set_n_layers(c.n_layers);
  m->set_n_heads(c.n_heads);
  m->set_n_kv_heads(c.n_kv_heads);
  m->set_ffn_hidden(c.ffn_hidden);
  m->set_vocab_size(c.vocab_size);
  m->set_max_seq_len(c.max_seq_len);
  m->set_tie_embeddings(c.tie_embeddings);
  m->set_rope_theta(c.rope_theta);
  ResolveDependentDefaults(&out);
  RETURN_IF_ERROR(ValidateJobSpec(out));
  return out;
}

absl::Status ValidateJobSpec(const v1::JobSpec& s) {
  RETURN_IF_ERROR(CheckStringsAndEnums(s, ""));
  RETURN_IF_ERROR(InRange("steps", s.steps(), 0, 1e7));
  RETURN_IF_ERROR(InRange("checkpoint_every", s.checkpoint_every(), 0, 1e7));
  RETURN_IF_ERROR(InRange("checkpoint_every_seconds", s.checkpoint_every_seconds(), 0, 1e7));
  RETURN_IF_ERROR(
      InRange("training.micro_batch_tokens", s.training().micro_batch_tokens(), 0, 1 << 30));
  RETURN_IF_ERROR(InRange("training.logprob_chunk_positions",
                          s.training().logprob_chunk_positions(), 0, 1 << 30));
  RETURN_IF_ERROR(InRange("training.tis_cap", s.training().tis_cap(), 0, 1e6));
  if (s.training().tis_cap() > 0 && s.training().old_logprobs() == v1::OLD_LOGPROBS_SAMPLER)
    return Bad("training.tis_cap", s.training().tis_cap(),
               "truncated importance sampling weighs the learner's recomputed log-probs "
               "against the sampler's; set training.old_logprobs to OLD_LOGPROBS_RECOMPUTE "
               "or OLD_LOGPROBS_AUTO");

  // The model's vocabulary and context bound the sampling fields; with hf_dir they are in
  // config.json, checked where it is read, so only the outer limits apply here.
  int vocab_size = 1 << 20;
  int max_seq_len = s.model().has_max_seq_len() ? s.model().max_seq_len() : kDefaultHfMaxSeqLen;
  if (!s.model().hf_dir().empty()) {
    RETURN_IF_ERROR(CheckHfModelSpec(s.model()));
  } else {
    const ModelConfig model = ModelConfigFromSpec(s.model());
    RETURN_IF_ERROR(ValidateModelConfig(model));
    vocab_size = model.vocab_size;
    max_seq_len = model.max_seq_len;
    if (model.vocab_size < CharTokenizer::kVocabSize)
      return Bad("model.vocab_size", model.vocab_size,
                 absl::StrCat("the character tokenizer needs at least ",
                              CharTokenizer::kVocabSize));
  }

  const v1::DatasetSpec& d = s.dataset();
  if (d.kind() == "arithmetic") {
    const v1::ArithmeticTaskSpec& a = d.arithmetic();
    RETURN_IF_ERROR(InRange("dataset.arithmetic.min_ops", a.min_ops(), 1, 16));
    RETURN_IF_ERROR(InRange("dataset.arithmetic.max_ops", a.max_ops(), a.min_ops(), 16));
    RETURN_IF_ERROR(InRange("dataset.arithmetic.max_operand", a.max_operand(), 1, 1e6));
  } else if (d.kind() == "code") {
    // The built-in code task (data/code_task.h) has no settings.
  } else if (d.kind() == "jsonl") {
    if (d.train_path().empty())
      return absl::InvalidArgumentError("dataset.train_path: required when kind is jsonl");
  } else {
    return Bad("dataset.kind", absl::StrCat("\"", d.kind(), "\""),
               "must be \"arithmetic\", \"code\" or \"jsonl\"");
  }

  if (s.rewards_size() == 0)
    return absl::InvalidArgumentError("rewards: at least one reward function is required");
  for (int i = 0; i < s.rewards_size(); ++i) {
    const v1::RewardFunctionSpec& r = s.rewards(i);
    if (r.has_step_delimiter()) {
      if (absl::StatusOr<StepRule> rule = ParseStepRule(r.step_delimiter()); !rule.ok())
        return absl::InvalidArgumentError(
            absl::StrCat("rewards[", i, "].step_delimiter: ", rule.status().message()));
      // A process reward model's own rule is in its directory (checked where it loads).
      if (r.name() != "process_reward_model") {
        absl::StatusOr<std::unique_ptr<RewardFunction>> fn = MakeRewardFunction(
            r.name(), RewardParams(r.params().begin(), r.params().end()));
        absl::Status s = fn.ok() ? CheckStepDelimiter(r.step_delimiter(), **fn)
                                 : absl::InvalidArgumentError(absl::StrCat(
                                       "step_delimiter: ", r.name(), " gives no step rewards"));
        if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("rewards[", i, "].", s.message()));
      }
    }
    if (r.name() == "reward_model" || r.name() == "process_reward_model") {
      if (r.model_dir().empty())
        return absl::InvalidArgumentError(absl::StrCat(
            "rewards[", i, "].model_dir: required for ", r.name(), " (a grpo_train_rm --out directory)"));
      RETURN_IF_ERROR(InRange(absl::StrCat("rewards[", i, "].weight"), r.weight(), 0, 1e6));
      continue;
    }
    const RewardParams params(r.params().begin(), r.params().end());
    if (r.name() == "code_tests") {
      if (absl::StatusOr<CodeTestsCall> call = CodeTestsCallFromParams(params, CodeTestsOptions());
          !call.ok())
        return absl::InvalidArgumentError(
            absl::StrCat("rewards[", i, "].params: ", call.status().message()));
      RETURN_IF_ERROR(InRange(absl::StrCat("rewards[", i, "].weight"), r.weight(), 0, 1e6));
      continue;
    }
    if (absl::StatusOr<std::unique_ptr<RewardFunction>> fn = MakeRewardFunction(r.name(), params);
        !fn.ok()) {
      const std::vector<std::string> known = RewardFunctionNames();
      if (std::find(known.begin(), known.end(), r.name()) == known.end())
        return Bad(absl::StrCat("rewards[", i, "].name"), absl::StrCat("\"", r.name(), "\""),
                   "unknown reward function");
      return absl::InvalidArgumentError(
          absl::StrCat("rewards[", i, "].params: ", fn.status().message()));
    }
    RETURN_IF_ERROR(InRange(absl::StrCat("rewards[", i, "].weight"), r.weight(), 0, 1e6));
  }

  if (s.grpo().advantage_estimator() == v1::ADVANTAGE_ESTIMATOR_PROCESS) {
    bool has_steps = false;
    for (const auto& r : s.rewards()) {
      auto fn = MakeRewardFunction(r.name(), RewardParams(r.params().begin(), r.params().end()));
      const bool steps =
          r.name() == "process_reward_model" || (fn.ok() && (*fn)->gives_step_rewards());
      has_steps = has_steps || (steps && r.weight() > 0);
    }
    if (!has_steps)
      return absl::InvalidArgumentError(
          "grpo.advantage_estimator = PROCESS needs a reward function that gives step "
          "rewards (e.g. arithmetic_steps) with a positive weight in rewards");
  }

  const v1::SamplingSpec& sp = s.sampling();
  RETURN_IF_ERROR(InRange("sampling.temperature", sp.temperature(), 1e-3, 100));
  if (!(sp.top_p() > 0 && sp.top_p() <= 1)) return Bad("sampling.top_p", sp.top_p(), "must be in (0, 1]");
  RETURN_IF_ERROR(InRange("sampling.top_k", sp.top_k(), 0, vocab_size));
  RETURN_IF_ERROR(InRange("sampling.max_new_tokens", sp.max_new_tokens(), 1, max_seq_len - 1));

  const v1::GrpoSpec& g = s.grpo();
  const bool rft = g.advantage_estimator() == v1::ADVANTAGE_ESTIMATOR_ONLINE_RFT;
  const bool ppo = s.algorithm() == v1::ALGORITHM_PPO;
  RETURN_IF_ERROR(InRange("grpo.group_size", g.group_size(), rft || ppo ? 1 : 2, 4096));
  RETURN_IF_ERROR(InRange("grpo.prompts_per_step", g.prompts_per_step(), 1, 65536));
  RETURN_IF_ERROR(InRange("grpo.epsilon_low", g.epsilon_low(), 0, 0.999));
  RETURN_IF_ERROR(InRange("grpo.epsilon_high", g.epsilon_high(), 0, 100));
  RETURN_IF_ERROR(InRange("grpo.beta", g.beta(), 0, 1e3));
  RETURN_IF_ERROR(InRange("grpo.inner_iterations", g.inner_iterations(), 1, 64));
  RETURN_IF_ERROR(InRange("grpo.reference_refresh_steps", g.reference_refresh_steps(), 0, 1e7));
  RETURN_IF_ERROR(InRange("grpo.rft_negative", g.rft_negative(), -1, 0));
  RETURN_IF_ERROR(InRange("grpo.max_policy_lag", g.max_policy_lag(), 0, 1e6));
  RETURN_IF_ERROR(InRange("grpo.correct_threshold", g.correct_threshold(), -1e9, 1e9));

  if (ppo) RETURN_IF_ERROR(ValidatePpo(s));

  RETURN_IF_ERROR(ValidateOptimizer("optimizer", s.optimizer()));
  RETURN_IF_ERROR(InRange("sft.steps", s.sft().steps(), 0, 1e7));
  RETURN_IF_ERROR(InRange("sft.batch_size", s.sft().batch_size(), 1, 65536));
  RETURN_IF_ERROR(ValidateOptimizer("sft.optimizer", s.sft().optimizer()));

  const v1::EvalSpec& e = s.eval();
  RETURN_IF_ERROR(InRange("eval.num_prompts", e.num_prompts(), 0, 1e6));
  RETURN_IF_ERROR(InRange("eval.k", e.k(), 1, 1024));
  RETURN_IF_ERROR(InRange("eval.temperature", e.temperature(), 0, 100));
  RETURN_IF_ERROR(InRange("eval.every_steps", e.every_steps(), 0, 1e7));
  return absl::OkStatus();
}

std::string JobSpecToJson(const v1::JobSpec& spec) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &out, options);
  return out;
}

}  // namespace grpo
