"""The ``cnnc run | evaluate | predict`` commands: what they do (``run``, ``evaluate``,
``predict``, each returning plain data) and their argparse subcommands
(``SUBCOMMANDS``, which ``cnnc/cli.py`` adds to its own).
"""
from __future__ import annotations

import argparse
import json as json_module
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from cnnc.cli_args import assignment, positive_int
from cnnc.data import DataSource, check_fits
from cnnc.dsl import Option, Spec, load_file
from cnnc.errors import CheckpointError, CnncError, DataError
from cnnc.threads import get_num_threads, set_num_threads
from cnnc.train.callbacks import Checkpoints, CurvesPlot, EarlyStopping, HistoryFiles
from cnnc.train.checkpoint import assign_arrays, ensure_folder, read_checkpoint
from cnnc.train.fit import TrainingInterrupted, evaluate as evaluate_model, fit
from cnnc.train.from_spec import augmentation, check_classes, load_data, outputs_logits
from cnnc.train.schedules import make_schedule

if TYPE_CHECKING:
    from cnnc.model import Model

EXIT_OK = 0


def _compile(spec_path: str | Path, sets: Mapping[str, Any], **kwargs: Any) -> Model:
    from cnnc.model import compile
    return compile(spec_path, set=dict(sets), **kwargs)


def _spec(spec_path: str | Path, sets: Mapping[str, Any]) -> Spec:
    spec = load_file(spec_path, dict(sets))
    if len(spec.graph.outputs) != 1:
        raise CnncError(f"{spec_path}: network '{spec.graph.name}' has "
                        f"{len(spec.graph.outputs)} outputs; training needs one")
    return spec


def _say(stream: TextIO | None, text: str) -> None:
    print(text, file=stream or sys.stdout)


