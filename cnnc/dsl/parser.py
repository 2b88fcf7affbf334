"""Text -> AST for one .cnn file: checks on the raw text, the Lark LALR parser, and the
translation of Lark's errors into sentences in the language's own words.

The tree is built by Lark's inline transformer (callbacks run as the LALR parser reduces),
so parsing never recurses; nesting is bounded by MAX_DEPTH so that later, recursive walks
of the AST are safe whatever the input.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from cnnc.dsl import ast
from cnnc.errors import Span, SpecSyntaxError

MAX_BYTES = 1_000_000   # a real spec is a few KB; anything this size is not one
MAX_DEPTH = 100         # nesting of brackets, braces and expressions

_CLOSERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_OPENERS = {v: k for k, v in _CLOSERS.items()}
_TEXT = {"LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]", "LBRACE": "{", "RBRACE": "}"}

# How Lark's terminal names read to a person.
_WORDS = {
    "NAME": "a name", "INT": "a number", "FLOAT": "a number", "STRING": 'a "string"',
    "_NL": "a new line", "$END": "the end of the file", "LPAR": "`(`", "RPAR": "`)`",
    "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`", "RBRACE": "`}`", "COMMA": "`,`",
    "COLON": "`:`", "EQUAL": "`=`", "COMPARE": "a comparison", "PLUS": "`+`", "MINUS": "`-`",
    "STAR": "`*`", "SLASH": "`/`", "DSLASH": "`//`", "PERCENT": "`%`",
}


_TOP_LEVEL = ("NETWORK", "INPUT", "BLOCK", "LAYERS", "TRAIN", "INCLUDE", "PARAM")
_KEYWORDS = ("REPEAT", "IF", "ELSE", "AND", "OR", "NOT", "TRUE", "FALSE")


class _Context:
    """File name and lines of the text being parsed, for building spans."""

    def __init__(self, file: str, text: str):
        self.file = file
        self.lines = text.split("\n")

    def span(self, line: int, column: int, end_column: int | None = None) -> Span:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return Span(self.file, line, column, text, end_column)


class _Postlexer:
    """Makes new lines mean "end of statement" only where that is what they mean.

    Drops new lines inside ( ) and [ ], after `{` and `,`, before `}` and `else`, and
    repeats; checks that brackets match and nest at most MAX_DEPTH deep.
    """

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.ctx: _Context | None = None
        self.stack: list[Token] = []
        self.last: Token | None = None      # the last token handed to the parser
        self.before_last: Token | None = None

    def process(self, stream):
        self.stack, self.last, self.before_last = [], None, None
        pending = None
        for tok in stream:
            if tok.type == "_NL":
                if self.stack and self.stack[-1].type != "LBRACE":
                    continue
                if self.last is not None and self.last.type not in ("LBRACE", "COMMA"):
                    pending = tok
                continue
            if pending is not None and tok.type not in ("RBRACE", "ELSE"):
                yield self._emit(pending)
            pending = None
            self._track(tok)
            yield self._emit(tok)

    def _emit(self, tok: Token) -> Token:
        self.before_last, self.last = self.last, tok
        return tok

    def _track(self, tok: Token) -> None:
        if tok.type in _CLOSERS:
            if len(self.stack) >= MAX_DEPTH:
                raise SpecSyntaxError(
                    f"brackets nest more than {MAX_DEPTH} deep", self._span(tok))
            self.stack.append(tok)
        elif tok.type in _OPENERS:
            if not self.stack:
                raise SpecSyntaxError(
                    f"`{tok}` has no matching `{_TEXT[_OPENERS[tok.type]]}`", self._span(tok))
            top = self.stack[-1]
            if _CLOSERS[top.type] != tok.type:
                raise SpecSyntaxError(
                    f"missing `{_TEXT[_CLOSERS[top.type]]}`: `{top}` at line {top.line} "
                    f"column {top.column} is closed by `{tok}`", self._span(tok))
            self.stack.pop()

    def _span(self, tok: Token) -> Span:
        return self.ctx.span(tok.line, tok.column, tok.end_column)


def _depth(*children) -> int:
    deepest = 0
    for c in children:
        if isinstance(c, ast.Node):
            deepest = max(deepest, c.depth)
        elif isinstance(c, tuple):
            deepest = max([deepest] + [x.depth for x in c if isinstance(x, ast.Node)])
    return deepest + 1


class _Builder:
    """Lark parse tree -> AST, one callback per rule, walked without recursion."""

    def __init__(self, ctx: _Context):
        self.ctx = ctx

    def build(self, tree: Tree):
        results: list = []
        todo: list = [(tree, False)]
        while todo:
            node, ready = todo.pop()
            if not isinstance(node, Tree):
                results.append(node)
            elif ready:
                n = len(node.children)
                children = results[len(results) - n:] if n else []
                del results[len(results) - n:]
                results.append(getattr(self, node.data)(node.meta, children))
            else:
                todo.append((node, True))
                todo.extend((c, False) for c in reversed(node.children))
        return results[0]

    def _span(self, meta_or_tok) -> Span:
        if isinstance(meta_or_tok, Token):
            return self.ctx.span(meta_or_tok.line, meta_or_tok.column, meta_or_tok.end_column)
        end = meta_or_tok.end_column if meta_or_tok.end_line == meta_or_tok.line else None
        return self.ctx.span(meta_or_tok.line, meta_or_tok.column, end)

    def _node(self, cls, where, *fields):
        node = cls(*fields, span=self._span(where), depth=_depth(*fields))
        if node.depth > MAX_DEPTH:
            raise SpecSyntaxError(f"the spec nests more than {MAX_DEPTH} levels deep",
                                  node.span)
        return node

    # -- expressions
    def int_lit(self, meta, c):
        if len(c[0]) > 18:  # also keeps int() clear of Python's digit limit
            raise SpecSyntaxError(f"the number {c[0][:20]}... is too large",
                                  self._span(c[0]))
        return self._node(ast.Literal, c[0], int(c[0]))

    def float_lit(self, meta, c):
        return self._node(ast.Literal, c[0], float(c[0]))

    def str_lit(self, meta, c):
        return self._node(ast.Literal, c[0], str(c[0])[1:-1])

    def true_lit(self, meta, c):
        return self._node(ast.Literal, meta, True)

    def false_lit(self, meta, c):
        return self._node(ast.Literal, meta, False)

    def name(self, meta, c):
        return self._node(ast.Name, c[0], str(c[0]))

    ref = name

    def list_lit(self, meta, c):
        return self._node(ast.ListExpr, meta, tuple(x for x in c if x is not None))

    def binop(self, meta, c):
        left, op, right = c
        return self._node(ast.BinOp, op, str(op), left, right)

    def compare(self, meta, c):
        return self.binop(meta, c)

    def or_op(self, meta, c):
        return self._node(ast.BinOp, meta, "or", c[0], c[1])

    def and_op(self, meta, c):
        return self._node(ast.BinOp, meta, "and", c[0], c[1])

    def not_op(self, meta, c):
        return self._node(ast.UnaryOp, meta, "not", c[0])

    def neg(self, meta, c):
        return self._node(ast.UnaryOp, c[0], "-", c[1])

    def arg(self, meta, c):
        return self._node(ast.Arg, meta, None, c[0])

    def kwarg(self, meta, c):
        return self._node(ast.Arg, c[0], str(c[0]), c[1])

    def fcall(self, meta, c):
        name, args = c[0], tuple(a for a in c[1:] if a is not None)
        if str(name) in ast.SPACE_KINDS:
            return self._node(ast.Space, name, str(name), args, f"{name.line}:{name.column}")
        return self._node(ast.Call, name, str(name), args)

    call = fcall

    # -- bodies
    def body(self, meta, c):
        return self._node(ast.Body, meta, tuple(x for x in c if x is not None))

    def chain(self, meta, c):
        return self._node(ast.Chain, meta, tuple(c))

    def bind(self, meta, c):
        return self._node(ast.Bind, c[0], str(c[0]), c[1])

    def repeat(self, meta, c):
        return self._node(ast.Repeat, meta, c[0], c[1])

    def cond(self, meta, c):
        return self._node(ast.If, meta, c[0], c[1], c[2] if len(c) > 2 else None)

    def group(self, meta, c):
        return self._node(ast.Group, meta, c[0])

    # -- top level
    def network(self, meta, c):
        return self._node(ast.Network, c[0], str(c[0]))

    def include(self, meta, c):
        return self._node(ast.Include, c[0], str(c[0])[1:-1])

    def input_decl(self, meta, c):
        return self._node(ast.InputDecl, c[0], str(c[0]), c[1])

    def param_decl(self, meta, c):
        value = c[1]
        if isinstance(value, ast.Space):
            value = replace(value, name=str(c[0]))
        return self._node(ast.ParamDecl, c[0], str(c[0]), value)

    def formal(self, meta, c):
        return self._node(ast.Formal, c[0], str(c[0]), c[1] if len(c) > 1 else None)

    def block_def(self, meta, c):
        formals = tuple(x for x in c[1:-1] if x is not None)
        return self._node(ast.BlockDef, c[0], str(c[0]), formals, c[-1])

    def layers(self, meta, c):
        return self._node(ast.Layers, meta, c[0])

    def train(self, meta, c):
        return self._node(ast.Train, meta, c[0])

    def section(self, meta, c):
        return self._node(ast.Section, meta, tuple(x for x in c if x is not None))

    def setting(self, meta, c):
        return self._node(ast.Setting, c[0], str(c[0]), c[1])

    subsection = setting

    def start(self, meta, c):
        span = self.ctx.span(1, 1) if meta.empty else self._span(meta)
        return ast.Module(self.ctx.file, tuple(x for x in c if x is not None), span=span)


_lock = threading.Lock()
_postlexer = _Postlexer()
_parser = Lark.open("cnn.lark", rel_to=__file__, parser="lalr", propagate_positions=True,
                    lexer="basic", maybe_placeholders=True, postlex=_postlexer)


def check_text(data: bytes, file: str) -> str:
    """Decode a spec file's bytes, refusing what cannot be a spec (binary, huge, empty)."""
    if len(data) > MAX_BYTES:
        raise SpecSyntaxError(f"{file}: larger than {MAX_BYTES // 1000} KB; too large to be "
                              "a .cnn spec")
    if b"\0" in data:
        raise SpecSyntaxError(f"{file}: this is a binary file, not a .cnn spec")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SpecSyntaxError(f"{file}:{line}: not UTF-8 text (byte {e.start}); "
                              "a .cnn spec is a text file") from None
    if all(not line.strip() or line.lstrip().startswith("#") for line in text.split("\n")):
        raise SpecSyntaxError(f"{file}: the spec is empty; it needs at least "
                              "`network NAME`, `input NAME: [C, H, W]` and `layers { ... }`")
    return text.lstrip("\ufeff")


