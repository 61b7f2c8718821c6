"""Configuration: JSON-schema validation with defaults, then checks a schema cannot express.

Both run in ``rules/common.smk`` before Snakemake builds the DAG, so a wrong key or value
stops the run before any job, with a message naming the key (``study_a.finetune.lr_head``).
The same functions also slice the config into the few values each rule receives (its
``params:``), so that changing one setting reruns only the jobs that use it.
"""

from __future__ import annotations

import copy
import functools
import glob
import math
from pathlib import Path
from typing import Any, Iterable

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import LangskewError
from .paths import as_list, matching_files
from .study_a.ratios import parse_ratio, subset_sizes

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

#: Languages of the public hub datasets the paper uses (checked when the config names them).
KNOWN_HUB_LANGUAGES: dict[str, set[str]] = {
    "xnli": {"ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"},
    "facebook/xnli": {"ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"},
    "amazon_reviews_multi": {"de", "en", "es", "fr", "ja", "zh"},
    "mteb/amazon_reviews_multi": {"de", "en", "es", "fr", "ja", "zh"},
    "mteb/AmazonReviewsClassification": {"de", "en", "es", "fr", "ja", "zh"},
}


class ConfigError(LangskewError):
    """A configuration problem; the message starts with the offending key."""


def _with_defaults(base):
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft202012Validator)


def _key(prefix: str, path: Iterable[Any]) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in path]
    return ".".join(parts) or "<config>"


_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def allowed_range(schema: dict) -> str:
    """A schema's numeric bounds as an interval: ``[0, 1)``, ``(0, inf)``, ``[1, inf)``."""
    lo = f"[{schema['minimum']:g}" if "minimum" in schema else \
        f"({schema['exclusiveMinimum']:g}" if "exclusiveMinimum" in schema else "(-inf"
    hi = f"{schema['maximum']:g}]" if "maximum" in schema else \
        f"{schema['exclusiveMaximum']:g})" if "exclusiveMaximum" in schema else "inf)"
    return f"{lo}, {hi}"


def _message(error) -> str:
    """A schema error's message; a value out of bounds also gets the allowed range, and a value
    that matches no branch of an ``anyOf`` what it missed in the branch of its type (e.g. a share
    above 1, a list too short)."""
    if error.validator == "anyOf":
        subs = list(error.context or ())
        near = [sub for sub in subs if sub.validator not in ("type", "enum", "const")] or \
            [sub for sub in subs if sub.validator in ("enum", "const")]
        if near:
            error = near[0]
    if error.validator in _BOUNDS:
        return f"{error.message} (allowed range: {allowed_range(error.schema)})"
    return error.message


def _non_finite(node: Any, path: tuple = ()) -> list[str]:
    """Keys holding NaN or an infinity (which pass every JSON-schema bound)."""
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in _non_finite(value, path + (key,))]
    if isinstance(node, list):
        return [k for i, value in enumerate(node) for k in _non_finite(value, path + (i,))]
    if isinstance(node, float) and not math.isfinite(node):
        return [f"config key '{_key('', path)}': {node} is not a finite number"]
    return []


