#!/usr/bin/env python3
"""Training-step speed of PyTorch + peft LoRA, optionally against a `kiln train` command, in one run.

PyTorch side: `AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=float32)` wrapped by
`peft.get_peft_model` with `LoraConfig(r, lora_alpha, target_modules, lora_dropout=0)`, in train
mode, `torch.set_num_threads(--threads)`; one step is `loss = model(input_ids=x, labels=x).loss;
loss.backward(); AdamW.step(); zero_grad()` on `--batch` sequences of `--seq-len` token ids (the
same LCG walk as `kiln bench`, runtime/src/cli/bench.rs). After `--warmup` untimed steps, `--steps`
steps are timed one by one; tokens/s is batch * seq_len over the median step time.

Kiln side (`--kiln "COMMAND"`): the command runs with RAYON_NUM_THREADS=--threads and must print a
line `train: N tokens/s` (what `kiln train` prints when it finishes: the tokens of its steps over
the time spent in them, validation and saving excluded). The script then prints Kiln's tokens/s
as a ratio of PyTorch's. Give the kiln command the same shape (--seq-len, --batch, --lora-r,
--lora-alpha, --targets) yourself.

The issue's comparison: the 169M RWKV-4 shape, sequence 128, targets key,value,receptance, r = 8:

    kiln init models/rwkv4.toml --config benches/configs/rwkv4-169m.json --out /tmp/rwkv4-169m
    python benches/train_compare.py /tmp/rwkv4-169m --threads 2 \
        --kiln "target/release/kiln train /tmp/rwkv4-169m --data runtime/assets/tinyshakespeare.txt \
                --lora-r 8 --lora-alpha 16 --targets key,value,receptance --seq-len 128 --batch 1 \
                --steps 8 --warmup 0 --val-every 0 --save-every 0 --out /tmp/kiln-train-bench --force"

Run it on a quiet machine: PyTorch's OpenMP threads spin at barriers, and with other work on the
cores its steps were seen to take ten times as long (the script warns when the load average exceeds
the thread count). Developer-only: needs torch, transformers and peft (never run in CI).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

KILN_LINE = re.compile(r"^train: ([0-9]+(?:\.[0-9]+)?) tokens/s$", re.MULTILINE)


def bench_token(n: int, vocab: int) -> int:
    """The n-th benchmark token id: the same LCG walk as `kiln bench` (runtime/src/cli/bench.rs)."""
    x = (n * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    return (x >> 33) % max(vocab, 1)


def torch_tokens_per_s(args: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(args.model_dir), dtype=torch.float32)
    config = LoraConfig(
        r=args.r, lora_alpha=args.alpha, target_modules=args.targets.split(","), lora_dropout=0.0, bias="none"
    )
    model = get_peft_model(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    vocab = model.config.vocab_size
    n = args.batch * args.seq_len
    ids = torch.tensor([bench_token(i, vocab) for i in range(n)], dtype=torch.long).view(args.batch, args.seq_len)

    def step() -> float:
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    median = statistics.median(times)
    return {
        "tokens_per_s": n / median,
        "median_s": median,
        "min_s": min(times),
        "trainable": sum(p.numel() for p in trainable),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def kiln_tokens_per_s(command: str, threads: int) -> float:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    done = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the kiln command failed ({done.returncode}):\n{done.stderr.strip()}")
    found = KILN_LINE.findall(done.stdout)
    if not found:
        sys.exit(f"the kiln command printed no `train: N tokens/s` line:\n{done.stdout.strip()}")
    return float(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a model directory (config.json + model.safetensors)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="key,value,receptance")
    parser.add_argument("--kiln", metavar="COMMAND", help="a kiln train command line that prints `train: N tokens/s`")
    args = parser.parse_args()

    torch = torch_tokens_per_s(args)
    print(
        f"torch+peft: {torch['tokens_per_s']:.1f} tokens/s (median step {torch['median_s']:.3f} s, fastest "
        f"{torch['min_s']:.3f} s, over {args.steps} steps; batch {args.batch} x {args.seq_len} tokens; "
        f"{torch['trainable']} LoRA parameters; {torch['threads']} threads; peak RSS {torch['peak_rss_mib']:.0f} MiB)"
    )
    # PyTorch's OpenMP threads spin at barriers: with other work on the cores a step can take ten
    # times as long, so say how busy the machine was.
    load = os.getloadavg()[0]
    if load > args.threads + 0.5:
        print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: other work is running, the numbers are not reliable")
    if args.kiln:
        kiln = kiln_tokens_per_s(args.kiln, args.threads)
        print(f"kiln: {kiln:.1f} tokens/s")
        print(f"kiln / torch+peft: {kiln / torch['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
