"""The ``cnnc`` command line: ``cnnc check | summary | graph | run | evaluate | predict |
bench``.

Each subcommand is a pair in COMMANDS: a function adding its arguments to its argparse
subparser, and a function running it that returns the exit status. Exit statuses: 0 fine,
1 an error in a spec (printed with its location), 2 a usage error (argparse's own).
Tracebacks are shown only with ``--debug``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from cnnc.cli_args import add_set, positive_int
from cnnc.errors import CnncError

EXIT_OK, EXIT_SPEC_ERROR, EXIT_USAGE = 0, 1, 2


def _load(path: str, overrides: list[tuple[str, Any]]):
    from cnnc.dsl import load_file
    return load_file(path, dict(overrides))


def _print_notes(spec) -> None:
    for note in spec.notes:
        print(f"  note: {note}")


# ---- check

def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC", help=".cnn files to check")
    add_set(p)


def _count_params(graph) -> tuple[int, int]:
    """(total, trainable) parameter counts, with summary's convention (running statistics
    and frozen layers are non-trainable)."""
    total = trainable = 0
    for node in graph.nodes:
        for p in node.params.values():
            n = p.type.numel()
            total += n
            trainable += n if p.kind == "param" and node.trainable else 0
    return total, trainable


def _check(args: argparse.Namespace) -> int:
    """Load each spec; one line per good file, the located error for a bad one."""
    status = EXIT_OK
    for path in args.specs:
        try:
            spec = _load(path, args.overrides)
        except CnncError as err:
            if args.debug:
                traceback.print_exc()
            print(err, file=sys.stderr)
            status = EXIT_SPEC_ERROR
            continue
        total, trainable = _count_params(spec.graph)
        shapes = ", ".join(str(v.type) for v in spec.graph.outputs)
        spaces = "; search spaces: " + ", ".join(
            s.short() for s in spec.spaces.values()) if spec.spaces else ""
        print(f"{path}: ok: {spec.graph.name}, {total:,} params "
              f"({trainable:,} trainable), output {shapes}{spaces}")
    return status


# ---- summary

def _summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="a .cnn file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch", type=positive_int, metavar="N",
                   help="show shapes for batch size N instead of the symbolic N, and the "
                        "memory plans of inference and of a training step at that batch")
    add_set(p)


def _summary(args: argparse.Namespace) -> int:
    """The Keras-style table of a spec's layers, or the same as JSON."""
    from cnnc.ir.summary import format_summary, summarize
    spec = _load(args.spec, args.overrides)
    summary = summarize(spec.graph, batch=args.batch)
    if args.batch:
        summary["memory"] = _memory_plans(args.spec, args.overrides, args.batch)
    if args.json:
        summary["search_spaces"] = {name: s.value for name, s in spec.spaces.items()}
        summary["notes"] = spec.notes
        print(json.dumps(summary))
        return EXIT_OK
    print(format_summary(summary))
    for mode, r in summary.get("memory", {}).items():
        print(f"{mode} plan, batch {args.batch}: arena {_mib(r['arena_bytes'])} (lower bound "
              f"{_mib(r['lower_bound_bytes'])}, one buffer per tensor "
              f"{_mib(r['naive_bytes'])}); kernel scratch {_mib(r['workspace_bytes'])}; "
              f"parameters {_mib(r['param_bytes'])}, optimizer state "
              f"{_mib(r['optimizer_bytes'])}")
    if not args.batch:
        print("(add --batch N for the memory plans at batch N)")
    _print_notes(spec)
    return EXIT_OK


def _memory_plans(path: str, overrides: list[tuple[str, Any]], batch: int) -> dict:
    """Memory reports of inference and of a training step at ``batch``."""
    from cnnc.model import compile as compile_model
    model = compile_model(path, set=dict(overrides))
    keys = ("arena_bytes", "naive_bytes", "lower_bound_bytes", "workspace_bytes",
            "param_bytes", "optimizer_bytes")
    return {mode: {k: model.memory_report(mode, batch)[k] for k in keys}
            for mode in ("infer", "train")}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


# ---- graph

def _graph_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="a .cnn file")
    p.add_argument("-o", "--output", metavar="FILE.dot",
                   help="write the DOT text here instead of printing it")
    p.add_argument("--params", action="store_true", help="draw parameters too")
    add_set(p)


def _graph(args: argparse.Namespace) -> int:
    """The network as Graphviz DOT (render with: dot -Tpng FILE.dot -o net.png)."""
    from cnnc.ir.dot import to_dot
    text = to_dot(_load(args.spec, args.overrides).graph, params=args.params)
    if not args.output:
        print(text)
        return EXIT_OK
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise CnncError(f"cannot write {args.output}: {err.strerror}") from None
    return EXIT_OK


Command = tuple[str, Callable[[argparse.ArgumentParser], None],
                Callable[[argparse.Namespace], int]]
COMMANDS: list[Command] = [
    ("check", _check_args, _check),
    ("summary", _summary_args, _summary),
    ("graph", _graph_args, _graph),
]


def _commands() -> list[Command]:
    """COMMANDS, then the training commands (run, evaluate, predict) and bench."""
    from cnnc import bench
    from cnnc.train.commands import SUBCOMMANDS
    return COMMANDS + list(SUBCOMMANDS) + [("bench", bench.add_arguments, bench.run)]


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subparser per entry of COMMANDS."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    parser = argparse.ArgumentParser(
        prog="cnnc", description="A declarative compiler for convolutional neural networks.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, add_args, run in _commands():
        p = sub.add_parser(name, parents=[common], help=(run.__doc__ or "").split("\n")[0],
                           description=run.__doc__)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnc`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CnncError as err:
        if args.debug:
            traceback.print_exc()
        print(err, file=sys.stderr)
        return EXIT_SPEC_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:  # a bug in cnnc: say so plainly, the traceback on request
        if args.debug:
            raise
        print(f"cnnc: internal error: {type(err).__name__}: {err} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_SPEC_ERROR


if __name__ == "__main__":
    sys.exit(main())
