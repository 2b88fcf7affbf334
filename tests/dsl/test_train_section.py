"""The train section: its schema, defaults, and the TrainConfig it produces."""
import pytest

from cnnc.dsl import Option, load_text
from cnnc.errors import SpecError

HEAD = "network T\ninput image: [3, 8, 8]\nlayers { flatten dense(2) softmax }\n"


def train(body: str, **kw):
    return load_text(HEAD + "train {\n" + body + "\n}\n", file="t.cnn", **kw).train


FULL = """
    data      = shapes(classes=3, size=32, count=100)
    loss      = sparse_categorical_crossentropy
    optimizer = sgd(lr=0.1, momentum=0.9, nesterov=true)
    metrics   = [accuracy, top5_accuracy]
    batch     = 16
    epochs    = 3
    validation_split = 0.25
    schedule  = multistep(milestones=[2, 3], gamma=0.5)
    seed      = 7
    shuffle   = false
    augment { flip = horizontal, rotation = 15, crop = 4 }
    early_stopping { patience = 2 }
"""


def test_full_section_is_validated_and_defaults_filled():
    t = train(FULL)
    assert t.data == Option("shapes", {"classes": 3, "size": 32, "count": 100, "channels": 3,
                                       "seed": 0, "test_count": None, "task": "classify",
                                       "objects": 1, "noise": 0.05, "antialias": True})
    assert t.loss == "sparse_categorical_crossentropy"
    assert t.optimizer == Option("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True,
                                         "weight_decay": 0.0, "clipnorm": 0.0})
    assert t.metrics == ("accuracy", "top5_accuracy")
    assert (t.batch, t.epochs, t.validation_split, t.seed, t.shuffle) == (16, 3, 0.25, 7, False)
    assert t.schedule == Option("multistep", {"milestones": (2, 3), "gamma": 0.5,
                                              "warmup": 0})
    assert t.augment == {"flip": "horizontal", "rotation": 15.0, "crop": 4}
    assert t.early_stopping == {"monitor": "val_loss", "patience": 2, "min_delta": 0.0,
                                "restore_best": True}
    assert t.spans["augment.rotation"].line == 16
    d = t.to_dict()
    assert d["optimizer"] == {"name": "sgd", "args": dict(t.optimizer.args)}


def test_minimal_section_and_defaults():
    t = train('data = mnist("data/mnist")\nloss = categorical_crossentropy')
    assert t.data == Option("mnist", {"path": "data/mnist"})
    assert t.optimizer.name == "adam" and t.optimizer.args["lr"] == 0.001
    assert (t.batch, t.epochs, t.metrics, t.augment, t.early_stopping) == (32, 10, (), {}, None)
    assert t.schedule == Option("constant", {"warmup": 0})
    assert load_text(HEAD).train is None


def test_positional_arguments_and_bare_option_names():
    t = train('data = idx("x")\nloss = mse\noptimizer = rmsprop\nschedule = step(5)')
    assert t.data.args == {"path": "x"}
    assert t.optimizer.name == "rmsprop"
    assert t.schedule.args == {"every": 5, "gamma": 0.1, "warmup": 0}


def test_values_may_use_params_and_arithmetic():
    text = ("network T\ninput image: [3, 8, 8]\nparam bs = 64\nlayers { relu }\n"
            "train {\n data = mnist(\"d\")\n loss = mse\n batch = bs * 2\n"
            " optimizer = adam(lr=1 / 1000)\n}\n")
    t = load_text(text).train
    assert t.batch == 128 and t.optimizer.args["lr"] == pytest.approx(1e-3)


def test_search_spaces_in_train_are_named_by_path():
    body = ('data = mnist("d")\nloss = mse\nbatch = choice(32, 64)\n'
            'optimizer = adam(lr=loguniform(1e-4, 1e-1))\naugment { rotation = uniform(5, 20) }')
    spec = load_text(HEAD + "train {\n" + body + "\n}\n")
    assert (spec.train.batch, spec.train.optimizer.args["lr"]) == (32, 1e-4)
    assert spec.train.augment["rotation"] == 5.0
    assert set(spec.spaces) == {"batch", "optimizer.lr", "augment.rotation"}
    spec = load_text(HEAD + "train {\n" + body + "\n}\n",
                     overrides={"batch": 64, "optimizer.lr": 0.01})
    assert (spec.train.batch, spec.train.optimizer.args["lr"]) == (64, 0.01)


