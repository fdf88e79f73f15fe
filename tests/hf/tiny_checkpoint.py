#!/usr/bin/env python3
"""An independent writer and reference forward pass for Hugging Face decoder checkpoints.

Written against the published layouts, not our C++: it writes a tiny random checkpoint in
a family's exact tensor names (config.json + safetensors bytes laid out by hand) and the
logits its own PyTorch forward pass gives, and it reads a checkpoint (ours, written back)
with its own safetensors reader to check those logits again.

  tiny_checkpoint.py make FAMILY DIR [--vocab N] [--seed S] [--favor ID,ID,...]
      FAMILY: llama (Llama 3: untied, rotary scaling "llama3", F32),
              qwen2 (q/k/v biases, tied embeddings, BF16, two shards),
              qwen3 (q/k norms, head_dim != hidden/heads, untied, F16)
      writes DIR/config.json, the weights and DIR/reference.safetensors (input_ids as F32,
      logits F32). --favor gives those token ids a large logit offset, so that a random
      model samples mostly them, and in varied order, out of a real tokenizer's 150k-token
      vocabulary (what an end-to-end GRPO test needs for rewards that vary).
  tiny_checkpoint.py check DIR REFERENCE [--atol A]
      reads DIR's weights, runs the forward pass on REFERENCE's input_ids and exits 1 if
      any logit differs from REFERENCE's by more than A.

Needs python3-torch (Debian 12 packages it).
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
NAMES = {v: k for k, v in DTYPES.items()}


# --- safetensors, by hand ---------------------------------------------------------------
def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        # numpy has no bfloat16: reinterpret 2-byte types as int16 to get the raw bytes.
        raw = (t.view(torch.int16) if t.element_size() == 2 else t).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        raw = bytearray(body[begin:end])
        t = torch.frombuffer(raw, dtype=torch.int16 if dtype in (torch.float16, torch.bfloat16)
                             else dtype)
        out[name] = t.view(dtype).reshape(info["shape"]).clone()
    return out


def read_checkpoint(directory):
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    weights = {}
    for f in files:
        weights.update(read_safetensors(os.path.join(directory, f)))
    return json.load(open(os.path.join(directory, "config.json"))), weights


# --- the reference forward pass (float64) ------------------------------------------------
def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def inverse_frequencies(cfg, head_dim):
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) **
                 (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    scaling = cfg.get("rope_scaling")
    if not scaling:
        return inv
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    out = []
    for f in inv.tolist():
        wavelength = 2 * math.pi / f
        if wavelength < context / high:
            out.append(f)
        elif wavelength > context / low:
            out.append(f / factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return torch.tensor(out, dtype=torch.float64)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def forward(cfg, w, ids):
    w = {k: v.to(torch.float64) for k, v in w.items()}
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", cfg["hidden_size"] // heads)
    eps = cfg["rms_norm_eps"]
    batch, length = ids.shape
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inverse_frequencies(cfg, hd))
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos(), angles.sin()
    mask = torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)

        def project(name, n):
            y = h @ w[p + f"self_attn.{name}_proj.weight"].T
            if p + f"self_attn.{name}_proj.bias" in w:
                y = y + w[p + f"self_attn.{name}_proj.bias"]
            return y.view(batch, length, n, hd)

        q, k, v = project("q", heads), project("k", kv), project("v", kv)
        if p + "self_attn.q_norm.weight" in w:
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv, dim=1)
        v = v.repeat_interleave(heads // kv, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length, -1)
        x = x + attended @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


# --- the families -------------------------------------------------------------------------
def family_config(family, vocab):
    common = {"vocab_size": vocab, "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
              "hidden_act": "silu", "rms_norm_eps": 1e-6, "max_position_embeddings": 256,
              "bos_token_id": 1, "eos_token_id": 2}
    if family == "llama":
        return dict(common, architectures=["LlamaForCausalLM"], model_type="llama",
                    rope_theta=500000.0, tie_word_embeddings=False, attention_bias=False,
                    torch_dtype="float32",
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    if family == "qwen2":
        return dict(common, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                    rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                    torch_dtype="bfloat16")
    if family == "qwen3":
        return dict(common, architectures=["Qwen3ForCausalLM"], model_type="qwen3",
                    head_dim=32, rope_theta=1000000.0, tie_word_embeddings=False,
                    attention_bias=False, torch_dtype="float16")
    raise SystemExit(f"unknown family {family}")


def random_weights(cfg, gen):
    d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", d // heads)
    ffn, vocab = cfg["intermediate_size"], cfg["vocab_size"]

    def rand(*shape, std=0.08):
        return torch.randn(*shape, generator=gen) * std

    def norm(n):
        return 1.0 + rand(n, std=0.1)

    w = {"model.embed_tokens.weight": rand(vocab, d, std=0.5), "model.norm.weight": norm(d)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rand(vocab, d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        for name, rows in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd)):
            w[p + f"self_attn.{name}_proj.weight"] = rand(rows, d)
            if cfg["model_type"] == "qwen2":
                w[p + f"self_attn.{name}_proj.bias"] = rand(rows, std=0.2)
        if cfg["model_type"] == "qwen3":
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "self_attn.o_proj.weight"] = rand(d, heads * hd)
        w[p + "mlp.gate_proj.weight"] = rand(ffn, d)
        w[p + "mlp.up_proj.weight"] = rand(ffn, d)
        w[p + "mlp.down_proj.weight"] = rand(d, ffn)
    return w


def make(args):
    os.makedirs(args.dir, exist_ok=True)
    cfg = family_config(args.family, args.vocab)
    gen = torch.Generator().manual_seed(args.seed)
    stored = {"float32": torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16}[cfg["torch_dtype"]]
    weights = random_weights(cfg, gen)
    if args.favor:
        if cfg["tie_word_embeddings"]:
            raise SystemExit("--favor needs an untied LM head")
        ids = [int(i) for i in args.favor.split(",")]
        # A constant residual dimension acts as a bias: every embedding sets dimension 0,
        # no layer writes to it, and only the favoured LM head rows read it (~+17 against
        # log(150k) ~ 12 for the rest), with small random parts for variety (std ~2.4).
        weights["model.embed_tokens.weight"][:, 0] = 3.0
        for i in range(cfg["num_hidden_layers"]):
            weights[f"model.layers.{i}.self_attn.o_proj.weight"][0, :] = 0
            weights[f"model.layers.{i}.mlp.down_proj.weight"][0, :] = 0
        head = weights["lm_head.weight"]
        head[:, 0] = 0
        head[ids] = torch.randn(len(ids), cfg["hidden_size"], generator=gen) * 0.3
        head[ids, 0] = 3.5
    weights = {k: v.to(stored) for k, v in weights.items()}
    json.dump(cfg, open(os.path.join(args.dir, "config.json"), "w"), indent=2)
    if args.family == "qwen2":  # two shards and an index
        names = sorted(weights)
        halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        weight_map = {}
        for file, part in halves.items():
            write_safetensors(os.path.join(args.dir, file), {n: weights[n] for n in part})
            weight_map.update({n: file for n in part})
        json.dump({"metadata": {}, "weight_map": weight_map},
                  open(os.path.join(args.dir, "model.safetensors.index.json"), "w"), indent=2)
    else:
        write_safetensors(os.path.join(args.dir, "model.safetensors"), weights)
    # Longer than the llama family's original context (64): its rotary scaling keeps one
    # frequency (wavelength 6 < 64/4), blends one (33) and divides the rest (>= 169).
    ids = torch.randint(0, args.vocab, (2, 80), generator=gen)
    logits = forward(cfg, weights, ids)
    write_safetensors(os.path.join(args.dir, "reference.safetensors"),
                      {"input_ids": ids.to(torch.float32), "logits": logits.to(torch.float32)})
    print(f"{args.family}: {sum(v.numel() for v in weights.values())} parameters in {args.dir}")


def check(args):
    cfg, weights = read_checkpoint(args.dir)
    reference = read_safetensors(args.reference)
    logits = forward(cfg, weights, reference["input_ids"].to(torch.long))
    diff = (logits - reference["logits"].to(torch.float64)).abs().max().item()
    print(f"max |logit difference| = {diff:.3g} (tolerance {args.atol})")
    return 0 if diff <= args.atol else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("family", choices=["llama", "qwen2", "qwen3"])
    m.add_argument("dir")
    m.add_argument("--vocab", type=int, default=160)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--favor", default="")
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("reference")
    c.add_argument("--atol", type=float, default=1e-3)
    args = parser.parse_args()
    return make(args) if args.command == "make" else check(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
