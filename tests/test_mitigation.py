"""langskew.mitigation: each remedy's formula against numbers worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_tiny_encoder
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from langskew.errors import LangskewError
from langskew.mitigation import (GroupBalancedSampler, GroupDRO, LanguageAdversary, MitigationConfig, MitigationLoss,
                                 PerLanguageBalancedSampler, adjust_logits, append_mask_row, grad_reverse,
                                 group_ids, language_indices, log_class_priors, mask_entropy_loss, negative_entropy,
                                 per_language_balanced_probabilities, per_language_class_weights)


def test_per_language_class_weights_from_a_table():
    # en: labels 0,0,0,1 -> n=4, C=2: w0 = 4/(2*3) = 2/3, w1 = 4/(2*1) = 2; fr: 0,1 -> 1, 1
    table = pd.DataFrame({"language": ["en", "en", "en", "en", "fr", "fr"], "label": [0, 0, 0, 1, 0, 1]})
    w = per_language_class_weights(table)
    assert w["en"] == pytest.approx([2 / 3, 2]) and w["fr"] == pytest.approx([1, 1])
    # global: n=6, n_0=4, n_1=2 -> 6/8, 6/4
    assert per_language_class_weights(table, scheme="global")["fr"] == pytest.approx([0.75, 1.5])
    with pytest.raises(LangskewError, match="column 'language' missing"):
        per_language_class_weights(table.rename(columns={"language": "lang"}))


def test_mask_entropy_term_by_hand():
    # logits [0, ln 3] -> p = [1/4, 3/4]; mean(p log p) = (0.25 ln 0.25 + 0.75 ln 0.75) / 2 = -0.2811676
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert float(negative_entropy(logits)) == pytest.approx(-0.2811676, abs=1e-6)
    assert float(mask_entropy_loss(logits, 2.0)) == pytest.approx(-0.5623352, abs=1e-6)
    # uniform output: the term is at its minimum, -ln(C)/C, with zero gradient
    flat = torch.zeros(1, 4, requires_grad=True)
    term = mask_entropy_loss(flat, 1.0)
    term.backward()
    assert float(term.detach()) == pytest.approx(-math.log(4) / 4) and torch.allclose(flat.grad, torch.zeros(1, 4), atol=1e-7)


def test_mask_row_copies_the_shape_of_the_last_row():
    batch = {"input_ids": torch.tensor([[2, 7, 8, 9, 3], [2, 5, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
             "token_type_ids": torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]),
             "labels": torch.tensor([0, 1])}
    out = append_mask_row(batch, mask_token_id=4, pad_token_id=0)
    assert out["input_ids"].tolist()[-1] == [4, 4, 4, 0, 0]
    assert out["attention_mask"].tolist()[-1] == [1, 1, 1, 0, 0]
    assert out["token_type_ids"].tolist()[-1] == [0, 0, 1, 0, 0]
    assert out["input_ids"][:2].equal(batch["input_ids"]) and out["labels"].equal(batch["labels"])


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = grad_reverse(x, 0.1)
    assert y.tolist() == [1.0, -2.0]
    (3 * y).sum().backward()  # d/dx of 3x is 3; reversed and scaled: -0.3
    assert x.grad.tolist() == pytest.approx([-0.3, -0.3])


def test_adversary_reversal_trains_the_head_and_reverses_into_the_encoder():
    torch.manual_seed(0)
    adv = LanguageAdversary(3, 2, "reversal", 0.1)
    h = torch.randn(4, 3, requires_grad=True)
    langs = torch.tensor([0, 1, 0, 1])
    adv(h, langs).backward()
    # the plain head's cross-entropy, by torch's own functions
    h2 = h.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(adv.head(h2), langs).backward()
    assert torch.allclose(h.grad, -0.1 * h2.grad, atol=1e-7)
    assert adv.head.weight.grad is not None and adv.head.weight.grad.abs().sum() > 0


def test_adversary_entropy_variant_by_hand():
    adv = LanguageAdversary(2, 2, "entropy", 0.01)
    with torch.no_grad():
        adv.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        adv.head.bias.zero_()
    # h = [ln 3, 0] -> head logits [ln 3, 0] -> p = [3/4, 1/4]
    h = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    loss = adv(h, torch.tensor([0]))
    ce = -math.log(0.75)
    neg_h = (0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / 2
    assert float(loss) == pytest.approx(ce + 0.01 * neg_h, abs=1e-6)
    loss.backward()
    # the encoder sees only the entropy term: d/dz0 of 0.01 * mean(p log p) with z0 = h0 (weight 1)
    # for two classes, d/dz0 [ (p0 ln p0 + p1 ln p1)/2 ] = p0 p1 (ln p0 - ln p1) / 2
    expect = 0.01 * 0.75 * 0.25 * (math.log(0.75) - math.log(0.25)) / 2
    assert h.grad.tolist()[0] == pytest.approx([expect, 0.0], abs=1e-7)
    # the head sees only the cross-entropy: dCE/dW[0,0] = (p0 - 1) * h0
    assert float(adv.head.weight.grad[0, 0]) == pytest.approx((0.75 - 1) * math.log(3.0), abs=1e-6)


def test_log_priors_and_logit_adjustment_by_hand():
    # en: 1 of class 0, 3 of class 1 -> log [1/4, 3/4]; fr: 2 and 2 -> log [1/2, 1/2]
    lp = log_class_priors([0, 1, 1, 1, 0, 1], ["en"] * 4 + ["fr"] * 2, 2, ["en", "fr"])
    assert lp.numpy() == pytest.approx(np.log([[0.25, 0.75], [0.5, 0.5]]))
    adjusted = adjust_logits(torch.zeros(2, 2), torch.tensor([0, 1]), lp, 1.0)
    # CE of label 0 for an English row with zero logits: -log softmax([ln .25, ln .75])_0 = -ln 0.25
    ce = torch.nn.functional.cross_entropy(adjusted, torch.tensor([0, 0]), reduction="none")
    assert ce.tolist() == pytest.approx([-math.log(0.25), math.log(2)], abs=1e-6)
    with pytest.raises(LangskewError, match="label 1 has no training rows in language 'fr'"):
        log_class_priors([0, 1, 0], ["en", "en", "fr"], 2, ["en", "fr"])


def test_group_dro_exponentiated_gradient_by_hand():
    dro = GroupDRO(3, step_size=1.0)
    losses = torch.tensor([1.0, 1.0, 2.0])  # group 0 twice (mean 1), group 1 once (2); group 2 absent
    groups = torch.tensor([0, 0, 1])
    loss = dro(losses, groups)
    # q <- q * exp(eta L): [e, e^2, 1] / (e + e^2 + 1)
    z = math.e + math.e ** 2 + 1
    assert dro.q.tolist() == pytest.approx([math.e / z, math.e ** 2 / z, 1 / z])
    assert float(loss) == pytest.approx((math.e * 1 + math.e ** 2 * 2) / z)
    q = dro.q.clone()
    dro(losses, groups, update=False)
    assert dro.q.equal(q)
    assert group_ids(torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1]), 3).tolist() == [2, 3, 4]


def test_group_dro_generalization_adjustment_by_hand():
    # C = 2, n = [4, 1]: the update adds 2/sqrt(4) = 1 and 2/sqrt(1) = 2 to the groups' losses, absent
    # groups included (their loss counts as 0, as in Sagawa et al.'s code); eta = 0.5, only group 0 seen
    # with mean loss 3: q ∝ [0.5 exp(0.5 (3 + 1)), 0.5 exp(0.5 (0 + 2))] = [e^2, e^1]
    dro = GroupDRO(2, step_size=0.5, generalization_adjustment=2.0, group_counts=[4, 1])
    loss = dro(torch.tensor([2.0, 4.0]), torch.tensor([0, 0]))
    z = math.e ** 2 + math.e
    assert dro.q.tolist() == pytest.approx([math.e ** 2 / z, math.e / z])
    assert float(loss) == pytest.approx(math.e ** 2 / z * 3)  # the objective itself carries no adjustment
    with pytest.raises(LangskewError, match="group_counts"):
        GroupDRO(2, 0.5, generalization_adjustment=1.0)


def test_group_dro_moves_q_once_per_optimiser_step():
    # two micro-batches of one step: [group 0 loss 1], [group 0 loss 3, group 1 loss 2]; pooled means [2, 2]
    dro = GroupDRO(2, step_size=1.0, update_per_forward=False)
    first = dro(torch.tensor([1.0]), torch.tensor([0]))
    # the first micro-batch is weighted by q updated with its own rows: [e, 1]/(e + 1), as with one batch a step
    assert float(first) == pytest.approx(math.e / (math.e + 1) * 1.0)
    assert dro.q.tolist() == [0.5, 0.5]  # not committed yet
    second = dro(torch.tensor([3.0, 2.0]), torch.tensor([0, 1]))
    assert float(second) == pytest.approx(0.5 * 3.0 + 0.5 * 2.0)  # pooled means equal: q' uniform
    dro.step()
    assert dro.q.tolist() == pytest.approx([0.5, 0.5])
    dro(torch.tensor([1.0]), torch.tensor([1]))
    dro.step()
    assert dro.q.tolist() == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])
    dro.step()  # a step without rows leaves q alone
    assert dro.q.tolist() == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])


def _cells(shares: dict[tuple[str, int], int]) -> tuple[list[str], list[int]]:
    languages, labels = [], []
    for (lang, label), n in shares.items():
        languages += [lang] * n
        labels += [label] * n
    return languages, labels


def _simulate_q(languages, labels, sampler, group_loss, batches=3000, batch_size=16, step_size=0.01):
    """Run GroupDRO's update on batches drawn by ``sampler`` (None: uniform), each row's loss its group's."""
    order = sorted(set(languages))
    n_classes = max(labels) + 1
    groups = torch.as_tensor(language_indices(languages, order) * n_classes + np.asarray(labels))
    dro = GroupDRO(len(order) * n_classes, step_size)
    draw = iter(sampler) if sampler is not None else None
    rng = np.random.default_rng(0)
    for _ in range(batches):
        idx = [next(draw) for _ in range(batch_size)] if draw else rng.integers(len(labels), size=batch_size).tolist()
        g = groups[idx]
        dro(group_loss[g], g)
    return dro.q


