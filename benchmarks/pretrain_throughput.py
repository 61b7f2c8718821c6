"""Training throughput of the Study B GPT: our step vs the authors'-style naive attention.

Both models have the same size and the same weights; "naive" computes attention by hand
with a materialised causal-mask buffer (as the Languini-based original), "sdpa" uses
``scaled_dot_product_attention(is_causal=True)``. Each timed step is a full optimizer step
of :func:`langskew.study_b.train.train_step` (forward, backward, AdamW; bf16 autocast and
fused AdamW on CUDA, fp32 on CPU) on random tokens.

On CUDA it also reports model FLOPs utilisation: (6 N + 12 L d T) FLOPs per token (PaLM's
count, attention included) x tokens/s / the device's peak dense bf16 FLOP/s.

    python benchmarks/pretrain_throughput.py                      # tiny, CPU-sized, < 2 min
    python benchmarks/pretrain_throughput.py --size small --batch 32 --context 512 --steps 30 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from langskew.study_b.model import GPT, SIZES, GPTConfig, flops_per_token  # noqa: E402
from langskew.study_b.train import TrainHP, make_optimizer, train_step  # noqa: E402

#: Peak dense bf16 tensor-core FLOP/s (vendor data sheets, SXM parts).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def measure(attention: str, cfg: GPTConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """Tokens/s of ``args.steps`` timed optimizer steps after ``args.warmup`` untimed ones."""
    torch.manual_seed(0)
    model = GPT(cfg, attention=attention).to(device)
    hp = TrainHP(context=cfg.context, batch_size=args.batch, micro_batch_size=args.batch,
                 precision="bf16" if device.type == "cuda" else "fp32", compile=args.compile)
    optimizer = make_optimizer(model, hp, device)
    module = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, cfg.context + 1), generator=gen)
    batch = {"x": tokens[:, :-1].to(device), "y": tokens[:, 1:].to(device)}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        train_step(module, optimizer, batch, 1, hp, device)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step(module, optimizer, batch, 1, hp, device)
    sync()
    seconds = time.perf_counter() - start
    tok_s = args.steps * args.batch * cfg.context / seconds
    result = {"attention": attention, "tokens_per_s": tok_s, "step_ms": 1000 * seconds / args.steps,
              "loss": float(loss), "n_params": model.num_params()}
    peak = peak_flops(device)
    if peak:
        result["mfu"] = flops_per_token(cfg, model.num_params()) * tok_s / peak
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--vocab", type=int, default=16384, help="model vocabulary (paper: 16,384 per language)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, caches)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = GPTConfig(vocab_size=args.vocab, context=args.context, **SIZES[args.size])
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"size {args.size} ({cfg}), batch {args.batch} x {args.context}, {args.steps} timed steps, "
          f"device {device} ({machine}), torch {torch.__version__}, compile={args.compile}")
    rows = [measure(att, cfg, args, device) for att in ("naive", "sdpa")]
    for r in rows:
        extra = f"  MFU {100 * r['mfu']:.1f}%  peak mem {r['peak_mem_gib']:.1f} GiB" if "mfu" in r else ""
        print(f"{r['attention']:>6}: {r['tokens_per_s']:12,.0f} tokens/s  {r['step_ms']:9.1f} ms/step{extra}")
    ratio = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    print(f"speed-up sdpa / naive: {ratio:.2f}x")
    report = {"size": args.size, "batch": args.batch, "context": args.context, "device": str(device),
              "machine": machine, "compile": args.compile, "torch": torch.__version__, "results": rows,
              "speedup": ratio}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
