"""The Jinja2 environment mailing templates run in: sandboxed, and bounded in output size and time.

Jinja's sandbox stops file access and private attributes, but not resource exhaustion:
``{{ 'a' * 1000000000 }}`` allocates a gigabyte, ``{{ 9 ** 9 ** 9 }}`` computes a number with
hundreds of millions of digits, ``{{ 'x'|center(10**9) }}`` or ``'{:>1000000000}'.format(1)``
pad a string to a gigabyte, and nested loops run for hours. A template is written by an
account (a tenant), so each of these is a denial of service against the API (which renders a
sample at creation) and the delivery worker.

:class:`BoundedSandbox` refuses every such operation *before* it allocates:

* ``*``, ``+``, ``**`` and ``%`` are intercepted: a repeated or joined string/list longer than
  the output cap, an integer power or product beyond a few thousand digits, and ``%``
  formats with huge or ``*`` widths are refused;
* ``~`` (concatenation) is compiled into a bounded join;
* the string methods and filters that pad or repeat (``center``, ``ljust``, ``rjust``,
  ``zfill``, ``expandtabs``, ``replace``, ``format``, ``indent``, ``batch``, ``slice``) check
  the size of their result first; ``lipsum`` is removed;
* every ``for`` loop draws from a per-render iteration budget and checks the deadline;
* the rendered output is counted as it streams and cut off at the cap.

Breaking a limit raises :class:`TemplateLimitError` (a ``ValueError``) naming the limit.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import islice
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import do_batch, do_indent, do_slice, make_attrgetter, sync_do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

from mailcarrier.domain.errors import MailcarrierError

__all__ = ["DEFAULT_LIMITS", "BoundedSandbox", "TemplateLimitError", "TemplateLimits"]


class TemplateLimitError(MailcarrierError, ValueError):
    """A template exceeded a size or time limit."""


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    #: Characters one render may output, and the largest string or list an expression may build.
    max_chars: int = 2_000_000
    #: Wall-clock seconds one render may take.
    max_seconds: float = 2.0
    #: Loop iterations one render may run, all loops together.
    max_iterations: int = 1_000_000
    #: Digits an integer computed by ``*`` or ``**`` may have.
    max_int_digits: int = 4_300


DEFAULT_LIMITS = TemplateLimits()
_LOG2_10 = 3.3219280948873626
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _weight(value: Any, depth: int = 3) -> int:
    """Roughly how many characters ``value`` prints as: strings by length, lists by their items."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple) and depth:
        nested = (v for v in value if isinstance(v, str | bytes | list | tuple))
        return len(value) + sum(_weight(v, depth - 1) for v in nested)
    return 1


@dataclass
class _Budget:
    deadline: float
    iterations: int


