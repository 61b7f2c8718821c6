"""langskew.mitigation with a Hugging Face Trainer and across processes: no setting silently ignored,
the sampler it asks for, checkpoints that carry its state, data as Dataset or DataFrame, evaluation
without a language, group metrics, gradients and q reduced over processes, the device followed."""

import importlib.util
import os
import types

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_tiny_encoder

from langskew.errors import LangskewError
from langskew.mitigation import (GroupBalancedSampler, MitigationConfig, MitigationLoss, PerLanguageBalancedSampler,
                                 group_accuracies, group_metrics, mitigation_collator, per_language_class_weights)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("accelerate") is None,
                                reason="transformers' Trainer needs accelerate")

LANGS = ["en", "fr"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = build_tiny_encoder(tmp_path_factory.mktemp("enc") / "m", num_labels=2)
    return path, AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification


def rows(n: int = 48) -> pd.DataFrame:
    """en mostly label 0, fr mostly label 1 (3:1)."""
    out = []
    for lang, major, words in (("en", 0, ["the cat", "a dog"]), ("fr", 1, ["le chat", "un chien"])):
        for i in range(n // 2):
            label = major if i % 4 else 1 - major
            out.append({"id": f"{lang}{i}", "text": f"{words[label]} runs {i % 3}", "language": lang, "label": label})
    return pd.DataFrame(out)


def dataset(tokenizer, frame: pd.DataFrame, with_language: bool = True):
    from datasets import Dataset

    ds = Dataset.from_pandas(frame, preserve_index=False)
    ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=16), batched=True)
    ds = ds.rename_column("label", "labels")
    if with_language:
        ds = ds.remove_columns("language").add_column("language", [LANGS.index(x) for x in frame["language"]])
    else:
        ds = ds.remove_columns("language")
    return ds  # keeps its text and id columns


def make_loss(tokenizer, model, frame, config=None):
    config = config or MitigationConfig(adversary="reversal", adversary_coef=0.1, group_dro=0.1)
    return MitigationLoss(config, labels=frame["label"], languages=frame["language"], n_classes=2,
                          language_order=LANGS, hidden_size=model.config.hidden_size,
                          mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id)


def trainer(tiny, tmp_path, loss_fn=None, model=None, frame=None, **arg_overrides):
    from transformers import TrainingArguments

    from langskew.mitigation import MitigationTrainer

    path, tokenizer, auto = tiny
    torch.manual_seed(0)
    model = model or auto.from_pretrained(path, num_labels=2)
    frame = rows() if frame is None else frame
    loss_fn = loss_fn or make_loss(tokenizer, model, frame)
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=4, learning_rate=1e-3,
                    report_to=[], use_cpu=True, save_strategy="no", remove_unused_columns=False, seed=0)
    settings.update(arg_overrides)
    extra = {k: settings.pop(k) for k in ("compute_loss_func", "optimizers") if k in settings}
    return MitigationTrainer(model=model, args=TrainingArguments(**settings), train_dataset=dataset(tokenizer, frame),
                             data_collator=mitigation_collator(tokenizer), mitigation=loss_fn, **extra)


# -- settings the loss cannot honour ------------------------------------------------------------
def test_settings_the_loss_would_ignore_are_refused_by_name(tiny, tmp_path):
    with pytest.raises(LangskewError, match="label_smoothing_factor"):
        trainer(tiny, tmp_path, label_smoothing_factor=0.1)
    with pytest.raises(LangskewError, match="compute_loss_func"):
        trainer(tiny, tmp_path, compute_loss_func=lambda outputs, labels, num_items_in_batch=None: 0)
    with pytest.raises(LangskewError, match="remove_unused_columns"):
        trainer(tiny, tmp_path, remove_unused_columns=True)
    path, tokenizer, auto = tiny
    model = auto.from_pretrained(path, num_labels=2)
    with pytest.raises(LangskewError, match="optimizers="):
        trainer(tiny, tmp_path, model=model, optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None))
    loss_fn = make_loss(tokenizer, model, rows(), MitigationConfig(sampling="group_balanced"))
    with pytest.raises(LangskewError, match="train_sampling_strategy"):
        trainer(tiny, tmp_path, model=model, loss_fn=loss_fn, train_sampling_strategy="group_by_length")
    loss_fn = make_loss(tokenizer, model, rows(), MitigationConfig(group_dro=0.01, group_dro_weight_decay=0.1))
    with pytest.raises(LangskewError, match="group_dro_weight_decay=0.1 .* set weight_decay"):
        trainer(tiny, tmp_path, model=model, loss_fn=loss_fn)
    assert trainer(tiny, tmp_path, model=model, loss_fn=loss_fn, weight_decay=0.1).args.weight_decay == 0.1