@functools.lru_cache(maxsize=None)
def _schema(path: str) -> dict:
    """A schema file, parsed once per process with libyaml's loader where PyYAML has it (the
    pure-Python loader took about a third of a dry run's parse time)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(path).read_text(), Loader=loader)


def validate_schema(cfg: dict, schema_path: str | Path, prefix: str = "") -> dict:
    """Fill defaults into ``cfg`` (in place) and raise ConfigError listing every violation."""
    schema = copy.deepcopy(_schema(str(schema_path)))
    validator = _DefaultingValidator(schema)
    # two passes: the first fills defaults (nested defaults need their parent present)
    list(validator.iter_errors(cfg))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"config key '{_key(prefix, e.absolute_path)}': {_message(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return cfg


def validate_config(cfg: dict, schema_dir: str | Path = SCHEMA_DIR,
                    schema_files: dict[str, str | Path] | None = None) -> dict:
    """Schema validation (with defaults) plus the cross-field checks below.

    The schemas are ``schema_dir/config.schema.yaml`` and ``schema_dir/study_b.schema.yaml``,
    or the files given as ``schema_files={"config": ..., "study_b": ...}`` (what the workflow
    passes, resolved relative to its own rule files).
    """
    files = {"config": Path(schema_dir) / "config.schema.yaml", "study_b": Path(schema_dir) / "study_b.schema.yaml"}
    files.update({k: Path(v) for k, v in (schema_files or {}).items()})
    non_finite = _non_finite(cfg)
    if non_finite:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(non_finite))
    validate_schema(cfg, files["config"])
    problems: list[str] = []
    if isinstance(cfg.get("study_b"), dict) and files["study_b"].exists():
        validate_schema(cfg["study_b"], files["study_b"], prefix="study_b")
        problems += _check_study_b(cfg["study_b"], files["study_b"])
        if not problems:
            problems += _check_study_b_jobs(cfg["study_b"])
    problems += _check_study_a(cfg)
    problems += _check_study_a_jobs(cfg, files["config"])
    problems += _check_paths(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def _check_dataset(name: str, ds: dict) -> list[str]:
    key = f"datasets.{name}"
    out = []
    if ds["source"] not in ds:
        out.append(f"config key '{key}.{ds['source']}': required when source is '{ds['source']}'")
    n_labels = len(ds["labels"])
    langs = ds["languages"]
    for lang in langs:
        if lang not in ds["ratios"]:
            out.append(f"config key '{key}.ratios': no ratio for language '{lang}'")
    for lang, ratio in ds["ratios"].items():
        if lang not in langs:
            out.append(f"config key '{key}.ratios.{lang}': unknown language '{lang}' (languages: {', '.join(langs)})")
            continue
        try:
            parse_ratio(ratio, n_labels, lang)
        except LangskewError as err:
            out.append(f"config key '{key}.ratios.{lang}': {err}")
    if ds["source"] == "hub" and "hub" in ds:
        known = KNOWN_HUB_LANGUAGES.get(ds["hub"]["path"])
        if known is not None:
            for lang in langs:
                if lang not in known:
                    out.append(f"config key '{key}.languages': unknown language '{lang}' for hub dataset "
                               f"'{ds['hub']['path']}' (known: {', '.join(sorted(known))})")
    if ds["task"] == "pair" and ds["source"] != "synthetic" and not ds["columns"].get("text_pair"):
        out.append(f"config key '{key}.columns.text_pair': required for task 'pair'")
    if ds["source"] == "local" and len(langs) > 1 and not ds["columns"].get("language") and not ds.get("detect_language"):
        out.append(f"config key '{key}.columns.language': required for local data with several languages "
                   f"(or detect_language: true)")
    if ds.get("detect_language") and (ds["source"] == "synthetic" or ds["columns"].get("language")):
        out.append(f"config key '{key}.detect_language': needs a hub or local source with columns.language: null")
    if isinstance(ds.get("synthetic"), dict):
        from .study_a.synthetic import DEFAULT_KNOBS

        for k in sorted(set(ds["synthetic"]) - {"n_per_label"} - set(DEFAULT_KNOBS)):
            out.append(f"config key '{key}.synthetic.{k}': unknown synthetic option '{k}' "
                       f"(known: n_per_label, {', '.join(DEFAULT_KNOBS)})")
    for raw, idx in (ds.get("label_map") or {}).items():
        if idx >= n_labels:
            out.append(f"config key '{key}.label_map.{raw}': class index {idx} out of range for {n_labels} labels")
    return out


def _check_study_b(sb: dict, schema_path: str | Path) -> list[str]:
    """What the Study B schema leaves open: per-size training overrides and the default size."""
    out: list[str] = []
    sizes = sb.get("sizes") or {}
    default = sb.get("default_size")
    if default is not None and default not in sizes:
        out.append(f"config key 'study_b.default_size': unknown size '{default}' "
                   f"(study_b.sizes defines: {', '.join(sorted(sizes)) or 'none'})")
    train_schema = copy.deepcopy(_schema(str(schema_path))["$defs"]["train"])
    train_schema.pop("required", None)
    validator = Draft202012Validator(train_schema)
    for name, size in sizes.items():
        override = size.get("train") or {}
        for e in sorted(validator.iter_errors(override), key=lambda e: list(map(str, e.absolute_path))):
            out.append(f"config key '{_key(f'study_b.sizes.{name}.train', e.absolute_path)}': {_message(e)}")
    return out


def _check_study_a(cfg: dict) -> list[str]:
    sa = cfg["study_a"]
    out: list[str] = []
    for name in sa["datasets"]:
        if name not in cfg["datasets"]:
            out.append(f"config key 'study_a.datasets': unknown dataset '{name}' (defined: {', '.join(cfg['datasets']) or 'none'})")
    for name in sa["models"]:
        if name not in cfg["models"]:
            out.append(f"config key 'study_a.models': unknown model '{name}' (defined: {', '.join(cfg['models']) or 'none'})")
        elif cfg["models"][name]["source"] == "hub" and not cfg["models"][name].get("path"):
            out.append(f"config key 'models.{name}.path': required when source is 'hub'")
    for name in sa["datasets"]:
        if name in cfg["datasets"]:
            ds = cfg["datasets"][name]
            out += _check_dataset(name, ds)
            for k in ds.get("finetune", {}):
                if k not in sa["finetune"]:
                    out.append(f"config key 'datasets.{name}.finetune.{k}': unknown fine-tuning setting")
            for k in ds.get("shap", {}):
                if k not in sa["shap"]:
                    out.append(f"config key 'datasets.{name}.shap.{k}': unknown SHAP setting")
    conds = sa["conditions"]
    shap = sa["shap"]
    for name in [shap["reference"], *shap["compare"]]:
        if name not in conds:
            out.append(f"config key 'study_a.shap': unknown condition '{name}' (conditions: {', '.join(conds)})")
    for ds_name, classes in shap["classes"].items():
        if ds_name not in cfg["datasets"]:
            out.append(f"config key 'study_a.shap.classes.{ds_name}': unknown dataset '{ds_name}'")
            continue
        n = len(cfg["datasets"][ds_name]["labels"])
        bad = [c for c in classes if c >= n]
        if bad:
            out.append(f"config key 'study_a.shap.classes.{ds_name}': class index {bad[0]} out of range for {n} labels")
    return out


# --- what the jobs would check at run time ----------------------------------------------
# Every value a job checks (and stops on) is checked here too, so that a bad value stops the
# dry run, not a job hours into a run. Each check names the job-side check it mirrors; where the
# job's check is a plain function of config values, it is called as it is.

def _schema_errors(schema: dict, value: Any, key: str) -> list[str]:
    validator = _DefaultingValidator(schema)
    return [f"config key '{_key(key, e.absolute_path)}': {_message(e)}"
            for e in sorted(validator.iter_errors(copy.deepcopy(value)), key=lambda e: list(map(str, e.absolute_path)))]


def _check_study_a_jobs(cfg: dict, schema_path: str | Path) -> list[str]:
    sa = cfg["study_a"]
    if not sa.get("enabled", True):
        return []
    out: list[str] = []
    defs = _schema(str(schema_path))["$defs"]["study_a"]["properties"]
    for name in sa["datasets"]:
        ds = cfg["datasets"].get(name)
        if not ds:
            continue
        key = f"datasets.{name}"
        # per-dataset overrides take the values study_a.finetune / study_a.shap take (finetune_hp)
        for section in ("finetune", "shap"):
            schema = dict(defs[section], additionalProperties=True)
            out += _schema_errors(schema, ds.get(section) or {}, f"{key}.{section}")
        # the language-identification probe (probe.lid_probe) tells languages apart
        if len(ds["languages"]) < 2:
            out.append(f"config key '{key}.languages': Study A's language-identification probe needs at least "
                       f"two languages, got {ds['languages']}")
        # dataset.check_spec: a hub dataset without configs per language names its language column
        if ds["source"] == "hub" and isinstance(ds.get("hub"), dict) and not ds["hub"].get("name") \
                and not ds["columns"].get("language"):
            out.append(f"config key '{key}.columns.language': required when hub.name is null (the column "
                       f"that holds the language)")
        # synthetic._check_args: the generator's knobs
        if ds["source"] == "synthetic" and isinstance(ds.get("synthetic"), dict):
            from .study_a.synthetic import DEFAULT_KNOBS, _check_args

            knobs = {k: v for k, v in ds["synthetic"].items() if k in DEFAULT_KNOBS}  # unknown ones: above
            try:
                _check_args(ds["task"], ds["languages"], ds["labels"], ds["synthetic"]["n_per_label"], knobs)
            except (LangskewError, TypeError, ValueError) as err:
                out.append(f"config key '{key}.synthetic': {err}")
        # subsets.subset_sizes: a split size too small for a ratio leaves a class without rows
        for split, size in (ds.get("split_sizes") or {}).items():
            if size is None:
                continue
            for lang, ratio in ds["ratios"].items():
                try:
                    subset_sizes(ratio, int(size), len(ds["labels"]), lang)
                except LangskewError as err:
                    out.append(f"config key '{key}.split_sizes.{split}': {err}")
    return out + _check_tiny_models(cfg)


def _check_tiny_models(cfg: dict) -> list[str]:
    """The models Study A builds (``source: tiny``): their shape and the probed layers."""
    sa = cfg["study_a"]
    out: list[str] = []
    for name in sa["models"]:
        model = cfg["models"].get(name) or {}
        if model.get("source") != "tiny":
            continue
        from .study_a.modeling import ARCH_DEFAULTS, _arch

        # modeling._arch: the attention heads split the hidden size
        try:
            arch = _arch(model.get("tiny"))
        except LangskewError as err:
            out.append(f"config key 'models.{name}.tiny': {err}")
            continue
        # probe._layer_names: probed layers exist (a tiny model's hidden states are known now)
        n_hidden = int(arch.get("num_hidden_layers", ARCH_DEFAULTS["num_hidden_layers"])) + 1
        bad = [layer for layer in sa["probe"]["layers"] if isinstance(layer, int) and layer >= n_hidden]
        if bad:
            out.append(f"config key 'study_a.probe.layers': layer {bad[0]} does not exist in model '{name}' "
                       f"(hidden states 0..{n_hidden - 1})")
    return out


def _check_source_sections(key: str, spec: dict, sources: Iterable[str]) -> list[str]:
    source = spec.get("source")
    if source in sources and not isinstance(spec.get(source), dict):
        return [f"config key '{key}.{source}': required when source is '{source}'"]
    return []


def _check_hub_files(key: str, hub: dict) -> list[str]:
    """corpus.open_hub: a config name cannot pick the files to read; data_files must."""
    file_mode = hub.get("data_files") or hub.get("shards") or hub.get("streaming")
    if file_mode and hub.get("name") and not hub.get("data_files") and not _looks_local(str(hub.get("path", ""))):
        return [f"config key '{key}.data_files': required when hub.name ({hub['name']!r}) is combined with "
                f"shards or streaming (the config's files, e.g. '{hub['name']}/*.parquet')"]
    return []


def _check_study_b_jobs(sb: dict) -> list[str]:
    """Values the Study B jobs check: corpus sources, grammars, the model and batch shapes of each
    size the grid uses, and the evaluation windows against the context."""
    from .study_b import grid

    if not sb.get("enabled", True):
        return []
    out = _check_study_b_languages(sb) + _check_study_b_parallel(sb)
    try:
        runs = grid.expand_runs(sb)
    except LangskewError as err:
        return out + [f"config key 'study_b.grid': {err}"]
    return out + _check_study_b_eval(sb, runs) + _check_fit_points(sb, runs)


def _check_fit_points(sb: dict, runs: dict[str, dict]) -> list[str]:
    """fit.select_points: every fitted size and language has a monolingual run at each fraction
    that study_b.eval.fit_points names."""
    from .study_b import grid

    selection = sb["eval"].get("fit_points", "all")
    if selection == "all":
        return []
    from .study_b.fit import fit_points, point_fractions, select_points

    fractions = point_fractions(selection)
    out: list[str] = []
    for size, plan in grid.fit_plan(runs).items():
        mono = [runs[r] for r in plan["mono"]]
        fake_ppl = [{r.get("language") or r["base_languages"][0]: 2.0} for r in mono]  # the x of each run is all
        for (_, lang), pts in fit_points(mono, fake_ppl).items():
            try:
                select_points(pts, fractions)
            except LangskewError as err:
                out.append(f"config key 'study_b.eval.fit_points': size '{size}', language '{lang}': {err}")
    return out


def _check_study_b_languages(sb: dict) -> list[str]:
    """Each language's corpus source: its section, hub files, grammar and lexicon richness."""
    from .study_b.synthetic_lang import GRAMMARS, check_richness

    out: list[str] = []
    for lang, spec in (sb.get("languages") or {}).items():
        key = f"study_b.languages.{lang}"
        out += _check_source_sections(key, spec, ("hub", "local", "synthetic"))
        if spec.get("source") == "hub" and isinstance(spec.get("hub"), dict):
            out += _check_hub_files(f"{key}.hub", spec["hub"])
        syn = spec.get("synthetic") if spec.get("source") == "synthetic" else None
        if isinstance(syn, dict) and (syn.get("grammar") or lang) not in GRAMMARS:
            out.append(f"config key '{key}.synthetic.grammar': the generator has grammars {', '.join(GRAMMARS)}; "
                       f"name one for language '{lang}'")
        # corpus.synthetic_documents -> synthetic_lang.lexicon: the richness of the lexicon
        if isinstance(syn, dict):
            try:
                check_richness(syn.get("richness", 1), "richness")
            except LangskewError as err:
                out.append(f"config key '{key}.synthetic.richness': {err}")
    return out