_budget: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` into ``environment.bounded_join((a, b))`` instead of an unbounded join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - Jinja visitor name
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")


def _wrap_loops(node: nodes.Node) -> None:
    """Route every ``for`` loop's iterable through the ``mc_budget`` filter (iteration budget)."""
    for loop in node.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "mc_budget", [], [], None, None, lineno=loop.lineno)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose every render is bounded by :class:`TemplateLimits`."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, limits: TemplateLimits = DEFAULT_LIMITS, **options: Any) -> None:
        options.setdefault("undefined", StrictUndefined)
        options.setdefault("autoescape", False)
        super().__init__(**options)
        self.limits = limits
        self.globals.pop("lipsum", None)
        self.filters.update(mc_budget=self._budgeted, center=self._center, indent=self._indent,
                            format=self._format_filter, replace=self._replace_filter, join=self._join,
                            batch=self._batch, slice=self._slice)

    # -- the render as a whole ------------------------------------------------------------------

    def concat(self, pieces: Iterable[str]) -> str:
        """Template.render's join: starts the render's budget and cuts output at the cap."""
        outer = _budget.get()
        token = None
        if outer is None:
            token = _budget.set(_Budget(time.monotonic() + self.limits.max_seconds,
                                        self.limits.max_iterations))
        try:
            # Pieces are joined 32 at a time (in C) and counted per batch: the Python loop per
            # piece cost ~50% of a typical render. A piece is itself bounded by max_chars.
            out: list[str] = []
            size = 0
            limit = self.limits.max_chars
            iterator = iter(pieces)
            while batch := list(islice(iterator, 32)):
                text = "".join(batch)
                size += len(text)
                if size > limit:
                    raise TemplateLimitError(f"the rendered template is longer than {limit:,} characters")
                out.append(text)
                self._check_time()
            return "".join(out)
        finally:
            if token is not None:
                _budget.reset(token)

    def _check_time(self) -> None:
        budget = _budget.get()
        if budget is not None and time.monotonic() > budget.deadline:
            raise TemplateLimitError(f"rendering the template took longer than {self.limits.max_seconds:g} s")

    def _budgeted(self, iterable: Any) -> Iterator[Any]:
        budget = _budget.get()
        if budget is None:  # rendering outside concat (e.g. Template.generate): start one here
            budget = _Budget(time.monotonic() + self.limits.max_seconds, self.limits.max_iterations)
        for n, item in enumerate(iterable):
            budget.iterations -= 1
            if budget.iterations < 0:
                raise TemplateLimitError(
                    f"the template's loops ran more than {self.limits.max_iterations:,} iterations")
            if n % 1024 == 0 and time.monotonic() > budget.deadline:
                raise TemplateLimitError(
                    f"rendering the template took longer than {self.limits.max_seconds:g} s")
            yield item

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _wrap_loops(tree)
        return tree

    # -- size checks ------------------------------------------------------------------------------

    def _refuse_chars(self, size: int, what: str) -> None:
        if size > self.limits.max_chars:
            raise TemplateLimitError(f"{what} would be {size:,} characters long; templates may build "
                                     f"at most {self.limits.max_chars:,}")

    def _check_int(self, value: int, what: str) -> None:
        if value.bit_length() > self.limits.max_int_digits * _LOG2_10:
            raise TemplateLimitError(f"{what} has more than {self.limits.max_int_digits:,} digits")

    def bounded_join(self, parts: tuple[Any, ...], autoescape: bool) -> str:
        texts = [str(p) for p in parts]
        self._refuse_chars(sum(len(t) for t in texts), "a ~ concatenation")
        from jinja2.runtime import markup_join, str_join  # noqa: PLC0415 - runtime helpers
        return str(markup_join(parts) if autoescape else str_join(texts))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self._check_time()
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int) \
                        and not isinstance(count, bool):
                    self._refuse_chars(_weight(seq) * max(count, 0), "a repeated string or list")
            if isinstance(left, int) and isinstance(right, int):
                self._refuse_digits(left.bit_length() + right.bit_length(), "a product")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 \
                and abs(left) > 1:
            self._refuse_digits(right * (abs(left).bit_length() - 1), "a power")
        elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, type(left)):
            self._refuse_chars(_weight(left) + _weight(right), "a sum of strings or lists")
        elif operator == "%" and isinstance(left, str):
            self._check_percent_format(left)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, int) and not isinstance(result, bool):
            self._check_int(result, "a computed number")
        return result

    def _refuse_digits(self, bits: int, what: str) -> None:
        if bits > self.limits.max_int_digits * _LOG2_10:
            raise TemplateLimitError(f"{what} would have more than {self.limits.max_int_digits:,} digits")

    def _check_percent_format(self, fmt: str) -> None:
        for match in _PERCENT_SPEC.finditer(fmt):
            for width in match.groups():
                if width == "*":
                    raise TemplateLimitError("'%' formats with '*' widths are not allowed in templates")
                if width is not None:
                    self._refuse_chars(int(width), "a '%' format width")

    def _check_format_string(self, fmt: str) -> None:
        try:
            fields = list(string.Formatter().parse(fmt))
        except ValueError:
            return  # str.format raises its own error for a malformed format string
        for _literal, _name, spec, _conversion in fields:
            if not spec:
                continue
            if "{" in spec:
                raise TemplateLimitError("nested '{}' in a format spec are not allowed in templates")
            for digits in re.findall(r"\d+", spec):
                self._refuse_chars(int(digits), "a format width")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Sandboxed calls: size checks for the string methods that pad, repeat or reformat."""
        __self._check_time()
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str):
            if name in _PADDING_METHODS and args and isinstance(args[0], int):
                __self._refuse_chars(args[0], f"str.{name}()")
            elif name == "expandtabs":
                tab = args[0] if args else kwargs.get("tabsize", 8)
                if isinstance(tab, int):
                    __self._refuse_chars(len(owner) + owner.count("\t") * tab, "str.expandtabs()")
            elif name == "replace" and len(args) >= 2:
                __self._check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1)
            elif name in ("format", "format_map"):
                __self._check_format_string(owner)
            elif name == "join" and args:
                items = list(args[0])  # a generator is read once here, then joined from the list
                __self._refuse_chars(sum(_weight(a) for a in items) + len(owner) * len(items), "str.join()")
                args = (items, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)

    def _check_replace(self, text: Any, old: Any, new: Any, count: Any) -> None:
        if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
            hits = text.count(old) if old else len(text) + 1
            if isinstance(count, int) and count >= 0:
                hits = min(hits, count)
            self._refuse_chars(len(text) + hits * (len(new) - len(old)), "a replace()")

    # -- bounded filters ------------------------------------------------------------------------

    def _center(self, value: Any, width: int = 80) -> str:
        self._refuse_chars(int(width), "the center filter")
        return str(value).center(int(width))

    def _indent(self, value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        text = str(value)
        pad = len(width) if isinstance(width, str) else int(width)
        self._refuse_chars(len(text) + (text.count("\n") + 1) * pad, "the indent filter")
        return str(do_indent(text, width, first, blank))

    def _format_filter(self, value: Any, *args: Any, **kwargs: Any) -> str:
        self._check_percent_format(str(value))
        if args and kwargs:
            raise TemplateLimitError("the format filter takes positional or keyword arguments, not both")
        return str(value) % (kwargs or args)

    def _replace_filter(self, value: Any, old: Any, new: Any, count: int | None = None) -> str:
        text, old_s, new_s = str(value), str(old), str(new)
        self._check_replace(text, old_s, new_s, -1 if count is None else count)
        return text.replace(old_s, new_s, -1 if count is None else count)

    @pass_eval_context
    def _join(self, eval_ctx: EvalContext, value: Any, d: str = "",
              attribute: str | int | None = None) -> str:
        items = list(value)
        if attribute is not None:
            items = list(map(make_attrgetter(self, attribute), items))
        self._refuse_chars(sum(_weight(i) for i in items) + len(str(d)) * max(len(items) - 1, 0),
                           "the join filter")
        return str(sync_do_join(eval_ctx, items, d))

    def _batch(self, value: Any, linecount: int, fill_with: Any = None) -> Any:
        self._refuse_chars(int(linecount), "the batch filter's size")
        return do_batch(value, linecount, fill_with)

    def _slice(self, value: Any, slices: int, fill_with: Any = None) -> Any:
        self._refuse_chars(int(slices), "the slice filter's count")
        return do_slice(value, slices, fill_with)