def run(spec_path: str | Path, *, epochs: int | None = None, batch: int | None = None,
        lr: float | None = None, threads: int | None = None, seed: int | None = None,
        data: str | Path | None = None, out: str | Path | None = None, resume: bool = False,
        sets: Mapping[str, Any] | None = None, quiet: bool = False, json: bool = False,
        stream: TextIO | None = None) -> dict[str, Any]:
    """Train the network of ``spec_path`` as its ``train`` section says (the arguments
    override it), evaluate it on the data's test split where there is one, and return a
    summary: epochs, seconds, train_loss, val_* and test_* figures, stop_reason, out.

    Writes into ``out`` (default runs/<network>): last.npz and best.npz checkpoints,
    history.json, history.csv and curves.png. ``resume`` continues from out/last.npz.
    ``quiet`` prints nothing but errors; ``json`` prints one JSON object per epoch and the
    summary as the last line. Ctrl-C saves last.npz and raises TrainingInterrupted.
    """
    start = time.perf_counter()
    sets = dict(sets or {})
    spec = _spec(spec_path, sets)
    config = spec.train
    if config is None:
        raise CnncError(f"{spec_path}: the spec has no train section, so there is nothing "
                        "to run", hint="add train { data = ... loss = ... } to the spec")
    if threads is not None:
        set_num_threads(threads)
    out = ensure_folder(out if out is not None else Path("runs") / spec.graph.name)
    last = out / "last.npz"
    saved: dict[str, Any] = {}
    if resume:
        saved = read_checkpoint(last).meta
        if "epoch" not in saved:
            raise CheckpointError(f"{last}: holds weights only, no training state to resume")
    seed = _first(seed, saved.get("seed"), config.seed, secrets.randbelow(2**31))
    batch = _first(batch, saved.get("batch_size"), config.batch)
    epochs = _first(epochs, config.epochs)
    optimizer = config.optimizer
    if lr is not None:
        optimizer = Option(optimizer.name, {**optimizer.args, "lr": float(lr)})
    input_shape = tuple(int(d) for d in spec.graph.inputs[0].type.shape[1:])
    source = load_data(config, Path(spec_path).resolve().parent, data, input_shape)
    check_fits(source, input_shape, None if data else config.spans.get("data"))
    check_classes(source, spec.graph)
    model = _compile(spec_path, sets, batch=batch, seed=seed, optimizer=optimizer)
    n_train = len(source.train) - (round(len(source.train) * config.validation_split)
                                   if config.validation_split else 0)
    steps = -(-n_train // batch)
    schedule = make_schedule(config.schedule.name, config.schedule.args,
                             optimizer.args["lr"], epochs, steps)
    _, height, width = input_shape
    stopping = EarlyStopping(**config.early_stopping) if config.early_stopping else None
    notify = (lambda text: None) if (quiet or json) else \
        (lambda text: print(text, file=sys.stderr))
    callbacks = [Checkpoints(out, monitor=stopping.monitor if stopping else None),
                 HistoryFiles(out), CurvesPlot(out / "curves.png", notify)]
    from_logits = outputs_logits(spec.graph)
    progress = "json" if json else "quiet" if quiet else "bar"
    if progress == "bar":
        _say(stream, f"{spec.graph.name}: {_counts(source, n_train)} from {source.origin}; "
                     f"{epochs} epoch{'s' * (epochs != 1)} of {steps} steps (batch {batch}), "
                     f"seed {seed}, {get_num_threads()} threads -> {out}"
                     + (f" (resuming after {saved['epoch']} epochs)" if resume else ""))
    try:
        history = fit(model, source.train, epochs=epochs, batch_size=batch,
                      validation_split=config.validation_split, metrics=config.metrics,
                      from_logits=from_logits, schedule=schedule,
                      callbacks=[c for c in (stopping, *callbacks) if c is not None],
                      seed=seed, shuffle=config.shuffle,
                      augment=augmentation(config, height, width), progress=progress,
                      resume=last if resume else None, stream=stream,
                      meta={"network": spec.graph.name, "classes": list(source.classes),
                            "spec": str(spec_path)})
    except TrainingInterrupted as stop:
        print(stop.message, file=sys.stderr)
        raise
    h = history.history
    result: dict[str, Any] = {"network": spec.graph.name, "epochs": len(history.epoch),
                              "train_loss": h["loss"][-1] if h.get("loss") else None}
    result.update({k: v[-1] for k, v in h.items() if k.startswith("val_")})
    if source.test is not None:
        scores = evaluate_model(model, source.test, batch, config.metrics, from_logits)
        result.update({f"test_{k}": v for k, v in scores.items()})
    result.update({"seconds": round(time.perf_counter() - start, 3),
                   "stop_reason": history.stop_reason, "seed": seed, "out": str(out)})
    if json:
        _say(stream, json_module.dumps(result))
    elif not quiet:
        _print_result(result, source, stream)
    return result


def _counts(source: DataSource, n_train: int) -> str:
    val = len(source.train) - n_train
    test = len(source.test) if source.test is not None else 0
    return f"{n_train:,} training / {val:,} validation / {test:,} test images"


def _print_result(result: Mapping[str, Any], source: DataSource, stream: TextIO | None) -> None:
    if source.test is not None:
        figures = "  ".join(f"{k[5:]} {v:.4f}" for k, v in result.items()
                            if k.startswith("test_"))
        _say(stream, f"test  {figures}  ({len(source.test):,} images)")
    out = Path(result["out"])
    _say(stream, f"saved {out / 'last.npz'}, best.npz, history.json/.csv "
                 f"({result['seconds']:.1f} s)")


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _load_weights(model: Model, spec: Spec, weights: str | Path) -> dict[str, Any]:
    """Load a weights or checkpoint file into ``model``; returns the file's metadata."""
    ckpt = read_checkpoint(weights)
    name = spec.graph.name
    saved = ckpt.meta.get("network")
    if saved is not None and saved != name:
        raise CheckpointError(f"{weights}: holds the weights of network '{saved}', not of "
                              f"'{name}'", hint="give the weights a run of this spec wrote")
    assign_arrays(model._param_arrays(), ckpt.weights, weights, network=f"network '{name}'")
    model._params_changed()
    return ckpt.meta


def evaluate(spec_path: str | Path, weights: str | Path, data: str | Path | None = None, *,
             batch: int | None = None, sets: Mapping[str, Any] | None = None,
             threads: int | None = None) -> dict[str, Any]:
    """The loss and the spec's metrics of the trained ``weights`` on the data's test split
    (or, where the data has none, on all of its images). ``data`` overrides the spec's
    data path. Returns {network, weights, split, images, loss, <metrics>...}."""
    sets = dict(sets or {})
    spec = _spec(spec_path, sets)
    config = spec.train
    if config is None:
        raise CnncError(f"{spec_path}: the spec has no train section naming its data and "
                        "loss, so there is nothing to evaluate on")
    if threads is not None:
        set_num_threads(threads)
    batch = batch or config.batch
    model = _compile(spec_path, sets, batch=batch)
    _load_weights(model, spec, weights)
    source = load_data(config, Path(spec_path).resolve().parent, data, model.input_shape)
    check_fits(source, model.input_shape, None if data else config.spans.get("data"))
    check_classes(source, spec.graph)
    split, name = (source.test, "test") if source.test is not None else (source.train, "all")
    scores = evaluate_model(model, split, batch, config.metrics, outputs_logits(spec.graph))
    return {"network": spec.graph.name, "weights": str(weights), "split": name,
            "images": len(split), **scores}


def read_image(path: str | Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """An image file as float32 [C, H, W] in [0, 1], converted to grayscale or RGB as the
    network's input has 1 or 3 channels and resized (bilinear) to its size."""
    from PIL import Image, UnidentifiedImageError
    c, h, w = input_shape
    if c not in (1, 3):
        raise DataError(f"{path}: the network takes {c}-channel images, but image files give "
                        "1 (grayscale) or 3 (RGB) channels; predict on .npz data instead")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


def predict(spec_path: str | Path, weights: str | Path, images: Sequence[str | Path],
            top: int = 5, *, sets: Mapping[str, Any] | None = None,
            threads: int | None = None) -> list[dict[str, Any]]:
    """The ``top`` most probable classes of each image file: a list of {image, top:
    [{class, index, probability}, ...]}. Class names come from the weights file when a
    run wrote it, else they are the class indices."""
    sets = dict(sets or {})
    spec = _spec(spec_path, sets)
    if threads is not None:
        set_num_threads(threads)
    model = _compile(spec_path, sets)
    meta = _load_weights(model, spec, weights)
    out_shape = spec.graph.outputs[0].type.shape
    if len(out_shape) != 2:
        raise CnncError(f"predict lists the top classes of a classifier; the output of "
                        f"'{spec.graph.name}' has shape {out_shape}, not [N, classes]")
    x = np.stack([read_image(p, model.input_shape) for p in images])
    probs = _probabilities(model.predict(x), outputs_logits(spec.graph))
    names = meta.get("classes") or [str(i) for i in range(probs.shape[1])]
    results = []
    for path, p in zip(images, probs):
        order = np.argsort(-p, kind="stable")[:max(1, top)]
        results.append({"image": str(path), "top": [
            {"class": names[i] if i < len(names) else str(i), "index": int(i),
             "probability": float(p[i])} for i in order]})
    return results


def _probabilities(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """Class probabilities [N, K] (K = 2 for a one-unit binary output)."""
    z = outputs.astype(np.float64)
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z)) if from_logits else z
        return np.concatenate([1.0 - p, p], axis=1)
    if from_logits:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


# ---- argparse -------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="a .cnn file")
    p.add_argument("--set", dest="sets", metavar="NAME=VALUE", action="append",
                   type=assignment, default=[],
                   help="give a spec param or search space this value (repeatable)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="kernel threads (default: all cores, or CNNC_NUM_THREADS)")


def _run_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--epochs", type=positive_int, metavar="N", help="override train.epochs")
    p.add_argument("--batch", type=positive_int, metavar="N", help="override train.batch")
    p.add_argument("--lr", type=float, metavar="RATE", help="override the optimizer's lr")
    p.add_argument("--seed", type=int, metavar="N",
                   help="override train.seed (the same seed gives the same run, bit for bit)")
    p.add_argument("--data", metavar="PATH", help="override the data's path")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<network>)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.npz")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per epoch, then the summary as one JSON line")


