// CodeTask: the built-in code-generation task (docs/design.md §4), for code_tests
// (rewards/code_tests.h). 48 small Python problems from six families, each a one-line
// specification as the prompt, a reference solution for the SFT warm-up, and tests:
//
//   prompt   "f(x): x times 3 plus 2\n"
//   solution "def f(x):\n    return x*3+2\n"
//   tests    assert f(0) == 2 / assert f(4) == 14 / assert f(-3) == -7
//
// One family reads stdin and is tested with stdin/stdout cases instead of asserts. The
// problems are written for a tiny character-level policy: short, plain ASCII, and a
// completion is the program itself (no code fence). Each family takes a parameter a in
// 2..9; a problem is held out iff (a + family index) % 5 == 0, so every family has held-out
// problems whose parameter the model has only seen in other families. Deterministic;
// pure functions.
#ifndef GRPO_DATA_CODE_TASK_H_
#define GRPO_DATA_CODE_TASK_H_

#include <vector>

#include "data/dataset.h"

namespace grpo {

// Every problem, train and held-out, in a fixed order.
std::vector<Example> CodeProblems();
std::vector<Example> CodeTrainSet();
std::vector<Example> CodeHeldOutSet();

}  // namespace grpo

#endif  // GRPO_DATA_CODE_TASK_H_
