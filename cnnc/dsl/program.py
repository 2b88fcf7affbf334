"""A whole spec: the main file and its includes, gathered into one :class:`Program`.

An included file may hold only ``block``, ``param`` and ``include`` items; the main file
also holds the network's name, inputs, ``layers`` and ``train``. Includes are found
relative to the including file; cycles and duplicate definitions are reported with both
places.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnc.dsl import ast
from cnnc.dsl.parser import parse, read_spec
from cnnc.errors import Span, SpecError

MAX_INCLUDE_DEPTH = 16
_LIBRARY_ITEMS = (ast.BlockDef, ast.ParamDecl, ast.Include)


@dataclass
class Program:
    """Everything the elaborator needs, with every definition's span."""

    file: str
    name: str | None = None
    name_span: Span | None = None
    inputs: list[ast.InputDecl] = field(default_factory=list)
    params: dict[str, ast.ParamDecl] = field(default_factory=dict)
    blocks: dict[str, ast.BlockDef] = field(default_factory=dict)
    layers: ast.Layers | None = None
    train: ast.Train | None = None
    included: set[str] = field(default_factory=set)


def load_program(text: str, file: str, base_dir: Path) -> Program:
    """Parse ``text`` (the main spec, named ``file``) and the files it includes."""
    program = Program(file)
    module = parse(text, file)
    key = str((base_dir / Path(file).name).resolve())
    _gather(program, module, base_dir, main=True, stack=[key])
    if program.layers is None:
        raise SpecError("the spec has no `layers { ... }` section", module.span,
                        hint="a network is described as: layers { conv(32, kernel=3) relu ... }")
    if not program.inputs:
        raise SpecError("the spec declares no input", module.span,
                        hint="declare one as: input image: [3, 64, 64]")
    return program


def _gather(program: Program, module: ast.Module, base_dir: Path, main: bool,
            stack: list[str]) -> None:
    seen: dict[str, Span] = {}
    for item in module.items:
        if not main and not isinstance(item, _LIBRARY_ITEMS):
            raise SpecError(f"an included file may only hold block, param and include "
                            f"definitions, not {_what(item)}", item.span)
        if isinstance(item, ast.Include):
            _include(program, item, base_dir, stack)
        elif isinstance(item, ast.BlockDef):
            _define(program.blocks, item.name, item, "block")
        elif isinstance(item, ast.ParamDecl):
            _define(program.params, item.name, item, "param")
        elif isinstance(item, ast.InputDecl):
            if any(i.name == item.name for i in program.inputs):
                raise SpecError(f"input '{item.name}' is declared twice", item.span)
            program.inputs.append(item)
        else:
            kind = _what(item)
            if kind in seen:
                first = seen[kind]
                raise SpecError(f"{kind} appears twice (first at line {first.line})",
                                item.span)
            seen[kind] = item.span
            if isinstance(item, ast.Network):
                program.name, program.name_span = item.name, item.span
            elif isinstance(item, ast.Layers):
                program.layers = item
            elif isinstance(item, ast.Train):
                program.train = item


def _what(item: ast.Node) -> str:
    return {ast.Network: "`network`", ast.InputDecl: "`input`", ast.Layers: "`layers`",
            ast.Train: "`train`", ast.BlockDef: "`block`", ast.ParamDecl: "`param`",
            ast.Include: "`include`"}[type(item)]


def _define(table: dict, name: str, item: ast.Node, kind: str) -> None:
    if name in table:
        first = table[name].span
        raise SpecError(f"{kind} '{name}' is defined twice (first at {first})", item.span)
    table[name] = item


def _include(program: Program, item: ast.Include, base_dir: Path, stack: list[str]) -> None:
    path = (base_dir / item.path).resolve()
    key = str(path)
    if key in stack:
        cycle = " -> ".join(Path(p).name for p in stack[stack.index(key):] + [key])
        raise SpecError(f"include cycle: {cycle}", item.span)
    if len(stack) > MAX_INCLUDE_DEPTH:
        raise SpecError(f"includes nest more than {MAX_INCLUDE_DEPTH} deep", item.span)
    if key in program.included:  # a file included twice is read once
        return
    program.included.add(key)
    if not path.is_file():
        raise SpecError(f"cannot include \"{item.path}\": no file {path}", item.span,
                        hint="include paths are relative to the file that includes them")
    display = os.path.normpath(os.path.join(os.path.dirname(item.span.file), item.path))
    text = read_spec(path, display)
    module = parse(text, display)
    _gather(program, module, path.parent, main=False, stack=stack + [key])
