"""The one error hierarchy every user-facing failure goes through.

A :class:`CnncError` optionally carries a :class:`Span` pointing into a .cnn file; its
text is then ``file:line:col: message`` followed by the offending source line and a caret
under the fault, so the CLI can print it as it is.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """Where something came from in a .cnn file (1-based line and column)."""

    file: str
    line: int
    column: int
    line_text: str = ""
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def caret(self) -> str:
        """The source line, and a caret line under the span's columns."""
        if not self.line_text:
            return ""
        text = self.line_text.rstrip("\n").expandtabs(1)
        if len(text) > 200:  # a minified or binary "line": show the part around the column
            start = max(0, self.column - 80)
            text, col = text[start:start + 160], self.column - start
        else:
            col = self.column
        width = 1
        if self.end_column is not None and self.end_column > self.column:
            width = min(self.end_column - self.column, max(1, len(text) - col + 1))
        return f"    {text}\n    {' ' * (col - 1)}{'^' * width}"


class CnncError(Exception):
    """Base of every error cnnc reports to a user."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def __str__(self) -> str:
        head = f"{self.span}: {self.message}" if self.span else self.message
        parts = [head]
        if self.span and self.span.caret():
            parts.append(self.span.caret())
        if self.hint:
            parts.append(self.hint)
        return "\n".join(parts)


class SpecSyntaxError(CnncError):
    """The text is not a well-formed .cnn spec."""


class SpecError(CnncError):
    """The spec parses but means something impossible (unknown layer, bad argument...)."""


class ShapeError(SpecError):
    """A layer receives a tensor whose shape it cannot take."""


class GradError(CnncError):
    """The backward pass cannot be derived (an op without a gradient rule...)."""


class KernelError(CnncError):
    """A kernel was called with arguments it cannot take (shape, dtype, layout, aliasing)."""


class DataError(CnncError):
    """Training or evaluation data is missing, corrupt or does not fit the network."""


class CheckpointError(CnncError):
    """A weights or checkpoint file cannot be read, or does not fit the network."""
