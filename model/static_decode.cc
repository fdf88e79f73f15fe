#include "model/static_decode.h"

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "model/token_choice.h"

#ifdef GRPO_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace grpo {
namespace {

// What one token's step reads and writes, on the model's device. Every tensor has a row
// for each of the N rows sampled; the first `rows` of them are the batch.
struct StepState {
  at::Tensor tokens, logprobs, active;  // [N, M]: int64, float32, bool
  at::Tensor finished;                  // bool [N]
  at::Tensor fed, fed_pad;              // int64, bool [N, 1]: what each row decodes next
  at::Tensor noise;                     // float32 [N, V]: Exp(1) draws; sampling only
  at::Tensor column, slot;              // int64 [1]: the output column, the cache slot
};

// Runs a step for a batch size: eagerly, or (CUDA graphs) by replaying that size's
// graph, captured the first time the size comes. Graphs share one memory pool: they are
// replayed one at a time.
class StepRunner {
 public:
  StepRunner(bool graphs, c10::Device device) : graphs_(graphs), device_(device) {}
  StepRunner(const StepRunner&) = delete;
  StepRunner& operator=(const StepRunner&) = delete;

  void Run([[maybe_unused]] int64_t rows, const std::function<void()>& step) {
#ifdef GRPO_WITH_CUDA
    if (graphs_) {
      auto it = graphs_by_rows_.find(rows);
      if (it != graphs_by_rows_.end()) {
        it->second->replay();
        return;
      }
      Capture(rows, step);
      return;
    }
#endif
    step();
  }

 private:
#ifdef GRPO_WITH_CUDA
  // The first step of a size runs eagerly on a side stream (lazy set-up such as cuBLAS
  // workspaces must not happen inside a capture) and is this token's real step; the
  // capture after it records the same operations without running them. Stream and
  // capture on the model's own GPU (DecodeStatic makes it current): on another, the
  // model's operations would run rather than be recorded, and the graph stay empty.
  void Capture(int64_t rows, const std::function<void()>& step) {
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    c10::cuda::device_synchronize();
    {
      c10::cuda::CUDAStreamGuard side(
          c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device_.index()));
      step();
      c10::cuda::getCurrentCUDAStream().synchronize();
      if (graphs_by_rows_.empty()) {
        graph->capture_begin();
      } else {
        graph->capture_begin(graphs_by_rows_.begin()->second->pool());
      }
      try {
        step();
      } catch (...) {
        // The capture ends whatever happens: left open, it would hold the stream in
        // capture mode and the allocator on the graph's pool, failing every later step.
        try {
          graph->capture_end();
        } catch (...) {
        }
        throw;
      }
      graph->capture_end();
    }
    graphs_by_rows_.emplace(rows, std::move(graph));
  }
  std::map<int64_t, std::unique_ptr<at::cuda::CUDAGraph>> graphs_by_rows_;
#endif
  const bool graphs_;
  [[maybe_unused]] const c10::Device device_;
};

class StaticLoop {
 public:
  StaticLoop(const Transformer& model, KvCache* cache, const SamplingOptions& o,
             at::Generator& gen, SampleResult* r, int64_t vocab)
      : model_(model), cache_(cache), o_(o), gen_(gen), r_(r),
        device_(model.tensor_options().device()),
        graphs_(o.cuda_graphs && device_.is_cuda()),
        runner_(graphs_, device_) {
    const int64_t n = r->tokens.size(0), m = o.max_new_tokens;
    const at::TensorOptions on = at::TensorOptions().device(device_);
    s_.tokens = at::full({n, m}, o.pad_token, on.dtype(at::kLong));
    s_.logprobs = at::zeros({n, m}, on.dtype(at::kFloat));
    s_.active = at::zeros({n, m}, on.dtype(at::kBool));
    s_.finished = at::zeros({n}, on.dtype(at::kBool));
    s_.fed = at::full({n, 1}, o.pad_token, on.dtype(at::kLong));
    s_.fed_pad = at::zeros({n, 1}, on.dtype(at::kBool));
    if (o.temperature > 0) s_.noise = at::empty({n, vocab}, on.dtype(at::kFloat));
    s_.column = at::zeros({1}, on.dtype(at::kLong));
    s_.slot = at::full({1}, r->prompt_length, on.dtype(at::kLong));
    rows_ = at::arange(n, at::kLong);
    batch_ = n;
  }

  int64_t Run(const at::Tensor& prompt_logits) {
    DrawNoise();
    Record(prompt_logits, batch_);
    for (int64_t step = 1; step < o_.max_new_tokens; ++step) {
      if (step % o_.sync_every == 0 && !LookAtFinishedRows()) break;
      DrawNoise();
      const int64_t b = batch_;
      runner_.Run(b, [this, b] { Advance(b); });
    }
    Flush(at::arange(batch_, at::kLong));
    const at::Tensor reached = r_->completion_mask.sum(0).nonzero();
    return reached.size(0) == 0 ? 0 : reached.max().item<int64_t>() + 1;
  }

 private:
  at::Tensor Rows(const at::Tensor& t, int64_t b) const { return t.narrow(0, 0, b); }

  // Exp(1) noise for the exponential race: argmax(p / E) draws index i with probability
  // p_i. Floored above 0 so that a zero-probability id can never win by 0 / 0.
  void DrawNoise() {
    if (!s_.noise.defined()) return;
    Rows(s_.noise, batch_).exponential_(1.0, gen_).clamp_min_(1e-30);
  }

