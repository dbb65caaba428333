"""Object inspection for ``inspect_request`` and the ``obj?`` pager.

Finds the dotted name at (or just before) the cursor, or the callable whose
call the cursor is inside, and resolves it by name and attribute lookups
only: no expression from an inspect request is evaluated.
"""

import inspect
import re

__all__ = ["inspect_code", "describe", "resolve"]

_NAME = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*")
_MISSING = object()


def _name_at(code, cursor_pos):
    for match in _NAME.finditer(code):
        if match.start() <= cursor_pos <= match.end():
            return match.group()
    # Inside a call: the name before the innermost unclosed "(".
    depth = 0
    for i in range(min(cursor_pos, len(code)) - 1, -1, -1):
        if code[i] == ")":
            depth += 1
        elif code[i] == "(":
            if depth == 0:
                match = re.search(r"[A-Za-z_][\w.]*$", code[:i])
                return match.group() if match else None
            depth -= 1
    return None


def resolve(name, namespace):
    """The object a dotted *name* refers to in *namespace* (or builtins); LookupError if none."""
    first, *rest = name.split(".")
    obj = namespace.get(first, _MISSING)
    if obj is _MISSING:
        builtins = namespace.get("__builtins__")
        obj = builtins.get(first, _MISSING) if isinstance(builtins, dict) else getattr(builtins, first, _MISSING)
    for attr in rest:
        if obj is _MISSING:
            break
        try:
            obj = getattr(obj, attr)
        except Exception:
            obj = _MISSING
    if obj is _MISSING:
        raise LookupError(name)
    return obj


def describe(name, obj, detail_level=0):
    """Plain-text description: type, signature, docstring (and source at level 1)."""
    lines = []
    try:
        sig = str(inspect.signature(obj)) if callable(obj) else None
    except (TypeError, ValueError):
        sig = None
    if sig:
        lines.append(f"Signature: {name}{sig}")
    lines.append(f"Type:      {type(obj).__name__}")
    if not callable(obj) and not inspect.ismodule(obj):
        text = repr(obj)
        lines.append(f"Value:     {text if len(text) < 200 else text[:200] + '...'}")
    doc = inspect.getdoc(obj)
    if doc:
        lines.append("Docstring:\n" + doc)
    if detail_level:
        try:
            lines.append("Source:\n" + inspect.getsource(obj))
        except (OSError, TypeError):
            pass
    return "\n".join(lines)


def inspect_code(code, cursor_pos, namespace, detail_level=0):
    """Return an ``inspect_reply`` content."""
    not_found = {"status": "ok", "found": False, "data": {}, "metadata": {}}
    name = _name_at(code, cursor_pos)
    if not name:
        return not_found
    try:
        obj = resolve(name, namespace)
    except LookupError:
        return not_found
    text = describe(name, obj, detail_level)
    return {"status": "ok", "found": True, "data": {"text/plain": text}, "metadata": {}}
