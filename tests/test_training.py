"""The training skeleton both studies share: schedule, checkpointed state, resume, stop signals."""

import math
import os
import signal
from dataclasses import dataclass, field

import pytest
import torch

from langskew.errors import LangskewError
from langskew.checkpointing import Checkpointer
from langskew.training import TrainingLoop, TrainState, warmup_decay


@pytest.fixture(autouse=True)
def default_handlers():
    """A loop with a checkpointer handles SIGTERM / SIGUSR1 from then on: give the test process its own back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, h in before.items():
        signal.signal(s, h)


# -- the learning-rate schedule equals both studies' former formulas, exactly ----------------
def study_a_factor(step, total_steps, warmup_steps, final_fraction):
    """Study A's former ``lr_factor``: linear warm-up, then linear decay to ``final_fraction``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 1.0 - (1.0 - final_fraction) * progress


def study_b_lr(step, total_steps, lr, min_lr, warmup_steps):
    """Study B's former ``lr_at``: linear warm-up, then cosine from ``lr`` to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("total, warmup", [(1, 0), (7, 3), (100, 0), (100, 10), (1000, 999), (18265, 200)])
def test_linear_schedule_equals_study_a_formula(total, warmup):
    for final in (0.0, 0.01, 0.5, 1.0):
        for step in list(range(min(total + 3, 400))) + [total - 1, total, total + 5]:
            assert warmup_decay(step, total, warmup, 1.0, final, "linear") == study_a_factor(step, total, warmup, final)


@pytest.mark.parametrize("total, warmup", [(1, 0), (7, 3), (30, 3), (100, 0), (1000, 999), (18265, 200)])
def test_cosine_schedule_equals_study_b_formula(total, warmup):
    for lr, min_lr in ((6e-4, 6e-6), (3e-3, 3e-4), (1.0, 0.1), (1e-3, 0.0)):
        for step in list(range(min(total + 3, 400))) + [total - 1, total, total + 5]:
            assert warmup_decay(step, total, warmup, lr, min_lr, "cosine") == study_b_lr(step, total, lr, min_lr, warmup)


def test_warmup_times_cosine_is_the_authors_shape_by_hand():
    """Languini's CosineLR: ramp min(n, W) / W times a cosine over all T steps, n = step + 1."""
    # T = 10, W = 4, peak 1, final 0: step 0 -> 1/4 * (1 + cos(pi/10)) / 2 = 0.25 * 0.9755283 = 0.2438821
    assert warmup_decay(0, 10, 4, 1.0, 0.0, "warmup_times_cosine") == pytest.approx(0.2438821, abs=1e-7)
    # step 1 -> 2/4 * (1 + cos(pi/5)) / 2 = 0.5 * 0.9045085 = 0.4522542
    assert warmup_decay(1, 10, 4, 1.0, 0.0, "warmup_times_cosine") == pytest.approx(0.4522542, abs=1e-7)
    # step 4 (n = 5, ramp done) -> (1 + cos(pi/2)) / 2 = 0.5; with final 0.1: 0.1 + 0.9 * 0.5 = 0.55
    assert warmup_decay(4, 10, 4, 1.0, 0.0, "warmup_times_cosine") == pytest.approx(0.5)
    assert warmup_decay(4, 10, 4, 1.0, 0.1, "warmup_times_cosine") == pytest.approx(0.55)
    # the last step (n = T) and beyond sit at final
    assert warmup_decay(9, 10, 4, 1.0, 0.1, "warmup_times_cosine") == pytest.approx(0.1)
    assert warmup_decay(15, 10, 4, 1.0, 0.1, "warmup_times_cosine") == pytest.approx(0.1)
    # no warm-up: the cosine alone
    assert warmup_decay(4, 10, 0, 1.0, 0.0, "warmup_times_cosine") == pytest.approx(0.5)
    # the paper's 0.1x run: 1,826 steps, warm-up 200, lr 6e-4 -> 6e-6, mid-run step 912 (n = 913)
    expected = 6e-6 + (6e-4 - 6e-6) * (1 + math.cos(math.pi * 913 / 1826)) / 2  # cos(pi/2): 3.03e-4
    assert warmup_decay(912, 1826, 200, 6e-4, 6e-6, "warmup_times_cosine") == pytest.approx(expected)
    assert expected == pytest.approx(3.03e-4, rel=1e-9)


def test_warmup_times_cosine_differs_from_warmup_then_cosine():
    # the former shape reaches the peak after the warm-up; the authors' is already below it
    assert warmup_decay(4, 10, 4, 1.0, 0.0, "cosine") == pytest.approx(1.0)
    assert warmup_decay(4, 10, 4, 1.0, 0.0, "warmup_times_cosine") == pytest.approx(0.5)
    # 0.1x run, mid-run: former 3.6059e-4 (cosine over the 1,626 steps after the warm-up), authors' 3.03e-4: 19% apart
    former = warmup_decay(912, 1826, 200, 6e-4, 6e-6, "cosine")
    assert former == pytest.approx(6e-6 + (6e-4 - 6e-6) * (1 + math.cos(math.pi * 712 / 1626)) / 2)
    assert former == pytest.approx(3.6059e-4, rel=1e-4)
    assert former / warmup_decay(912, 1826, 200, 6e-4, 6e-6, "warmup_times_cosine") == pytest.approx(1.190, abs=1e-3)


