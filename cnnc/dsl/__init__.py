"""The .cnn language: parse a spec, follow its includes, build its Graph and TrainConfig.

    spec = cnnc.dsl.load("specs/lenet5.cnn", overrides={"width": 32})
    spec.graph, spec.train, spec.notes
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnc.dsl.elaborate import elaborate, spaces_in
from cnnc.dsl.parser import check_text, read_spec
from cnnc.dsl.program import Program, load_program
from cnnc.dsl.spaces import SpaceValue, parse_assignment
from cnnc.dsl.train import Option, TrainConfig, build_train_config
from cnnc.errors import SpecError
from cnnc.ir import Graph

__all__ = ["Option", "Spec", "TrainConfig", "load", "load_file", "load_text",
           "parse_assignment"]


@dataclass
class Spec:
    """A loaded spec: its graph, its train section (None without one), the values chosen
    for its search spaces, and notes for the user (one line per chosen space)."""

    graph: Graph
    train: TrainConfig | None
    spaces: dict[str, SpaceValue] = field(default_factory=dict)
    program: Program | None = field(default=None, repr=False)

    @property
    def notes(self) -> list[str]:
        """"name = value from choice(...) (its first value)" for each search space used."""
        return [s.note() for s in self.spaces.values()]


def load(spec: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Load a spec from a path (a PathLike, or a one-line str ending in ``.cnn``) or from
    its source text (any other str; includes are then relative to the working directory).

    ``overrides`` maps search-space or ``param`` names to values, as ``--set`` does.
    Raises a located CnncError for anything wrong with the spec.
    """
    if isinstance(spec, os.PathLike) or ("\n" not in spec and spec.strip().endswith(".cnn")):
        return load_file(spec, overrides)
    return load_text(spec, overrides=overrides)


def load_file(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Load the spec in the file ``path``."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"{path}: no such file")
    return _build(read_spec(p), str(path), p.resolve().parent, overrides)


def load_text(text: str, file: str = "<spec>", base_dir: str | os.PathLike = ".",
              overrides: Mapping[str, Any] | None = None) -> Spec:
    """Load a spec from its text; ``file`` names it in messages, ``base_dir`` anchors
    its includes."""
    text = check_text(text.encode("utf-8", "surrogatepass"), file)
    return _build(text, file, Path(base_dir).resolve(), overrides)


def _build(text: str, file: str, base_dir: Path, overrides: Mapping[str, Any] | None) -> Spec:
    program = load_program(text, file, base_dir)
    overrides = dict(overrides or {})
    elab = elaborate(program, overrides)
    spaces = dict(elab.spaces)
    train = None
    used = set(elab.used_overrides)
    if program.train is not None:
        scope = elab.globals
        train, reader = build_train_config(
            program.train, lambda node: elab.evaluator.evaluate(node, scope), scope.lookup,
            overrides)
        spaces.update(reader.spaces)
        used |= reader.used
    unused = sorted(set(overrides) - used)
    if unused:
        known = list(program.params) + [s.name for s in spaces_in(program)] + list(spaces)
        name = unused[0]
        hint = "names: " + ", ".join(sorted(set(known))) if known else \
            "this spec has no param or search space"
        raise SpecError(f"{file}: --set {name}: the spec has no param or search space "
                        f"called '{name}'{_near(name, known)}", hint=hint)
    return Spec(elab.graph, train, spaces, program)


def _near(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