XNLI_LIKE = {("en", 0): 100, ("en", 1): 200, ("en", 2): 300, ("fr", 0): 300, ("fr", 1): 200, ("fr", 2): 100}


def test_group_dro_with_group_balanced_batches_keeps_equal_losses_near_uniform():
    languages, labels = _cells(XNLI_LIKE)
    equal = torch.ones(6)
    sampler = GroupBalancedSampler(languages, labels, num_samples=10 ** 6, seed=0)
    q = _simulate_q(languages, labels, sampler, equal)
    assert float(q.max()) < 2 / 6 and float(q.min()) > 1 / (2 * 6)
    # the draw of rows from uniform batches makes q follow group size instead (what the DRO condition did)
    drift = _simulate_q(languages, labels, None, equal)
    assert float(drift.max() / drift.min()) > 4
    # Amazon-like: six languages x five classes, 5:4:3:2:1 and 1:2:3:4:5 alternating
    amazon = {(f"l{i}", c): n for i in range(6) for c, n in enumerate([50, 40, 30, 20, 10][::(-1) ** i])}
    languages, labels = _cells(amazon)
    q = _simulate_q(languages, labels, GroupBalancedSampler(languages, labels, num_samples=10 ** 6, seed=0),
                    torch.ones(30))
    assert float(q.max()) < 2 / 30 and float(q.min()) > 1 / (2 * 30)


