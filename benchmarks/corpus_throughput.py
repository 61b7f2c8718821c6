"""Study B data path at full size: time and peak memory of corpus -> tokenizer -> token streams.

Builds a local text corpus of the requested sizes (plain-text files of blank-line separated
documents; Zipf-distributed words of a random lexicon, ~100-character lines), then runs the
three steps of the workflow on it, each in its own process, exactly as the rules do:

1. ``corpus.write_corpus`` (local source, seeded 1% held-out sample) -> train/test Parquet;
2. ``tokenizer.train_tokenizer`` on the streamed train documents;
3. ``tokenizer.write_token_streams`` -> train.bin / test.bin / meta.json.

For each size and step it prints the wall time and the step's peak resident memory (the
process's ``ru_maxrss``). Bounded memory means the peak stays flat as the corpus grows.

    nice python benchmarks/corpus_throughput.py --sizes 0.1 1 --workdir /tmp/langskew-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

FILE_BYTES = 64 * 2**20  # one corpus file per 64 MiB


def make_corpus(folder: Path, gigabytes: float, seed: int = 0) -> int:
    """Write ~``gigabytes`` GB of documents as text files under ``folder``; return bytes written.

    Reuses what is there when the folder already holds enough text.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = int(gigabytes * 1e9)
    have = sum(p.stat().st_size for p in folder.glob("*.txt"))
    if have >= target:
        return have
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzéèàç"))
    lexicon = np.array(["".join(rng.choice(letters, size=int(k))) for k in rng.integers(2, 11, size=50_000)])
    index = len(list(folder.glob("*.txt")))
    written = have
    while written < target:
        parts, size = [], 0
        while size < min(FILE_BYTES, target - written):
            words = lexicon[np.minimum(rng.zipf(1.2, size=2000), len(lexicon)) - 1]
            lines = [" ".join(words[i:i + 16]).capitalize() + "." for i in range(0, len(words), 16)]
            for d in range(0, len(lines), 10):  # documents of 10 lines, blank line between
                doc = "\n".join(lines[d:d + 10]) + "\n\n"
                parts.append(doc)
                size += len(doc.encode())
        path = folder / f"part-{index:04d}.txt"
        path.write_text("".join(parts), encoding="utf-8")
        written += path.stat().st_size
        index += 1
    return written


STEP = r"""
import json, sys
sys.path.insert(0, {src!r})
from langskew.study_b import corpus, tokenizer
args = json.loads({args!r})
if args["step"] == "corpus":
    spec = {{"source": "local", "local": {{"train": args["glob"], "document_split": "blank_line"}},
            "test_fraction": 0.01, "holdout_seed": 0}}
    print(json.dumps(corpus.write_corpus(spec, "xx", {{"train": args["train"], "test": args["test"]}})))
elif args["step"] == "tokenizer":
    n = tokenizer.train_tokenizer(corpus.iter_texts(args["train"]), args["model"], args["vocab"],
                                  {{"input_sentence_size": args["sentences"]}}, threads=args["threads"])
    print(json.dumps({{"pieces": n}}))
else:
    docs = {{s: corpus.iter_texts(args[s]) for s in ("train", "test")}}
    meta = tokenizer.write_token_streams(args["model"], "xx", docs,
                                         {{"train": args["bin_train"], "test": args["bin_test"],
                                           "meta": args["meta"]}}, threads=args["threads"])
    print(json.dumps(meta["n_tokens"]))
"""


def run_step(step: str, args: dict) -> tuple[float, float, str]:
    """Run one step in a fresh process; return (seconds, peak RSS in MiB, its last output line)."""
    code = STEP.format(src=str(ROOT / "src"), args=json.dumps({**args, "step": step}))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"step {step} failed (status {status}): {out[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, out.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.1, 1.0], help="corpus sizes in GB")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/langskew-corpus-bench"))
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--sentences", type=int, default=300_000, help="input_sentence_size of the tokenizer")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"vocab {a.vocab}, input_sentence_size {a.sentences}, threads {a.threads}")
    rows = []
    for gb in sorted(a.sizes):
        text = a.workdir / "text"
        t0 = time.perf_counter()
        # the corpus of the smaller size is a prefix of the larger one: read only the files needed
        total = make_corpus(text, gb)
        files = sorted(text.glob("*.txt"))
        chosen, acc = [], 0
        for f in files:
            if acc >= gb * 1e9:
                break
            chosen.append(str(f))
            acc += f.stat().st_size
        listing = a.workdir / f"files-{gb:g}"
        listing.mkdir(parents=True, exist_ok=True)
        for f in listing.glob("*"):
            f.unlink()
        for f in chosen:
            (listing / Path(f).name).symlink_to(f)
        print(f"\n== {acc / 1e9:.2f} GB of text in {len(chosen)} files (built in {time.perf_counter() - t0:.0f} s; "
              f"{total / 1e9:.2f} GB on disk)")
        out = a.workdir / f"out-{gb:g}"
        args = {"glob": str(listing / "*.txt"), "train": str(out / "train.parquet"), "test": str(out / "test.parquet"),
                "model": str(out / "xx.model"), "bin_train": str(out / "train.bin"), "bin_test": str(out / "test.bin"),
                "meta": str(out / "meta.json"), "vocab": a.vocab, "sentences": a.sentences, "threads": a.threads}
        for step in ("corpus", "tokenizer", "tokens"):
            seconds, peak, result = run_step(step, args)
            rows.append((acc / 1e9, step, seconds, peak, result))
            print(f"{step:10s} {seconds:8.1f} s   peak RSS {peak:8.0f} MiB   {result}", flush=True)
    print("\n| text GB | step | wall s | peak RSS MiB |\n|---|---|---|---|")
    for gb, step, seconds, peak, _ in rows:
        print(f"| {gb:.2f} | {step} | {seconds:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
