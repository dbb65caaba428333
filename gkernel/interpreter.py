"""Running Python cells: compile, execute, display the last value, format errors.

The interpreter knows nothing about sockets. The kernel calls
:meth:`Interpreter.run_cell` in the cell's execution greenlet and gets back a
:class:`CellResult`; the value of a cell's trailing expression goes to the
``display_result`` callback the kernel passed in. The compiler flags of
``from __future__`` imports are kept, so they carry over to later cells (as
at the interactive prompt), and each cell's source is registered with :mod:`linecache` under a
per-kernel file name, so tracebacks and ``inspect.getsource`` see it.
"""

import __future__
import ast
import builtins
import codeop
import functools
import operator
import linecache
import re
import traceback
import types

from gevent import GreenletExit
from traitlets import Bool
from traitlets.config import LoggingConfigurable

from . import completer, display, inspector
from .formatters import format_object

__all__ = ["Interpreter", "CellResult"]

# ``name?`` / ``?name`` / ``name??``: the IPython habit of paging help.
_HELP = re.compile(r"\s*(\?\??)?([A-Za-z_][\w.]*)(\?\??)?\s*")
_FUTURE_FLAGS = functools.reduce(
    operator.or_, (getattr(__future__, name).compiler_flag for name in __future__.all_feature_names))


class CellResult:
    __slots__ = ("error", "payload")

    def __init__(self, error=None, payload=()):
        #: None, or the ``ename``/``evalue``/``traceback`` dict of the failure
        self.error = error
        self.payload = list(payload)


