"""Fine-tuning throughput: the paper configuration's batches (uniformly shuffled, dynamic padding) vs padding to max_length.

Builds a randomly initialised BERT-style classifier and a synthetic dataset whose token
lengths follow a long-tailed (log-normal) distribution like XNLI pairs or Amazon reviews,
then times the Study A training step (forward, weighted loss, backward, RAdam step) for
the same model, data, precision and number of batches under three batchings:

- ``max_length``: uniformly shuffled batches, every batch padded to ``--max-length`` (512
  for ``--size mbert``: what padding every example to the model's length costs);
- ``dynamic``:    the same uniformly shuffled batches, padded to their longest example (the
  paper configuration's default, ``length_grouped: false``, the authors' shuffling);
- ``grouped``:    length-grouped batches (``length_grouped: true``), padded to their longest.

Prints examples/s and real (non-pad) tokens/s per mode and the speed-up over ``max_length``.
No downloads; runs on CPU in under two minutes with the defaults.

``--precision`` is the fine-tuning precision (``study_a.finetune.precision``): ``fp16``
(default, the paper configuration's: fp16 autocast with a ``GradScaler``), ``bf16`` (autocast,
no scaler) or ``fp32``; mixed precision is a CUDA setting, the CPU runs fp32. ``--size
mbert`` sets an mBERT-sized model (12 layers, d 768, 119,547-token vocabulary) at
``--max-length 512``, batch 16 (the paper configuration's).

    python benchmarks/finetune_throughput.py --threads 1                  # CPU, tiny model
    python benchmarks/finetune_throughput.py --size mbert --steps 50      # GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification

from langskew.devices import amp_dtype, autocast
from langskew.study_a.finetune import (collate, length_grouped_batches, make_optimizer, random_batches,
                                       weighted_cross_entropy)

from common import add_machine_options, machine_device, machine_name, write_results


def synthetic_features(n: int, max_length: int, vocab: int, median: int, seed: int) -> list[dict]:
    """``n`` examples with log-normal lengths (median ``median``), truncated to ``max_length``."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.6, size=n).astype(int), 8, max_length)
    return [{"input_ids": rng.integers(5, vocab, size=int(k)).tolist(), "token_type_ids": [0] * int(k),
             "label": int(rng.integers(3)), "weight": 1.0} for k in lengths]