def parse(text: str, file: str = "<spec>") -> ast.Module:
    """Parse the text of one .cnn file into an AST (includes are not followed here)."""
    ctx = _Context(file, text)
    with _lock:
        _postlexer.ctx = ctx
        try:
            tree = _parser.parse(text)
        except UnexpectedInput as e:
            raise _syntax_error(e, ctx, _postlexer) from None
    return _Builder(ctx).build(tree)


def _syntax_error(e: UnexpectedInput, ctx: _Context, post: _Postlexer) -> SpecSyntaxError:
    if isinstance(e, UnexpectedCharacters):
        ch = ctx.lines[e.line - 1][e.column - 1: e.column] if e.line <= len(ctx.lines) else ""
        return SpecSyntaxError(_unexpected_char(ch), ctx.span(e.line, e.column))
    assert isinstance(e, UnexpectedToken)
    tok, expected = e.token, set(e.expected)
    prev = post.before_last if post.last is tok else post.last
    if tok.type == "$END":
        where = post.last or tok
        span = ctx.span(where.line, where.column, where.end_column)
    else:
        span = ctx.span(tok.line, tok.column, tok.end_column)
    message, hint = _explain(tok, expected, prev, post.stack)
    return SpecSyntaxError(message, span, hint)


def _unexpected_char(ch: str) -> str:
    if ch == "'":
        return "strings are written in double quotes: \"...\""
    if ch == "\t" or not ch.isprintable():
        return f"unexpected character {ch!r}"
    return f"unexpected character `{ch}`"


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "_NL":
        return "the end of the line"
    return f"`{tok}`"


