"""Cloned languages, the anchored EN/FR vocabulary, schedules and deterministic batches."""

import random

import numpy as np
import pytest

from helpers import write_fake_token_stream
from langskew.errors import LangskewError
from langskew.study_b.languages import (anchored_mapping, build_mixture, clone_ids, cloned_mask, decode_ids,
                                        heldout_spread, parse_schedule, stage_index)

V = 50


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    return {"en": write_fake_token_stream(root / "en", "en", V, seed=0),
            "fr": write_fake_token_stream(root / "fr", "fr", 40, seed=1)}


def clone_run(**kw):
    run = {"id": "t", "kind": "clone", "base_languages": ["en"], "n_languages": 2, "schedule": [[0.5, 0.5]],
           "clone_fraction": 1.0, "steps": 100, "data_fraction": 1.0}
    run.update(kw)
    return run


def test_clone_ids_live_in_their_block_and_decode_back():
    base = np.arange(V)
    for k in range(4):
        ids = clone_ids(base, k, V, pad_id=0)
        assert ids[0] == 0  # padding is shared
        assert ((ids[1:] >= k * V) & (ids[1:] < (k + 1) * V)).all()
        np.testing.assert_array_equal(decode_ids(ids, V), base)


def test_mixture_tables_cover_disjoint_blocks(streams):
    mix = build_mixture(clone_run(n_languages=3, schedule=[[0.2, 0.3, 0.5]]), [streams["en"]], seed=0)
    assert mix.vocab_size == 3 * V and mix.language_names == ["L1", "L2", "L3"]
    for k in range(3):
        mapped = mix.heldout(k)
        base = np.asarray(mix.streams[0].test, dtype=np.int64)
        assert ((mapped >= k * V) & (mapped < (k + 1) * V)).all()
        np.testing.assert_array_equal(mix.decode(mapped), base)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_partial_cloning_shares_exactly_the_configured_anchors(streams, fraction):
    mix = build_mixture(clone_run(clone_fraction=fraction), [streams["en"]], seed=3)
    l1, l2 = mix.tables
    shared = l1 == l2
    assert shared[0]  # pad
    # the authors' draw: all V ids shuffled by random.Random(seed), the first int(f * V) cloned, pad never shifted
    ids = list(range(V))
    random.Random(3).shuffle(ids)
    drawn = set(ids[:int(fraction * V)]) - {0}
    assert set(np.flatnonzero(~shared).tolist()) == drawn
    assert mix.info["n_anchors"] == shared.sum()
    # the anchor set is fixed by the seed
    again = build_mixture(clone_run(clone_fraction=fraction), [streams["en"]], seed=3)
    np.testing.assert_array_equal(again.tables[1], l2)


def test_partial_clone_draw_is_the_authors_by_hand():
    # random.Random(0).shuffle(list(range(10))) orders the ids 7 8 1 5 3 4 2 0 9 6 (Python's
    # Mersenne Twister and shuffle, unchanged since Python 3.2); f = 0.5 clones int(0.5 * 10) = 5 of them
    ids = list(range(10))
    random.Random(0).shuffle(ids)
    assert ids == [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]
    assert np.flatnonzero(cloned_mask(10, 0.5, pad_id=0, seed=0)).tolist() == [1, 3, 5, 7, 8]
    # f = 0.95: int(9.5) = 9 drawn, the pad (id 0) among them stays shared -> 8 cloned
    assert np.flatnonzero(cloned_mask(10, 0.95, pad_id=0, seed=0)).tolist() == [1, 2, 3, 4, 5, 7, 8, 9]
    # int, not round: 0.29 * 100 = 28.999... -> 28 ids
    assert cloned_mask(100, 0.29, pad_id=None, seed=0).sum() == 28


def test_mask_excludes_padding():
    mask = cloned_mask(V, 1.0, pad_id=0, seed=0)
    assert not mask[0] and mask[1:].all()


def test_parse_schedule_and_stage_boundaries():
    assert np.allclose(parse_schedule("0.1_0.9"), [[0.9, 0.1], [0.1, 0.9]])
    with pytest.raises(LangskewError, match="0.1_x"):
        parse_schedule("0.1_x")
    assert [stage_index(s, 100, 2) for s in (0, 49, 50, 99)] == [0, 0, 1, 1]
    assert [stage_index(s, 90, 3) for s in (29, 30, 59, 60, 89)] == [0, 1, 1, 2, 2]


