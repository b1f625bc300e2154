#!/usr/bin/env python3
"""Kiln against PyTorch (transformers) on the same model directories, in one run.

For each MODEL_DIR (e.g. written by `kiln init SPEC --config benches/configs/X.json --out DIR`):

1. transformers, in a child process of its own (so its peak RSS is its own):
   `AutoModelForCausalLM.from_pretrained(DIR, dtype=float32).eval()`, `torch.set_num_threads(N)`,
   under `torch.inference_mode()`;
   - prefill: one call over `--prefill` tokens with `use_cache=True`, median of `--reps`;
   - decode: from that call's state, `--warmup` untimed then `--decode` timed one-token calls,
     carrying RWKV's `state=` or Mamba/Mamba2's `cache_params=`; median of `--reps`;
2. `kiln bench DIR --json --backend B` with the same token ids, counts and thread count, for each
   backend B of `--backend` (comma-separated, e.g. `interp,jit`), with decode as a share of the
   decode floor that run measured (weight bytes per token over the read bandwidth);
3. a check that both compute the same thing: `kiln forward` and transformers on 16 tokens,
   max |Δ| / max |logit|, per backend.

Then it prints Kiln's throughput as a ratio of PyTorch's. Developer-only: needs torch and
transformers (never run in CI). Run the benchmarks one at a time on a quiet machine.

    python benches/pytorch_compare.py DIR [DIR ...] [--threads 2] [--prefill 512] [--decode 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK_TOKENS = 16


def bench_token(n: int, vocab: int) -> int:
    """The n-th benchmark token id: the same LCG walk as `kiln bench` (runtime/src/cli/bench.rs)."""
    x = (n * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    return (x >> 33) % max(vocab, 1)


def vocab_of(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["vocab_size"])


def torch_child(args: argparse.Namespace) -> None:
    """Measures transformers on args.model[0] and prints one JSON object."""
    import resource

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model[0])
    vocab = vocab_of(model_dir)
    total = args.prefill + args.warmup + args.decode
    ids = torch.tensor([[bench_token(n, vocab) for n in range(total)]], dtype=torch.long)

    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    load_s = time.perf_counter() - t

    def step(out_prev, tokens):
        kw = {}
        if out_prev is not None:
            if getattr(out_prev, "state", None) is not None:
                kw["state"] = out_prev.state
            else:
                kw["cache_params"] = out_prev.cache_params
        return model(tokens, use_cache=True, **kw)

    result = {"load_s": load_s, "threads": torch.get_num_threads(), "prefill_samples_s": [], "decode_samples_s": []}
    with torch.inference_mode():
        check = model(ids[:, :CHECK_TOKENS], use_cache=False).logits[0].float()
        result["check_logits"] = check.flatten().tolist()
        step(None, ids[:, : min(16, args.prefill)])  # untimed warm-up
        for _ in range(args.reps):
            t = time.perf_counter()
            out = step(None, ids[:, : args.prefill])
            result["prefill_samples_s"].append(time.perf_counter() - t)
            pos = args.prefill
            for _ in range(args.warmup):
                out = step(out, ids[:, pos : pos + 1])
                pos += 1
            t = time.perf_counter()
            for _ in range(args.decode):
                out = step(out, ids[:, pos : pos + 1])
                pos += 1
            result["decode_samples_s"].append(time.perf_counter() - t)
    result["prefill_tokens_per_s"] = args.prefill / statistics.median(result["prefill_samples_s"])
    result["decode_tokens_per_s"] = args.decode / statistics.median(result["decode_samples_s"])
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def run_torch(args: argparse.Namespace, model_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--torch-child", str(model_dir)] + common_flags(args)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def common_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--threads", str(args.threads), "--prefill", str(args.prefill), "--decode", str(args.decode),
        "--warmup", str(args.warmup), "--reps", str(args.reps),
    ]  # fmt: skip


def run_kiln(args: argparse.Namespace, model_dir: Path, backend: str) -> dict:
    cmd = [str(args.kiln), "bench", str(model_dir), "--json", "--backend", backend] + common_flags(args)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def kiln_check_logits(args: argparse.Namespace, model_dir: Path, backend: str) -> list[float]:
    from safetensors.numpy import load_file

    vocab = vocab_of(model_dir)
    tokens = ",".join(str(bench_token(n, vocab)) for n in range(CHECK_TOKENS))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logits.safetensors"
        cmd = [str(args.kiln), "forward", str(model_dir), "--tokens", tokens, "--out", str(path)]
        cmd += ["--backend", backend]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return load_file(str(path))["logits"].flatten().tolist()


def rel_err(a: list[float], b: list[float]) -> float:
    scale = max(abs(y) for y in b) or 1.0
    return max(abs(x - y) for x, y in zip(a, b)) / scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="+", type=Path, help="model directories (config.json + model.safetensors)")
    p.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--backend", default="jit", help="kiln backends, comma-separated (default jit)")
    p.add_argument("--kiln", type=Path, default=ROOT / "target/release/kiln", help="the kiln binary")
    p.add_argument("--no-build", action="store_true", help="do not run `cargo build --release --bin kiln` first")
    p.add_argument("--json", action="store_true", help="also print every measurement as JSON")
    p.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_child:
        torch_child(args)
        return
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "kiln"], check=True, cwd=ROOT)

    rows = []
    for model_dir in args.model:
        print(f"{model_dir}: transformers ...", file=sys.stderr, flush=True)
        torch_r = run_torch(args, model_dir)
        reference = torch_r.pop("check_logits")
        for backend in args.backend.split(","):
            print(f"{model_dir}: kiln bench --backend {backend} ...", file=sys.stderr, flush=True)
            kiln_r = run_kiln(args, model_dir, backend)
            err = rel_err(kiln_check_logits(args, model_dir, backend), reference)
            rows.append((model_dir, kiln_r, torch_r, err))

    mib = lambda b: f"{b / 2**20:.0f}" if b else "n/a"  # noqa: E731
    print(
        f"threads {args.threads}, prefill {args.prefill} tokens, decode {args.decode} tokens "
        f"(after {args.warmup} warm-up), median of {args.reps}"
    )
    header = (
        f"{'model':<14} {'backend':>7} {'params':>7} | {'prefill tok/s':>24} | {'decode tok/s':>24} | "
        f"{'decode':>6} | {'compile':>8} | {'peak RSS MiB':>13} | {'logits':>8}"
    )
    print(header)
    print(f"{'':<14} {'':>7} {'':>7} | {'kiln':>7} {'torch':>7} {'ratio':>8} | {'kiln':>7} {'torch':>7} {'ratio':>8} | "
          f"{'/floor':>6} | {'kiln ms':>8} | {'kiln':>6} {'torch':>6} | {'rel err':>8}")  # fmt: skip
    for model_dir, k, t, err in rows:
        kp, tp = k["prefill_tokens_per_s"], t["prefill_tokens_per_s"]
        kd, td = k["decode_tokens_per_s"], t["decode_tokens_per_s"]
        print(
            f"{model_dir.name:<14} {k['backend']:>7} {k['parameters'] / 1e6:>6.1f}M | {kp:>7.1f} {tp:>7.1f} {kp / tp:>7.3f}x | "
            f"{kd:>7.2f} {td:>7.2f} {kd / td:>7.3f}x | {kd / k['decode_floor_tokens_per_s']:>6.0%} | "
            f"{k['compile_s'] * 1e3:>8.1f} | "
            f"{mib(k['peak_rss_bytes']):>6} {mib(t['peak_rss_bytes']):>6} | {err:>8.1e}"
        )
    # Backends against each other, per model, from the same run.
    by_model: dict[Path, dict[str, dict]] = {}
    for model_dir, k, _, _ in rows:
        by_model.setdefault(model_dir, {})[k["backend"]] = k
    for model_dir, runs in by_model.items():
        if "interp" in runs and "jit" in runs:
            j, i = runs["jit"], runs["interp"]
            print(
                f"{model_dir.name}: jit / interp: prefill "
                f"{j['prefill_tokens_per_s'] / i['prefill_tokens_per_s']:.2f}x, decode "
                f"{j['decode_tokens_per_s'] / i['decode_tokens_per_s']:.2f}x"
            )
    if args.json:
        print(json.dumps([{"model_dir": str(d), "kiln": k, "torch": t, "logits_rel_err": e} for d, k, t, e in rows]))


if __name__ == "__main__":
    main()
