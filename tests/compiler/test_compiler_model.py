"""The Model API: compile options, input checking, optimizers against a numpy reference,
frozen layers, weights files."""
import numpy as np
import pytest

import cnnc
from cnnc.dsl import Option
from cnnc.errors import CheckpointError, SpecError

from compiler_nets import NETS, SEED, batch_for

MLP = """
network MLP
input x: [5]
layers { dense(4) tanh dense(3, trainable=frozen) relu dense(2) }
"""


def _mlp(frozen=False, **kw):
    source = MLP.replace("trainable=frozen", f"trainable={'false' if frozen else 'true'}")
    return cnnc.compile(source, dtype="float64", seed=9, loss="mse", **kw)


def numpy_update(name, args, p, g, state, t):
    """One step of the PyTorch update formulas (state: dict of arrays, updated)."""
    lr = args.get("lr", 0.01 if name == "sgd" else 0.001)
    wd = args.get("weight_decay", 0.01 if name == "adamw" else 0.0)
    if name == "sgd":
        g = g + wd * p
        mom = args.get("momentum", 0.0)
        if mom:
            state["buf"] = g.copy() if t == 1 else mom * state["buf"] + g
            g = g + mom * state["buf"] if args.get("nesterov") else state["buf"]
        return p - lr * g
    if name == "rmsprop":
        g = g + wd * p
        rho, eps, mom = args.get("rho", 0.9), args.get("eps", 1e-7), args.get("momentum", 0)
        state["v"] = rho * state.get("v", 0) + (1 - rho) * g * g
        step = g / (np.sqrt(state["v"]) + eps)
        if mom:
            state["buf"] = mom * state.get("buf", 0) + step
            step = state["buf"]
        return p - lr * step
    b1, b2, eps = args.get("beta1", 0.9), args.get("beta2", 0.999), args.get("eps", 1e-7)
    if name == "adamw":
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0) + (1 - b2) * g * g
    return p - lr / (1 - b1 ** t) * state["m"] / (np.sqrt(state["v"]) / np.sqrt(1 - b2 ** t)
                                                 + eps)


@pytest.mark.parametrize("name, args", [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "eps": 1e-8}),
    ("adamw", {"lr": 0.02}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.5}),
])
def test_optimizer_steps_match_numpy(name, args):
    model = _mlp()
    model.set_optimizer(name, **args)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 2))
    expected = {k: v.copy() for k, v in model.parameters.items()}
    states = {k: {} for k in expected}
    for t in range(1, 4):
        loss, grads = model.gradients(x, y)
        for k, g in grads.items():
            expected[k] = numpy_update(name, args, expected[k], g, states[k], t)
        assert model.train_step(x, y) == pytest.approx(loss, rel=1e-14)
        for k, v in model.parameters.items():
            np.testing.assert_allclose(v, expected[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_spec_optimizer_and_learning_rate():
    source = SEED.replace("dropout(0.3)", "") + (
        "\ntrain { data = shapes(classes=2, size=14, count=8)\n"
        "loss = binary_crossentropy\noptimizer = sgd(lr=0.5)\n}\n")
    model = cnnc.compile(source, dtype="float64", seed=1)
    rng = np.random.default_rng(2)
    x, y = batch_for(model, 4, rng)
    _, grads = model.gradients(x, y)
    w = model.parameters["dense_2.weight"].copy()
    assert model.learning_rate == 0.5
    model.learning_rate = 0.25
    model.train_step(x, y)
    np.testing.assert_allclose(model.parameters["dense_2.weight"],
                               w - 0.25 * grads["dense_2.weight"], rtol=1e-12)


def test_frozen_layers_get_no_update():
    model = _mlp(frozen=True)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 2))
    before = {k: v.copy() for k, v in model.parameters.items()}
    _, grads = model.gradients(x, y)
    assert set(grads) == {"dense_1.weight", "dense_1.bias", "dense_3.weight", "dense_3.bias"}
    model.train_step(x, y)
    for k, v in model.parameters.items():
        assert np.array_equal(v, before[k]) == k.startswith("dense_2."), k


def test_parameters_are_writable_views():
    model = _mlp()
    x = np.random.default_rng(4).standard_normal((3, 5))
    for arr in model.parameters.values():
        arr[...] = 0.0
    assert np.array_equal(model.forward(x), np.zeros((3, 2)))


