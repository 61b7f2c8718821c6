"""SHAP throughput: the studies' route (shap.Explainer on a transformers pipeline) against ours.

Same model, same examples, same ``max_evals``, in one process:

- ``authors``: ``shap.Explainer(pipeline)`` where ``pipeline`` is a ``transformers``
  text-classification pipeline returning every class probability (``top_k=None``), padding
  each input to ``--max-length`` with truncation, as the studies' SHAP script built it; shap
  picks the text masker and the Partition explainer, its default explainer batch, and
  explains one example after the other.
- ``shap_batched`` (with ``--routes``): the same ``shap.Explainer`` one example at a time,
  but on our batched model function (dynamic padding): what a better model function alone gives.
- ``ours``: :func:`langskew.study_a.shap_values.explain` (shap's algorithm for
  ``--batch-size`` examples at once, one model call per step of all of them; see
  :mod:`langskew.study_a.shap_fast`), once per ``--precision``.

Prints examples/s of each route, the speed-up over ``authors`` and the largest absolute
difference of every route's SHAP values (tokens and base values) from the ``authors`` ones.

The model is a randomly initialised BERT classifier (no downloads) with a WordPiece
tokenizer trained on synthetic review-like texts (pseudo-words with Zipf frequencies, so
rare words split into pieces; log-normal lengths). ``--size tiny`` is a 2-layer d=64 model,
``base`` BERT-base (12 layers, d=768), ``mbert`` BERT-base with mBERT's 119,547-token vocabulary.

    python benchmarks/shap_throughput.py --threads 1                       # tiny, CPU, ~2 min
    python benchmarks/shap_throughput.py --size mbert --examples 32        # GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from langskew.study_a import shap_values as sv
from langskew.study_a.modeling import train_wordpiece
from langskew.study_a.shap_fast import text_masker

from common import add_machine_options, machine_device, machine_name, write_results

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "mbert": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  vocab_size=119547),
}
SYLLABLES = ("ka lo mi ne ru sa te vi bo da fe gu ha ji ko lu ma no pi qu re si tu va we xo ya ze "
             "an el in or us ar en ir ol um").split()


def synthetic_texts(n: int, median_words: int, seed: int) -> list[str]:
    """Review-like texts: Zipf-distributed pseudo-words, log-normal lengths, some punctuation."""
    rng = np.random.default_rng(seed)
    words = sorted({"".join(rng.choice(SYLLABLES, size=int(k))) for k in rng.integers(1, 5, size=6000)})
    freq = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    freq /= freq.sum()
    texts = []
    for length in np.clip(rng.lognormal(np.log(median_words), 0.5, size=n).astype(int), 4, 400):
        chosen = rng.choice(len(words), size=int(length), p=freq)
        parts = [words[i] + (rng.choice([",", ".", "!"]) if rng.random() < 0.08 else "") for i in chosen]
        texts.append(" ".join(parts).capitalize() + ".")
    return texts


def build_model(size: str, texts: list[str], num_labels: int, seed: int, init: float, max_length: int):
    """Tokenizer trained on ``texts`` + a randomly initialised BERT classifier of ``size``."""
    from transformers import BertConfig, BertForSequenceClassification

    arch = dict(SIZES[size])
    vocab = arch.pop("vocab_size", None)
    tokenizer = train_wordpiece(texts, 8000, max_length)
    config = BertConfig(vocab_size=max(vocab or 0, len(tokenizer)), max_position_embeddings=max(512, max_length),
                        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, type_vocab_size=2,
                        initializer_range=init, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **arch)
    torch.manual_seed(seed)
    return tokenizer, BertForSequenceClassification(config).eval()


def authors_route(model, tokenizer, texts, max_evals, max_length, device, padding):
    import shap
    import transformers

    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device=device,
                                 top_k=None, truncation=True, max_length=max_length, padding=padding)
    explainer = shap.Explainer(pipe)
    exp = explainer(texts, max_evals=max_evals, silent=True)
    return [np.asarray(v) for v in exp.values], [np.asarray(b) for b in exp.base_values]


def shap_batched_route(model, tokenizer, texts, max_evals, max_length):
    import shap

    f = sv.probability_function(model, tokenizer, 1024, max_length, pair=False)
    explainer = shap.Explainer(f, text_masker(tokenizer), algorithm="partition")
    exp = explainer(texts, max_evals=max_evals, silent=True)
    return [np.asarray(v) for v in exp.values], [np.asarray(b) for b in exp.base_values]


def our_route(model, tokenizer, frame, max_evals, max_length, batch_size, precision):
    values = sv.explain(model, tokenizer, frame, batch_size=batch_size, max_evals=max_evals, max_length=max_length,
                        precision=precision)
    out_v, out_b = [], []
    for _, rows in values.groupby("id", sort=False):
        toks = rows[rows["token_index"] >= 0]
        out_v.append(toks.pivot(index="token_index", columns="class_index", values="value").to_numpy())
        out_b.append(rows[rows["token_index"] < 0].sort_values("class_index")["value"].to_numpy())
    return out_v, out_b


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def largest_difference(a, b) -> float:
    (av, ab), (bv, bb) = a, b
    if len(av) != len(bv) or any(x.shape != y.shape for x, y in zip(av, bv)):
        raise SystemExit("routes explained different token sets: the comparison is meaningless")
    return float(max(max(np.abs(x - y).max() for x, y in zip(av, bv)),
                     max(np.abs(x - y).max() for x, y in zip(ab, bb))))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--examples", type=int, default=16, help="examples explained by every route")
    ap.add_argument("--max-evals", type=int, default=500, help="shap max_evals (the studies: 500)")
    ap.add_argument("--max-length", type=int, default=512, help="truncation (and the pipeline's padding) length")
    ap.add_argument("--median-words", type=int, default=40, help="median words per text")
    ap.add_argument("--labels", type=int, default=5, help="classes (Amazon reviews: 5, XNLI: 3)")
    ap.add_argument("--batch-size", type=int, default=64, help="ours: examples explained together")
    ap.add_argument("--precision", default=None,
                    help="ours, comma-separated (auto,fp32,bf16,fp16); default fp32 on CPU, fp32,auto on CUDA")
    ap.add_argument("--authors-padding", default="max_length", choices=["max_length", "longest"],
                    help="the pipeline's padding (the studies' script: max_length)")
    ap.add_argument("--routes", default="authors,ours", help="comma-separated: authors, shap_batched, ours")
    ap.add_argument("--init", type=float, default=None,
                    help="initializer_range (default 0.3 tiny, 0.05 otherwise; BERT's 0.02 gives near-constant outputs)")
    ap.add_argument("--corpus-texts", type=int, default=2000, help="texts the WordPiece vocabulary is trained on")
    ap.add_argument("--seed", type=int, default=0)
    add_machine_options(ap)
    args = ap.parse_args(argv)

    device = machine_device(args)
    precisions = (args.precision or ("fp32,auto" if device.type == "cuda" else "fp32")).split(",")
    routes = args.routes.split(",")
    if "authors" not in routes:
        raise SystemExit("--routes must include authors (the reference of speed and values)")

    corpus = synthetic_texts(args.corpus_texts, args.median_words, args.seed)
    init = args.init if args.init is not None else (0.3 if args.size == "tiny" else 0.05)
    tokenizer, model = build_model(args.size, corpus, args.labels, args.seed, init, args.max_length)
    model.to(device)
    frame = pd.DataFrame({"id": [f"x{i}" for i in range(args.examples)], "language": "xx", "label": 0,
                          "text": synthetic_texts(args.examples, args.median_words, args.seed + 1), "text_pair": None})
    texts, _ = sv.joined_inputs(tokenizer, frame, args.max_length)  # what every route explains
    frame["text"] = texts
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    machine = machine_name(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.size} ({n_params / 1e6:.1f}M params, vocab {model.config.vocab_size}), device {device} "
          f"({machine}), torch {torch.__version__}; {args.examples} examples, tokens median "
          f"{int(np.median(lengths))} / max {max(lengths)}, max_evals {args.max_evals}, max_length {args.max_length}")

    runners = {"authors": lambda: authors_route(model, tokenizer, texts, args.max_evals, args.max_length, device,
                                                args.authors_padding),
               "shap_batched": lambda: shap_batched_route(model, tokenizer, texts, args.max_evals, args.max_length)}
    for p in precisions:
        runners[f"ours[{p}]"] = (lambda p=p: our_route(model, tokenizer, frame, args.max_evals, args.max_length,
                                                        args.batch_size, p))
    order = [r for r in runners if r.split("[")[0] in routes]

    # warm-up: numba compilation inside shap, kernel selection, pipeline construction
    small = dict(texts=texts[:1], frame=frame.iloc[:1])
    authors_route(model, tokenizer, small["texts"], 20, args.max_length, device, args.authors_padding)
    for p in precisions:
        our_route(model, tokenizer, small["frame"], 20, args.max_length, args.batch_size, p)

    results, outputs = [], {}
    for name in order:
        _sync(device)
        start = time.perf_counter()
        outputs[name] = runners[name]()
        _sync(device)
        seconds = time.perf_counter() - start
        results.append({"route": name, "seconds": seconds, "examples_per_s": args.examples / seconds})
    base = results[0]["examples_per_s"]
    scale = max(max(np.abs(v).max() for v in outputs["authors"][0]), 1e-12)
    for r in results:
        r["speedup"] = r["examples_per_s"] / base
        r["max_abs_diff"] = largest_difference(outputs[r["route"]], outputs["authors"])
        print(f"{r['route']:>14}: {r['examples_per_s']:9.3f} examples/s ({r['seconds']:7.1f} s)  "
              f"x{r['speedup']:6.2f} vs authors  max |diff| {r['max_abs_diff']:.2e}")
    print(f"largest |SHAP value| of the authors' route: {scale:.3g}")
    report = {"size": args.size, "device": str(device), "machine": machine, "torch": torch.__version__,
              "examples": args.examples, "max_evals": args.max_evals, "max_length": args.max_length,
              "median_tokens": int(np.median(lengths)), "batch_size": args.batch_size, "results": results,
              "largest_abs_value": float(scale)}
    write_results(args, report)
    return report


if __name__ == "__main__":
    main()