# -- the sampler --------------------------------------------------------------------------------
@pytest.mark.parametrize("sampling, kind", [("group_balanced", GroupBalancedSampler),
                                            ("per_language_balanced", PerLanguageBalancedSampler)])
def test_sampling_sets_the_trainers_sampler(tiny, tmp_path, sampling, kind):
    path, tokenizer, auto = tiny
    model = auto.from_pretrained(path, num_labels=2)
    frame = rows(400)
    loss_fn = make_loss(tokenizer, model, frame, MitigationConfig(sampling=sampling))
    t = trainer(tiny, tmp_path, loss_fn=loss_fn, model=model, frame=frame)
    sampler = t._get_train_sampler()
    assert isinstance(sampler, kind)
    drawn = frame.iloc[list(sampler)]
    shares = drawn.groupby(["language", "label"]).size() / len(drawn)
    # group_balanced: each of the 4 groups 1/4; per-language balanced: each language's classes equally
    # often within the language (languages keep their 1/2 share): also 1/4 here
    assert shares.to_numpy() == pytest.approx([0.25] * 4, abs=0.04)
    # the training batches come from it: the rarest groups (1 in 4 rows) are drawn about as often
    labels = torch.cat([b["labels"] for b in t.get_train_dataloader()])
    langs = torch.cat([b["language"] for b in t.get_train_dataloader()])
    assert float(((langs == 0) & (labels == 1)).float().mean()) == pytest.approx(0.25, abs=0.07)


# -- checkpoints carry the mitigation state -------------------------------------------------------
def test_checkpoint_saves_and_resume_restores_the_mitigation_state(tiny, tmp_path):
    """A run checkpointed at step 3 of 6 and resumed by a fresh trainer (new head, uniform q) ends with
    the mitigation state of the uninterrupted run; the checkpoint holds the state of step 3."""
    # (before the Trainer zeroed the head's gradients, they piled up over steps: the resumed head, starting
    # from zero, ended elsewhere)
    whole = trainer(tiny, tmp_path / "a", max_steps=6, save_strategy="steps", save_steps=3)
    at_three = {}
    save = whole._save

    def remember(output_dir=None, state_dict=None):
        save(output_dir, state_dict=state_dict)
        if whole.state.global_step == 3:
            at_three.update({k: v.clone() for k, v in whole.mitigation.state_dict().items()})

    whole._save = remember
    whole.train()
    ckpt = tmp_path / "a" / "checkpoint-3"
    on_disk = torch.load(ckpt / "mitigation.pt")
    assert set(on_disk) == set(at_three) and all(on_disk[k].equal(at_three[k]) for k in on_disk)
    assert not torch.allclose(on_disk["dro.q"], torch.full_like(on_disk["dro.q"], 0.25))  # q had moved
    resumed = trainer(tiny, tmp_path / "b", max_steps=6)
    assert not resumed.mitigation.adversary.head.weight.equal(on_disk["adversary.head.weight"])  # a fresh head
    resumed.train(resume_from_checkpoint=str(ckpt))
    final, again = whole.mitigation.state_dict(), resumed.mitigation.state_dict()
    assert [k for k in final if not torch.allclose(final[k], again[k], atol=1e-6)] == []
    os.remove(ckpt / "mitigation.pt")
    with pytest.raises(LangskewError, match="has no mitigation.pt"):
        trainer(tiny, tmp_path / "c", max_steps=6).train(resume_from_checkpoint=str(ckpt))


def test_group_dro_moves_once_per_optimiser_step_in_the_trainer(tiny, tmp_path):
    t = trainer(tiny, tmp_path, max_steps=2, gradient_accumulation_steps=3)
    commits = []
    step = t.mitigation.dro.step
    t.mitigation.dro.step = lambda *a, **k: commits.append(t.mitigation.dro.pending_count.sum().item()) or step(*a, **k)
    t.train()
    assert commits == [24.0, 24.0]  # 2 optimiser steps, each pooling 3 micro-batches of 8 rows