def test_schedule_probabilities_switch_at_half(streams):
    mix = build_mixture(clone_run(schedule=[[0.9, 0.1], [0.1, 0.9]], steps=200), [streams["en"]], seed=0)
    assert mix.stage_probs(99) == pytest.approx([0.9, 0.1])
    assert mix.stage_probs(100) == pytest.approx([0.1, 0.9])
    first = np.concatenate([mix.batch(s, 32, 8)["lang"].numpy() for s in range(0, 100, 5)])
    second = np.concatenate([mix.batch(s, 32, 8)["lang"].numpy() for s in range(100, 200, 5)])
    assert abs(first.mean() - 0.1) < 0.05 and abs(second.mean() - 0.9) < 0.05


def test_empirical_mixture_matches_p(streams):
    p = [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]
    mix = build_mixture(clone_run(n_languages=6, schedule=[p]), [streams["en"]], seed=1)
    langs = np.concatenate([mix.batch(s, 64, 4)["lang"].numpy() for s in range(150)])
    freq = np.bincount(langs, minlength=6) / len(langs)
    np.testing.assert_allclose(freq, p, atol=0.02)


def test_batch_is_pure_and_consistent(streams):
    mix = build_mixture(clone_run(), [streams["en"]], seed=0)
    a, b = mix.batch(7, 8, 16), mix.batch(7, 8, 16)
    for key in ("x", "y", "lang"):
        assert (a[key] == b[key]).all()
    assert not (mix.batch(8, 8, 16)["x"] == a["x"]).all()
    # a fresh mixture (e.g. after resuming) gives the same batch
    fresh = build_mixture(clone_run(), [streams["en"]], seed=0)
    assert (fresh.batch(7, 8, 16)["x"] == a["x"]).all()
    # targets are the next tokens, and every id is in its sequence's language block
    assert (a["x"][:, 1:] == a["y"][:, :-1]).all()
    for row, lang in zip(a["x"].numpy(), a["lang"].numpy()):
        assert ((row // V) == lang).all()


def test_ranks_get_disjoint_slices_of_the_global_batch(streams):
    mix = build_mixture(clone_run(schedule=[[1.0, 0.0]]), [streams["en"]], seed=0)
    parts = [mix.batch(3, 4, 16, rank=r, world_size=3)["x"].numpy() for r in range(3)]
    rows = {tuple(row) for part in parts for row in part}
    assert len(rows) == 12  # no chunk is repeated within a step
    # the ranks' slices make up the global batch one process would draw
    np.testing.assert_array_equal(np.concatenate(parts), mix.batch(3, 12, 16)["x"].numpy())
    with pytest.raises(LangskewError, match="rank 3"):
        mix.batch(3, 4, 16, rank=3, world_size=3)


def test_data_fraction_limits_the_stream(streams):
    mix = build_mixture(clone_run(data_fraction=0.1, schedule=[[1.0, 0.0]]), [streams["en"]], seed=0)
    train = np.asarray(mix.streams[0].train, dtype=np.int64)
    limit = int(len(train) * 0.1)
    seen = np.concatenate([mix.batch(s, 8, 16)["x"].numpy().ravel() for s in range(20)])
    # every window comes from the first 10% of the stream
    windows = {tuple(train[i:i + 16]) for i in range(0, limit - 16, 16)}
    for row in np.concatenate([mix.batch(s, 8, 16)["x"].numpy() for s in range(5)]):
        assert tuple(row) in windows
    assert len(seen) > 0


def test_anchored_mapping_small_vocabularies():
    en = ["<pad>", "<unk>", "</s>", "▁the", "▁Anna", "s", "1"]
    fr = ["<pad>", "<unk>", "</s>", "▁le", "▁Anna", "s", "é", "1"]
    merged = anchored_mapping(en, fr)
    assert merged.n_shared == 6
    assert merged.vocab_size == len(en) + 2
    np.testing.assert_array_equal(merged.mapping, [0, 1, 2, 7, 4, 5, 8, 6])


def test_real_pair_disjoint(streams):
    run = {"id": "r", "kind": "real", "base_languages": ["en", "fr"], "schedule": [[0.7, 0.3]],
           "vocab_mode": "disjoint", "steps": 10}
    mix = build_mixture(run, [streams["fr"], streams["en"]], seed=0)
    assert mix.language_names == ["en", "fr"] and mix.vocab_size == V + 40
    fr = mix.heldout(1)
    assert (fr >= V).all() and (mix.heldout(0) < V).all()


def test_bad_runs_are_rejected_by_name(streams):
    with pytest.raises(LangskewError, match="'de'"):
        build_mixture(clone_run(base_languages=["de"]), [streams["en"]], seed=0)
    with pytest.raises(LangskewError, match="schedule"):
        build_mixture(clone_run(schedule=[[0.5, 0.6]]), [streams["en"]], seed=0)
    with pytest.raises(LangskewError, match="vocab_mode"):
        build_mixture({"id": "r", "kind": "real", "base_languages": ["en", "fr"], "schedule": [[0.5, 0.5]],
                       "vocab_mode": "mixed"}, [streams["en"], streams["fr"]], seed=0)


def test_parallel_sentences_are_packed_into_sequences_of_min_to_max_tokens():
    from langskew.study_b.languages import pack_parallel

    def sents(lengths, start):
        return [np.arange(start + 100 * i, start + 100 * i + n) for i, n in enumerate(lengths)]

    en = sents([4, 5, 20, 3, 6, 6, 2, 1], 0)
    fr = sents([5, 4, 3, 7, 5, 6, 2, 1], 10000)
    packed = pack_parallel({"en": en, "fr": fr}, min_len=8, max_len=12)
    # pair 2 is too long on one side (20 > 12) and skipped; 0+1 fill 9/9; pair 3 would give
    # 12/16 -> new sequence 3+4 (9/12); pair 5 would give 15 -> new sequence 5+6+7 (9/9)
    assert [len(s) for s in packed["en"]] == [9, 9, 9]
    assert [len(s) for s in packed["fr"]] == [9, 12, 9]
    np.testing.assert_array_equal(packed["en"][1], np.concatenate([en[3], en[4]]))
    np.testing.assert_array_equal(packed["fr"][1], np.concatenate([fr[3], fr[4]]))
    # a sequence with a side below min_len is dropped, not cut or padded
    assert pack_parallel({"en": en, "fr": fr}, min_len=9, max_len=12)["fr"] != []
    assert pack_parallel({"en": en, "fr": fr}, min_len=10, max_len=12) == {"en": [], "fr": []}


def test_fewer_heldout_windows_than_asked_is_an_error(streams):
    mix = build_mixture(clone_run(), [streams["en"]], seed=0)
    n_avail = len(mix.streams[0].test) // 8
    assert len(mix.parallel(n_avail, 8, 8, source="heldout")) == n_avail
    with pytest.raises(LangskewError, match=f"holds {n_avail} windows of 8 tokens, fewer than the {n_avail + 1}"):
        mix.parallel(n_avail + 1, 8, 8, source="heldout")


def test_each_stream_is_read_in_order_of_its_own_draws(streams):
    """A language drawn with p reads p of the run's sequences: French at 30% over 100 steps of 8
    (~240 of its 312 chunks of 16 tokens) sees no chunk twice, and its passes are drawn / 312."""
    run = {"id": "r", "kind": "real", "base_languages": ["en", "fr"], "schedule": [[0.7, 0.3]],
           "vocab_mode": "disjoint", "steps": 100}
    mix = build_mixture(run, [streams["en"], streams["fr"]], seed=0)
    n_chunks = (5000 - 1) // 16  # the fixture's 5,000 train tokens in chunks of 16 (+1 target)
    rows = {0: [], 1: []}
    for step in range(100):
        b = mix.batch(step, 8, 16)
        for row, lang in zip(b["x"].numpy(), b["lang"].numpy()):
            rows[int(lang)].append(tuple(row))
    n_fr, n_en = len(rows[1]), len(rows[0])
    assert 200 < n_fr < n_chunks < n_en < 2 * n_chunks and n_fr + n_en == 800
    assert len(set(rows[1])) == n_fr  # no French chunk twice before the stream is used up
    assert len(set(rows[0])) == n_chunks  # English: every chunk once, then a second pass began
    passes = mix.data_passes([n_en, n_fr], 16)
    assert passes == pytest.approx({"en": n_en / n_chunks, "fr": n_fr / n_chunks})
    assert passes["en"] > 1 > passes["fr"]


def test_batches_of_a_late_step_do_not_depend_on_the_order_of_calls(streams):
    run = {"id": "r", "kind": "real", "base_languages": ["en", "fr"], "schedule": [[0.6, 0.4]],
           "vocab_mode": "disjoint", "steps": 3000}
    walked = build_mixture(run, [streams["en"], streams["fr"]], seed=0)
    for step in range(2100):
        walked.batch(step, 2, 16)
    fresh = build_mixture(run, [streams["en"], streams["fr"]], seed=0)  # e.g. resumed at step 2100
    for step in (2100, 1030, 2101, 5):
        np.testing.assert_array_equal(fresh.batch(step, 2, 16)["x"].numpy(), walked.batch(step, 2, 16)["x"].numpy())


def test_clones_share_the_passes_of_their_stream(streams):
    mix = build_mixture(clone_run(), [streams["en"]], seed=0)
    # 300 + 324 sequences of 16 tokens from one stream of 312 chunks: two passes for both clones
    assert mix.data_passes([300, 324], 16) == pytest.approx({"L1": 2.0, "L2": 2.0})


# -- the held-out stream for perplexity: all of it, or a seeded spread over every document --
def test_heldout_spread_by_hand():
    """Documents of 4, 2 and 6 tokens (EOD 2); 9 tokens: 3 EODs and 6 of text in proportion 2 : 1 : 3."""
    test = np.array([5, 6, 7, 8, 2, 9, 10, 2, 11, 12, 13, 14, 15, 16, 2], dtype=np.uint16)
    got = heldout_spread(test, 2, 9, [0, 0])
    assert len(got) == 9 and list(np.flatnonzero(got == 2)) == [2, 4, 8]
    spans = np.split(got, [2, 3, 4, 5, 8])[::2]
    docs = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16]]
    for span, doc, n in zip(spans, docs, (2, 1, 3)):  # a contiguous piece of its own document
        assert len(span) == n and any(list(span) == doc[i:i + n] for i in range(len(doc) - n + 1))
    # seeded: the same seed, the same spread; other seeds move the spans
    assert (heldout_spread(test, 2, 9, [0, 0]) == got).all()
    assert any((heldout_spread(test, 2, 9, [s, 0]) != got).any() for s in range(1, 6))
    assert (heldout_spread(test, 2, 15, [0, 0]) == test).all() and (heldout_spread(test, 2, 99, [0, 0]) == test).all()
    # the remainder goes to the largest fractional share: 10 tokens, 7 of text: 7 x (4, 2, 6) / 12 = 2.33, 1.17, 3.5
    assert list(np.diff(np.flatnonzero(np.concatenate([[2], heldout_spread(test, 2, 10, [0, 0])]) == 2)) - 1) == [2, 1, 4]
    with pytest.raises(LangskewError, match="max_tokens=5 is below two tokens per held-out document"):
        heldout_spread(test, 2, 5, [0, 0])


def test_heldout_reads_every_document_not_the_first_ones(streams):
    """max_tokens None: the whole split; N: N tokens drawn from every document of the split (the
    first N tokens in stream order were the old reading), the same spread for both clones."""
    mix = build_mixture(clone_run(), [streams["en"]], seed=0)
    whole = mix.streams[0].test
    assert len(mix.heldout(0)) == len(whole) == 1000
    spread = mix.heldout(0, 200)
    assert len(spread) == 200 and (spread == 2).sum() == 20  # 20 documents of 50 tokens: one span each
    assert not (decode_ids(spread, V) == np.asarray(whole[:200])).all()
    assert (decode_ids(mix.heldout(1, 200), V) == decode_ids(spread, V)).all()
    assert (build_mixture(clone_run(), [streams["en"]], seed=0).heldout(0, 200) == spread).all()
    assert not (build_mixture(clone_run(), [streams["en"]], seed=1).heldout(0, 200) == spread).all()
