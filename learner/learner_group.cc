#include "learner/learner_group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#if defined(GRPO_WITH_NCCL)
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "model/torch_status.h"

namespace grpo {

absl::StatusOr<LearnerGroupOptions> LearnerGroupOptionsFromEnvironment(
    LearnerGroupOptions o) {
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) o.master_addr = addr;
  for (auto [name, field, lo, hi] :
       {std::tuple<const char*, int*, int, int>{"MASTER_PORT", &o.master_port, 0, 65535},
        {"WORLD_SIZE", &o.world_size, 1, 65536},
        {"RANK", &o.rank, 0, 65535}}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    int parsed = 0;
    if (!absl::SimpleAtoi(value, &parsed) || parsed < lo || parsed > hi)
      return absl::InvalidArgumentError(
          absl::StrCat(name, "=\"", value, "\": must be an integer in [", lo, ", ", hi, "]"));
    *field = parsed;
  }
  if (o.rank >= o.world_size)
    return absl::InvalidArgumentError(
        absl::StrCat("RANK=", o.rank, " must be below WORLD_SIZE=", o.world_size));
  return o;
}

struct LearnerGroup::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;  // CPU tensors
#if defined(GRPO_WITH_NCCL)
  // CUDA tensors, when this LibTorch was built with CUDA and this host has a GPU: one
  // device per rank (rank modulo the local device count, as torchrun's LOCAL_RANK would).
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif

  // The collective for these tensors: NCCL for CUDA tensors, Gloo for the rest.
  template <typename Fn>
  void Run(const std::vector<at::Tensor>& tensors, Fn&& fn) {
#if defined(GRPO_WITH_NCCL)
    if (!tensors.empty() && tensors[0].is_cuda()) {
      TORCH_CHECK(nccl, "CUDA tensors, but no NCCL process group (no GPU at Join)");
      fn(*nccl);
      return;
    }
#endif
    (void)tensors;
    fn(*group);
  }
};

LearnerGroup::~LearnerGroup() = default;

absl::StatusOr<std::unique_ptr<LearnerGroup>> LearnerGroup::Join(
    const LearnerGroupOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", o.rank, " of world_size ", o.world_size, " is out of range"));
  if (o.master_port < 0 || o.master_port > 65535 || (o.master_port == 0 && o.rank != 0))
    return absl::InvalidArgumentError(
        absl::StrCat("master_port ", o.master_port, ": must be in [1, 65535] (0 only on rank 0)"));
  std::unique_ptr<LearnerGroup> g(new LearnerGroup);
  g->options_ = o;
  g->impl_ = std::make_unique<Impl>();
  absl::Status status = CatchTorch(
      absl::StrCat("joining the learner group at ", o.master_addr, ":", o.master_port), [&] {
        c10d::TCPStoreOptions store_options;
        store_options.port = static_cast<std::uint16_t>(o.master_port);
        store_options.isServer = o.rank == 0;
        store_options.numWorkers = o.world_size;
        store_options.waitWorkers = false;  // the process group's own barrier waits
        store_options.timeout = o.timeout;
        g->impl_->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
        g->port_ = g->impl_->store->getPort();
        if (o.rank == 0 && o.on_listening) o.on_listening(g->port_);
        auto options = c10d::ProcessGroupGloo::Options::create();
        options->timeout = o.timeout;
        // The device is this rank's own endpoint: loopback when the master is local (tests,
        // local mode), the interface GLOO_SOCKET_IFNAME names (as with PyTorch), or the
        // address this host's name resolves to.
        const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
        if (o.master_addr == "localhost" || absl::StartsWith(o.master_addr, "127.")) {
          options->devices.push_back(
              c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        } else if (ifname != nullptr && *ifname != '\0') {
          options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        } else {
          options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        g->impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
            g->impl_->store, o.rank, o.world_size, options);
#if defined(GRPO_WITH_NCCL)
        if (torch::cuda::is_available()) {
          const int device = o.cuda_device >= 0
                                 ? o.cuda_device
                                 : o.rank % static_cast<int>(torch::cuda::device_count());
          c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
          auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
          nccl_options->timeout = o.timeout;
          // Its own key space in the shared store, so its rendezvous keys never meet Gloo's.
          g->impl_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
              c10::make_intrusive<c10d::PrefixStore>("nccl", g->impl_->store), o.rank,
              o.world_size, nccl_options);
        }
#endif
      });
  if (!status.ok()) return absl::UnavailableError(status.message());
  return g;
}

absl::Status LearnerGroup::AllReduceSum(std::vector<at::Tensor>& tensors) {
  if (options_.world_size == 1 || tensors.empty()) return absl::OkStatus();
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = CatchTorch("all-reduce", [&] {
    // Consecutive tensors of one dtype and device share a flat bucket of at most
    // kBucketBytes (or one tensor, if larger): one collective per bucket, not per tensor,
    // and never a second copy of the whole model. On the tensors' own device, so CUDA
    // gradients reduce through NCCL without visiting the host.
    constexpr int64_t kBucketBytes = 64 << 20;
    size_t first = 0;
    while (first < tensors.size()) {
      size_t last = first + 1;
      int64_t bytes = tensors[first].numel() * tensors[first].element_size();
      while (last < tensors.size() &&
             tensors[last].scalar_type() == tensors[first].scalar_type() &&
             tensors[last].device() == tensors[first].device() &&
             bytes + tensors[last].numel() * tensors[last].element_size() <= kBucketBytes) {
        bytes += tensors[last].numel() * tensors[last].element_size();
        ++last;
      }
      std::vector<at::Tensor> views;
      for (size_t i = first; i < last; ++i) views.push_back(tensors[i].reshape({-1}));
      std::vector<at::Tensor> flat{at::cat(views)};
      impl_->Run(flat, [&](auto& group) { group.allreduce(flat)->wait(); });
      int64_t offset = 0;
      for (size_t i = first; i < last; ++i) {
        tensors[i].copy_(flat[0].narrow(0, offset, tensors[i].numel()).view(tensors[i].sizes()));
        offset += tensors[i].numel();
      }
      first = last;
    }
  });
  allreduce_seconds_ += SecondsSince(start);
  return status;
}

absl::Status LearnerGroup::Broadcast(std::vector<at::Tensor>& tensors, int root) {
  if (options_.world_size == 1 || tensors.empty()) return absl::OkStatus();
  if (root < 0 || root >= options_.world_size)
    return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " out of range"));
  return CatchTorch("broadcast", [&] {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    for (at::Tensor& t : tensors) {
      std::vector<at::Tensor> one{t};
      impl_->Run(one, [&](auto& group) { group.broadcast(one, options)->wait(); });
    }
  });
}

}  // namespace grpo
