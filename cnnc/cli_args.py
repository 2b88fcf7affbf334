"""argparse argument types shared by every ``cnnc`` subcommand."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cnnc.errors import CnncError


def assignment(text: str) -> tuple[str, Any]:
    """The type of ``--set name=value``: (name, value) as the spec language reads it."""
    from cnnc.dsl import parse_assignment
    try:
        return parse_assignment(text)
    except CnncError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def count(minimum: int) -> Callable[[str], int]:
    """The type of a whole number >= ``minimum`` (``--batch``, ``--steps``...)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = minimum - 1
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}; "
                                             f"got '{text}'")
        return n
    return parse


positive_int = count(1)


def add_set(parser: argparse.ArgumentParser) -> None:
    """``--set NAME=VALUE`` (repeatable), collected in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", metavar="NAME=VALUE", action="append",
                        type=assignment, default=[],
                        help="give a param or search space this value (repeatable); "
                             "otherwise each search space takes its first value")
