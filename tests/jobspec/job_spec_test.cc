#include "jobspec/job_spec.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "data/job_data.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grpo {
namespace {

using ::testing::HasSubstr;

std::string ErrorOf(const std::string& text) {
  auto parsed = ParseJobSpec(text);
  if (!parsed.ok()) return std::string(parsed.status().message());
  auto resolved = ResolveJobSpec(*parsed);
  return resolved.ok() ? "" : std::string(resolved.status().message());
}

TEST(JobSpecTest, DefaultsResolveAndValidate) {
  auto spec = ResolveJobSpec(v1::JobSpec());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model().preset(), "tiny");
  EXPECT_EQ(spec->grpo().kl_estimator(), v1::KL_ESTIMATOR_K3);
  EXPECT_EQ(spec->rewards_size(), 2);
  EXPECT_FLOAT_EQ(spec->grpo().beta(), 0.04f);
}

// π_old defaults to the learner's own log-probs exactly where the sampler's stop being
// the pre-step policy's (μ > 1) or match no learner's (bfloat16), else to AUTO (each
// group's stamped sampling precision decides); TIS needs recomputed ones.
TEST(JobSpecTest, OldLogprobsDefaultFollowsInnerIterationsAndPrecision) {
  auto old_logprobs = [](const std::string& json) {
    auto parsed = ParseJobSpec(json);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    auto resolved = ResolveJobSpec(*parsed);
    EXPECT_TRUE(resolved.ok()) << resolved.status();
    return resolved.ok() ? resolved->training().old_logprobs() : v1::OLD_LOGPROBS_UNSPECIFIED;
  };
  EXPECT_EQ(old_logprobs("{}"), v1::OLD_LOGPROBS_AUTO);
  EXPECT_EQ(old_logprobs(R"({"grpo": {"inner_iterations": 2}})"), v1::OLD_LOGPROBS_RECOMPUTE);
  EXPECT_EQ(old_logprobs(R"({"training": {"precision": "TRAINING_PRECISION_BF16_MIXED"}})"),
            v1::OLD_LOGPROBS_RECOMPUTE);
  EXPECT_EQ(old_logprobs(R"({"grpo": {"inner_iterations": 2},
                             "training": {"old_logprobs": "OLD_LOGPROBS_SAMPLER"}})"),
            v1::OLD_LOGPROBS_SAMPLER);  // an explicit choice is kept
  EXPECT_EQ(ErrorOf(R"({"training": {"old_logprobs": "OLD_LOGPROBS_RECOMPUTE",
                                     "tis_cap": 2}})"), "");
  EXPECT_EQ(ErrorOf(R"({"training": {"tis_cap": 2}})"), "");  // AUTO: the recomputed groups
  EXPECT_THAT(ErrorOf(R"({"training": {"old_logprobs": "OLD_LOGPROBS_SAMPLER",
                                       "tis_cap": 2}})"), HasSubstr("training.tis_cap"));
  EXPECT_THAT(ErrorOf(R"({"training": {"old_logprobs": "OLD_LOGPROBS_RECOMPUTE",
                                       "tis_cap": -1}})"), HasSubstr("training.tis_cap"));
  EXPECT_THAT(ErrorOf(R"({"training": {"precision": 7}})"), HasSubstr("training.precision"));
}

TEST(JobSpecTest, PpoSettingsAreCheckedAndTheGrpoOnesItCannotHonourRefused) {
  auto ppo = ResolveJobSpec(*ParseJobSpec(R"({"algorithm": "ALGORITHM_PPO",
                                              "grpo": {"group_size": 1}})"));
  ASSERT_TRUE(ppo.ok()) << ppo.status();  // PPO needs no group of two
  EXPECT_EQ(ppo->algorithm(), v1::ALGORITHM_PPO);
  EXPECT_FLOAT_EQ(ppo->ppo().gae_lambda(), 0.95f);
  EXPECT_TRUE(ppo->ppo().whiten_advantages());
  EXPECT_EQ(ResolveJobSpec(v1::JobSpec())->algorithm(), v1::ALGORITHM_GRPO);
  EXPECT_THAT(ErrorOf(R"({"grpo": {"group_size": 1}})"), HasSubstr("grpo.group_size"));
  for (const char* bad : {R"("ppo": {"gamma": 1.5})", R"("ppo": {"gae_lambda": -0.1})",
                          R"("ppo": {"value_clip": 0})", R"("ppo": {"critic_learning_rate": 2})"}) {
    const std::string field = std::string(bad).substr(9, std::string(bad).find('"', 9) - 9);
    EXPECT_THAT(ErrorOf(absl::StrCat(R"({"algorithm": "ALGORITHM_PPO", )", bad, "}")),
                HasSubstr("ppo." + field))
        << bad;
  }
  EXPECT_THAT(ErrorOf(R"({"algorithm": "ALGORITHM_PPO",
                          "grpo": {"advantage_estimator": "ADVANTAGE_ESTIMATOR_ONLINE_RFT"}})"),
              HasSubstr("grpo.advantage_estimator"));
  EXPECT_THAT(ErrorOf(R"({"algorithm": "ALGORITHM_PPO",
                          "grpo": {"importance_ratio": "IMPORTANCE_RATIO_SEQUENCE"}})"),
              HasSubstr("grpo.importance_ratio"));
  EXPECT_THAT(ErrorOf(R"({"algorithm": 9})"), HasSubstr("algorithm"));
}

