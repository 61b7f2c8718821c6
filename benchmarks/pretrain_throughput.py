"""Study B pretraining throughput: our training step against an authors'-style step, in one run.

Both steps train the same GPT (same size, same initial weights, same random tokens):

- ``authors``: hand-written attention with a materialised causal-mask buffer (as the
  Languini-based original), fp16 autocast with a ``GradScaler`` (unscale, clip, scaled
  step), the default (unfused) AdamW, no compilation;
- ``ours``: :func:`langskew.study_b.pretrain.train_step` on our GPT
  (``scaled_dot_product_attention(is_causal=True)``, no mask buffer), bf16 autocast, fused
  AdamW, ``torch.compile`` (``--compile-mode``).

Prints tokens/s, ms/step and, on CUDA, model FLOPs utilisation:
(6 N + 12 L d T) FLOPs per token x tokens/s / the device's peak dense bf16 FLOP/s, where N
counts the parameters that take part in matrix products (token and position embeddings
are lookups and are left out; the untied output layer is in). On CPU both steps run in
fp32 (no autocast, no scaler) and without compilation unless ``--compile``.

    python benchmarks/pretrain_throughput.py --tiny                       # CPU smoke run, < 1 min
    python benchmarks/pretrain_throughput.py                              # paper's small model, GPU
"""

from __future__ import annotations

import argparse
import time

import torch

from langskew.devices import amp_dtype, autocast
from langskew.study_b.model import GPT, SIZES, GPTConfig
from langskew.study_b.pretrain import TrainHP, make_optimizer, train_step

from common import add_machine_options, machine_device, machine_name, write_results

#: Peak dense bf16 tensor-core FLOP/s (vendor data sheets, SXM parts).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def matmul_params(model: GPT) -> int:
    """Parameters used in matrix products: all but the token and position embedding tables."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if id(p) not in lookups)


def train_flops_per_token(cfg: GPTConfig, model: GPT) -> float:
    """6 N (forward + backward of the matrix products) + 12 L d T (attention scores and values)."""
    return 6.0 * matmul_params(model) + 12.0 * cfg.n_layer * cfg.d_model * cfg.context


def authors_step_fn(model: GPT, device: torch.device, hp: TrainHP):
    """fp16 autocast + GradScaler, unfused AdamW: one optimizer step per call, returns the loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.lr, betas=hp.betas, eps=hp.eps,
                                  weight_decay=hp.weight_decay)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(device, torch.float16 if cuda else None):
            _, loss = model(batch["x"], batch["y"])
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if hp.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def our_step_fn(model: GPT, device: torch.device, hp: TrainHP, compile_mode: str | None):
    optimizer = make_optimizer(model, hp, device)
    module = torch.compile(model, mode=None if compile_mode == "default" else compile_mode) if compile_mode else model
    dtype = amp_dtype(device, hp.precision)
    return lambda batch: train_step(module, optimizer, batch, 1, hp, device, dtype)


def measure(name: str, step, cfg: GPTConfig, model: GPT, batch, args, device: torch.device) -> dict:
    """Tokens/s over ``args.steps`` timed steps after ``args.warmup`` untimed ones."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step(batch)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(batch)
    sync()
    seconds = time.perf_counter() - start
    tok_s = args.steps * args.batch * cfg.context / seconds
    result = {"step": name, "tokens_per_s": tok_s, "step_ms": 1000 * seconds / args.steps, "loss": float(loss)}
    peak = peak_flops(device)
    if peak:
        result["mfu"] = train_flops_per_token(cfg, model) * tok_s / peak
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true",
                    help="CPU-sized smoke run: --size tiny --vocab 1024 --context 128 --batch 4 --steps 3 --warmup 1")
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--vocab", type=int, default=32768, help="model vocabulary (two cloned 16,384-piece languages)")
    ap.add_argument("--batch", type=int, default=32, help="sequences per step (no accumulation)")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, caches)")
    ap.add_argument("--compile-mode", default=None,
                    help="ours: torch.compile mode (default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs) "
                         "or 'none'; default: 'default' on CUDA, none on CPU")
    ap.add_argument("--steps-to-run", default="authors,ours", help="comma-separated: authors, ours")
    add_machine_options(ap)
    args = ap.parse_args(argv)
    if args.tiny:
        args.size, args.vocab, args.context, args.batch, args.steps, args.warmup = "tiny", 1024, 128, 4, 3, 1

    device = machine_device(args)
    compile_mode = args.compile_mode or ("default" if device.type == "cuda" else "none")
    compile_mode = None if compile_mode == "none" else compile_mode
    cfg = GPTConfig(vocab_size=args.vocab, context=args.context, **SIZES[args.size])
    machine = machine_name(device)
    hp = TrainHP(context=cfg.context, batch_size=args.batch, micro_batch_size=args.batch,
                 precision="bf16" if device.type == "cuda" else "fp32", compile=bool(compile_mode))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, cfg.context + 1), generator=gen)
    batch = {"x": tokens[:, :-1].to(device), "y": tokens[:, 1:].to(device)}
    torch.manual_seed(0)
    reference = GPT(cfg, attention="sdpa")
    print(f"size {args.size} ({cfg}; {reference.num_params() / 1e6:.1f}M parameters, {matmul_params(reference) / 1e6:.1f}M "
          f"in matrix products), batch {args.batch} x {args.context}, {args.steps} timed steps, device {device} "
          f"({machine}), torch {torch.__version__}, ours: compile={compile_mode}")

    rows = []
    for name in args.steps_to_run.split(","):
        model = GPT(cfg, attention="naive" if name == "authors" else "sdpa")
        model.load_state_dict(reference.state_dict(), strict=False)  # the naive model adds only a mask buffer
        model.to(device).train()
        step = authors_step_fn(model, device, hp) if name == "authors" else our_step_fn(model, device, hp, compile_mode)
        rows.append(measure(name, step, cfg, model, batch, args, device))
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for r in rows:
        extra = f"  MFU {100 * r['mfu']:.1f}%  peak mem {r['peak_mem_gib']:.1f} GiB" if "mfu" in r else ""
        print(f"{r['step']:>8}: {r['tokens_per_s']:12,.0f} tokens/s  {r['step_ms']:9.1f} ms/step  "
              f"loss {r['loss']:.3f}{extra}")
    report = {"size": args.size, "vocab": args.vocab, "batch": args.batch, "context": args.context,
              "device": str(device), "machine": machine, "compile": compile_mode, "torch": torch.__version__,
              "results": rows}
    if len(rows) == 2:
        report["speedup"] = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
        print(f"speed-up {rows[1]['step']} / {rows[0]['step']}: {report['speedup']:.2f}x")
    write_results(args, report)
    return report


if __name__ == "__main__":
    main()
