#!/usr/bin/env python3
"""The GPU check's scripts compile explicit source lists (a GPU machine has no CMake
build of ours), so a source the model library gains must be added to torch_env.sh's
MODEL_SOURCES, and every list that compiles the model must take that list, or the link
fails there, on a machine lent for minutes. This checks, on any machine, that every list
holding model/model.cc or $MODEL_SOURCES holds (once expanded) every source CMake builds
into the model libraries, and the generated weights.pb.cc their flat weights need."""
import pathlib
import re
import sys
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "cuda_check"


def model_sources():
    """Every .cc of the add_library calls in model/CMakeLists.txt, as model/NAME.cc."""
    text = (ROOT / "model" / "CMakeLists.txt").read_text()
    sources = set()
    for call in re.findall(r"add_library\(\s*\w+\s+([^)]*)\)", text):
        sources.update("model/" + s for s in call.split() if s.endswith(".cc"))
    return sources


def source_lists():
    """Each quoted source list in the scripts that compiles the model (model/model.cc, or
    $MODEL_SOURCES expanded from torch_env.sh): name -> words."""
    assignments = {}
    for script in sorted(CHECK.glob("*.sh")):
        for var, body in re.findall(r'(\w+)="([^"]*)"', script.read_text()):
            assignments[f"{script.name}:{var}"] = body.split()
    model = assignments.get("torch_env.sh:MODEL_SOURCES", [])
    lists = {}
    for name, words in assignments.items():
        if "$MODEL_SOURCES" in words:
            words = [w for w in words if w != "$MODEL_SOURCES"] + model
        if "model/model.cc" in words:
            lists[name] = set(words)
    return lists


class CudaCheckSourcesTest(unittest.TestCase):
    def test_model_libraries_are_parsed(self):
        sources = model_sources()
        for expected in ("model/model.cc", "model/flat_weights.cc", "model/sampler.cc"):
            self.assertIn(expected, sources)

    def test_every_list_has_every_model_source(self):
        lists = source_lists()
        # torch_env.sh (the model's and the trainer's lists), hf_bench.sh, rollout_bench.sh.
        self.assertGreaterEqual(len(lists), 4, sorted(lists))
        # weight_transfer.cc is the learner/worker framing; the model itself does not use it.
        required = model_sources() - {"model/weight_transfer.cc"}
        for name, words in lists.items():
            missing = sorted(required - words)
            self.assertEqual(missing, [], f"{name} lacks {missing}")
            self.assertTrue(any(w.endswith("weights.pb.cc") for w in words),
                            f"{name} lacks $DEPS/src/weights.pb.cc")


if __name__ == "__main__":
    sys.exit(unittest.main())