TEST(JobSpecTest, JsonAndTextProtoOverrideDefaultsIncludingExplicitZero) {
  auto json = ParseJobSpec(R"({"steps": 5, "grpo": {"beta": 0, "group_size": 4},
                               "rewards": [{"name": "exact_answer", "weight": 2}]})");
  ASSERT_TRUE(json.ok()) << json.status();
  auto resolved = ResolveJobSpec(*json);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(resolved->steps(), 5);
  EXPECT_EQ(resolved->grpo().beta(), 0.0f);  // an explicit zero is kept
  EXPECT_EQ(resolved->grpo().group_size(), 4);
  EXPECT_FLOAT_EQ(resolved->grpo().epsilon_low(), 0.2f);  // untouched default
  ASSERT_EQ(resolved->rewards_size(), 1);                 // the list is replaced
  EXPECT_EQ(resolved->rewards(0).weight(), 2.0);

  auto text = ParseJobSpec("steps: 7\nmodel { preset: \"bench-26m\" n_layers: 2 }\n");
  ASSERT_TRUE(text.ok()) << text.status();
  auto model = ResolveJobSpec(*text);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->model().d_model(), 512);  // from the preset
  EXPECT_EQ(model->model().n_layers(), 2);   // the user's override
}

TEST(JobSpecTest, UnknownFieldsAreRejectedByName) {
  EXPECT_THAT(ErrorOf(R"({"stepz": 5})"), HasSubstr("stepz"));
  EXPECT_THAT(ErrorOf("grpo { bogus: 1 }"), HasSubstr("bogus"));
  EXPECT_THAT(ErrorOf("{ not json"), HasSubstr("JSON"));
}

// Found by fuzz/job_spec_fuzzer: the text-format parser keeps such strings (it only logs
// them), and the coordinator would refuse the spec on the wire naming nothing.
TEST(JobSpecTest, StringsThatAreNotUtf8AreRejectedByName) {
  EXPECT_THAT(ErrorOf("dataset { kind: \"jsonl\" train_path: \"tr\\270n.jsonl\" }"),
              HasSubstr("dataset.train_path: not valid UTF-8"));
  EXPECT_THAT(ErrorOf("rewards { name: \"overlong_penalty\" "
                      "params { key: \"max_\\377\" value: 1 } }"),
              HasSubstr("rewards[0].params[0].key: not valid UTF-8"));
  EXPECT_THAT(ErrorOf("{\"name\": \"\xff\"}"), HasSubstr("UTF-8"));  // JSON's own check
  EXPECT_EQ(ErrorOf("name: \"caf\\303\\251 \\360\\237\\230\\200\""), "");  // é and an emoji
}

TEST(JobSpecTest, EnumNumbersWithoutAValueAreRejectedByName) {
  v1::JobSpec spec;
  spec.mutable_grpo()->set_kl_estimator(static_cast<v1::KlEstimator>(42));
  absl::StatusOr<v1::JobSpec> resolved = ResolveJobSpec(spec);
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(resolved.status().message()), HasSubstr("grpo.kl_estimator: 42"));
}

