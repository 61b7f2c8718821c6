"""Study B monolingual scaling fits and token efficiency (rule ``study_b_fit``).

Scaling fit: 1/PPL = c - a * x^(-b) over monolingual runs, x = training tokens in units of
the 1x token budget (``study_b.train.base_tokens``, the same for every size). For a language of a bilingual run,
MLTE is the monolingual token count at which the fit reaches that PPL, TEff = MLTE /
tokens of the language, and MLPE = the fit's PPL at the same token count.

As the authors computed them (``study_b.eval``): the fit is an unbounded least-squares fit
started from (a, b, c) = (1, 1, 1), scipy's default (``fit_method: authors``; ``bounded``
keeps c in [0, 1], a >= 0, b in [0.001, 5] and starts from the data), and the tokens of a
language are the run's tokens x the language's probability (``teff_tokens: expected``;
``counted`` uses the sequences counted during training, metrics.json ``tokens_seen``).

Which monolingual runs are fitted (``study_b.eval.fit_points``): ``all`` of a size and
language's runs (default), ``paper_table`` (the 0.1x, 0.5x and 1x runs, the ones the paper's
Table 1 shows; the authors' run list is not published), or a list of token fractions. TEff near
1 depends on that choice, so the table also carries TEff under all points and under the paper
table's points side by side (``TEff_all_points``, ``TEff_paper_points``; NaN where those runs
are missing or the fit fails), whichever set the other columns use.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import read_json, write_csv
from langskew.workflow import Job

logger = logging.getLogger(__name__)


def power_law(x: np.ndarray | float, c: float, a: float, b: float) -> np.ndarray | float:
    """1/PPL as a function of training tokens x (in budget units): c - a * x^(-b)."""
    return c - a * np.power(x, -b)


#: Bounds of the fitted (c, a, b): 1/PPL <= 1, a decreasing curve, a positive exponent.
FIT_BOUNDS = ((0.0, 0.0, 1e-3), (1.0, np.inf, 5.0))
FIT_PARAMS = ("c", "a", "b")


FIT_METHODS = ("authors", "bounded")
TEFF_TOKENS = ("expected", "counted")
#: Token fractions of the monolingual runs the paper's Table 1 shows (10%, 50%, 100%).
PAPER_TABLE_POINTS = (0.1, 0.5, 1.0)
#: Relative tolerance between a run's x (whole steps: slightly below its fraction) and a fraction.
POINT_TOLERANCE = 0.01


def point_fractions(selection: str | Sequence[float]) -> tuple[float, ...] | None:
    """The token fractions a ``fit_points`` setting names (None: all points)."""
    if isinstance(selection, str):
        if selection == "all":
            return None
        if selection == "paper_table":
            return PAPER_TABLE_POINTS
        raise LangskewError(f"scaling fit: fit_points must be all, paper_table or a list of token fractions, "
                            f"got {selection!r}")
    fractions = tuple(float(f) for f in selection)
    if len(set(fractions)) < 3 or any(not math.isfinite(f) or f <= 0 for f in fractions):
        raise LangskewError(f"scaling fit: fit_points needs at least 3 distinct positive token fractions, "
                            f"got {list(selection)}")
    return fractions


def select_points(pts: Sequence[tuple[float, float, str]], selection: str | Sequence[float],
                  where: str = "scaling fit") -> list[tuple[float, float, str]]:
    """The points of ``pts`` ((x, 1/PPL, run id), sorted by x) at the fractions ``selection`` names
    (each within :data:`POINT_TOLERANCE`); all of them for ``"all"``. A missing fraction is an error."""
    fractions = point_fractions(selection)
    if fractions is None:
        return list(pts)
    chosen = []
    for f in fractions:
        near = [p for p in pts if abs(p[0] - f) <= POINT_TOLERANCE * f]
        if not near:
            raise LangskewError(f"{where}: fit_points names x={f:g}, but no monolingual run has it "
                                f"(runs at x={', '.join(f'{p[0]:.4g}' for p in pts)})")
        chosen.append(near[0])
    return sorted(set(chosen))


def fit_power_law(x: Sequence[float], inv_ppl: Sequence[float], method: str = "authors") -> tuple[float, float, float]:
    """Least-squares (c, a, b) of 1/PPL = c - a * x^(-b); needs at least three points.

    ``method="authors"``: unbounded (Levenberg-Marquardt), started from a = b = c = 1 as the
    authors' ``curve_fit`` call without ``p0``. ``"bounded"``: within :data:`FIT_BOUNDS`,
    started from the data.
    """
    from scipy.optimize import curve_fit

    if method not in FIT_METHODS:
        raise LangskewError(f"scaling fit: method must be one of {', '.join(FIT_METHODS)}, got {method!r}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(inv_ppl, dtype=np.float64)
    if len(x) < 3 or len(np.unique(x)) < 3:
        raise LangskewError(f"scaling fit: need at least 3 distinct token counts, got x={x.tolist()}")
    if (x <= 0).any() or (y <= 0).any() or (y >= 1).any():
        raise LangskewError(f"scaling fit: need x > 0 and 0 < 1/PPL < 1, got x={x.tolist()}, 1/PPL={y.tolist()}")
    if method == "authors":
        import warnings

        from scipy.optimize import OptimizeWarning

        with warnings.catch_warnings():  # the covariance, which nothing here uses, may be inestimable
            warnings.simplefilter("ignore", OptimizeWarning)
            (c, a, b), _ = curve_fit(power_law, x, y, p0=(1.0, 1.0, 1.0))
        return float(c), float(a), float(b)
    b0 = 0.5
    c0 = min(0.999, y.max() + 0.5 * (y.max() - y.min()) + 1e-6)
    a0 = max((c0 - y.min()) * x.min() ** b0, 1e-9)
    (c, a, b), _ = curve_fit(power_law, x, y, p0=(c0, a0, b0), bounds=FIT_BOUNDS, maxfev=20000)
    return float(c), float(a), float(b)


def params_at_bound(params: Sequence[float], rel: float = 1e-3, method: str = "bounded") -> list[str]:
    """Names of the fitted parameters that sit at (within ``rel`` of) a bound of :data:`FIT_BOUNDS`
    (none for the unbounded ``authors`` fit)."""
    out = []
    if method != "bounded":
        return out
    for name, value, lo, hi in zip(FIT_PARAMS, params, *FIT_BOUNDS):
        for bound in (lo, hi):
            if np.isfinite(bound) and abs(value - bound) <= rel * max(abs(bound), 1e-3):
                out.append(f"{name}={bound:g}")
    return out


def fit_residuals(x: Sequence[float], inv_ppl: Sequence[float], params: Sequence[float]) -> pd.DataFrame:
    """Per monolingual point: x, observed and fitted 1/PPL and PPL, residual (observed - fitted 1/PPL)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(inv_ppl, dtype=np.float64)
    fitted = np.asarray(power_law(x, *params), dtype=np.float64)
    with np.errstate(divide="ignore"):
        fitted_ppl = np.where(fitted > 0, 1.0 / np.where(fitted > 0, fitted, 1.0), np.inf)
    return pd.DataFrame({"x": x, "inv_ppl": y, "fitted_inv_ppl": fitted, "residual": y - fitted,
                         "ppl": 1.0 / y, "fitted_ppl": fitted_ppl,
                         "ppl_rel_error": (fitted_ppl - 1.0 / y) * y})