def _check_study_b_parallel(sb: dict) -> list[str]:
    """The parallel corpus of the alignment: its source, files and synthetic grammars."""
    from .study_b.synthetic_lang import GRAMMARS, parallel_richness

    out: list[str] = []
    par = sb.get("parallel") or {}
    out += _check_source_sections("study_b.parallel", par, ("hub", "local"))
    if par.get("source") == "hub" and isinstance(par.get("hub"), dict):
        out += _check_hub_files("study_b.parallel.hub", par["hub"])
    if par.get("source") == "local" and isinstance(par.get("local"), dict):
        local = par["local"]
        if not local.get("files") and not local.get("path"):
            out.append("config key 'study_b.parallel.local': give 'files' (one per language) or 'path'")
        elif not local.get("files") and Path(local["path"]).suffix not in (".parquet", ".csv", ".tsv", ".jsonl"):
            out.append(f"config key 'study_b.parallel.local.path': '{local['path']}' is not .parquet, .csv, .tsv "
                       f"or .jsonl")
    if par.get("source", "synthetic") == "synthetic":
        grammars = (par.get("synthetic") or {}).get("grammars") or {}
        for lang in par.get("languages") or []:
            if grammars.get(lang, lang) not in GRAMMARS:
                out.append(f"config key 'study_b.parallel.synthetic.grammars': no grammar for language '{lang}' "
                           f"(the generator has {', '.join(GRAMMARS)})")
        # the parallel job's richness (rules/study_b_common.smk parallel_spec): given, or the languages' one
        try:
            parallel_richness(par, sb.get("languages") or {})
        except LangskewError as err:
            out.append(f"config key 'study_b.parallel.synthetic.richness': {err}")
    return out