TEST(JobSpecTest, OutOfRangeValuesNameTheField) {
  EXPECT_THAT(ErrorOf(R"({"grpo": {"group_size": 1}})"), HasSubstr("grpo.group_size"));
  EXPECT_THAT(ErrorOf(R"({"grpo": {"epsilon_low": 1.5}})"), HasSubstr("grpo.epsilon_low"));
  EXPECT_THAT(ErrorOf(R"({"grpo": {"beta": -1}})"), HasSubstr("grpo.beta"));
  EXPECT_THAT(ErrorOf(R"({"sampling": {"top_p": 0}})"), HasSubstr("sampling.top_p"));
  EXPECT_THAT(ErrorOf(R"({"sampling": {"max_new_tokens": 100000}})"),
              HasSubstr("sampling.max_new_tokens"));
  EXPECT_THAT(ErrorOf(R"({"optimizer": {"learning_rate": 0}})"),
              HasSubstr("optimizer.learning_rate"));
  EXPECT_THAT(ErrorOf(R"({"rewards": [{"name": "nope", "weight": 1}]})"),
              HasSubstr("rewards[0].name"));
  EXPECT_THAT(ErrorOf(R"({"rewards": [{"name": "format", "weight": -1}]})"),
              HasSubstr("rewards[0].weight"));
  EXPECT_THAT(ErrorOf(R"({"rewards": [{"name": "reward_model", "weight": 1}]})"),
              HasSubstr("rewards[0].model_dir"));
  EXPECT_THAT(ErrorOf(R"({"rewards": [{"name": "overlong_penalty", "weight": 1}]})"),
              HasSubstr("rewards[0].params"));
  EXPECT_THAT(ErrorOf(R"({"rewards": [{"name": "format", "weight": 1, "params": {"x": 1}}]})"),
              HasSubstr("rewards[0].params"));
  EXPECT_EQ(ErrorOf(R"({"rewards": [{"name": "exact_answer", "weight": 1},
      {"name": "overlong_penalty", "weight": 1,
       "params": {"max_length": 48, "cache_length": 8}}]})"), "");
  EXPECT_THAT(ErrorOf(R"({"rewards": [{"name": "code_tests", "weight": 1,
      "params": {"wall_seconds": 3600}}]})"), HasSubstr("rewards[0].params: code_tests: wall_seconds"));
  EXPECT_THAT(ErrorOf(R"({"rewards": [{"name": "code_tests", "weight": 1, "params": {"gpu": 1}}]})"),
              HasSubstr("unknown parameter \"gpu\""));
  EXPECT_EQ(ErrorOf(R"({"dataset": {"kind": "code"}, "rewards": [{"name": "code_tests",
      "weight": 1, "params": {"wall_seconds": 2, "all_passed_bonus": 0.5}}]})"), "");
  EXPECT_THAT(ErrorOf(R"({"model": {"preset": "huge"}})"), HasSubstr("model.preset"));
  EXPECT_THAT(ErrorOf(R"({"model": {"n_heads": 3}})"), HasSubstr("model.n_heads"));
  EXPECT_THAT(ErrorOf(R"({"dataset": {"kind": "csv"}})"), HasSubstr("dataset.kind"));
  EXPECT_THAT(ErrorOf(R"({"dataset": {"kind": "jsonl"}})"), HasSubstr("dataset.train_path"));
  EXPECT_THAT(ErrorOf(R"({"eval": {"k": 0}})"), HasSubstr("eval.k"));
  EXPECT_THAT(ErrorOf(R"({"training": {"micro_batch_tokens": -1}})"),
              HasSubstr("training.micro_batch_tokens"));
  EXPECT_THAT(ErrorOf(R"({"training": {"logprob_chunk_positions": -8}})"),
              HasSubstr("training.logprob_chunk_positions"));
  EXPECT_THAT(ErrorOf(R"({"checkpoint_every_seconds": -1})"),
              HasSubstr("checkpoint_every_seconds"));
  EXPECT_THAT(ErrorOf(R"({"checkpoint_every_seconds": "NaN"})"),
              HasSubstr("checkpoint_every_seconds"));
  EXPECT_THAT(ErrorOf(R"({"grpo": {"advantage_estimator": "ADVANTAGE_ESTIMATOR_PROCESS"}})"),
              HasSubstr("step rewards"));
}