# -- data as Dataset or DataFrame; text columns; evaluation without a language ---------------------
def test_class_weights_from_a_dataset_equal_those_from_a_dataframe(tiny):
    from datasets import Dataset

    frame = rows()
    by_frame = per_language_class_weights(frame)
    by_dataset = per_language_class_weights(Dataset.from_pandas(frame))
    # en: 18 of label 0, 6 of label 1, n = 24, C = 2: 24/36, 24/12
    assert by_frame["en"] == pytest.approx([2 / 3, 2.0]) and by_frame["fr"] == pytest.approx([2.0, 2 / 3])
    assert all(np.array_equal(by_frame[k], by_dataset[k]) for k in by_frame)


def test_collator_drops_text_columns_and_the_trainer_trains_on_a_dataset_with_them(tiny, tmp_path):
    path, tokenizer, auto = tiny
    ds = dataset(tokenizer, rows())
    assert {"text", "id"} <= set(ds.column_names)
    batch = mitigation_collator(tokenizer)([ds[i] for i in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "labels", "language"}
    t = trainer(tiny, tmp_path, max_steps=2)
    before = t.mitigation.adversary.head.weight.detach().clone()
    t.train()
    assert not t.mitigation.adversary.head.weight.equal(before)


def test_evaluation_without_a_language_column_gives_the_plain_cross_entropy(tiny, tmp_path):
    path, tokenizer, auto = tiny
    t = trainer(tiny, tmp_path, max_steps=1)
    t.train()
    frame = rows(16)
    no_lang = dataset(tokenizer, frame, with_language=False)
    metrics = t.evaluate(eval_dataset=no_lang)
    model = t.model.eval()
    enc = tokenizer(frame["text"].tolist(), truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(model(**enc).logits, torch.tensor(frame["label"].to_numpy()))
    assert metrics["eval_loss"] == pytest.approx(float(ce), abs=1e-4)


# -- metrics --------------------------------------------------------------------------------------
def test_group_accuracies_by_hand_and_as_compute_metrics():
    # en/0: 2 of 2 right, en/1: 0 of 1, fr/0: 1 of 2, fr/1: 1 of 1 -> overall 4/6, en 2/3, fr 2/3, worst group 0
    pred, labels = [0, 0, 0, 1, 0, 1], [0, 0, 1, 0, 0, 1]
    languages = ["en", "en", "en", "fr", "fr", "fr"]
    assert group_accuracies(pred, labels, languages) == pytest.approx(
        {"accuracy": 4 / 6, "worst_language_accuracy": 2 / 3, "worst_group_accuracy": 0.0})
    logits = np.eye(2)[pred] * 3.0
    from transformers import EvalPrediction

    metrics = group_metrics(languages)(EvalPrediction(predictions=logits, label_ids=np.array(labels)))
    assert metrics == pytest.approx(group_accuracies(pred, labels, languages))
    with pytest.raises(LangskewError, match="6 predictions for 2 languages"):
        group_metrics(["en", "fr"])(EvalPrediction(predictions=logits, label_ids=np.array(labels)))


# -- device ----------------------------------------------------------------------------------------
class _Classifier(torch.nn.Module):
    """A bag-of-embeddings classifier with the Hugging Face output fields the loss reads."""

    def __init__(self, vocab: int = 50, hidden: int = 4):
        super().__init__()
        self.embed, self.out = torch.nn.Embedding(vocab, hidden), torch.nn.Linear(hidden, 2)

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        h = self.embed(input_ids)
        return types.SimpleNamespace(logits=self.out(h.mean(dim=1)), hidden_states=(h,))


def test_the_loss_moves_itself_to_the_models_device():
    """A model on another device (here torch's meta device, the one a CPU-only machine has besides the
    CPU): the loss's buffers and head follow it at the first forward."""
    model = _Classifier()
    cfg = MitigationConfig(adversary="reversal", adversary_coef=0.1, logit_adjustment=1.0)  # (DRO checks group ids on the host)
    frame = rows()
    loss_fn = MitigationLoss(cfg, labels=frame["label"], languages=frame["language"], n_classes=2,
                             language_order=LANGS, hidden_size=4)
    model.to("meta").train()
    batch = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 6]]), "labels": torch.tensor([0, 1]),
             "language": torch.tensor([0, 1])}
    loss, _ = loss_fn(model, {k: v.to("meta") for k, v in batch.items()})
    assert loss.device.type == "meta" and loss_fn.weights.device.type == "meta"
    assert loss_fn.log_priors.device.type == "meta"
    assert loss_fn.adversary.head.weight.device.type == "meta"


