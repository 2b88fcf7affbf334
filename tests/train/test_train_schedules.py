import math

import pytest

from cnnc.errors import CnncError
from cnnc.train.schedules import (Constant, Cosine, Exponential, MultiStep, ReduceOnPlateau,
                                  StepDecay, Warmup, make_schedule)


def test_constant_step_multistep_exponential():
    assert Constant(0.1).lr_at(7, 3) == 0.1
    s = StepDecay(0.1, every=3, gamma=0.5)
    assert [s.lr_at(e, 0) for e in range(7)] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    m = MultiStep(1.0, milestones=[4, 2], gamma=0.1)
    assert [m.lr_at(e, 5) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    x = Exponential(0.2, gamma=0.9)
    assert x.lr_at(3, 10) == pytest.approx(0.2 * 0.729)


def test_cosine_per_step():
    c = Cosine(1.0, epochs=2, steps_per_epoch=4, min_lr=0.1)
    # t = (epoch * 4 + step) / 8
    assert c.lr_at(0, 0) == pytest.approx(1.0)
    assert c.lr_at(1, 0) == pytest.approx(0.55)                  # t = 1/2
    assert c.lr_at(0, 2) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert c.lr_at(2, 0) == pytest.approx(0.1)                   # the end, and after it
    assert c.lr_at(5, 3) == pytest.approx(0.1)


def test_warmup_then_shifted_inner():
    w = Warmup(StepDecay(0.4, every=1, gamma=0.5), epochs=1, steps_per_epoch=4)
    assert [w.lr_at(0, s) for s in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert w.lr_at(1, 0) == pytest.approx(0.4)    # the inner schedule's epoch 0
    assert w.lr_at(2, 3) == pytest.approx(0.2)


def test_make_schedule_cosine_with_warmup_spans_the_rest():
    s = make_schedule("cosine", {"min_lr": 0.0, "warmup": 2}, lr=1.0, epochs=6,
                      steps_per_epoch=10)
    assert s.lr_at(0, 0) == pytest.approx(1 / 20)
    assert s.lr_at(2, 0) == pytest.approx(1.0)
    assert s.lr_at(4, 0) == pytest.approx(0.5)     # half of the 4 cosine epochs
    assert s.lr_at(6, 0) == pytest.approx(0.0)
    with pytest.raises(CnncError, match="unknown learning-rate schedule"):
        make_schedule("cosin", {}, lr=1.0, epochs=6, steps_per_epoch=10)


def test_reduce_on_plateau_and_its_state():
    r = ReduceOnPlateau(1.0, monitor="val_loss", factor=0.5, patience=2, min_delta=0.0,
                        cooldown=1, min_lr=0.2)
    lrs = []
    for v in [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97]:
        r.on_epoch_end({"val_loss": v})
        lrs.append(r.lr_at(0, 0))
    # Keras' order: a cooldown epoch first counts down and clears the wait, then (cooldown
    # over) counts as bad. Best 0.9 at epoch 2; epochs 3, 4 bad -> 0.5 (cooldown 1);
    # epochs 5, 6 bad -> 0.25; epochs 7, 8 -> 0.125, floored at 0.2; then stays there.
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2]
    copy = ReduceOnPlateau(1.0, monitor="val_loss", factor=0.5, patience=2, cooldown=1)
    copy.load_state(r.state())
    assert copy.state() == r.state()
    with pytest.raises(CnncError, match="(?s)val_accuracy.*validation"):
        ReduceOnPlateau(1.0, monitor="val_accuracy").on_epoch_end({"loss": 1.0})


def test_plateau_on_accuracy_maximises():
    r = ReduceOnPlateau(1.0, monitor="accuracy", factor=0.1, patience=1, min_delta=0.0)
    for v in [0.5, 0.6, 0.6]:
        r.on_epoch_end({"accuracy": v})
    assert r.lr_at(0, 0) == pytest.approx(0.1)


def test_every_schedule_the_language_knows_is_built():
    from cnnc.dsl.train import SCHEDULES
    required = {"every": 2, "milestones": (2,), "gamma": 0.5}
    for name, signature in SCHEDULES.items():
        args = {k: required.get(k, default) for k, _, default in signature}
        s = make_schedule(name, args, lr=1.0, epochs=5, steps_per_epoch=3)
        assert s.lr_at(0, 0) > 0, name


def test_reduce_on_plateau_after_warmup():
    s = make_schedule("reduce_on_plateau", {"monitor": "val_loss", "factor": 0.5,
                                            "patience": 1, "min_delta": 0.0, "warmup": 1},
                      lr=1.0, epochs=5, steps_per_epoch=2)
    assert [s.lr_at(0, 0), s.lr_at(0, 1), s.lr_at(1, 0)] == [0.5, 1.0, 1.0]
    s.on_epoch_end({"val_loss": 1.0})
    s.on_epoch_end({"val_loss": 1.0})
    assert s.lr_at(2, 0) == 0.5


def test_warmup_is_shortened_to_leave_the_schedule_an_epoch():
    one = make_schedule("cosine", {"warmup": 3}, 0.1, epochs=1, steps_per_epoch=4)
    assert one.lr_at(0, 0) == pytest.approx(0.1)  # no warmup left: cosine from the top
    two = make_schedule("cosine", {"warmup": 3}, 0.1, epochs=2, steps_per_epoch=4)
    assert two.lr_at(0, 0) == pytest.approx(0.1 / 4)  # one epoch of warmup
