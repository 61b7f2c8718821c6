

# --- tiny encoder models for probe / SHAP tests ---------

TINY_WORDS = {
    "en": "the cat dog runs fast slow good bad house tree water blue red green happy sad".split(),
    "fr": "le chat chien court vite lent bon mauvais maison arbre eau bleu rouge vert heureux triste".split(),
}


def tiny_frame(n_per_language: int = 12, pair: bool = False, seed: int = 0, n_labels: int = 3):
    """A small frame in the normalised schema (id, language, text, text_pair, label)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for lang, words in TINY_WORDS.items():
        for i in range(n_per_language):
            sentence = lambda: " ".join(rng.choice(words, size=int(rng.integers(3, 8))))  # noqa: E731
            rows.append({"id": f"{lang}-{i}", "language": lang, "text": sentence(),
                         "text_pair": sentence() if pair else None, "label": int(i % n_labels)})
    df = pd.DataFrame(rows)
    df["label"] = df["label"].astype("int64")
    return df


def build_tiny_encoder(path, kind: str = "bert", num_labels: int = 3, seed: int = 0):
    """Save a tiny randomly initialised classifier + WordPiece tokenizer under ``path``.

    ``kind="bert"`` has a pooler (like mBERT); ``kind="roberta"`` has none (like XLM-R).
    Load it back with AutoTokenizer / AutoModelForSequenceClassification.from_pretrained.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast,
                              RobertaConfig, RobertaForSequenceClassification)

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [" ".join(words) for words in TINY_WORDS.values()] * 20
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    ids = {s: tok.token_to_id(s) for s in specials}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    common = dict(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=32, num_labels=num_labels,
                  pad_token_id=ids["[PAD]"], type_vocab_size=2, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, initializer_range=0.3)
    torch.manual_seed(seed)
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(max_position_embeddings=64, **common))
    elif kind == "roberta":
        common.update(bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"])
        model = RobertaForSequenceClassification(RobertaConfig(max_position_embeddings=72, **common))
    else:
        raise ValueError(kind)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- learnable classification frames + job plumbing for fine-tuning tests ---

def make_tiny_classification_frames(out_dir=None, languages=("en", "fr"), n_classes: int = 3,
                                    sizes=None, pair: bool = True, seed: int = 0):
    """Small learnable dataset in the normalised schema: {split: DataFrame}.

    Each class has a cue word per language (e.g. "en_c2") somewhere in ``text`` among
    filler words of varied length; with ``pair`` a ``text_pair`` of filler words is added.
    With ``out_dir`` the frames are also written as ``{out_dir}/{split}.parquet``.
    """
    from pathlib import Path

    import numpy as np
    import pandas as pd

    sizes = dict(sizes or {"train": 240, "validation": 60, "test": 60})
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in sizes.items():
        rows = []
        for i in range(n):
            lang = languages[i % len(languages)]
            label = int(rng.integers(n_classes))
            words = [f"{lang}w{int(k)}" for k in rng.integers(0, 30, size=int(rng.integers(2, 25)))]
            words.insert(int(rng.integers(len(words) + 1)), f"{lang}_c{label}")
            pair_words = [f"{lang}w{int(k)}" for k in rng.integers(0, 30, size=int(rng.integers(1, 6)))]
            rows.append({"id": f"{split}-{i}", "language": lang, "text": " ".join(words),
                         "text_pair": " ".join(pair_words) if pair else None, "label": label})
        df = pd.DataFrame(rows)
        df["label"] = df["label"].astype("int64")
        frames[split] = df
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            df.to_parquet(Path(out_dir) / f"{split}.parquet", index=False)
    return frames


def named(**entries):
    """A Snakemake-style namedlist (attribute and index access) for calling *_job functions."""
    from snakemake.iocontainers import Namedlist

    return Namedlist(fromdict=entries)


# --- Study B token streams ---------------------------

def write_fake_token_stream(folder, language: str = "en", vocab_size: int = 50, n_train: int = 5000,
                            n_test: int = 1000, seed: int = 0, pad_id: int = 0, eod_id: int = 2):
    """Write ``folder/{train,test}.bin`` + ``meta.json`` of random ids (no tokenizer); return the meta path.

    Ids are drawn from [3, vocab_size) with an EOD every 50 tokens, so padding never occurs.
    """
    import json
    from pathlib import Path

    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ids = rng.integers(3, vocab_size, size=n).astype(np.uint16)
        ids[49::50] = eod_id
        ids.tofile(folder / f"{split}.bin")
        counts[split] = n
    meta = {"language": language, "vocab_size": vocab_size, "dtype": "uint16", "eod_id": eod_id,
            "pad_id": pad_id, "n_tokens": counts, "tokenizer": str(folder / "none.model")}
    (folder / "meta.json").write_text(json.dumps(meta))
    return str(folder / "meta.json")


def build_study_b_tokens(out_dir, n_documents: int = 300, vocab_size: int = 400, parallel_pairs: int = 40,
                         languages=("en", "fr"), seed: int = 0):
    """Synthetic EN/FR corpus -> SentencePiece tokenizers -> token streams + parallel.npz.

    Mirrors the workflow's layout under ``out_dir``: ``tokenizer/{lang}.model``,
    ``tokens/{lang}/meta.json`` (+ bins) and ``tokens/parallel.npz``. Returns
    {"metas": {lang: meta path}, "parallel": npz path, "tokenizers": {lang: model path}}.
    """
    from pathlib import Path

    from langskew.study_b import corpus, tokenizer

    out = Path(out_dir)
    metas, models = {}, {}
    for lang in languages:
        spec = {"source": "synthetic", "synthetic": {"n_documents": {"train": n_documents, "test": n_documents // 5},
                                                     "seed": seed}}
        docs = corpus.load_corpus(spec, lang)
        models[lang] = str(out / "tokenizer" / f"{lang}.model")
        tokenizer.train_tokenizer(docs["train"], models[lang], vocab_size, {"hard_vocab_limit": False})
        folder = out / "tokens" / lang
        paths = {"train": folder / "train.bin", "test": folder / "test.bin", "meta": folder / "meta.json"}
        tokenizer.write_token_streams(models[lang], lang, docs, paths)
        metas[lang] = str(paths["meta"])
    pairs = corpus.load_parallel({"source": "synthetic", "n_pairs": parallel_pairs}, list(languages))
    npz = out / "tokens" / "parallel.npz"
    tokenizer.encode_parallel(pairs, models, npz)
    return {"metas": metas, "parallel": str(npz), "tokenizers": models}


# --- hub-style dataset folders for source tests -------

def write_hub_style_dataset(root, frames):
    """Lay out ``{config_name: {split: DataFrame}}`` under ``root`` like a hub dataset repo.

    Writes ``{config}/{split}.parquet`` and a README.md whose YAML header lists the
    configs and their data files, so that ``datasets.load_dataset(str(root), name=config,
    split=split)`` works offline, the same call the workflow makes for a hub id.
    """
    from pathlib import Path

    import yaml

    root = Path(root)
    configs = []
    for config, splits in frames.items():
        files = []
        for split, df in splits.items():
            rel = f"{config}/{split}.parquet"
            (root / config).mkdir(parents=True, exist_ok=True)
            df.to_parquet(root / rel, index=False)
            files.append({"split": split, "path": rel})
        configs.append({"config_name": config, "data_files": files})
    header = yaml.safe_dump({"configs": configs}, sort_keys=False)
    (root / "README.md").write_text(f"---\n{header}---\n\n# test dataset\n")
    return root


def job(input=None, output=None, threads: int = 1, log_file=None, **kw):
    """A :class:`langskew.workflow.Job` for calling a ``*_job`` function outside Snakemake.

    ``input`` / ``output``: dicts (named entries) or lists (positional entries).
    """
    from snakemake.iocontainers import Namedlist

    from langskew.workflow import Job

    def as_named(x):
        if x is None:
            return Namedlist()
        if isinstance(x, dict):
            return Namedlist(fromdict=x)
        return Namedlist(list(x))

    return Job(input=as_named(input), output=as_named(output), threads=threads, log_file=log_file, **kw)


# --- config validation ------------------------------------------------------------------------
def rejected(raw, mutate) -> str:
    """The message of the ConfigError that validating a changed copy of ``raw`` raises."""
    import copy

    import pytest

    from langskew.config import ConfigError, validate_config

    cfg = copy.deepcopy(raw)
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    return str(e.value)


# --- benchmark scripts ---------------------------------------------------------------------------
def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (the folder is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STREAMING_LEFT = """
import gc, importlib, json, sys
import datasets
module, name = sys.argv[1].rsplit(".", 1)
args = json.loads(sys.argv[2])
gc.disable()  # as if the collector did not run again before the process exits
result = getattr(importlib.import_module(module), name)(*args)
print(json.dumps({"result": result, "alive": sum(isinstance(o, datasets.IterableDataset) for o in gc.get_objects())},
                 default=str))
"""


def streaming_datasets_left(func: str, *args) -> tuple[object, int]:
    """Call ``func`` (``module.name``) with JSON ``args`` in a fresh interpreter, as a job does,
    with the cyclic garbage collector off; return its JSON result and how many ``datasets``
    IterableDatasets are still alive after it returned."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", STREAMING_LEFT, func, json.dumps(args, default=str)],
                         capture_output=True, text=True, check=True)
    got = json.loads(run.stdout.strip().splitlines()[-1])
    return got["result"], got["alive"]