def bootstrap_fits(x: Sequence[float], inv_ppl: Sequence[float], n_boot: int, seed: int = 0,
                   method: str = "authors") -> list[tuple[float, float, float]]:
    """Fits on ``n_boot`` resamples (with replacement) of the monolingual points.

    Resamples with fewer than 3 distinct token counts, or whose fit fails, are left out.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(inv_ppl, dtype=np.float64)
    rng = np.random.default_rng([int(seed), 0xB007])
    out = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < 3:
            continue
        try:
            out.append(fit_power_law(x[idx], y[idx], method))
        except (RuntimeError, ValueError, LangskewError):
            continue
    return out


def _interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan
    if not np.isfinite(v).all():  # some resample's fit never reaches this PPL: unbounded
        lo = float(np.nanpercentile(np.where(np.isfinite(v), v, np.inf), 100 * (1 - level) / 2))
        return lo, math.inf
    return (float(np.percentile(v, 100 * (1 - level) / 2)), float(np.percentile(v, 100 * (1 + level) / 2)))


def mlte(ppl: float, c: float, a: float, b: float, budget: float = 1.0) -> float:
    """Monolingual tokens needed to reach ``ppl`` under the fit (inf when beyond its asymptote)."""
    gap = c - 1.0 / ppl
    if gap <= 0:
        return math.inf
    return budget * (a / gap) ** (1.0 / b) if a > 0 else 0.0


def mlpe(tokens: float, c: float, a: float, b: float, budget: float = 1.0) -> float:
    """The fit's perplexity after ``tokens`` monolingual tokens.

    Where the fitted curve has no positive inverse perplexity (far below the smallest
    monolingual point) the fit says nothing meaningful: ``inf`` rather than a negative PPL.
    """
    inv = float(power_law(tokens / budget, c, a, b))
    return 1.0 / inv if inv > 0 else float("inf")


def expected_tokens_seen(run: dict, batch_size: int, context: int) -> list[float]:
    """Expected training tokens of each model language: stage lengths x stage probabilities."""
    schedule = np.asarray(run["schedule"], dtype=np.float64)
    steps = int(run["steps"])
    bounds = [s * steps // len(schedule) for s in range(len(schedule) + 1)]
    return (np.diff(bounds)[:, None] * schedule).sum(axis=0) * batch_size * context


def language_index(run: dict, name: str) -> int:
    """Index of model language ``name`` in a run (clones are L1..LK; real/mono use base names)."""
    if run["kind"] == "clone":
        if name[:1] == "L" and name[1:].isdigit() and 1 <= int(name[1:]) <= int(run["n_languages"]):
            return int(name[1:]) - 1
    elif name in run["base_languages"]:
        return list(run["base_languages"]).index(name)
    raise LangskewError(f"run {run.get('id')!r}: unknown language {name!r}")


def base_language(run: dict, name: str) -> str:
    """The base language whose monolingual fit applies to model language ``name``."""
    index = language_index(run, name)
    return run["base_languages"][0] if run["kind"] == "clone" else run["base_languages"][index]


def budget_tokens(run: dict, batch_size: int, context: int) -> float:
    """Tokens of a 1x run (the unit of x): the run spec's ``budget_tokens``, else steps / scale x batch x context."""
    if run.get("budget_tokens"):
        return float(run["budget_tokens"])
    return int(run["steps"]) / float(run["scale"]) * batch_size * context