def _run(args: argparse.Namespace) -> int:
    """Train a spec as its train section says, then evaluate it on the test split."""
    run(args.spec, epochs=args.epochs, batch=args.batch, lr=args.lr, threads=args.threads,
        seed=args.seed, data=args.data, out=args.out, resume=args.resume,
        sets=dict(args.sets), quiet=args.quiet, json=args.json)
    return EXIT_OK


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--weights", required=True, metavar="FILE",
                   help="a weights or checkpoint .npz (e.g. runs/<network>/best.npz)")
    p.add_argument("--data", metavar="PATH", help="override the data's path")
    p.add_argument("--batch", type=positive_int, metavar="N", help="batch size")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _evaluate(args: argparse.Namespace) -> int:
    """Evaluate trained weights on the spec's test data."""
    result = evaluate(args.spec, args.weights, args.data, batch=args.batch,
                      sets=dict(args.sets), threads=args.threads)
    if args.json:
        print(json_module.dumps(result))
    else:
        figures = "  ".join(f"{k} {v:.4f}" for k, v in result.items()
                            if isinstance(v, float))
        print(f"{result['network']} on {result['images']:,} {result['split']} images: "
              f"{figures}")
    return EXIT_OK


def _predict_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG ...)")
    p.add_argument("--weights", required=True, metavar="FILE",
                   help="a weights or checkpoint .npz (e.g. runs/<network>/best.npz)")
    p.add_argument("--top", type=positive_int, default=5, metavar="K",
                   help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON list")


def _predict(args: argparse.Namespace) -> int:
    """The most probable classes of image files."""
    results = predict(args.spec, args.weights, args.images, args.top, sets=dict(args.sets),
                      threads=args.threads)
    if args.json:
        print(json_module.dumps(results))
        return EXIT_OK
    for r in results:
        print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}"
                                            for t in r["top"]))
    return EXIT_OK


SUBCOMMANDS = [("run", _run_args, _run), ("evaluate", _evaluate_args, _evaluate),
               ("predict", _predict_args, _predict)]