  // The token after `logits` for the first b rows, written at the current column.
  void Record(const at::Tensor& logits, int64_t b) {
    const TokenDraw race = [this, b](const at::Tensor& probs) {
      return (probs / Rows(s_.noise, b)).argmax(-1, /*keepdim=*/true);
    };
    auto [next, logprob] = ChooseTokens(logits, o_, race);
    at::Tensor finished = Rows(s_.finished, b);
    const at::Tensor active = finished.logical_not();
    Rows(s_.tokens, b)
        .index_copy_(1, s_.column, at::where(active, next, o_.pad_token).view({b, 1}));
    Rows(s_.logprobs, b).index_copy_(1, s_.column, at::where(active, logprob, 0.0).view({b, 1}));
    Rows(s_.active, b).index_copy_(1, s_.column, active.view({b, 1}));
    finished.logical_or_(next == o_.stop_token);
    Rows(s_.fed, b).copy_(at::where(finished, o_.pad_token, next).view({b, 1}));
    Rows(s_.fed_pad, b).copy_(finished.view({b, 1}));
    s_.column.add_(1);
  }

  // One token: the fed tokens through the model at the current slot, then Record. What a
  // CUDA graph captures: no host read, every shape fixed by b and the cache.
  void Advance(int64_t b) {
    at::Tensor hidden = model_.DecodeAt(Rows(s_.fed, b), Rows(s_.fed_pad, b), s_.slot, cache_);
    s_.slot.add_(1);
    Record(model_.Logits(hidden.select(1, 0)).to(at::kFloat), b);
  }

  // The host's look (a synchronisation): false once every row is done; compacts the batch
  // once a quarter of it is.
  bool LookAtFinishedRows() {
    const at::Tensor finished = Rows(s_.finished, batch_).to(at::kCPU);
    const int64_t done = finished.sum().item<int64_t>();
    if (done == batch_) return false;
    if (!o_.compact_finished || done == 0 || 4 * done < batch_) return true;
    at::Tensor keep = finished.logical_not().nonzero().squeeze(1);
    const at::Tensor done_rows = finished.nonzero().squeeze(1);
    int64_t filler = 0;
    if (graphs_) {
      // Rounded up to a multiple of 8 with finished rows: fewer sizes to capture.
      const int64_t target = std::min(batch_, (keep.size(0) + 7) / 8 * 8);
      if (target == batch_) return true;  // no smaller size to move to
      filler = target - keep.size(0);
      keep = at::cat({keep, done_rows.narrow(0, 0, filler)});
    }
    // The rows that leave, with their columns; the kept ones carry theirs along.
    Flush(done_rows.narrow(0, filler, done - filler));
    const at::Tensor on_device = keep.to(device_);
    const int64_t kept = keep.size(0);
    for (at::Tensor* t : {&s_.tokens, &s_.logprobs, &s_.active, &s_.finished, &s_.fed,
                          &s_.fed_pad})
      Rows(*t, kept).copy_(t->index_select(0, on_device));
    cache_->CompactRows(on_device);
    rows_ = rows_.index_select(0, keep);
    batch_ = kept;
    return true;
  }

  // The columns of `batch_rows` (int64, CPU) into r, at their original rows.
  void Flush(const at::Tensor& batch_rows) {
    const int64_t p = r_->prompt_length, m = o_.max_new_tokens;
    const at::Tensor on_device = batch_rows.to(device_);
    const at::Tensor original = rows_.index_select(0, batch_rows);
    auto take = [&](const at::Tensor& t) { return t.index_select(0, on_device).to(at::kCPU); };
    const at::Tensor active = take(s_.active);
    r_->tokens.narrow(1, p, m).index_copy_(0, original, take(s_.tokens));
    r_->is_pad.narrow(1, p, m).index_copy_(0, original, active.logical_not());
    r_->logprobs.index_copy_(0, original, take(s_.logprobs));
    r_->completion_mask.index_copy_(0, original, active.to(at::kFloat));
  }

  const Transformer& model_;
  KvCache* cache_;
  const SamplingOptions& o_;
  at::Generator& gen_;
  SampleResult* r_;
  const c10::Device device_;
  const bool graphs_;  // CUDA graphs asked for, on a GPU
  StepRunner runner_;
  StepState s_;
  at::Tensor rows_;  // int64 [batch_] on the CPU: the original row of each batch row
  int64_t batch_ = 0;
};

}  // namespace

int64_t DecodeStatic(const Transformer& model, KvCache* cache, const at::Tensor& logits,
                     const SamplingOptions& options, at::Generator& gen, SampleResult* r) {
#ifdef GRPO_WITH_CUDA
  // The model's GPU current for the whole loop (streams, syncs and graph captures take
  // the current device; a worker on cuda:1 would otherwise capture on cuda:0).
  std::optional<c10::cuda::CUDAGuard> on_model_device;
  if (logits.is_cuda()) on_model_device.emplace(logits.device().index());
#endif
  StaticLoop loop(model, cache, options, gen, r, logits.size(-1));
  return loop.Run(logits);
}

bool CudaGraphsCompiledIn() {
#ifdef GRPO_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace grpo