def mono_x(run: dict, batch_size: int | None = None, context: int | None = None) -> float:
    """Training data of a monolingual run in budget units: tokens trained / 1x budget x data fraction."""
    fraction = float(run.get("data_fraction") or 1.0)
    if run.get("budget_tokens") and run.get("tokens"):
        return float(run["tokens"]) / float(run["budget_tokens"]) * fraction
    return float(run["scale"]) * fraction


def fit_points(mono_runs: Sequence[dict], mono_ppl: Sequence[dict]
               ) -> dict[tuple[str, str], list[tuple[float, float, str]]]:
    """{(size, language): [(x, 1/PPL, run id)]} of the monolingual runs, sorted by x."""
    points: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for run, ppl in zip(mono_runs, mono_ppl):
        lang = run.get("language") or run["base_languages"][0]
        if lang not in ppl:
            raise LangskewError(f"scaling fit: perplexities of {run['id']!r} have no language {lang!r}")
        points.setdefault((run["size"], lang), []).append((mono_x(run), 1.0 / float(ppl[lang]), run["id"]))
    return {k: sorted(v) for k, v in points.items()}


def fit_table(mono_runs: Sequence[dict], mono_ppl: Sequence[dict], target_runs: Sequence[dict],
              target_ppl: Sequence[dict], batch_size: int, context: int,
              tokens_seen: Sequence[dict | None] | None = None, n_boot: int = 0, seed: int = 0,
              max_rel_residual: float = 0.05, method: str = "authors", teff_tokens: str = "expected",
              data_passes: Sequence[dict | None] | None = None,
              points_used: str | Sequence[float] = "all") -> pd.DataFrame:
    """One row per (target run, language): ppl, tokens_seen, MLTE, TEff, MLPE and the fit (c, a, b).

    ``tokens_seen`` is the denominator of TEff and the x of MLPE: with ``teff_tokens="expected"``
    (the authors') the run's tokens x the language's probability (stage-weighted,
    :func:`expected_tokens_seen`); with ``"counted"`` ``tokens_seen[i]`` ({language: tokens},
    the sequences counted in training, metrics.json), where given. ``tokens_counted`` and
    ``tokens_expected`` carry both. ``method``: the fit (:func:`fit_power_law`).
    ``data_passes[i]`` ({language: passes over its training stream}, metrics.json) becomes the
    ``data_passes`` column (NaN where unknown). ``points_used``: the monolingual points fitted
    (:func:`select_points`); ``TEff_all_points`` and ``TEff_paper_points`` are TEff under all
    points and under the paper table's (NaN where that fit cannot be made).

    Fit quality: ``fit_rmse`` (of 1/PPL), ``fit_max_rel_error`` (largest |fitted - observed| /
    observed PPL over the monolingual points), ``fit_at_bound`` (parameters at a bound, e.g.
    ``c=1``). With ``n_boot`` > 0, TEff and MLPE get a 95% bootstrap interval over the
    monolingual points (``TEff_lo``/``TEff_hi``, ``MLPE_lo``/``MLPE_hi``; ``n_boot_ok``
    resamples gave a fit). ``fit_reliable`` is false when a parameter sits at a bound, the
    fit misses a point by more than ``max_rel_residual``, the TEff interval is unbounded, or
    fewer than 4 points were fitted.
    """
    if teff_tokens not in TEFF_TOKENS:
        raise LangskewError(f"scaling fit: teff_tokens must be one of {', '.join(TEFF_TOKENS)}, got {teff_tokens!r}")
    every = fit_points(mono_runs, mono_ppl)
    points = {key: select_points(pts, points_used, f"scaling fit {key[0]}/{key[1]}") for key, pts in every.items()}
    fits = {key: _fit_group(key, pts, method, n_boot, seed) for key, pts in points.items()}
    side = {name: {key: _side_fit(pts, name, method) for key, pts in every.items()} for name in ("all", "paper_table")}
    rows = []
    for i, (run, ppl) in enumerate(zip(target_runs, target_ppl)):
        expected = expected_tokens_seen(run, batch_size, context)
        budget = budget_tokens(run, batch_size, context)
        counted = (tokens_seen[i] if tokens_seen else None) or {}
        passes = (data_passes[i] if data_passes else None) or {}
        for name, value in ppl.items():
            base = base_language(run, name)
            key = (run["size"], base)
            if key not in fits:
                raise LangskewError(f"scaling fit: no monolingual runs of size {run['size']!r} for {base!r}")
            exp_tokens = float(expected[language_index(run, name)])
            seen = float(counted.get(name, exp_tokens)) if teff_tokens == "counted" else exp_tokens
            row = {"run": run["id"], "label": run.get("label"), "size": run["size"], "language": name,
                   "base_language": base, "ppl": float(value), "tokens_seen": seen,
                   "tokens_expected": exp_tokens, "tokens_counted": float(counted.get(name, math.nan)),
                   "data_passes": float(passes.get(name, math.nan)), "budget_tokens": budget,
                   **_efficiency(fits[key], float(value), seen, budget, n_boot, max_rel_residual)}
            for name, column in (("all", "TEff_all_points"), ("paper_table", "TEff_paper_points")):
                params = side[name][key]
                row[column] = mlte(float(value), *params, budget) / seen if params and seen > 0 else math.nan
            row["fit_points"] = _points_label(points_used)
            rows.append(row)
    return pd.DataFrame(rows)