@pytest.mark.parametrize("name", ["sgd", "rmsprop"])
def test_a_layers_weight_decay_replaces_the_optimizers(name):
    source = MLP.replace("dense(4) tanh", "dense(4, weight_decay=0.5) tanh").replace(
        "trainable=frozen", "trainable=true")
    model = cnnc.compile(source, dtype="float64", seed=9, loss="mse")
    args = {"lr": 0.1, "weight_decay": 0.01}
    model.set_optimizer(name, **args)
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 2))
    _, grads = model.gradients(x, y)
    before = {k: v.copy() for k, v in model.parameters.items()}
    model.train_step(x, y)
    for k, g in grads.items():
        layer_args = {**args, "weight_decay": 0.5} if k.startswith("dense_1.") else args
        expected = numpy_update(name, layer_args, before[k], g, {}, 1)
        np.testing.assert_allclose(model.parameters[k], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("clipnorm", [0.05, 1e3])
def test_clipnorm_scales_all_gradients_by_one_global_norm(clipnorm):
    model = _mlp()
    model.set_optimizer("sgd", lr=0.1, clipnorm=clipnorm)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 2))
    _, grads = model.gradients(x, y)
    norm = np.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    scale = min(1.0, clipnorm / (norm + 1e-6))  # PyTorch's clip_grad_norm_
    assert (scale < 1.0) == (clipnorm < norm)
    before = {k: v.copy() for k, v in model.parameters.items()}
    model.train_step(x, y)
    for k, g in grads.items():
        np.testing.assert_allclose(model.parameters[k], before[k] - 0.1 * scale * g,
                                   rtol=1e-12, atol=1e-14)


def test_default_loss_follows_the_output():
    assert cnnc.compile(SEED).loss_name == "binary_crossentropy"
    assert cnnc.compile(NETS["lenet"][0]).loss_name == "sparse_categorical_crossentropy"


def test_set_overrides_params_and_dtype():
    source = "network P\ninput x: [3]\nparam width = 4\nlayers { dense(width) dense(2) }\n"
    model = cnnc.compile(source, set={"width": 7}, dtype="float64", batch=5)
    assert model.parameters["dense_1.weight"].shape == (3, 7)
    assert model.parameters["dense_1.weight"].dtype == np.float64
    assert model.input_shape == (3,) and model.output_shape == (2,)
    assert model.memory_report("infer")["batch"] == 5
    with pytest.raises(SpecError, match="no param or search space called 'depth'"):
        cnnc.compile(source, set={"depth": 2})