@pytest.mark.parametrize("body,phrase", [
    ('loss = mse', "needs `data = ...`"),
    ('data = mnist("d")', "needs `loss = ...`"),
    ('data = mnist("d")\nloss = mse\nepochs = 0', "'epochs' expects an int >= 1; got 0"),
    ('data = mnist("d")\nloss = mse\nvalidation_split = 1', "'validation_split' expects"),
    ('data = mnist("d")\nloss = mse\nmetrics = [acuracy]', "unknown metric 'acuracy' "
     "(did you mean 'accuracy'?)"),
    ('data = mnist(3)\nloss = mse', "'path' expects a path in double quotes"),
    ('data = mnist("d", "e")\nloss = mse', "mnist takes at most 1 argument"),
    ('data = mnist(pth="d")\nloss = mse', "mnist has no argument 'pth' (did you mean 'path'"),
    ('data = imagenet("d")\nloss = mse', "unknown data source 'imagenet'"),
    ('data = 3\nloss = mse', "expected a data source"),
    ('data = mnist("d")\nloss = mse\nschedule = cosine(warmup=-1)', "'warmup' expects"),
    ('data = mnist("d")\nloss = mse\naugment = 3', "'augment' is a section"),
    ('data = mnist("d")\nloss = mse\nbatch { x = 1 }', "'batch' is a single setting"),
    ('data = mnist("d")\nloss = mse\nbatch = 1\nbatch = 2', "'batch' is set twice"),
    ('data = mnist("d")\nloss = mse\naugment { flip = sideways }', "'flip' expects one of"),
    ('data = mnist("d")\nloss = mse\nearly_stopping { monitor = val_los }',
     "did you mean 'val_loss'"),
    ('data = shapes(task=segmnt)\nloss = mse', "did you mean 'segment'"),
])
def test_schema_errors(body, phrase):
    with pytest.raises(SpecError) as info:
        train(body)
    assert phrase in str(info.value)
    assert info.value.span is not None and info.value.span.file == "t.cnn"


def test_schema_matches_the_modules_that_execute_it():
    """The names and arguments validated here are the ones data, optimizers, losses,
    schedules and metrics accept (so `cnnc check` finds what `cnnc run` would reject)."""
    import inspect

    from cnnc.autodiff import LOSSES as EXECUTED_LOSSES
    from cnnc.data.registry import SOURCES
    from cnnc.dsl import train as schema
    from cnnc.ops.optim import OPTIMIZER_ATTRS
    from cnnc.train.metrics import make_metrics
    from cnnc.train.schedules import make_schedule

    assert set(schema.DATA) == set(SOURCES)
    for name, signature in schema.DATA.items():
        loader_args = set(inspect.signature(SOURCES[name][0]).parameters)
        assert {arg for arg, _, _ in signature} <= loader_args, name
    assert set(schema.OPTIMIZERS) == set(OPTIMIZER_ATTRS)
    for name, signature in schema.OPTIMIZERS.items():
        assert {arg for arg, _, _ in signature} == set(OPTIMIZER_ATTRS[name].__dataclass_fields__)
    assert set(schema.LOSSES) <= set(EXECUTED_LOSSES)
    assert len(make_metrics(schema.METRICS)) == len(schema.METRICS)
    for name in schema.SCHEDULES:
        body = f'data = mnist("d")\nloss = mse\nschedule = {name}' + (
            "(every=2)" if name == "step" else "(milestones=[2])" if name == "multistep"
            else "(gamma=0.9)" if name == "exponential" else "")
        option = train(body).schedule
        make_schedule(option.name, option.args, lr=0.1, epochs=10, steps_per_epoch=3)


def test_label_smoothing_and_clipnorm():
    t = train('data = mnist("d")\nloss = sparse_categorical_crossentropy\n'
              'label_smoothing = 0.1\noptimizer = adam(lr=1e-3, clipnorm=1.0)')
    assert t.label_smoothing == 0.1 and t.optimizer.args["clipnorm"] == 1.0
    with pytest.raises(SpecError, match="label_smoothing applies to the categorical") as info:
        train('data = mnist("d")\nloss = mse\nlabel_smoothing = 0.1')
    assert info.value.span.line == 7