def test_group_dro_gives_a_group_with_higher_loss_more_weight():
    languages, labels = _cells(XNLI_LIKE)
    losses = torch.ones(6)
    losses[0] = 1.5  # en/0, the rarest group, is persistently harder
    q = _simulate_q(languages, labels, GroupBalancedSampler(languages, labels, num_samples=10 ** 6, seed=1),
                    losses, batches=1000)
    assert int(q.argmax()) == 0 and float(q[0]) > 2 * float(q[1:].max())


def test_group_balanced_sampler_draws_every_group_equally_often():
    languages, labels = _cells({("en", 0): 10, ("en", 1): 30, ("fr", 0): 60})
    sampler = GroupBalancedSampler(languages, labels, num_samples=30000, seed=3)
    drawn = np.asarray(list(sampler))
    groups = np.asarray([f"{lang}{y}" for lang, y in zip(languages, labels)])[drawn]
    for g in ("en0", "en1", "fr0"):
        assert np.mean(groups == g) == pytest.approx(1 / 3, abs=0.015)
    assert list(sampler) == drawn.tolist()  # same (seed, epoch): same draw
    sampler.set_epoch(1)
    assert list(sampler) != drawn.tolist() and len(sampler) == 30000


def test_per_language_balanced_sampler_probabilities_and_draws():
    # a: labels 0,0,1 (n_a = 3 of 4 rows; two classes): p = 3/4 * 1/2 * 1/2 for each class-0 row, 3/4 * 1/2 for
    # the class-1 row; b: one row, p = 1/4
    probs = per_language_balanced_probabilities(["a", "a", "a", "b"], [0, 0, 1, 0])
    assert probs == pytest.approx([0.1875, 0.1875, 0.375, 0.25])
    sampler = PerLanguageBalancedSampler(["a", "a", "a", "b"], [0, 0, 1, 0], num_samples=40000, seed=3)
    counts = np.bincount(list(sampler), minlength=4) / 40000
    assert counts == pytest.approx(probs, abs=0.01)
    first = list(sampler)
    assert list(sampler) == first  # same (seed, epoch): same draw
    sampler.set_epoch(1)
    assert list(sampler) != first and len(sampler) == 40000