def _side_fit(pts: Sequence[tuple[float, float, str]], selection: str, method: str
              ) -> tuple[float, float, float] | None:
    """The fit of one point set for the side-by-side TEff columns; None where it cannot be made."""
    try:
        chosen = select_points(pts, selection)
        return fit_power_law([p[0] for p in chosen], [p[1] for p in chosen], method)
    except (LangskewError, RuntimeError, ValueError):
        return None


def _points_label(selection: str | Sequence[float]) -> str:
    return selection if isinstance(selection, str) else ",".join(f"{float(f):g}" for f in selection)


def _fit_group(key: tuple[str, str], pts: Sequence[tuple[float, float, str]], method: str, n_boot: int,
               seed: int) -> dict[str, Any]:
    """The fit of one (size, language)'s points: parameters, quality and bootstrap fits."""
    x, y = [p[0] for p in pts], [p[1] for p in pts]
    try:
        params = fit_power_law(x, y, method)
    except RuntimeError as exc:  # the least-squares search did not converge
        raise LangskewError(f"scaling fit {key[0]}/{key[1]} ({method}): {exc}; "
                            f"try study_b.eval.fit_method: bounded") from exc
    res = fit_residuals(x, y, params)
    boots = bootstrap_fits(x, y, n_boot, seed, method) if n_boot else []
    return {"params": params, "n_points": len(pts), "boots": boots,
            "quality": {"fit_rmse": float(np.sqrt(np.mean(res["residual"] ** 2))),
                        "fit_max_rel_error": float(res["ppl_rel_error"].abs().max()),
                        "fit_at_bound": ";".join(params_at_bound(params, method=method))}}


