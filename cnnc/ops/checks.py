"""Input checks shared by shape rules; each raises a RuleError naming the input at fault."""
from __future__ import annotations

from collections.abc import Sequence

from cnnc.ir.types import TensorType
from cnnc.ops.registry import RuleError

_RANK_TEXT = {2: "a flat input [N, F]", 4: "a 4-D input [N, C, H, W]"}


def expect_rank(t: TensorType, ranks: Sequence[int], index: int = 0,
                hint: str | None = None) -> None:
    """Require input ``index`` to have one of ``ranks`` axes (batch included)."""
    if t.rank in ranks:
        return
    wanted = " or ".join(_RANK_TEXT.get(r, f"a {r}-D input") for r in ranks)
    raise RuleError(f"expects {wanted}", inputs=(index,), hint=hint)


def expect_4d(t: TensorType, index: int = 0) -> None:
    """Require an NCHW input; hint at the usual cause (a flatten or dense before it)."""
    hint = "put spatial layers before flatten" if t.rank == 2 else None
    expect_rank(t, (4,), index, hint)


def expect_same_dtype(types: Sequence[TensorType]) -> None:
    """Require every data input to have the first input's dtype."""
    for i, t in enumerate(types[1:], start=1):
        if t.dtype != types[0].dtype:
            raise RuleError(f"needs inputs of one dtype ({types[0].dtype} and {t.dtype})",
                            inputs=(0, i))