def _check_study_b_eval(sb: dict, runs: dict[str, dict]) -> list[str]:
    """The evaluation windows, and the model and batch shapes of each size the grid uses."""
    from .study_b import grid

    out: list[str] = []
    ev = sb["eval"]
    # perplexity.sliding_window_nll: windows move by stride and score its last stride tokens
    if ev["stride"] > ev["window"]:
        out.append(f"config key 'study_b.eval.stride': {ev['stride']} exceeds study_b.eval.window={ev['window']}")
    # languages.Mixture.parallel: sequences of min_len..max_len tokens
    if ev["parallel_min_len"] > ev["parallel_max_len"]:
        out.append(f"config key 'study_b.eval.parallel_min_len': {ev['parallel_min_len']} exceeds "
                   f"study_b.eval.parallel_max_len={ev['parallel_max_len']}")
    for size in sorted({r["size"] for r in runs.values()}, key=str):
        key = f"study_b.sizes.{size}"
        model = grid.model_params(sb, size)
        train = grid.train_params(sb, size)
        world = max(int((sb["sizes"][size].get("resources") or {}).get("gpu", 1)), 1)
        # model.GPTConfig: heads split d_model
        if model["d_model"] % model["n_head"]:
            out.append(f"config key '{key}.d_model': {model['d_model']} is not divisible by n_head={model['n_head']}")
        # pretrain.TrainHP.micro_steps: each GPU's share of the batch is whole micro-batches
        per_rank, rest = divmod(train["batch_size"], world)
        if rest or per_rank % train["micro_batch_size"]:
            out.append(f"config key '{key}.train.batch_size': {train['batch_size']} is not a multiple of "
                       f"micro_batch_size={train['micro_batch_size']} x {world} GPU(s) of size '{size}'")
        # pretrain.warmup_decay: the cosine runs down from lr to min_lr
        if train["min_lr"] > train["lr"]:
            where = f"{key}.train" if {"lr", "min_lr"} & set(sb["sizes"][size].get("train") or {}) else "study_b.train"
            out.append(f"config key '{where}.min_lr': {train['min_lr']} exceeds lr={train['lr']} of size "
                       f"'{size}' (allowed range: [0, lr])")
        # perplexity.sliding_window_nll and alignment.alignment_job: windows fit in the context
        if ev["window"] > train["context"]:
            out.append(f"config key 'study_b.eval.window': {ev['window']} exceeds the context "
                       f"{train['context']} of size '{size}'")
        bilingual = any(r["size"] == size and r["kind"] != "mono" for r in runs.values())
        if bilingual and ev["parallel_max_len"] > train["context"]:
            out.append(f"config key 'study_b.eval.parallel_max_len': {ev['parallel_max_len']} exceeds the "
                       f"context {train['context']} of size '{size}'")
    return out