# -- several processes -----------------------------------------------------------------------------
def _rank(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same head on every rank, as DDP would broadcast
    cfg = MitigationConfig(adversary="reversal", adversary_coef=0.1, group_dro=0.5)
    loss_fn = MitigationLoss(cfg, labels=[0, 1, 0, 1], languages=["en", "en", "fr", "fr"], n_classes=2,
                             hidden_size=3, update_per_forward=False)
    gen = torch.Generator().manual_seed(rank + 1)  # each rank its own rows
    feats, langs = torch.randn(6, 3, generator=gen), torch.tensor([0, 1, 0, 1, 1, 0][: 6 - 2 * rank] + [0] * 2 * rank)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    losses = torch.rand(6, generator=gen) + rank
    loss_fn.adversary(feats, langs).backward()
    local = loss_fn.adversary.head.weight.grad.clone()
    local_hits = loss_fn.adversary.language_hits.clone()
    accuracy = loss_fn.adversary.take_accuracy()
    loss_fn.sync_gradients()
    loss_fn.dro(losses, langs * 2 + labels)
    loss_fn.step()
    torch.save({"local": local, "synced": loss_fn.adversary.head.weight.grad, "q": loss_fn.dro.q,
                "local_hits": local_hits, "accuracy": accuracy, "after": loss_fn.adversary.language_hits.clone(),
                "losses": losses, "groups": langs * 2 + labels}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_head_gradients_and_q_are_reduced_over_two_processes(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    assert not r[0]["local"].equal(r[1]["local"])
    mean = (r[0]["local"] + r[1]["local"]) / 2
    assert torch.allclose(r[0]["synced"], mean, atol=1e-7) and torch.allclose(r[1]["synced"], mean, atol=1e-7)
    # q: one update with the rows of both processes pooled, q = [1/4]*4 times exp(0.5 * mean loss per group)
    losses, groups = torch.cat([r[0]["losses"], r[1]["losses"]]), torch.cat([r[0]["groups"], r[1]["groups"]])
    means = torch.stack([losses[groups == g].mean() if (groups == g).any() else torch.tensor(0.0) for g in range(4)])
    expected = torch.exp(0.5 * means) / torch.exp(0.5 * means).sum()
    assert torch.allclose(r[0]["q"], expected, atol=1e-6) and r[0]["q"].equal(r[1]["q"])
    # the adversary's language accuracy: the rows of both processes pooled (hits and rows summed), then reset
    (h0, n0), (h1, n1) = r[0]["local_hits"].tolist(), r[1]["local_hits"].tolist()
    assert n0 == n1 == 6 and h0 / n0 != h1 / n1
    assert r[0]["accuracy"] == r[1]["accuracy"] == pytest.approx((h0 + h1) / 12)
    assert r[0]["after"].tolist() == r[1]["after"].tolist() == [0.0, 0.0]


DDP_SCRIPT = """
import os, sys
import torch
sys.path.insert(0, {tests!r})
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from test_mitigation_trainer import trainer
torch.distributed.init_process_group("gloo")
tiny = ({model!r}, AutoTokenizer.from_pretrained({model!r}), AutoModelForSequenceClassification)
t = trainer(tiny, {out!r}, max_steps=3)
assert t.args.world_size == 2
t.train()
torch.save(t.mitigation.state_dict(), os.path.join({out!r}, "rank" + os.environ["RANK"] + ".pt"))
"""


def test_trainer_under_two_gloo_processes_keeps_one_head_and_one_q(tiny, tmp_path):
    """torchrun, 2 CPU processes, DDP over gloo: each process trains on its own batches, yet the
    adversary's head (outside DDP) and q end equal on both (without the reduction the heads part)."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), model=str(tiny[0]), out=str(tmp_path)))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in range(2))
    assert r0["adversary.head.weight"].equal(r1["adversary.head.weight"]) and r0["dro.q"].equal(r1["dro.q"])
    assert not torch.allclose(r0["dro.q"], torch.full_like(r0["dro.q"], 0.25))  # it trained