class Interpreter(LoggingConfigurable):
    """The namespace and execution state of one kernel."""

    use_jedi = Bool(True, help="Complete with jedi when it is installed (else rlcompleter).").tag(config=True)

    def __init__(self, kernel_id, display_result, history, **kwargs):
        super().__init__(**kwargs)
        self.display_result = display_result
        self.history = history
        self.execution_count = 0
        self.user_module = types.ModuleType("__main__")
        self.user_ns = self.user_module.__dict__
        self.user_ns.update({
            "__builtins__": builtins,
            "display": display.display,
        })
        self._future_flags = 0
        self._file_prefix = f"<gkernel-{kernel_id[:8]}-"
        self._serial = 0
        #: linecache file name -> label shown in tracebacks ("Cell In[3]")
        self._labels = {}

    # -- execution ---------------------------------------------------------

    def run_cell(self, code, store_history=True, silent=False):
        """Run *code* in the user namespace; the caller's greenlet runs it."""
        if store_history:
            self.execution_count += 1
            self.history.store_input(self.execution_count, code)
        help_match = _HELP.fullmatch(code)
        if help_match and (help_match.group(1) or help_match.group(3)):
            return self._page_help(help_match)
        filename = self._register_source(code)
        try:
            tree = compile(code, filename, "exec", self._future_flags | ast.PyCF_ONLY_AST, dont_inherit=True)
            *body, last = tree.body or [None]
            show_last = isinstance(last, ast.Expr) and not silent and not _ends_with_semicolon(code)
            if not show_last and last is not None:
                body.append(last)
            if body:
                exec(self._code(ast.Module(body, type_ignores=[]), filename, "exec"), self.user_ns)
            if show_last:
                value = eval(self._code(ast.Expression(last.value), filename, "eval"), self.user_ns)
                self._show(value, store_history)
        except GreenletExit:
            raise  # the kernel stops this cell's greenlet (shutdown): not the user's error
        except BaseException as exc:  # the user's exception, including KeyboardInterrupt/SystemExit
            return CellResult(error=self.format_error(exc))
        return CellResult()

    def forget(self):
        """When a host ends a kernel: free the namespace and the cells' sources (the host lives on).

        Clearing the namespace frees what the user made at once, even while
        reference cycles keep the kernel object itself alive a little longer.
        """
        self.user_ns.clear()
        for filename in self._labels:
            linecache.cache.pop(filename, None)
        self._labels.clear()

    def _code(self, tree, filename, mode):
        code = compile(tree, filename, mode, self._future_flags, dont_inherit=True)
        self._future_flags |= code.co_flags & _FUTURE_FLAGS
        return code

    def _register_source(self, code):
        self._serial += 1
        filename = f"{self._file_prefix}{self._serial}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        self._labels[filename] = f"Cell In[{self.execution_count}]"
        return filename

    def _show(self, value, store_history):
        if value is None:
            return
        if store_history:
            ns = self.user_ns
            ns["___"], ns["__"], ns["_"] = ns.get("__"), ns.get("_"), value
        data, metadata = format_object(value)
        if store_history:
            self.history.store_output(self.execution_count, data["text/plain"])
        self.display_result(data, metadata, self.execution_count)

    def _page_help(self, match):
        name = match.group(2)
        try:
            obj = inspector.resolve(name, self.user_ns)
        except LookupError:
            return CellResult(error={"ename": "NameError", "evalue": f"Object `{name}` not found.",
                                     "traceback": [f"Object `{name}` not found."]})
        level = 1 if "??" in (match.group(1) or "") + (match.group(3) or "") else 0
        text = inspector.describe(name, obj, level)
        return CellResult(payload=[{"source": "page", "data": {"text/plain": text}, "start": 0}])

    # -- errors ------------------------------------------------------------

    def format_error(self, exc):
        """``ename``/``evalue``/``traceback`` of *exc*, starting at the first cell frame."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename not in self._labels:
            tb = tb.tb_next
        te = traceback.TracebackException(type(exc), exc, tb)
        for frame in te.stack:
            frame.filename = self._labels.get(frame.filename, frame.filename)
        if isinstance(exc, SyntaxError):
            te.filename = self._labels.get(te.filename, te.filename)
        return {
            "ename": type(exc).__name__,
            "evalue": str(exc),
            "traceback": ["".join(te.format())],
        }

    # -- introspection -----------------------------------------------------

    def user_expressions(self, expressions):
        """Evaluate each expression; a failing one reports its error, not the cell's."""
        results = {}
        for name, expr in expressions.items():
            try:
                value = eval(expr, self.user_ns)
            except BaseException as exc:
                results[name] = {"status": "error", **self.format_error(exc)}
                continue
            data, metadata = format_object(value)
            results[name] = {"status": "ok", "data": data, "metadata": metadata}
        return results

    def complete(self, code, cursor_pos):
        return completer.complete(code, cursor_pos, self.user_ns, self.use_jedi)

    def inspect(self, code, cursor_pos, detail_level):
        return inspector.inspect_code(code, cursor_pos, self.user_ns, detail_level)

    def is_complete(self, code):
        """``is_complete_reply`` content: complete, incomplete (with indent) or invalid."""
        try:
            compiled = codeop.compile_command(code, "<input>", "exec")
        except (SyntaxError, OverflowError, ValueError):
            return {"status": "invalid"}
        if compiled is None or _wants_more_lines(code):
            return {"status": "incomplete", "indent": _next_indent(code)}
        return {"status": "complete"}


def _ends_with_semicolon(code):
    """IPython's convention: a trailing ``;`` hides the cell's value."""
    lines = [ln for ln in code.rstrip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return bool(lines) and lines[-1].rstrip().endswith(";")


def _wants_more_lines(code):
    # A block opened on the last line (or an indented last line with no blank
    # line after it) may go on, as at the interactive prompt.
    if code.endswith("\n\n") or not code.strip():
        return False
    last = code.rstrip("\n").splitlines()[-1]
    return last.rstrip().endswith(":") or last[:1].isspace()


def _next_indent(code):
    last = code.rstrip("\n").splitlines()[-1] if code.strip() else ""
    indent = last[: len(last) - len(last.lstrip())]
    return indent + "    " if last.rstrip().endswith(":") else indent