# --- files and folders named by the config ----------------------------------------------

def _looks_local(path: str) -> bool:
    """A local path rather than a hub id (hub ids never start with '/', '.' or '~')."""
    return path.startswith(("/", "./", "../", "~")) or path in (".", "..")


def _header_columns(path: Path) -> list[str]:
    """Column names of a table file, reading only its header / schema (cheap for big files)."""
    import json

    import pandas as pd

    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        sep = "\t" if ".tsv" in suffix else ","
        return list(pd.read_csv(path, sep=sep, nrows=0).columns)
    if suffix.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return list(pd.read_json(path, lines=True, nrows=1).columns)
    if suffix.endswith(".json"):
        return list(json.loads(path.read_text())[0].keys())
    raise LangskewError("unknown format (use .csv, .tsv, .jsonl, .json or .parquet)")


def _check_files(key: str, pattern: str) -> list[str]:
    """A path, or a glob that matches at least one file; each file as in ``_check_file``."""
    if not glob.has_magic(str(pattern)):
        return _check_file(key, pattern)
    matches = matching_files(pattern)
    if not matches:
        return [f"config key '{key}': pattern '{pattern}' matches no file"]
    return [problem for path in matches for problem in _check_file(key, path)]


def _check_file(key: str, path: str, columns: Iterable[str] = ()) -> list[str]:
    """The file exists, is not empty, can be read, and has the named columns (header only)."""
    p = Path(path).expanduser()
    if not p.is_file():
        return [f"config key '{key}': file '{path}' does not exist" + (" (it is a folder)" if p.is_dir() else "")]
    if p.stat().st_size == 0:
        return [f"config key '{key}': file '{path}' is empty"]
    columns = [c for c in columns if c]
    if not columns:
        return []
    try:
        have = _header_columns(p)
    except Exception as err:  # noqa: BLE001 -- any reader error means the file cannot be used
        return [f"config key '{key}': file '{path}' cannot be read: {str(err).splitlines()[0] if str(err) else type(err).__name__}"]
    missing = [c for c in columns if c not in have]
    return [f"config key '{key}': file '{path}' has no column '{c}' (columns: {', '.join(map(str, have))})"
            for c in missing]


