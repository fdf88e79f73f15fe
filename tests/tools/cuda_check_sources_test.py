#!/usr/bin/env python3
"""The GPU check builds without CMake (a GPU machine has no CMake build of ours): torch_env.sh
compiles every source under the directories its ALL_SOURCES lists into one archive, and each
script links its program (build_main NAME "SOURCES") against it. A library source CMake
builds outside those directories would be missing there, and the link would fail on a
machine lent for minutes. This checks, on any machine, that every source of CMake's
libraries and service binaries lies where ALL_SOURCES looks, and that every source a script
hands build_main exists."""
import pathlib
import re
import sys
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "cuda_check"
# Built by CMake but not by the GPU check's archive: the generated protos come from DEPS/src,
# benches and tests are mains the scripts name themselves.
NOT_ARCHIVED = {"proto", "bench", "tests", "fuzz"}


def archive_directories():
    """The directories whose *.cc ALL_SOURCES globs (torch_env.sh)."""
    text = (CHECK / "torch_env.sh").read_text()
    body = re.search(r'ALL_SOURCES="(.*?)"\n', text, re.S)
    return set(re.findall(r"(\w+)/\*\.cc", body.group(1))) if body else set()


def cmake_sources():
    """Every .cc named in an add_library or add_executable call, as DIR/NAME.cc."""
    sources = set()
    for cmake in ROOT.glob("*/CMakeLists.txt"):
        folder = cmake.parent.name
        if folder in NOT_ARCHIVED:
            continue
        for call in re.findall(r"add_(?:library|executable)\(\s*\w+\s+([^)]*)\)",
                               cmake.read_text()):
            sources.update(f"{folder}/{s}" for s in call.split() if s.endswith(".cc"))
    return sources


def build_main_sources():
    """script name -> the source words of its build_main calls."""
    calls = {}
    for script in sorted(CHECK.glob("*.sh")):
        for _, words in re.findall(r'build_main\s+(\S+)\s+"?([^"\n|]*)"?', script.read_text()):
            calls.setdefault(script.name, []).extend(
                w for w in words.split() if w.endswith(".cc") or "${" in w)
    return calls


class CudaCheckSourcesTest(unittest.TestCase):
    def test_the_archive_globs_are_parsed(self):
        dirs = archive_directories()
        for expected in ("model", "learner", "rollout_worker", "hf"):
            self.assertIn(expected, dirs)

    def test_every_cmake_source_is_archived(self):
        sources = cmake_sources()
        for expected in ("model/model.cc", "learner/grpo_trainer.cc", "local/launcher.cc"):
            self.assertIn(expected, sources)
        dirs = archive_directories()
        missing = sorted(s for s in sources
                         if s.split("/")[0] not in dirs or s.count("/") != 1)
        self.assertEqual(missing, [], "torch_env.sh's ALL_SOURCES does not compile these")

    def test_every_build_main_source_exists(self):
        calls = build_main_sources()
        # run.sh, trainer_check.sh, learner_bench.sh, hf_bench.sh, rollout_bench.sh, e2e_job.sh
        self.assertGreaterEqual(len(calls), 6, sorted(calls))
        for script, words in calls.items():
            for word in words:
                if "${" in word:  # e2e_job.sh's loop: its mains are checked below
                    continue
                self.assertTrue((ROOT / word).is_file(), f"{script}: {word} does not exist")
        e2e = (CHECK / "e2e_job.sh").read_text()
        for main in re.findall(r"(\w+/\w+\.cc):grpo_\w+", e2e):
            self.assertTrue((ROOT / main).is_file(), main)

    def test_no_script_keeps_a_source_list(self):
        for script in CHECK.glob("*.sh"):
            text = script.read_text()
            for gone in ("MODEL_SOURCES", "TRAINER_SOURCES", "build_sources", "build_with_trainer"):
                self.assertNotIn(gone, text, f"{script.name} uses {gone}")


if __name__ == "__main__":
    sys.exit(unittest.main())
