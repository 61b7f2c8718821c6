"""SHAP values of many examples at once: shap's Partition explainer, batched across examples.

The values are those of ``shap.Explainer(f, shap.maskers.Text(tokenizer),
algorithm="partition")`` called one example at a time (the studies' route); only the way
the model is evaluated changes:

- **Across examples.** The Partition explainer walks each example's token tree with a
  priority queue and asks the model for a few masked inputs at a time (shap's default
  ``batch_size`` for the text masker, 5 -> 6 masks per step). How many masks it takes per
  step decides which tree nodes it expands within ``max_evals``, so that batch size is part
  of the algorithm and is kept. The queue walk of each example runs as a generator here;
  the steps of ``n_parallel`` examples are evaluated in *one* model call, which fills the
  device without changing any example's walk.
- **Masking without per-token Python.** The masked strings are exactly those that
  ``shap.maskers.Text`` builds (each masked token replaced by `` <mask token>``, whitespace
  collapsed), built with array operations from the masker's own segments. They are then
  tokenised again in one batched call of the fast tokenizer. Masking in token-id space
  instead would be faster still but gives different inputs whenever a mask cuts a word:
  "play" masked in "play ##ing" re-tokenises as ``[MASK] ing`` (a word-initial piece), not
  ``[MASK] ##ing``, so the values would no longer be the algorithm's.
- **Token tree.** shap's text clustering rescored every pair of neighbouring groups after
  each merge (O(M^2) Python calls); :func:`partition_tree` makes the same merges rescoring
  only the two pairs a merge changes.
- **Model calls.** Identical strings in a call are evaluated once; sequences are sorted by
  length and packed into batches under a token budget (dynamic padding), under
  ``torch.inference_mode``, in fp32 (the authors' precision; bf16 or fp16 autocast on CUDA
  on request).

The priority queue breaks exact ties with a random draw; shap draws from numpy's global
generator, here each example draws from its own generator seeded with ``seed`` (so the
result does not depend on which examples run together). Seeding numpy's global generator
with the same ``seed`` before a per-example ``shap.Explainer`` call gives the same draws.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from langskew.errors import LangskewError

#: shap's ``batch_size="auto"`` for the text masker (``maskers.Text.default_batch_size``).
SHAP_TEXT_BATCH = 5
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: How a pair task's two texts reach the model (:class:`ProbabilityModel`):
#: ``authors`` one sequence ``premise <sep>hypothesis``, ``pair`` a true pair split at the separator.
PAIR_INPUTS = ("authors", "pair")
_SPACES = re.compile(r"[\s]+")


# --------------------------------------------------------------------------------------
# Masker
# --------------------------------------------------------------------------------------

def text_masker(tokenizer: Any, pair: bool = False):
    """``shap.maskers.Text`` for ``tokenizer``; with ``pair`` one that never masks the sep token.

    Pair inputs are ``premise <sep> hypothesis``; the separator's segment carries the
    following space, so shap's own "keep the separator" check (segment == sep token) does
    not see it: the pair masker keeps every position whose id is the sep id.
    """
    import shap

    if not pair:
        return shap.maskers.Text(tokenizer)
    sep_id = tokenizer.sep_token_id

    class PairText(shap.maskers.Text):
        def __call__(self, mask, s):
            mask = np.array(self._standardize_mask(mask, s), dtype=bool)
            self._update_s_cache(s)
            mask[self._tokenized_s == sep_id] = True
            return super().__call__(mask, s)

    return PairText(tokenizer)


class MaskedStrings:
    """The strings ``masker(mask, s)`` returns, for a whole array of masks at once.

    Reads the masker's segments (the substring of ``s`` behind each token, trailing
    whitespace included) once, then builds each masked string with array operations:
    a kept token contributes its segment, a masked one `` <mask token>`` (or nothing after
    another masked token when the masker collapses runs), whitespace runs become one space.
    """

    def __init__(self, masker: Any, s: str, pair: bool = False):
        from shap.utils import safe_isinstance
        from shap.utils.transformers import SENTENCEPIECE_TOKENIZERS

        masker._update_s_cache(s)
        self.segments = np.asarray(masker._segments_s, dtype=object)
        self.token_ids = np.asarray(masker._tokenized_s)
        self.tokens = list(masker.data_transform(s)[0])
        self.clustering = text_clustering(masker, s)
        m = len(self.segments)
        keep = np.zeros(m, dtype=bool)
        if masker.keep_prefix > 0:
            keep[:masker.keep_prefix] = True
        if masker.keep_suffix > 0:
            keep[m - masker.keep_suffix:] = True
        sep = getattr(masker.tokenizer, "sep_token", None)
        if sep is not None:
            keep |= self.segments == sep
            if pair:
                keep |= self.token_ids == masker.tokenizer.sep_token_id
        self.always_kept = keep
        self.mask_piece = " " + str(masker.mask_token)
        self.collapse = bool(masker.collapse_mask_token)
        self.sentencepiece = safe_isinstance(masker.tokenizer, SENTENCEPIECE_TOKENIZERS)

    def __len__(self) -> int:
        return len(self.segments)

    def __call__(self, masks: np.ndarray) -> list[str]:
        masks = np.atleast_2d(np.asarray(masks, dtype=bool))
        kept = masks | self.always_kept
        pieces = np.where(kept, self.segments, self.mask_piece)
        if self.collapse:
            repeat = np.zeros_like(kept)
            repeat[:, 1:] = ~kept[:, 1:] & ~kept[:, :-1]
            pieces[repeat] = ""
        out = []
        for row in pieces:
            text = "".join(row)
            if self.sentencepiece:
                text = text.replace("\u2581", " ")
            out.append(_SPACES.sub(" ", text).strip())
        return out


def partition_tree(decoded_tokens: Sequence[str], special_tokens: Sequence[str]) -> np.ndarray:
    """shap's text ``partition_tree`` (the same merges, the same matrix) in O(M) merge scores.

    shap rescores every neighbouring pair of groups after each merge (O(M^2) calls of its
    ``merge_score``). A merge of groups ``ind`` and ``ind + 1`` only changes the scores of
    the pairs that touch the new group (its length, first and last token, and the opener/
    closer "balanced" flags it sets live there), so those two are rescored and the rest kept.
    ``np.argmax`` over the same list of scores picks the same pair.
    """
    from shap.maskers._text import Token, TokenGroup, merge_score, openers

    groups = [TokenGroup([Token(t)], i) for i, t in enumerate(decoded_tokens)]
    m = len(decoded_tokens)
    clustm = np.zeros((m - 1, 4))
    scores = [merge_score(groups[i], groups[i + 1], special_tokens) for i in range(m - 1)]
    for new_index in range(m, 2 * m - 1):
        ind = int(np.argmax(scores))
        lind, rind = groups[ind].index, groups[ind + 1].index
        row = clustm[new_index - m]
        row[0], row[1], row[2] = lind, rind, -scores[ind]
        row[3] = (clustm[lind - m, 3] if lind >= m else 1) + (clustm[rind - m, 3] if rind >= m else 1)
        merged = groups[ind] + groups[ind + 1]
        merged.index = new_index
        if merged[0].s in openers and groups[ind + 1][-1].s == openers[merged[0].s]:
            merged[0].balanced = True
            groups[ind + 1][-1].balanced = True
        groups[ind] = merged
        groups.pop(ind + 1)
        scores.pop(ind)
        if ind > 0:
            scores[ind - 1] = merge_score(groups[ind - 1], groups[ind], special_tokens)
        if ind < len(groups) - 1:
            scores[ind] = merge_score(groups[ind], groups[ind + 1], special_tokens)
    clustm[:, 2] = clustm[:, 2] + 10
    return clustm


def text_clustering(masker: Any, s: str) -> np.ndarray:
    """``masker.clustering(s)`` of ``shap.maskers.Text``, with the O(M) :func:`partition_tree`."""
    masker._update_s_cache(s)
    sep = getattr(masker.tokenizer, "sep_token", None)
    special_tokens = [] if sep is None else [sep]
    space_end = re.compile(r"^.*\W$")
    letter_start = re.compile(r"^[A-Za-z]")
    tokens: list[str] = []
    segments = masker._segments_s
    for i, v in enumerate(segments):
        if (i > 0 and space_end.match(segments[i - 1]) is None and letter_start.match(v) is not None
                and tokens[i - 1] != ""):
            tokens.append("##" + v.strip())
        else:
            tokens.append(v.strip())
    pt = partition_tree(tokens, special_tokens)
    pt[:, 2] = pt[:, 3]
    pt[:, 2] /= pt[:, 2].max()
    return pt


# --------------------------------------------------------------------------------------
# The Partition explainer's walk, one example, as a generator
# --------------------------------------------------------------------------------------

@dataclass
class Explained:
    """One example's result: shap's ``data`` (token segments), values (M, C), base (C,)."""

    tokens: list[str]
    values: np.ndarray
    base: np.ndarray
    evals: int


def _pop_batch(heap: list, clustering: np.ndarray, m: int, indptr: np.ndarray, indices: np.ndarray,
               dvalues: np.ndarray, batch_size: int, evals_left: int) -> list[tuple]:
    """Pop the most promising nodes (at most ``batch_size`` masks, within ``evals_left``).

    A leaf gives its credit to ``dvalues`` at once; an inner node becomes one entry
    (m00, m10, m01, f00, f11, ind, lind, rind, weight) whose masks m10 / m01 turn its left /
    right child on.
    """
    batch: list[tuple] = []
    while heap and 2 * len(batch) < batch_size and 2 * len(batch) < evals_left:
        m00, f00, f11, ind, weight = heapq.heappop(heap)[3]
        lind = int(clustering[ind - m, 0]) if ind >= m else -1
        rind = int(clustering[ind - m, 1]) if ind >= m else -1
        if ind < m:
            distance = -1
        else:
            distance = clustering[ind - m, 2] if clustering.shape[1] >= 3 else 1
        if distance < 0:
            dvalues[ind] += (f11 - f00) * weight
            continue
        m10 = m00.copy()
        m10[indices[indptr[lind]:indptr[lind + 1]]] = True
        m01 = m00.copy()
        m01[indices[indptr[rind]:indptr[rind + 1]]] = True
        batch.append((m00, m10, m01, f00, f11, ind, lind, rind, weight))
    return batch


def _push_children(heap: list, batch: list[tuple], fout: np.ndarray, rng: np.random.RandomState,
                   counter: int) -> int:
    """Push the four half-weight sub-problems of every evaluated node (shap's order); return the counter."""
    for i, (m00, m10, m01, f00, f11, ind, lind, rind, weight) in enumerate(batch):
        f10, f01 = fout[2 * i], fout[2 * i + 1]
        new_weight = weight / 2
        for priority_diff, args in ((f10 - f00, (m00, f00, f10, lind, new_weight)),
                                    (f01 - f00, (m00, f00, f01, rind, new_weight)),
                                    (f11 - f01, (m01, f01, f11, lind, new_weight)),
                                    (f11 - f10, (m10, f10, f11, rind, new_weight))):
            counter += 1
            heapq.heappush(heap, (-np.max(np.abs(priority_diff)) * new_weight, rng.randn(), counter, args))
    return counter


def partition_walk(clustering: np.ndarray, n_features: int, max_evals: int, batch_size: int,
                   rng: np.random.RandomState) -> Iterator[np.ndarray]:
    """shap's ``PartitionExplainer.explain_row`` + ``owen`` (``fixed_context=None``) as a generator.

    Yields boolean mask arrays (k, M) (True = token kept) and expects the model outputs
    (k, C) sent back; returns ``(values (M, C), base (C,), evals)``. The arithmetic and
    the order of operations follow shap's so that the results agree to rounding.
    """
    from shap.explainers._partition import lower_credit
    from shap.utils import make_masks

    m = n_features
    m00 = np.zeros(m, dtype=bool)
    f00 = np.asarray((yield m00[None, :]))[0]  # nothing kept
    f11 = np.asarray((yield ~m00[None, :]))[0]  # everything kept
    mask_matrix = make_masks(clustering)
    n_nodes = 2 * clustering.shape[0] + 1
    dvalues = np.zeros((n_nodes, len(f00)))
    budget = max_evals - 2
    heap: list = []
    counter = 0  # keeps heap entries comparable without comparing arrays (never reached in practice)
    heapq.heappush(heap, (0, 0, counter, (m00, f00, f11, n_nodes - 1, 1.0)))
    eval_count = 0
    while heap:
        if eval_count >= budget:  # out of evaluations: every open node keeps its whole difference
            while heap:
                _, f00_, f11_, ind, weight = heapq.heappop(heap)[3]
                dvalues[ind] += (f11_ - f00_) * weight
            break
        batch = _pop_batch(heap, clustering, m, mask_matrix.indptr, mask_matrix.indices, dvalues, batch_size,
                           budget - eval_count)
        if batch:
            fout = np.asarray((yield np.array([mask for b in batch for mask in (b[1], b[2])])))
            eval_count += 2 * len(batch)
            counter = _push_children(heap, batch, fout, rng, counter)
    values = dvalues.copy()
    lower_credit(len(dvalues) - 1, 0, m, values, clustering)
    return values[:m].copy(), np.asarray(f00, dtype=np.float64), eval_count + 2


# --------------------------------------------------------------------------------------
# Model evaluation
# --------------------------------------------------------------------------------------

def autocast_dtype(device: Any, precision: str):
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast; always on CPU).

    "fp32" (the authors' precision) gives None; "auto" is bf16 where the GPU supports it, else
    fp16 (see :func:`langskew.devices.amp_dtype`).
    """
    from langskew.devices import amp_dtype

    if precision not in PRECISIONS:
        raise LangskewError(f"shap precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return amp_dtype(device, "bf16" if precision == "auto" else precision)


def sep_token_types(input_ids: Sequence[int], sep_id: int) -> list[int]:
    """Token type ids of one sequence in the authors' pair input: 1 after its first separator, else 0.

    ``[CLS] a [SEP] b [SEP]`` gives ``0 0 0 1 1`` (as BERT's pair template does); a sequence
    whose only separator is the final one is all 0.
    """
    ids = list(input_ids)
    first = ids.index(sep_id) + 1 if sep_id in ids else len(ids)
    return [0] * first + [1] * (len(ids) - first)


class ProbabilityModel:
    """``strings -> (n, C)`` class probabilities of a sequence classifier, batched for throughput.

    Each string is tokenised as the studies' model function does it, truncated at
    ``max_length``, in one batched tokenizer call. Pair tasks (``pair``) read their string in
    one of two ways (``pair_input``): ``"authors"`` encodes ``premise <sep>hypothesis`` as
    one sequence, the separator a token of it (XLM-R: one ``</s>`` between the texts), with
    token type ids 1 after the first separator when the tokenizer makes token type ids
    (BERT); ``"pair"`` splits the string at its first separator and encodes the halves as a
    true pair (the pair template, as in fine-tuning). Duplicates are evaluated once;
    sequences are sorted by length and cut into batches of at most ``max_batch_tokens``
    padded tokens.
    """

    def __init__(self, model: Any, tokenizer: Any, max_length: int, pair: bool, precision: str = "fp32",
                 max_batch_tokens: int | None = None, pair_input: str = "authors"):
        import torch

        if pair_input not in PAIR_INPUTS:
            raise LangskewError(f"shap pair_input {pair_input!r}: expected one of {', '.join(PAIR_INPUTS)}")
        self.model, self.tokenizer, self.max_length = model, tokenizer, int(max_length)
        self.pair = pair and pair_input == "pair"  # split into a true pair
        self.sep_types = pair and pair_input == "authors"  # one sequence, token types from the separator
        self.device = next(model.parameters()).device
        self.dtype = autocast_dtype(self.device, precision)
        self.max_batch_tokens = int(max_batch_tokens or (65536 if self.device.type == "cuda" else 8192))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.sep = tokenizer.sep_token
        self.n_sequences = self.n_tokens = self.n_padded = 0
        model.eval()
        self._torch = torch

    def _split(self, text: str) -> tuple[str, str]:
        if self.sep not in text:
            raise LangskewError(f"masked pair input lost its separator {self.sep!r}: {text[:80]!r}")
        a, b = text.split(self.sep, 1)
        return a.strip(), b.strip()

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]] | None]:
        if self.pair:
            firsts, seconds = (list(x) for x in zip(*map(self._split, texts)))
        else:
            firsts, seconds = list(texts), None
        enc = self.tokenizer(firsts, seconds, truncation=True, max_length=self.max_length)
        types = enc.get("token_type_ids")
        if self.sep_types and types is not None:
            types = [sep_token_types(ids, self.tokenizer.sep_token_id) for ids in enc["input_ids"]]
        return enc["input_ids"], types

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from langskew.devices import autocast

        torch = self._torch
        unique: dict[str, int] = {}
        index = np.array([unique.setdefault(t, len(unique)) for t in texts], dtype=np.int64)
        ids, types = self.encode(list(unique))
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        out = torch.empty((len(ids), int(self.model.config.num_labels)), dtype=torch.float32, device=self.device)
        start = 0
        with torch.inference_mode(), autocast(self.device, self.dtype):
            while start < len(order):
                longest = int(lengths[order[start]])
                stop = min(len(order), start + max(1, self.max_batch_tokens // max(1, longest)))
                rows = order[start:stop]
                input_ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
                attention = np.zeros((len(rows), longest), dtype=np.int64)
                token_types = np.zeros((len(rows), longest), dtype=np.int64) if types is not None else None
                for j, r in enumerate(rows):
                    n = lengths[r]
                    input_ids[j, :n] = ids[r]
                    attention[j, :n] = 1
                    if token_types is not None:
                        token_types[j, :n] = types[r]
                batch = {"input_ids": input_ids, "attention_mask": attention}
                if token_types is not None:
                    batch["token_type_ids"] = token_types
                batch = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in batch.items()}
                logits = self.model(**batch).logits
                out[torch.from_numpy(rows).to(self.device)] = torch.softmax(logits.float(), dim=-1)
                self.n_padded += input_ids.size
                start = stop
        self.n_sequences += len(ids)
        self.n_tokens += int(lengths.sum())
        return out.cpu().numpy().astype(np.float64)[index]


# --------------------------------------------------------------------------------------
# Many examples at once
# --------------------------------------------------------------------------------------

def explain_texts(model_fn: Callable[[list[str]], np.ndarray], masker: Any, texts: Sequence[str], *,
                  max_evals: int = 500, batch_size: int | str = "auto", n_parallel: int = 64, seed: int = 0,
                  pair: bool = False, progress: Callable[[int], Any] | None = None) -> list[Explained]:
    """Partition-explainer SHAP values of ``model_fn`` for every text, ``n_parallel`` examples at a time.

    ``model_fn(list of str) -> (n, C)``; ``masker`` a ``shap.maskers.Text`` (see
    :func:`text_masker`); ``batch_size`` the explainer's own batch (``"auto"``: shap's
    default for the text masker). ``progress(k)`` is called as examples finish.
    """
    if batch_size == "auto":
        batch_size = int(getattr(masker, "default_batch_size", SHAP_TEXT_BATCH))
    batch_size = int(batch_size)
    if batch_size < 1 or int(max_evals) < 3 or int(n_parallel) < 1:
        raise LangskewError(f"shap: batch_size ({batch_size}) and n_parallel ({n_parallel}) must be >= 1 "
                            f"and max_evals ({max_evals}) >= 3")
    results: list[Explained | None] = [None] * len(texts)
    active: dict[int, list] = {}  # example index -> [generator, MaskedStrings, pending masks]
    next_example = 0
    while active or next_example < len(texts):
        while len(active) < n_parallel and next_example < len(texts):
            strings = MaskedStrings(masker, str(texts[next_example]), pair=pair)
            walk = partition_walk(strings.clustering, len(strings), int(max_evals), batch_size,
                                  np.random.RandomState(seed))
            active[next_example] = [walk, strings, next(walk)]
            next_example += 1
        spans, batch = [], []
        for i in sorted(active):
            walk, strings, masks = active[i]
            masked = strings(masks)
            spans.append((i, len(batch), len(masked)))
            batch.extend(masked)
        outputs = np.asarray(model_fn(batch), dtype=np.float64)
        for i, start, n in spans:
            walk, strings, _ = active[i]
            try:
                active[i][2] = walk.send(outputs[start:start + n])
            except StopIteration as done:
                values, base, evals = done.value
                results[i] = Explained(strings.tokens, values, base, evals)
                del active[i]
                if progress is not None:
                    progress(1)
    return results  # type: ignore[return-value]
