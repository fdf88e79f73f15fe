// CatchTorch: the one place LibTorch exceptions become absl::Status (docs/design.md §7), so no
// exception crosses a component boundary. Header-only and torch-light: c10::Error is the
// base of every LibTorch error.
#ifndef GRPO_MODEL_TORCH_STATUS_H_
#define GRPO_MODEL_TORCH_STATUS_H_

#include <c10/util/Exception.h>

#include <exception>
#include <new>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace grpo {

// Runs fn(); a LibTorch or std exception becomes INTERNAL "<what>: <message>", but out of
// memory (a device's or the host's) RESOURCE_EXHAUSTED: a condition of the moment, which
// a caller may wait out or retry rather than treat as a fault of its input.
template <typename Fn>
absl::Status CatchTorch(const std::string& what, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return absl::OkStatus();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory (", e.what(), ")"));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace grpo

#endif  // GRPO_MODEL_TORCH_STATUS_H_