def test_bad_inputs_get_clear_errors():
    model = cnnc.compile(NETS["lenet"][0])
    with pytest.raises(ValueError, match=r"shape \[N, 1, 16, 16\]; got \[2, 16, 16\]"):
        model.forward(np.zeros((2, 16, 16)))
    x = np.zeros((2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 5\)"):
        model.loss(x, np.array([0, 5]))
    with pytest.raises(ValueError, match="one entry per example"):
        model.train_step(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        model.loss(x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(x, batch_size=0)
    with pytest.raises(SpecError, match="unknown optimizer 'adagrad'"):
        model.set_optimizer("adagrad")
    with pytest.raises(SpecError, match="has no argument 'beta'"):
        model.set_optimizer("adam", beta=0.9)
    with pytest.raises(SpecError, match="argument 'lr' expects a number >= 0.0; got -1"):
        model.set_optimizer("sgd", lr=-1)


def test_weights_round_trip(tmp_path):
    a = cnnc.compile(NETS["resnet_basic"][0], seed=1)
    b = cnnc.compile(NETS["resnet_basic"][0], seed=2)
    rng = np.random.default_rng(5)
    x, y = batch_for(a, 4, rng)
    a.train_step(x, y)  # running statistics move too
    path = tmp_path / "w.npz"
    a.save_weights(path)
    assert not np.array_equal(a.forward(x), b.forward(x))
    b.load_weights(path)
    assert np.array_equal(a.forward(x), b.forward(x))
    for k, v in a.parameters.items():
        assert np.array_equal(v, b.parameters[k])


def test_weights_mismatches_are_named(tmp_path):
    model = _mlp()
    path = tmp_path / "w.npz"
    model.save_weights(path)
    saved = {k: v for k, v in np.load(path).items() if k != "__cnnc__"}  # weights + name
    before = {k: v.copy() for k, v in model.parameters.items()}

    def write(arrays):
        np.savez(path, **arrays)

    write({k: v for k, v in saved.items() if k != "dense_2.bias"})
    with pytest.raises(CheckpointError, match="the file lacks 'dense_2.bias'"):
        model.load_weights(path)
    write({**saved, "dense_1.weight": np.zeros((4, 5))})
    with pytest.raises(CheckpointError, match=r"'dense_1.weight' has shape \[4, 5\] in the "
                                              r"file but \[5, 4\] in network 'MLP'"):
        model.load_weights(path)
    write({**saved, "__cnnc_network__": np.array("Other")})
    with pytest.raises(CheckpointError, match="network 'Other', not 'MLP'"):
        model.load_weights(path)
    write({**saved, "extra.weight": np.zeros(3)})
    with pytest.raises(CheckpointError, match="holds 'extra.weight', which network 'MLP' "
                                              "does not have"):
        model.load_weights(path)
    write({**saved, "dense_1.bias": np.array([object()] * 4)})  # would need unpickling
    with pytest.raises(CheckpointError, match="dense_1.bias"):
        model.load_weights(path)
    path.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not an .npz weights file"):
        model.load_weights(path)
    for k, v in model.parameters.items():
        assert np.array_equal(v, before[k])


def test_optimizer_state_and_seed_resume_training_exactly():
    source = NETS["seed"][0]  # with dropout, whose masks follow the seed and step count
    rng = np.random.default_rng(6)
    a = cnnc.compile(source, seed=1)
    batches = [batch_for(a, 4, rng) for _ in range(4)]
    for x, y in batches[:2]:
        a.train_step(x, y)
    params = {k: v.copy() for k, v in a.parameters.items()}
    state = {k: v.copy() for k, v in a.optimizer_state().items()}
    assert state["step"][0] == 2 and "conv_1/weight/exp_avg" in state
    b = cnnc.compile(source, seed=5)
    b.seed = 1
    for k, v in b.parameters.items():
        v[...] = params[k]
    for k, v in b.optimizer_state().items():
        v[...] = state[k]
    assert [a.train_step(*t) for t in batches[2:]] == [b.train_step(*t) for t in batches[2:]]
    for k, v in a.parameters.items():
        assert np.array_equal(v, b.parameters[k]), k


def test_last_output_is_the_training_step_prediction():
    model = _mlp()
    assert model.last_output is None
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((6, 5)), rng.standard_normal((6, 2))
    before = model.forward(x)
    model.train_step(x, y)
    np.testing.assert_allclose(model.last_output, before, rtol=1e-13)


def test_frozen_batchnorm_keeps_its_running_statistics():
    model = cnnc.compile(NETS["frozen_bn"][0], seed=2)
    rng = np.random.default_rng(8)
    x, y = batch_for(model, 4, rng)
    before = {k: v.copy() for k, v in model.parameters.items()}
    model.train_step(x, y)
    after = model.parameters
    for name in ("batchnorm_1.gamma", "batchnorm_1.running_mean", "batchnorm_1.running_var"):
        assert np.array_equal(after[name], before[name]), name
    assert not np.array_equal(after["batchnorm_2.running_mean"],
                              before["batchnorm_2.running_mean"])


def test_fit_and_evaluate_learn_a_separable_task():
    """Model.fit / Model.evaluate (Keras style) on a task a small MLP must learn."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    model = cnnc.compile("network Sep\ninput x: [5]\nlayers { dense(16) relu dense(2) }",
                         seed=3, optimizer=Option("adam", {"lr": 0.01}))
    before = model.evaluate(x, y)
    history = model.fit(x, y, epochs=8, batch_size=32, validation_split=0.25,
                        progress="quiet")
    after = model.evaluate(x, y)
    assert set(history.history) >= {"loss", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 8
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.9


def test_label_smoothing_from_the_train_section():
    spec = ("network LS\ninput x: [4]\nlayers { dense(3) softmax }\ntrain {\n"
            '  data = mnist("d")\n  loss = sparse_categorical_crossentropy\n'
            "  label_smoothing = 0.2\n}\n")
    smooth, plain = cnnc.compile(spec, dtype="float64"), cnnc.compile(spec, dtype="float64")
    plain.set_loss("sparse_categorical_crossentropy")
    x, y = np.random.default_rng(6).standard_normal((5, 4)), np.array([0, 1, 2, 1, 0])
    logp = np.log(plain.forward(x))
    expected = -(0.8 * logp[np.arange(5), y] + 0.2 * logp.mean(axis=1)).mean()
    assert smooth.loss(x, y) == pytest.approx(expected, rel=1e-12)
    assert plain.loss(x, y) == pytest.approx(-logp[np.arange(5), y].mean(), rel=1e-12)