def _efficiency(fit: dict[str, Any], ppl: float, seen: float, budget: float, n_boot: int,
                max_rel_residual: float) -> dict[str, Any]:
    """MLTE, TEff and MLPE of one (run, language) under one fit, their intervals and the fit's reliability."""
    c, a, b = fit["params"]
    boots = fit["boots"]
    tokens_needed = mlte(ppl, c, a, b, budget)
    row = {"MLTE": tokens_needed, "TEff": tokens_needed / seen if seen > 0 else math.nan,
           "MLPE": mlpe(seen, c, a, b, budget) if seen > 0 else math.nan,
           "c": c, "a": a, "b": b, "n_mono_points": fit["n_points"], **fit["quality"]}
    row["TEff_lo"], row["TEff_hi"] = _interval([mlte(ppl, *f, budget) / seen for f in boots] if seen > 0 else [])
    row["MLPE_lo"], row["MLPE_hi"] = _interval([mlpe(seen, *f, budget) for f in boots] if seen > 0 else [])
    row["n_boot_ok"] = len(boots)
    row["fit_reliable"] = bool(not row["fit_at_bound"] and row["fit_max_rel_error"] <= max_rel_residual
                               and fit["n_points"] >= 4 and math.isfinite(row["TEff"])
                               and (not n_boot or (len(boots) > 0 and math.isfinite(row["TEff_hi"]))))
    return row


