"""The authors' Europarl v7 files (statmt.org, one sentence per line) given through
`study_b.parallel.source: local`, with the block docs/own-data.md shows."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from langskew.config import load_config, merge, validate_config
from langskew.study_b import corpus

ROOT = Path(__file__).resolve().parents[1]


def documented_block() -> dict:
    text = (ROOT / "docs/own-data.md").read_text()
    section = text[text.index("## Europarl v7"):]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def test_documented_v7_block_validates_and_reads_every_line_pair(tmp_path, monkeypatch):
    block = documented_block()
    files = block["study_b"]["parallel"]["local"]["files"]
    assert files == {"en": "data/fr-en/europarl-v7.fr-en.en", "fr": "data/fr-en/europarl-v7.fr-en.fr"}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/fr-en").mkdir(parents=True)
    # v7 has lines whose translation is empty; the authors kept those pairs
    Path(files["en"]).write_text("Resumption of the session\n\nPlease rise.\n")
    Path(files["fr"]).write_text("Reprise de la session\nLa séance est ouverte.\nVeuillez vous lever.\n")
    demo = load_config(ROOT / "config.yaml", ROOT / "presets/demo.yaml", validate=False)
    cfg = validate_config(merge(copy.deepcopy(demo), block))
    spec = cfg["study_b"]["parallel"]
    assert spec["source"] == "local"
    pairs = corpus.load_parallel(spec, ["en", "fr"])
    assert pairs.to_dict("records") == [
        {"en": "Resumption of the session", "fr": "Reprise de la session"},
        {"en": "", "fr": "La séance est ouverte."},
        {"en": "Please rise.", "fr": "Veuillez vous lever."}]


def test_paper_config_names_the_hub_europarl_as_v8():
    lines = (ROOT / "config.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "parallel sentences for alignment" in line)
    comment = " ".join(lines[at:at + 2])
    assert "v8" in comment and "v7" in comment and "source: local" in comment  # the hub's, and the authors'
    assert "Europarl v7 fr-en)" not in comment
