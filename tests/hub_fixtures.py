"""Local folders laid out like the hub repos the paper configuration reads.

Each builder writes the same file layout and README metadata as the real repo, so that the
workflow's own calls (``datasets.load_dataset``, ``langskew.hub.resolve_data_files``) run
on them unchanged, offline:

* :func:`per_language_parquet_repo` - one parquet config per language, each with train /
  validation / test files and a README ``configs:`` block (facebook/xnli,
  mteb/AmazonReviewsClassification: ``{lang}/{split}-00000-of-00001.parquet``);
* :func:`sharded_parquet_repo` - many parquet shards of one train split and a README
  without ``configs:`` (PleIAs/French-PD-Books);
* :func:`split_shards_repo` - parquet shards of several splits side by side in ``data/``, named
  ``{split}-{i:05d}-of-{n:05d}-{hash}.parquet``, and a README ``dataset_info`` without
  ``configs:`` (manu/project_gutenberg, one split per language);
* :func:`translation_repo` - per language-pair folders of parquet shards whose rows hold a
  ``translation`` dict column (Helsinki-NLP/europarl ``en-fr/train-*.parquet``);
* :func:`script_only_repo` - a loading script plus jsonl files and no parquet
  (mteb/amazon_reviews_multi), which ``datasets`` >= 4 refuses to run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml


def _readme(root: Path, header: dict | None, title: str) -> None:
    text = (f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n" if header else "---\nlicense: cc0-1.0\n---\n")
    (root / "README.md").write_text(f"{text}\n# {title}\n")


def per_language_parquet_repo(root, frames: dict[str, dict[str, pd.DataFrame]], title: str = "fixture") -> Path:
    """``{config: {split: frame}}`` as ``{config}/{split}-00000-of-00001.parquet`` + README configs."""
    root = Path(root)
    configs = []
    for config, splits in frames.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        files = []
        for split, df in splits.items():
            rel = f"{config}/{split}-00000-of-00001.parquet"
            df.to_parquet(root / rel, index=False)
            files.append({"split": split, "path": rel})
        configs.append({"config_name": config, "data_files": files})
    _readme(root, {"configs": configs}, title)
    return root


def sharded_parquet_repo(root, shards: list[pd.DataFrame], folder: str = "data") -> Path:
    """Train shards ``{folder}/train-{i:05d}-of-{n:05d}.parquet``; README with a license only."""
    root = Path(root)
    (root / folder).mkdir(parents=True, exist_ok=True)
    for i, df in enumerate(shards):
        df.to_parquet(root / folder / f"train-{i:05d}-of-{len(shards):05d}.parquet", index=False)
    _readme(root, None, "sharded fixture")
    return root


def split_shards_repo(root, shards: dict[str, list[pd.DataFrame]]) -> Path:
    """``{split: [frame, ...]}`` as ``data/{split}-{i:05d}-of-{n:05d}-{hash}.parquet``; README dataset_info."""
    import hashlib

    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    splits = []
    for split, frames in shards.items():
        for i, df in enumerate(frames):
            tag = hashlib.sha1(f"{split}{i}".encode()).hexdigest()[:16]
            df.to_parquet(root / "data" / f"{split}-{i:05d}-of-{len(frames):05d}-{tag}.parquet", index=False)
        splits.append({"name": split, "num_examples": int(sum(len(df) for df in frames))})
    _readme(root, {"dataset_info": {"features": [{"name": "id", "dtype": "string"}, {"name": "text", "dtype": "string"}],
                                    "splits": splits}}, "split shards fixture")
    return root


def translation_repo(root, pairs_per_shard: list[list[tuple[str, str]]], pair: str = "en-fr") -> Path:
    """Europarl-style ``{pair}/train-*.parquet`` with a struct column ``translation`` {src, tgt}."""
    root = Path(root)
    src, tgt = pair.split("-")
    (root / pair).mkdir(parents=True, exist_ok=True)
    files = []
    for i, pairs in enumerate(pairs_per_shard):
        rel = f"{pair}/train-{i:05d}-of-{len(pairs_per_shard):05d}.parquet"
        table = pa.table({"translation": pa.array([{src: a, tgt: b} for a, b in pairs],
                                                  pa.struct([(src, pa.string()), (tgt, pa.string())]))})
        pq.write_table(table, root / rel)
        files.append(rel)
    _readme(root, {"configs": [{"config_name": pair, "data_files": [{"split": "train", "path": f"{pair}/train-*"}]}]},
            "translation fixture")
    return root


def script_only_repo(root, name: str) -> Path:
    """A repo with only ``{name}.py`` (a datasets loading script) and jsonl data."""
    root = Path(root)
    (root / "en").mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text("import datasets\n\n\nclass Reviews(datasets.GeneratorBasedBuilder):\n    pass\n")
    (root / "en" / "train.jsonl").write_text('{"id": "en_0", "text": "Great", "label": 4, "label_text": "4"}\n')
    (root / "README.md").write_text("---\nlicense: other\n---\n")
    return root


def hub_cache_repo(cache, repo_id: str, folder, repo_type: str = "dataset", downloaded=None,
                   commit: str | None = None) -> str:
    """Put a repo (the files of ``folder``) into a hub cache as ``snapshot_download`` leaves it.

    The layout of ``huggingface_hub``'s cache: ``{type}s--{org}--{name}/blobs/<etag>`` holding the
    contents, ``snapshots/<commit>/<path>`` symlinks to them, ``refs/main`` naming the commit, and
    ``trees/<commit>.json`` listing every file of the repo at that commit. Only the files matching
    ``downloaded`` (glob patterns; None: all) are in the snapshot, as after a download of chosen
    shards. Returns the commit hash.
    """
    import fnmatch
    import hashlib

    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache  # the writer snapshot_download uses

    folder = Path(folder)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    commit = commit or hashlib.sha1(f"{repo_id}:{files}".encode()).hexdigest()
    storage = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    entries = {}
    for rel in files:
        data = (folder / rel).read_bytes()
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        lfs = Path(rel).suffix in (".parquet", ".safetensors", ".bin")
        sha256 = hashlib.sha256(data).hexdigest()
        entries[rel] = TreeCacheEntry(size=len(data), blob_id=git_sha1, lfs_sha256=sha256 if lfs else None,
                                      lfs_size=len(data) if lfs else None)
        if downloaded is not None and not any(fnmatch.fnmatch(rel, p) for p in downloaded):
            continue
        etag = sha256 if lfs else git_sha1
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = storage / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (rel.count("/") + 2)) / "blobs" / etag)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    write_tree_cache(str(storage), commit, entries)
    return commit
