// DecodeStatic: the sampler's decode loop for GPUs (docs/design.md §4). Every tensor one
// token's step touches has a fixed shape (the batch's rows and the cache's capacity), the
// cache slot and output column are device tensors the step advances itself, and the draw
// is an exponential race over noise drawn just before it, so the step (decode, LM head,
// choice, bookkeeping) reads nothing back to the host. On a GPU (SamplingOptions::
// cuda_graphs, in a build with GRPO_WITH_CUDA) it is captured once per batch size as a
// CUDA graph and replayed: one launch a token instead of hundreds. Elsewhere the same
// operations run eagerly, which is how the CPU tests check what the GPU runs.
//
// The host looks at the finished flags every sync_every tokens: to stop once every row
// is done, and to compact the batch once a quarter of it is: the unfinished rows move to
// the front of the same tensors (a captured graph reads fixed addresses), and with graphs
// the batch is rounded up to a multiple of 8 rows so that few sizes are ever captured.
#ifndef GRPO_MODEL_STATIC_DECODE_H_
#define GRPO_MODEL_STATIC_DECODE_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "model/model.h"
#include "model/sampler.h"

namespace grpo {

// `cache`: made zeroed, prefilled up to slot r->prompt_length for every row of r;
// `logits`: float32 [N, V], each row's after its prompt. Fills r's completion columns
// (tokens, is_pad, logprobs, completion_mask) and returns how many columns any row
// reached. LibTorch errors are thrown (Sample catches them).
int64_t DecodeStatic(const Transformer& model, KvCache* cache, const at::Tensor& logits,
                     const SamplingOptions& options, at::Generator& gen, SampleResult* r);

// Whether this build can capture CUDA graphs (built with GRPO_WITH_CUDA: a CUDA LibTorch).
// Without, cuda_graphs is ignored and a GPU runs the static steps eagerly.
bool CudaGraphsCompiledIn();

}  // namespace grpo

#endif  // GRPO_MODEL_STATIC_DECODE_H_
