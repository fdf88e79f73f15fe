#!/usr/bin/env python3
"""scripts/compare_methods.py end to end at toy scale: every method for two seeds from
each seed's SFT policy, the table's rows and cells, the PNG, results.json and the run
directories; bad arguments are refused naming the flag, and nothing is written."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "compare_methods.py")
GRPO_LOCAL = sys.argv.pop(1)
TOY = json.dumps({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2,
                            "ffn_hidden": 48},
                  "grpo": {"group_size": 4, "prompts_per_step": 2},
                  "sampling": {"max_new_tokens": 16}, "eval": {"k": 2}})


def read(path):
    with open(path) as f:
        return f.read()


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, "--grpo_local", GRPO_LOCAL, *args],
                          capture_output=True, text=True, timeout=600)


class CompareMethodsTest(unittest.TestCase):
    def test_every_method_for_two_seeds(self):
        with tempfile.TemporaryDirectory() as out:
            result = run("--seeds", "2", "--steps", "2", "--eval_prompts", "4",
                         "--sft_steps", "5", "--threads", "1", "--override", TOY,
                         "--out_dir", out)
            self.assertEqual(result.returncode, 0, result.stderr)
            table = read(os.path.join(out, "table.md")).splitlines()
            self.assertEqual(table[0].split("|")[2].strip(), "pass@1")
            labels = [row.split("|")[1].strip() for row in table[2:]]
            self.assertEqual(labels, ["SFT only", "Online RFT", "GRPO, outcome supervision",
                                      "GRPO, process supervision", "PPO (learned critic)",
                                      "GSPO"])
            for row in table[2:]:
                self.assertRegex(row, r"\d\.\d{3} ± \d\.\d{3}")
            with open(os.path.join(out, "figure.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            results = json.loads(read(os.path.join(out, "results.json")))
            for key in ("rft", "grpo_outcome", "grpo_process", "ppo", "gspo"):
                runs = results["runs"][key]
                self.assertEqual([r["seed"] for r in runs], [1, 2])
                for r in runs:
                    self.assertEqual(len(r["rewards"]), 2)
                    self.assertGreater(r["peak_rss_mb"], 0)
            for seed in (1, 2):
                for key in ("sft", "rft", "ppo"):
                    self.assertTrue(os.path.exists(
                        os.path.join(out, f"seed-{seed}", key, "eval.json")), (seed, key))
                # Every method started from that seed's SFT policy, and the PPO run is PPO.
                ppo = json.loads(read(os.path.join(out, f"seed-{seed}", "ppo", "spec.json")))
                self.assertEqual(ppo["algorithm"], "ALGORITHM_PPO")
                self.assertTrue(ppo["model"]["init_checkpoint"].endswith(
                    f"seed-{seed}/sft/step-0"))
                metrics = read(os.path.join(out, f"seed-{seed}", "ppo", "metrics.jsonl"))
                self.assertIn('"explained_variance"', metrics)

    def test_bad_arguments_name_the_flag_and_write_nothing(self):
        with tempfile.TemporaryDirectory() as parent:
            out = os.path.join(parent, "out")
            for args, flag in ((["--methods", "grpo_outcome,dpo"], "--methods"),
                               (["--override", "{not json"], "--override"),
                               (["--seeds", "0"], "--seeds")):
                result = run(*args, "--out_dir", out)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(flag, result.stderr)
                self.assertFalse(os.path.exists(out))


if __name__ == "__main__":
    unittest.main()