class Mode:
    """One batching strategy with its own copy of the model and optimiser (same initial weights)."""

    def __init__(self, name, model, batches, pad_to, feats, device, dtype, lr_hp):
        self.name, self.model, self.batches, self.pad_to = name, model, batches, pad_to
        self.feats, self.device, self.dtype = feats, device, dtype
        self.optimizer = make_optimizer(model, lr_hp)
        # fp16 needs loss scaling (as in langskew.study_a.finetune); bf16 and fp32 do not
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        self.seconds, self.examples, self.tokens, self.padded = 0.0, 0, 0, 0

    def step(self, i: int, timed: bool = True) -> None:
        """Forward, weighted loss, backward and RAdam step on batch ``i``."""
        feats = [self.feats[j] for j in self.batches[i]]
        batch = {k: v.to(self.device) for k, v in collate(feats, 0, self.pad_to).items()}
        _sync(self.device)
        start = time.perf_counter()
        with autocast(self.device, self.dtype):
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"]).logits
        loss = weighted_cross_entropy(logits.float(), batch["labels"], batch["weights"])
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        if timed:
            self.seconds += time.perf_counter() - start
            self.examples += len(feats)
            self.tokens += sum(len(f["input_ids"]) for f in feats)
            self.padded += batch["input_ids"].numel()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed batches per mode")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--median-length", type=int, default=48, help="median tokens per example")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16",
                    help="fine-tuning precision of every mode (CUDA only; the CPU runs fp32): fp16 + GradScaler "
                         "(the paper configuration's), bf16, fp32")
    ap.add_argument("--size", choices=["custom", "mbert"], default="custom",
                    help="mbert: hidden 768, 12 layers, 12 heads, vocab 119547, max-length 512, batch 16 "
                         "(overrides those flags)")
    ap.add_argument("--seed", type=int, default=0)
    add_machine_options(ap)
    args = ap.parse_args(argv)
    if args.size == "mbert":
        args.hidden, args.layers, args.heads, args.vocab = 768, 12, 12, 119547
        args.max_length, args.batch_size = 512, 16

    device = machine_device(args)
    dtype = amp_dtype(device, args.precision)
    config = BertConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                        max_position_embeddings=max(512, args.max_length), num_labels=3)
    torch.manual_seed(args.seed)
    model = BertForSequenceClassification(config).to(device)
    n_batches = args.steps + 1
    # a pool of several mega-batches, so grouping sorts as it would on a real training set
    feats = synthetic_features(max(n_batches + 1, 200) * args.batch_size, args.max_length,
                               args.vocab, args.median_length, args.seed)
    lengths = [len(f["input_ids"]) for f in feats]
    plain = random_batches(len(feats), args.batch_size, args.seed, 0)[:n_batches]
    # grouped: skip the deliberately longest-first batch so the timed slice is representative
    grouped = length_grouped_batches(lengths, args.batch_size, args.seed, 0)[1:n_batches + 1]
    lr_hp = {"lr_encoder": 5e-5, "lr_head": 5e-4, "adam_eps": 1e-8, "weight_decay": 0.0}

    machine = machine_name(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device={device} ({machine}), torch {torch.__version__}, precision {args.precision} "
          f"(autocast dtype {dtype}, GradScaler {dtype == torch.float16})")
    print(f"model: BERT hidden={args.hidden} layers={args.layers} heads={args.heads} "
          f"({n_params / 1e6:.1f}M params); batch {args.batch_size}, "
          f"max_length {args.max_length}, lengths median {int(np.median(lengths))} / mean {np.mean(lengths):.0f} "
          f"/ max {max(lengths)}; {args.steps} timed steps per mode")
    modes = []
    for name, batches, pad_to in (("max_length", plain, args.max_length), ("dynamic", plain, None),
                                  ("grouped", grouped, None)):
        copy = BertForSequenceClassification(config).to(device)
        copy.load_state_dict(model.state_dict())
        modes.append(Mode(name, copy, batches, pad_to, feats, device, dtype, lr_hp))
    for mode in modes:
        mode.step(0, timed=False)  # warm-up: allocations, kernel selection
    for i in range(1, n_batches):  # interleaved, so load changes on the machine hit all modes alike
        for mode in modes:
            mode.step(i)
    base = modes[0].tokens / modes[0].seconds
    base_ex = modes[0].examples / modes[0].seconds
    for m in modes:
        label = f"{m.name} (default)" if m.name == "dynamic" else m.name
        print(f"{label:>18}: {m.examples / m.seconds:9.1f} examples/s {m.tokens / m.seconds:11.0f} real tokens/s"
              f"  real/padded tokens {m.tokens / m.padded:5.1%}  ({m.seconds:.1f} s)")
    for m in modes[1:]:
        print(f"speed-up {m.name} vs max_length: {m.examples / m.seconds / base_ex:.2f}x examples/s, "
              f"{m.tokens / m.seconds / base:.2f}x real tokens/s")
    results = [{"mode": m.name, "examples_per_s": m.examples / m.seconds, "real_tokens_per_s": m.tokens / m.seconds,
                "real_share": m.tokens / m.padded, "seconds": m.seconds,
                "speedup_examples": m.examples / m.seconds / base_ex, "speedup_tokens": m.tokens / m.seconds / base}
               for m in modes]
    report = {"size": args.size, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
              "vocab": args.vocab, "params": n_params, "batch_size": args.batch_size, "max_length": args.max_length,
              "steps": args.steps, "median_length": int(np.median(lengths)), "device": str(device), "machine": machine,
              "torch": torch.__version__,
              "precision": args.precision, "autocast": dtype and str(dtype), "default_mode": "dynamic",
              "results": results}
    write_results(args, report)
    return report


if __name__ == "__main__":
    main()