def _expected_words(expected: set[str]) -> str:
    words = []
    for t in sorted(expected):
        w = _WORDS.get(t)
        if w is None:
            w = f"`{t.lower()}`" if t.isupper() and t.isalpha() else t
        if w not in words:
            words.append(w)
    if len(words) > 6:
        return ", ".join(words[:6]) + " or ..."
    return " or ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " or " + words[-1]


def _explain(tok: Token, expected: set[str], prev: Token | None,
             stack: list[Token]) -> tuple[str, str | None]:
    """The sentence (and hint) for an unexpected token; the common slips first."""
    open_ = [t for t in stack if t is not tok]
    if tok.type == "COLON" and "EQUAL" in expected:
        return ("expected `=` here, not `:`",
                "settings and keyword arguments are written name = value")
    if tok.type == "EQUAL" and "COLON" in expected:
        return "expected `:` here, not `=`", "inputs are declared as: input NAME: [C, H, W]"
    if prev is not None and prev.type == "COMMA" and tok.type in ("RPAR", "RSQB", "RBRACE"):
        return f"trailing comma before `{tok}`", "remove the last `,`"
    if tok.type == "$END" and open_:
        top = open_[-1]
        return (f"missing `{_TEXT[_CLOSERS[top.type]]}`: the file ends before the `{top}` at "
                f"line {top.line} column {top.column} is closed", None)
    if "RPAR" in expected and open_ and open_[-1].type == "LPAR" and tok.type != "COMMA":
        top = open_[-1]
        return (f"missing `)` or `,` before {_describe(tok)}; the `(` at line {top.line} "
                f"column {top.column} is still open", None)
    if tok.type in _TOP_LEVEL and any(t.type == "LBRACE" for t in open_):
        top = open_[-1]
        return (f"missing `}}` before `{tok}`: the `{{` at line {top.line} column "
                f"{top.column} is still open", None)
    if tok.type == "_NL" and "RSQB" in expected:
        return "missing `]` at the end of the line", None
    if tok.type in _TOP_LEVEL + _KEYWORDS and "NAME" in expected:
        return (f"`{tok}` is a reserved word and cannot be used as a name here",
                None)
    if prev is not None and prev.type == "_NL" or tok.type == "$END" or prev is None:
        lead = f"unexpected {_describe(tok)}"
    else:
        lead = f"unexpected {_describe(tok)} after `{prev}`"
    return f"{lead}; expected {_expected_words(expected)}", None


def read_spec(path: Path, display: str | None = None) -> str:
    """The text of a spec file, with a clean error for what cannot be read or is not a spec;
    messages name the file as ``display`` (default: the path)."""
    display = display or str(path)
    try:
        if path.is_dir():
            raise SpecSyntaxError(f"{display}: is a directory, not a .cnn file")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SpecSyntaxError(f"{display}: cannot read the spec: {e.strerror}") from None
    return check_text(data, display)
