"""Every network in specs/: it checks, and it has the size its published source gives."""
from pathlib import Path

import pytest

from cnnc.cli import main
from cnnc.dsl import load_file
from cnnc.ir.summary import summarize

SPECS = Path(__file__).resolve().parents[1] / "specs"
ALL = sorted(SPECS.glob("*.cnn"))

# (spec, trainable params, non-trainable params). Sources: the figures (Keras
# example, torchvision's num_params; torchvision does not count batchnorm running
# statistics, which are the non-trainable column here).
COUNTS = [
    ("seed", 1_625_281, 0),
    ("keras_mnist", 34_826, 0),
    ("lenet5", 61_706, 0),
    ("alexnet", 61_100_840, 0),
    ("vgg16", 138_357_544, 0),
    ("resnet18", 11_689_512, 9_600),
    ("resnet50", 25_557_032, 53_120),
    ("googlenet", 6_624_904, 14_560),
    # ResNet-20 with 1x1-projection shortcuts (option B): the paper's option-A network has
    # 0.27M; the two projections add 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
    ("resnet20", 272_474, 1_568),
]


def test_specs_folder_holds_the_networks():
    names = {p.stem for p in ALL}
    assert {c[0] for c in COUNTS} | {"unet"} <= names


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_every_spec_passes_check(path, capsys):
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok: ")


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_every_spec_has_a_valid_train_section(path):
    spec = load_file(path)
    assert spec.train is not None and spec.train.epochs >= 1


@pytest.mark.parametrize("name,trainable,frozen", COUNTS, ids=[c[0] for c in COUNTS])
def test_parameter_counts(name, trainable, frozen):
    s = summarize(load_file(SPECS / f"{name}.cnn").graph)
    assert (s["trainable_params"], s["non_trainable_params"]) == (trainable, frozen)


def test_vgg16_conv_base():
    spec = load_file(SPECS / "vgg16.cnn", {"include_top": False})
    assert summarize(spec.graph)["total_params"] == 14_714_688
    assert spec.graph.outputs[0].type.shape == ("N", 512, 7, 7)


@pytest.mark.parametrize("name,macs", [("vgg16", 15.47e9), ("resnet18", 1.814e9)])
def test_macs_match_torchvision(name, macs):
    got = summarize(load_file(SPECS / f"{name}.cnn").graph)["macs"]
    assert abs(got - macs) / macs < 0.005


def test_unet_is_a_per_pixel_segmenter_with_skips():
    spec = load_file(SPECS / "unet.cnn")
    ops = [n.op for n in spec.graph.nodes]
    assert ops.count("concat") == 3 and ops.count("conv_transpose") == 3
    assert spec.graph.outputs[0].type.shape == ("N", 4, 64, 64)
    assert spec.notes == ["width = 32 from choice(32, 16, 64) (its first value)",
                          "optimizer.lr = 0.0001 from loguniform(0.0001, 0.01) (its first value)"]


def test_resnet_shortcuts_are_projections_only_where_the_shape_changes():
    spec = load_file(SPECS / "resnet18.cnn")
    adds = [n for n in spec.graph.nodes if n.op == "add"]
    projections = [n for n in adds if n.data_inputs[1].producer.op == "batchnorm"]
    assert len(adds) == 8 and len(projections) == 3


def test_vgg11_cifar_has_the_common_cifar_size():
    # VGG-11 with batchnorm and a single 512 -> 10 classifier: 9,231,114 trainable
    # parameters, the figure usually quoted for this CIFAR-10 form; 5 pools leave 1x1.
    spec = load_file(SPECS / "vgg11_cifar.cnn")
    s = summarize(spec.graph)
    assert (s["trainable_params"], s["non_trainable_params"]) == (9_231_114, 5_504)
    assert [n.op for n in spec.graph.nodes].count("conv") == 8
    assert spec.graph.outputs[0].type.shape == ("N", 10)