def test_config_from_condition_and_bad_values():
    cfg = MitigationConfig.from_condition({"train": "imbalanced", "weighting": "none", "mask_entropy": 2,
                                           "adversary": {"kind": "reversal", "coef": 0.1},
                                           "group_dro": {"step_size": 0.01}})
    assert (cfg.mask_entropy, cfg.adversary, cfg.adversary_coef, cfg.group_dro) == (2.0, "reversal", 0.1, 0.01)
    assert cfg.changes_loss and not MitigationConfig().changes_loss
    with pytest.raises(LangskewError, match="unknown key 'mask_entropie'"):
        MitigationConfig.from_condition({"mask_entropie": 1})
    with pytest.raises(LangskewError, match="adversary kind 'flip'"):
        MitigationConfig(adversary="flip", adversary_coef=0.1)
    with pytest.raises(LangskewError, match="sampling"):
        MitigationConfig(sampling="upsample")
    # group DRO draws group-balanced batches unless told otherwise (the published algorithm)
    assert cfg.sampling == "group_balanced" and MitigationConfig(group_dro=0.01).sampling == "group_balanced"
    assert MitigationConfig(group_dro=0.01, sampling="shuffle").sampling == "shuffle"
    assert MitigationConfig().sampling == "shuffle"
    with pytest.raises(LangskewError, match="group_dro key 'adjustment' unknown"):
        MitigationConfig.from_condition({"group_dro": {"step_size": 0.01, "adjustment": 1}})
    with pytest.raises(LangskewError, match="settings of group DRO"):
        MitigationConfig(group_dro_adjustment=1.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_encoder(tmp_path_factory.mktemp("enc") / "m", num_labels=2)
    return AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path)


def test_combined_loss_equals_its_parts(tiny):
    tokenizer, model = tiny
    enc = tokenizer(["the cat runs", "le chat court vite", "the dog"], padding=True, return_tensors="pt")
    batch = {**enc, "labels": torch.tensor([0, 1, 1]), "language": torch.tensor([0, 1, 0])}
    train_labels, train_langs = [0, 1, 1, 1, 0, 1], ["en"] * 4 + ["fr"] * 2
    cfg = MitigationConfig(mask_entropy=1.0, logit_adjustment=1.0)
    loss_fn = MitigationLoss(cfg, labels=train_labels, languages=train_langs, n_classes=2, weighting="per_language",
                             mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id)
    model.train()
    torch.manual_seed(0)
    loss, logits = loss_fn(model, batch)
    # the same by hand: weights en [4/(2*1), 4/(2*3)] = [2, 2/3], fr [1, 1]; priors en [1/4, 3/4], fr [1/2, 1/2]
    with torch.no_grad():
        full = model(**append_mask_row(enc, tokenizer.mask_token_id, tokenizer.pad_token_id)).logits
    prior = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.25, 0.75]]))
    ce = torch.nn.functional.cross_entropy(full[:3] + prior, batch["labels"], reduction="none")
    w = torch.tensor([2.0, 1.0, 2 / 3])
    expect = (w * ce).mean() + negative_entropy(full[3:])
    assert float(loss) == pytest.approx(float(expect), abs=1e-5)
    assert torch.allclose(logits, full[:3], atol=1e-5)  # plain logits of the real rows
    model.eval()
    eval_loss, eval_logits = loss_fn(model, batch)
    assert float(eval_loss) == pytest.approx(float((w * ce).mean()), abs=1e-5) and eval_logits.shape == (3, 2)


def test_package_exports_the_api_lazily():
    import subprocess
    import sys

    import langskew
    import langskew.mitigation as m

    assert langskew.MitigationLoss is m.MitigationLoss and langskew.per_language_class_weights is m.per_language_class_weights
    code = "import sys, langskew; assert 'torch' not in sys.modules; langskew.MitigationConfig; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_names_a_bad_dro_or_selection_setting(demo_raw):
    from helpers import rejected

    from langskew.config import validate_config

    def cond(c):
        return c["study_a"]["conditions"]["imbalanced_group_dro"]

    msg = rejected(demo_raw, lambda c: cond(c).update(model_selection="val_accuracy"))
    assert "model_selection" in msg and "worst_group_accuracy" in msg
    msg = rejected(demo_raw, lambda c: cond(c)["group_dro"].update(generalization_adjustment=-1))
    assert "generalization_adjustment" in msg
    msg = rejected(demo_raw, lambda c: cond(c)["group_dro"].update(adjustment=1))
    assert "adjustment" in msg
    import copy

    cfg = validate_config(copy.deepcopy(demo_raw))  # the demo itself: DRO with group-balanced batches, worst-group selection
    dro = cfg["study_a"]["conditions"]["imbalanced_group_dro"]
    assert dro["model_selection"] == "worst_group_accuracy" and dro["sampling"] == "group_balanced"
    assert "model_selection" not in cfg["study_a"]["conditions"]["imbalanced"]  # the rule's default: val_loss
