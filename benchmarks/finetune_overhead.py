"""The fine-tuning step's overhead at the demo's sizes: the optimiser and the batch collation.

At the demo's model (BERT, 2 layers, d 64, 4,000-token vocabulary) the forward and backward
passes are small, so the parts around them show. Times, on the same parameters and batches:

- the RAdam step tensor by tensor (``foreach=False``, PyTorch's default on a CPU) and on all
  tensors at once (``foreach=True``, CUDA's default and what ``make_optimizer`` asks for), with
  the largest difference of the weights after the same steps;
- collation of a batch of 32 rows filling one tensor per row (the former ``collate``) and
  filling numpy arrays converted once (``langskew.study_a.finetune.collate``), checked equal.

    python benchmarks/finetune_overhead.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification

from langskew.study_a.finetune import collate, make_optimizer

from common import add_machine_options, machine_device, machine_name, write_results

HP = {"lr_encoder": 1e-3, "lr_head": 1e-3, "adam_eps": 1e-8, "weight_decay": 0.0}


def per_row_collate(features, pad_token_id):
    """The former collation: a torch tensor per row, written into the padded batch."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    types = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
        types[i, :n] = torch.tensor(f["token_type_ids"])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            "labels": torch.tensor([f["label"] for f in features]),
            "weights": torch.tensor([f["weight"] for f in features], dtype=torch.float32)}


def optimiser_ms(model, foreach: bool, steps: int) -> tuple[float, list[torch.Tensor]]:
    model = copy.deepcopy(model)
    opt = make_optimizer(model, HP)
    for group in opt.param_groups:
        group["foreach"] = foreach
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=gen) * 0.01 for p in model.parameters()]
    start = time.perf_counter()
    for _ in range(steps):
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        opt.step()
    return (time.perf_counter() - start) / steps * 1e3, [p.detach() for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    add_machine_options(parser)
    args = parser.parse_args()
    device = machine_device(args)  # the CPU: these are CPU overheads
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=4000, hidden_size=64, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=128,
                                                     max_position_embeddings=128, num_labels=3))
    single, w_single = optimiser_ms(model, False, args.steps)
    fused, w_fused = optimiser_ms(model, True, args.steps)
    diff = max(float((a - b).abs().max()) for a, b in zip(w_single, w_fused))
    rng = np.random.default_rng(0)
    feats = [{"input_ids": rng.integers(5, 4000, size=int(k)).tolist(), "token_type_ids": [0] * int(k),
              "label": int(rng.integers(3)), "weight": 1.0} for k in rng.integers(12, 64, size=args.batch)]
    timings = {}
    for name, fn in (("per_row", per_row_collate), ("numpy", collate)):
        start = time.perf_counter()
        for _ in range(args.steps):
            out = fn(feats, 0)
        timings[name] = (time.perf_counter() - start) / args.steps * 1e3
    ref = per_row_collate(feats, 0)
    same = all(torch.equal(ref[k], out[k]) for k in ref)
    rows = [
        {"part": "RAdam step", "before": "foreach=False", "before_ms": round(single, 3), "after": "foreach=True",
         "after_ms": round(fused, 3), "speedup": round(single / fused, 2), "check": f"max weight diff {diff:.1e}"},
        {"part": f"collate {args.batch} rows", "before": "tensor per row", "before_ms": round(timings["per_row"], 3),
         "after": "numpy, one tensor", "after_ms": round(timings["numpy"], 3),
         "speedup": round(timings["per_row"] / timings["numpy"], 2), "check": f"equal: {same}"},
    ]
    for r in rows:
        print(f"{r['part']:>16}: {r['before']} {r['before_ms']:.3f} ms, {r['after']} {r['after_ms']:.3f} ms, "
              f"{r['speedup']:.2f}x ({r['check']})")
    print(f"machine: {machine_name(torch.device('cpu'))}; device option: {device}")
    write_results(args, {"machine": machine_name(torch.device("cpu")), "steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