def _check_paths(cfg: dict) -> list[str]:
    """Local files and model folders the config names must exist before any job runs.

    Table files are also opened far enough to read their header (CSV/JSONL) or schema
    (Parquet): a corrupt file or a missing column is reported here, not hours later.
    """
    out: list[str] = []
    sa = cfg["study_a"]
    if sa.get("enabled", True):
        for name in sa["datasets"]:
            ds = cfg["datasets"].get(name)
            if not ds:
                continue
            if ds["source"] == "local" and isinstance(ds.get("local"), dict):
                cols = ds["columns"]
                wanted = [cols["text"], cols["label"], cols.get("language"),
                          cols.get("text_pair") if ds["task"] == "pair" else None]
                for split in ("train", "validation", "test"):
                    if split in ds["local"]:
                        out += _check_file(f"datasets.{name}.local.{split}", ds["local"][split], wanted)
            hub_path = (ds.get("hub") or {}).get("path", "") if ds["source"] == "hub" else ""
            if hub_path and _looks_local(hub_path) and not Path(hub_path).expanduser().exists():
                out.append(f"config key 'datasets.{name}.hub.path': folder '{hub_path}' does not exist")
        for name in sa["models"]:
            model = cfg["models"].get(name) or {}
            path = model.get("path") or ""
            if model.get("source") == "hub" and _looks_local(path) and not Path(path).expanduser().exists():
                out.append(f"config key 'models.{name}.path': model folder '{path}' does not exist")
    sb = cfg.get("study_b")
    if isinstance(sb, dict) and sb.get("enabled", True):
        for lang, spec in (sb.get("languages") or {}).items():
            local = spec.get("local") if spec.get("source") == "local" else None
            for split in ("train", "test"):
                patterns = (local or {}).get(split) or []
                single = isinstance(patterns, str)
                for i, pat in enumerate(as_list(patterns)):
                    key = f"study_b.languages.{lang}.local.{split}" + ("" if single else f"[{i}]")
                    out += _check_files(key, pat)
        par = sb.get("parallel") or {}
        if par.get("source") == "local":
            local = par.get("local") or {}
            for lang, f in (local.get("files") or {}).items():
                out += _check_file(f"study_b.parallel.local.files.{lang}", f)
            if local.get("path"):
                out += _check_file("study_b.parallel.local.path", local["path"])
    return out