def fit_points_table(mono_runs: Sequence[dict], mono_ppl: Sequence[dict], method: str = "authors",
                     data_passes: Sequence[dict | None] | None = None,
                     points_used: str | Sequence[float] = "all") -> pd.DataFrame:
    """The monolingual points of every fit (``points_used``, :func:`select_points`) with the fitted
    values and residuals (and the passes each monolingual run made over its training stream,
    ``data_passes``, where known)."""
    passes_by_run = {run["id"]: float(next(iter(((data_passes[i] if data_passes else None) or {}).values()),
                                           math.nan))
                     for i, run in enumerate(mono_runs)}
    frames = []
    for (size, lang), pts in fit_points(mono_runs, mono_ppl).items():
        pts = select_points(pts, points_used, f"scaling fit {size}/{lang}")
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        params = fit_power_law(x, y, method)
        res = fit_residuals(x, y, params)
        res.insert(0, "run", [p[2] for p in pts])
        res.insert(0, "language", lang)
        res.insert(0, "size", size)
        res["data_passes"] = [passes_by_run.get(p[2], math.nan) for p in pts]
        for name, value in zip(FIT_PARAMS, params):
            res[name] = value
        res["fit_at_bound"] = ";".join(params_at_bound(params, method=method))
        frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _run_list(specs: Any, where: str) -> list[dict]:
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    if not all(isinstance(s, dict) and "id" in s for s in specs):
        raise LangskewError(f"fit params: {where} must be a list of run specs (dicts with 'id')")
    return specs


def fit_job(job: Job, *, mono_ids: list[dict], target_runs: list[dict], train: dict, fit: dict) -> pd.DataFrame:
    """Rule ``study_b_fit``: the scaling-fit table of the bilingual runs of one size.

    ``mono_ids``: run specs of input.mono; ``target_runs``: run specs of input.target;
    ``train``: {batch_size, context, ...}; ``fit``: {n_boot, seed, max_rel_residual, method,
    teff_tokens, points} (each optional; defaults: no bootstrap, the authors' fit and
    denominator, all monolingual points).
    An optional input.metrics (metrics.json of each target, same order) supplies the counted
    tokens_seen and the passes over each training stream (``data_passes``); an optional
    input.mono_metrics the passes of the monolingual runs. output[0]: the table;
    output.points (optional): the monolingual points with fitted values and residuals.
    """
    mono_runs, targets = _run_list(mono_ids, "mono_ids"), _run_list(target_runs, "target_runs")
    if len(mono_runs) != len(job.input.mono) or len(targets) != len(job.input.target):
        raise LangskewError(f"fit: {len(job.input.mono)} mono / {len(job.input.target)} target perplexity files "
                            f"for {len(mono_runs)} / {len(targets)} run specs")
    train, fit_cfg = dict(train), dict(fit)
    method, teff_tokens = str(fit_cfg.get("method", "authors")), str(fit_cfg.get("teff_tokens", "expected"))
    points_used = fit_cfg.get("points", "all")
    metrics = [read_json(p) for p in getattr(job.input, "metrics", None) or []]
    mono_metrics = [read_json(p) for p in getattr(job.input, "mono_metrics", None) or []]
    seen = [m.get("tokens_seen") for m in metrics] or None
    passes = [m.get("data_passes") for m in metrics] or None
    mono_passes = [m.get("data_passes") for m in mono_metrics] or None
    mono_ppl = [read_json(p) for p in job.input.mono]
    table = fit_table(mono_runs, mono_ppl, targets, [read_json(p) for p in job.input.target],
                      int(train["batch_size"]), int(train["context"]), seen, n_boot=int(fit_cfg.get("n_boot", 0)),
                      seed=int(fit_cfg.get("seed", 0)), max_rel_residual=float(fit_cfg.get("max_rel_residual", 0.05)),
                      method=method, teff_tokens=teff_tokens, data_passes=passes, points_used=points_used)
    write_csv(table, job.output[0])
    if hasattr(job.output, "points"):
        write_csv(fit_points_table(mono_runs, mono_ppl, method, mono_passes, points_used), job.output.points)
    for rec in table.drop_duplicates("base_language").to_dict("records"):
        logger.info("fit %s/%s (%s): c=%.4g a=%.4g b=%.4g, rmse %.3g, max rel. error %.3g, at bound: %s",
                    rec["size"], rec["base_language"], method, rec["c"], rec["a"], rec["b"],
                    rec["fit_rmse"], rec["fit_max_rel_error"], rec["fit_at_bound"] or "none")
    return table
