// Small model shapes for tests: fast to run, big enough to exercise every code path.
#ifndef GRPO_TESTS_TESTING_SMALL_MODEL_H_
#define GRPO_TESTS_TESTING_SMALL_MODEL_H_

#include "model/model_config.h"

namespace grpo::testing_util {

struct Shape {
  int d_model;
  int n_layers;
  int n_heads;
  int n_kv_heads;  // < n_heads exercises grouped-query attention
  int ffn_hidden;
  int vocab_size = 128;
  int max_seq_len = 256;
  bool tie_embeddings = true;
};

inline ModelConfig SmallModel(const Shape& s) {
  ModelConfig c;
  c.d_model = s.d_model;
  c.n_layers = s.n_layers;
  c.n_heads = s.n_heads;
  c.n_kv_heads = s.n_kv_heads;
  c.ffn_hidden = s.ffn_hidden;
  c.vocab_size = s.vocab_size;
  c.max_seq_len = s.max_seq_len;
  c.tie_embeddings = s.tie_embeddings;
  return c;
}

}  // namespace grpo::testing_util

#endif  // GRPO_TESTS_TESTING_SMALL_MODEL_H_
