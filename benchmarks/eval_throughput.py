"""Throughput of the evaluation jobs: one figure each, for the compute budget.

- ``probe``: Study A's sentence representations for the language-identification probe
  (:func:`langskew.study_a.probe.sentence_representations`, length-sorted dynamic batches)
  with a randomly initialised mBERT-sized encoder on synthetic sentence pairs -> sentences/s.
- ``perplexity``: Study B's sliding-window perplexity
  (:func:`langskew.study_b.perplexity.sliding_window_nll`, window 512, stride 128) of the
  paper's small GPT on a random token stream -> scored tokens/s, and the minutes one
  language's held-out stream (``--heldout-tokens``, the paper configuration's 2M) takes.
- ``alignment``: Study B's representation alignment (per-layer hidden states, matched
  token cosines) and gradient alignment (per-tensor gradient cosines) of the small GPT on
  random parallel sequences of 128 to 512 tokens -> pairs/s, and the minutes for
  ``--pairs`` pairs (the paper configuration's 500).

No downloads, random weights (throughput does not depend on them).

    python benchmarks/eval_throughput.py --tiny                # CPU smoke run of all three, < 1 min
    python benchmarks/eval_throughput.py                       # paper sizes, GPU
    python benchmarks/eval_throughput.py --mode perplexity     # one of them
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from langskew.study_a.modeling import train_wordpiece
from langskew.study_a.probe import sentence_representations
from langskew.study_b.alignment import gradient_alignment, representation_alignment
from langskew.study_b.perplexity import sliding_window_nll
from langskew.study_b.model import GPT, SIZES, GPTConfig

from common import add_machine_options, machine_device, machine_name, write_results

WORDS = ("the a cat dog house tree water runs walks sees good bad blue red green happy sad old new big small "
         "le la chat chien maison arbre eau court marche voit bon mauvais bleu rouge vert heureux triste").split()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def probe_figure(args, device: torch.device) -> dict:
    from transformers import BertConfig, BertForSequenceClassification

    rng = np.random.default_rng(0)

    def sentence(median: int) -> str:
        return " ".join(rng.choice(WORDS, size=int(np.clip(rng.lognormal(np.log(median), 0.5), 3, 200))))

    n = args.sentences
    df = pd.DataFrame({"id": [str(i) for i in range(n)], "language": rng.choice(["en", "fr"], size=n),
                       "label": 0, "text": [sentence(20) for _ in range(n)], "text_pair": [sentence(10) for _ in range(n)]})
    tokenizer = train_wordpiece(df["text"].tolist() + df["text_pair"].tolist(), 2000, 512)
    arch = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, vocab_size=2000)
            if args.tiny else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                   intermediate_size=3072, vocab_size=119547))
    arch["vocab_size"] = max(arch["vocab_size"], len(tokenizer))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=3, type_vocab_size=2, **arch)).to(device)
    sentence_representations(model, tokenizer, df.iloc[:64], batch_size=64)  # warm-up
    seconds = _timed(lambda: sentence_representations(model, tokenizer, df, batch_size=64), device)
    return {"mode": "probe", "figure": n / seconds, "unit": "sentences/s", "seconds": seconds,
            "detail": f"{n} sentence pairs, {arch['num_hidden_layers']} layers d {arch['hidden_size']}"}


def _gpt(args, device: torch.device) -> GPT:
    size = "tiny" if args.tiny else args.size
    cfg = GPTConfig(vocab_size=1024 if args.tiny else args.vocab, context=128 if args.tiny else 512, **SIZES[size])
    torch.manual_seed(0)
    return GPT(cfg).to(device).eval()


def perplexity_figure(args, device: torch.device) -> dict:
    model = _gpt(args, device)
    window, stride = model.cfg.context, (32 if args.tiny else 128)
    n = 20_000 if args.tiny else args.tokens
    ids = np.random.default_rng(0).integers(0, model.cfg.vocab_size, size=n)
    sliding_window_nll(model, ids[:window * 4], window=window, stride=stride, batch_size=args.batch)  # warm-up
    seconds = _timed(lambda: sliding_window_nll(model, ids, window=window, stride=stride, batch_size=args.batch), device)
    rate = (n - 1) / seconds
    return {"mode": "perplexity", "figure": rate, "unit": "scored tokens/s", "seconds": seconds,
            "minutes_per_language": args.heldout_tokens / rate / 60,
            "detail": f"{n:,} tokens, window {window}, stride {stride}, batch {args.batch}"}


def alignment_figure(args, device: torch.device) -> dict:
    model = _gpt(args, device)
    rng = np.random.default_rng(0)
    n = 4 if args.tiny else args.pairs_timed
    lo, hi = (32, model.cfg.context) if args.tiny else (128, model.cfg.context)
    pairs = []
    for _ in range(n):
        length = int(rng.integers(lo, hi + 1))
        pairs.append((rng.integers(0, model.cfg.vocab_size, size=length + 1),
                      rng.integers(0, model.cfg.vocab_size, size=length + 1)))

    def run(p):
        representation_alignment(model, p, match=True)
        gradient_alignment(model, p)

    run(pairs[:1])  # warm-up
    seconds = _timed(lambda: run(pairs), device)
    rate = n / seconds
    return {"mode": "alignment", "figure": rate, "unit": "pairs/s (representation + gradient)", "seconds": seconds,
            "minutes_for_pairs": args.pairs / rate / 60, "detail": f"{n} pairs of {lo}-{hi} tokens"}


FIGURES = {"probe": probe_figure, "perplexity": perplexity_figure, "alignment": alignment_figure}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["all", *FIGURES], default="all")
    ap.add_argument("--tiny", action="store_true", help="CPU-sized models and inputs (smoke run)")
    ap.add_argument("--size", choices=sorted(SIZES), default="small", help="GPT size (perplexity, alignment)")
    ap.add_argument("--vocab", type=int, default=32768, help="GPT vocabulary (two cloned 16,384-piece languages)")
    ap.add_argument("--sentences", type=int, default=4096, help="probe: sentence pairs encoded")
    ap.add_argument("--tokens", type=int, default=500_000, help="perplexity: tokens of the timed stream")
    ap.add_argument("--heldout-tokens", type=int, default=2_000_000, help="perplexity: tokens per language to project")
    ap.add_argument("--batch", type=int, default=32, help="perplexity: windows per forward pass")
    ap.add_argument("--pairs-timed", type=int, default=50, help="alignment: pairs timed")
    ap.add_argument("--pairs", type=int, default=500, help="alignment: pairs to project")
    add_machine_options(ap)
    args = ap.parse_args(argv)
    if args.tiny:
        args.sentences = min(args.sentences, 256)
    device = machine_device(args)
    machine = machine_name(device)
    print(f"device {device} ({machine}), torch {torch.__version__}, {'tiny' if args.tiny else 'paper'} sizes")
    rows = []
    for mode in (FIGURES if args.mode == "all" else [args.mode]):
        r = FIGURES[mode](args, device)
        extra = "".join(f", {k.replace('_', ' ')} {v:.1f}" for k, v in r.items() if k.startswith("minutes"))
        print(f"{mode:>10}: {r['figure']:12,.1f} {r['unit']}  ({r['detail']}; {r['seconds']:.1f} s{extra})")
        rows.append(r)
    write_results(args, {"device": str(device), "machine": machine, "results": rows})
    return rows


if __name__ == "__main__":
    main()
