#include "data/code_task.h"

#include <algorithm>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace grpo {
namespace {

// A family makes problem `a`; tests are computed here in C++ so a wrong reference
// solution fails its own tests (code_task_test runs them).
struct Family {
  Example (*make)(int a);
};

void Assert(Example* e, const std::string& call, const std::string& expected) {
  e->tests.add_asserts(absl::StrCat("assert ", call, " == ", expected));
}

std::string PyList(const std::vector<int>& xs) {
  return absl::StrCat("[", absl::StrJoin(xs, ", "), "]");
}

Example Linear(int a) {
  const int b = a - 1;
  Example e;
  e.prompt = absl::StrCat("f(x): x times ", a, " plus ", b, "\n");
  e.solution = absl::StrCat("def f(x):\n    return x*", a, "+", b, "\n");
  for (int x : {0, 4, -3}) Assert(&e, absl::StrCat("f(", x, ")"), absl::StrCat(x * a + b));
  return e;
}

Example SumAbove(int a) {
  Example e;
  e.prompt = absl::StrCat("f(xs): sum of items above ", a, "\n");
  e.solution = absl::StrCat("def f(xs):\n    return sum(v for v in xs if v>", a, ")\n");
  for (const std::vector<int>& xs :
       {std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {a, a + 1, a + 5}, {}}) {
    int sum = 0;
    for (int v : xs) sum += v > a ? v : 0;
    Assert(&e, absl::StrCat("f(", PyList(xs), ")"), absl::StrCat(sum));
  }
  return e;
}

Example Repeat(int a) {
  Example e;
  e.prompt = absl::StrCat("f(s): s repeated ", a, " times\n");
  e.solution = absl::StrCat("def f(s):\n    return s*", a, "\n");
  for (const std::string s : {"ab", "x", ""}) {
    std::string repeated;
    for (int i = 0; i < a; ++i) repeated += s;
    Assert(&e, absl::StrCat("f('", s, "')"), absl::StrCat("'", repeated, "'"));
  }
  return e;
}

Example Count(int a) {
  Example e;
  e.prompt = absl::StrCat("f(xs): how many items equal ", a, "\n");
  e.solution = absl::StrCat("def f(xs):\n    return xs.count(", a, ")\n");
  for (const std::vector<int>& xs : {std::vector<int>{a, 1, a, a + 1, a}, {a + 1}, {}}) {
    int count = 0;
    for (int v : xs) count += v == a;
    Assert(&e, absl::StrCat("f(", PyList(xs), ")"), absl::StrCat(count));
  }
  return e;
}

Example MaxPlus(int a) {
  Example e;
  e.prompt = absl::StrCat("f(xs): largest item plus ", a, "\n");
  e.solution = absl::StrCat("def f(xs):\n    return max(xs)+", a, "\n");
  for (const std::vector<int>& xs : {std::vector<int>{3, 9, 4}, {-5, -2}, {7}}) {
    int largest = xs[0];
    for (int v : xs) largest = std::max(largest, v);
    Assert(&e, absl::StrCat("f(", PyList(xs), ")"), absl::StrCat(largest + a));
  }
  return e;
}

Example StdinSum(int a) {
  Example e;
  e.prompt = absl::StrCat("stdin: print the sum of the numbers times ", a, "\n");
  e.solution = absl::StrCat("print(sum(map(int, input().split()))*", a, ")\n");
  for (const std::vector<int>& xs : {std::vector<int>{1, 2, 3}, {5}, {-4, 4, 10}}) {
    int sum = 0;
    for (int v : xs) sum += v;
    v1::CodeTestCase* c = e.tests.add_cases();
    c->set_input(absl::StrCat(absl::StrJoin(xs, " "), "\n"));
    c->set_output(absl::StrCat(sum * a));
  }
  return e;
}

constexpr Family kFamilies[] = {{&Linear}, {&SumAbove}, {&Repeat},
                                {&Count},  {&MaxPlus},  {&StdinSum}};

bool HeldOut(int family, int a) { return (a + family) % 5 == 0; }

std::vector<Example> Select(int want_held_out) {
  std::vector<Example> out;
  for (int f = 0; f < static_cast<int>(std::size(kFamilies)); ++f)
    for (int a = 2; a <= 9; ++a)
      if (want_held_out < 0 || HeldOut(f, a) == (want_held_out == 1))
        out.push_back(kFamilies[f].make(a));
  return out;
}

}  // namespace

std::vector<Example> CodeProblems() { return Select(-1); }
std::vector<Example> CodeTrainSet() { return Select(0); }
std::vector<Example> CodeHeldOutSet() { return Select(1); }

}  // namespace grpo
