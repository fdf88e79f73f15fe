#include "core/runtime.h"

#include <ATen/Parallel.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace grpo {

void EnsurePassiveOpenMp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "warning: could not re-exec with OMP_WAIT_POLICY=PASSIVE (%s); "
               "OpenMP threads will spin and slow decoding\n", std::strerror(errno));
}

int ConfigureRuntime(int threads) {
  // Activations of a training step are MBs each: with glibc's default dynamic mmap
  // threshold every such tensor is a fresh mmap whose pages fault in on first touch.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (threads <= 0) threads = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  if (threads <= 0) threads = 1;
  at::set_num_threads(threads);
  return at::get_num_threads();
}

}  // namespace grpo