TEST(JobSpecTest, AHuggingFaceModelTakesItsShapeFromItsDirectory) {
  auto spec = ParseJobSpec("model { hf_dir: \"/models/qwen\" max_seq_len: 512 }\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto resolved = ResolveJobSpec(*spec);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_FALSE(resolved->model().has_preset()) << "config.json gives the shape";
  EXPECT_FALSE(resolved->model().has_d_model());
  EXPECT_EQ(resolved->model().max_seq_len(), 512);
  EXPECT_EQ(resolved->sft().steps(), 0) << "a pretrained model starts GRPO as it is";
  EXPECT_TRUE(ResolveJobSpec(*ParseJobSpec("model { hf_dir: \"/m\" }\nsft { steps: 5 }\n"))
                  .value()
                  .sft()
                  .steps() == 5);

  for (const auto& [text, field] : std::vector<std::pair<std::string, std::string>>{
           {"model { hf_dir: \"/m\" preset: \"tiny\" }", "model.preset"},
           {"model { hf_dir: \"/m\" d_model: 64 }", "model.d_model"},
           {"model { hf_dir: \"/m\" prompt_format: \"alpaca\" }", "model.prompt_format"},
           {"model { hf_dir: \"/m\" max_seq_len: 1 }", "model.max_seq_len"}}) {
    auto bad = ParseJobSpec(text);
    ASSERT_TRUE(bad.ok()) << text;
    absl::StatusOr<v1::JobSpec> refused = ResolveJobSpec(*bad);
    ASSERT_FALSE(refused.ok()) << text;
    EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr(field)) << text;
  }
  // Step rewards work with any tokenizer now (the rollout maps their byte offsets).
  auto steps = ParseJobSpec(
      "model { hf_dir: \"/m\" }\nrewards { name: \"arithmetic_steps\" weight: 1 }\n"
      "grpo { advantage_estimator: ADVANTAGE_ESTIMATOR_PROCESS }");
  ASSERT_TRUE(steps.ok());
  EXPECT_TRUE(ResolveJobSpec(*steps).ok());
}

TEST(JobSpecTest, FileLoadingNamesThePath) {
  const std::string path = testing::TempDir() + "/job_spec_test.json";
  std::ofstream(path) << R"({"grpo": {"nope": 1}})";
  auto spec = LoadJobSpecFile(path);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr(path));
  EXPECT_EQ(LoadJobSpecFile(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(JobSpecTest, ShippedExampleSpecsResolve) {
  for (const char* name : {"arithmetic_outcome.json", "arithmetic_process.json",
                           "arithmetic_rft.json", "code_tests.json", "dr_grpo.textproto",
                           "gspo.json", "ppo.json"}) {
    auto spec = LoadJobSpecFile(std::string(GRPO_SOURCE_DIR "/examples/") + name);
    ASSERT_TRUE(spec.ok()) << name << ": " << spec.status();
    auto resolved = ResolveJobSpec(*spec);
    EXPECT_TRUE(resolved.ok()) << name << ": " << resolved.status();
  }
}

TEST(JobSpecTest, JsonRoundTrip) {
  auto spec = ResolveJobSpec(v1::JobSpec());
  ASSERT_TRUE(spec.ok());
  auto again = ParseJobSpec(JobSpecToJson(*spec));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), spec->SerializeAsString());
}

}  // namespace
}  // namespace grpo

namespace grpo {
namespace {

// The data a job loads carries what its rewards read: answers for exact_answer, tests for
// code_tests; a mismatch is refused before anything trains, naming the source and example.
TEST(JobDataTest, ExamplesMustCarryWhatTheRewardsRead) {
  auto code = ResolveJobSpec(*ParseJobSpec(R"({"dataset": {"kind": "code"},
      "rewards": [{"name": "code_tests", "weight": 1}]})"));
  ASSERT_TRUE(code.ok()) << code.status();
  absl::StatusOr<JobData> data = LoadJobData(*code);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->train.size(), 39u);
  EXPECT_EQ(data->held_out.size(), 9u);

  v1::JobSpec answers = *code;
  answers.mutable_rewards(0)->set_name("exact_answer");
  EXPECT_THAT(std::string(LoadJobData(answers).status().message()),
              HasSubstr("dataset code: example 1 has no \"answer\", which the exact_answer"));

  const std::string path = testing::TempDir() + "/job_data_code.jsonl";
  std::ofstream(path) << "{\"prompt\": \"p\", \"tests\": {\"asserts\": [\"assert f()\"]}}\n"
                         "{\"prompt\": \"q\", \"answer\": \"4\"}\n";
  v1::JobSpec files = *code;
  files.mutable_dataset()->set_kind("jsonl");
  files.mutable_dataset()->set_train_path(path);
  absl::Status missing = LoadJobData(files).status();
  EXPECT_TRUE(absl::IsInvalidArgument(missing));
  EXPECT_THAT(std::string(missing.message()),
              HasSubstr("dataset.train_path " + path + ": example 2 has no \"tests\""));
}

}  // namespace
}  // namespace grpo