def test_schedule_shape_and_unknown_decay():
    lrs = [warmup_decay(s, 20, 4, 1.0, 0.1, "cosine") for s in range(21)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and lrs[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    with pytest.raises(ValueError, match="exponential"):
        warmup_decay(5, 10, 0, 1.0, 0.1, "exponential")


# -- state: declared once, saved and restored as a whole ------------------------------------
@dataclass
class CountingState(TrainState):
    seen: torch.Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    best: float = math.inf
    pending: list = field(default_factory=list)


def _parts(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    return model, optimizer, scheduler


def _train_steps(loop, model, optimizer, scheduler, steps):
    state = loop.state
    for _ in range(steps):
        loss = model(torch.randn(4, 3)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        state.step += 1
        state.seen += torch.tensor([1.0, 2.0])
        state.pending.append(loss.detach())
        state.best = min(state.best, float(loss.detach()))
        loop.log({"step": state.step, "train_loss": float(loss.detach())})
        loop.advance()
        loop.checkpoint_if_due()


def test_state_round_trip_through_a_checkpoint_resumes_exactly(tmp_path):
    # uninterrupted: 6 steps
    model, optimizer, scheduler = _parts()
    with TrainingLoop(CountingState(), 6, None, stateful={"model": model, "optimizer": optimizer,
                                                          "scheduler": scheduler}, progress=False) as loop:
        assert loop.resume() == 0 and loop.resumed_from is None
        _train_steps(loop, model, optimizer, scheduler, 6)
    reference, ref_weights = loop.state, {k: v.clone() for k, v in model.state_dict().items()}

    # 4 steps with a checkpoint every 2, then a fresh process-like start resumes at step 4
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=2)
    model, optimizer, scheduler = _parts()
    with TrainingLoop(CountingState(), 6, ckpt, stateful={"model": model, "optimizer": optimizer,
                                                          "scheduler": scheduler}, progress=False) as loop:
        loop.resume()
        _train_steps(loop, model, optimizer, scheduler, 4)
    saved = torch.load(tmp_path / "ckpt" / "step-000000004.pt", weights_only=True)
    assert {"rng", "model", "optimizer", "scheduler", "step", "curve", "seen", "best", "pending",
            "wall_seconds"} <= set(saved)
    torch.rand(5)  # whatever ran after the checkpoint must not matter

    model, optimizer, scheduler = _parts(seed=1)  # other initial weights: the checkpoint replaces them
    state = CountingState()
    with TrainingLoop(state, 6, Checkpointer(tmp_path / "ckpt", every_steps=2),
                      stateful={"model": model, "optimizer": optimizer, "scheduler": scheduler},
                      progress=False) as loop:
        assert loop.resume() == 4 and loop.resumed_from == 4
        assert state.step == 4 and len(state.curve) == 4 and state.seen.tolist() == [4.0, 8.0]
        assert scheduler.last_epoch == 4
        _train_steps(loop, model, optimizer, scheduler, 2)
    assert state.curve == reference.curve and state.best == reference.best
    assert torch.equal(state.seen, reference.seen) and torch.equal(torch.stack(state.pending),
                                                                   torch.stack(reference.pending))
    for name, tensor in ref_weights.items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_a_checkpoint_of_another_layout_is_named_not_half_restored(tmp_path):
    # an earlier layout: the step under another key and no wall time
    folder = tmp_path / "ckpt"
    folder.mkdir()
    model, optimizer, scheduler = _parts()
    torch.save({"global_step": 3, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
               folder / "step-000000003.pt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with TrainingLoop(CountingState(), 6, Checkpointer(folder, every_steps=2),
                      stateful={"model": model, "optimizer": optimizer, "scheduler": scheduler},
                      progress=False) as loop:
        with pytest.raises(LangskewError, match=r"step-000000003\.pt lacks rng, scheduler, step.*delete its folder"):
            loop.resume()
    assert (folder / "step-000000003.pt").exists()  # nothing is deleted
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_only_the_main_process_saves_and_every_process_waits(tmp_path):
    calls = []
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=1)
    loop = TrainingLoop(CountingState(step=1), 3, ckpt, progress=False, is_main=False,
                        barrier=lambda: calls.append("barrier"))
    loop.resume()
    loop.checkpoint_if_due()
    loop.close()
    assert calls == ["barrier"] and not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_a_checkpoint_off_schedule_and_exits_for_a_requeue(tmp_path, sig):
    model, optimizer, scheduler = _parts()
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=100)
    loop = TrainingLoop(CountingState(), 10, ckpt, stateful={"model": model}, progress=False)
    loop.resume()
    _train_steps(loop, model, optimizer, scheduler, 3)
    assert not (tmp_path / "ckpt").exists()  # not due yet
    os.kill(os.getpid(), sig)  # the handler only records the request
    assert loop.stop_requested
    with pytest.raises(SystemExit) as stopped:
        loop.checkpoint_if_due()
    assert stopped.value.code == 128 + sig
    loop.close()
    state = Checkpointer(tmp_path / "ckpt").load_latest()
    assert state["step"] == 3 and len(state["curve"]) == 3
    assert torch.equal(state["model"]["weight"], model.weight.detach())


def test_the_signals_get_their_handlers_back_when_training_ends(tmp_path):
    # in a notebook or a test process, a SIGTERM after training must end the process again
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with TrainingLoop(CountingState(), 10, Checkpointer(tmp_path / "ckpt", every_steps=100), progress=False) as loop:
        loop.resume()
        assert all(signal.getsignal(s) is not h for s, h in before.items())  # ours while training
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_stop_agreed_by_all_ranks_saves_even_where_no_signal_arrived(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=100)
    loop = TrainingLoop(CountingState(step=7), 10, ckpt, progress=False)
    loop.resume()
    loop.checkpoint_if_due(stop=True)  # another rank was signalled: save, but this process has no signal to exit on
    loop.close()
    assert Checkpointer(tmp_path / "ckpt").load_latest()["step"] == 7