# --- per-rule slices of the config -------------------------------------------------------

def finetune_hp(cfg: dict, dataset: str) -> dict:
    """study_a.finetune with the dataset's overrides (e.g. epochs) applied."""
    hp = dict(cfg["study_a"]["finetune"])
    hp.update(cfg["datasets"][dataset].get("finetune", {}))
    return hp


#: SHAP settings that only the comparison step uses (changing them must not recompute values).
SHAP_COMPARE_KEYS = ("threshold", "reference", "compare", "classes")


def shap_settings(cfg: dict, dataset: str) -> dict:
    """The settings that determine one model's SHAP values (with the dataset's overrides)."""
    s = dict(cfg["study_a"]["shap"])
    s.update(cfg["datasets"][dataset].get("shap", {}))
    for key in SHAP_COMPARE_KEYS:
        s.pop(key, None)
    return s


def dataset_source_spec(cfg: dict, dataset: str) -> dict:
    """The parts of a dataset entry that determine its normalised files (not ratios etc.)."""
    ds = cfg["datasets"][dataset]
    keep = ["source", "task", "languages", "labels", "columns", "strip_title", "label_map", "drop_unknown_labels",
            "seed", ds["source"]]
    return {k: copy.deepcopy(ds[k]) for k in keep if k in ds}


def model_spec(cfg: dict, model: str) -> dict:
    m = cfg["models"][model]
    return {"path": m.get("path"), "revision": m.get("revision"),
            "trust_remote_code": bool(m.get("trust_remote_code", False))}


def merge(base: dict, overlay: dict) -> dict:
    """Snakemake's --configfile semantics: dicts merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(*paths: str | Path, validate: bool = True) -> dict:
    """Load config.yaml plus overlays (as `snakemake --configfile` would) and validate."""
    cfg: dict = {}
    for p in paths:
        cfg = merge(cfg, yaml.safe_load(Path(p).read_text()) or {})
    return validate_config(cfg) if validate else cfg
