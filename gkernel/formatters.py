"""Turning a Python object into a Jupyter mime bundle.

The rich forms follow IPython's ``_repr_*_`` conventions, so objects that
render in the reference kernel render here too. IPython itself is not needed.
"""

import base64
import json

__all__ = ["format_object"]

_REPR_METHODS = {
    "text/html": "_repr_html_",
    "text/markdown": "_repr_markdown_",
    "image/svg+xml": "_repr_svg_",
    "image/png": "_repr_png_",
    "image/jpeg": "_repr_jpeg_",
    "application/json": "_repr_json_",
    "text/latex": "_repr_latex_",
}
_BINARY = {"image/png", "image/jpeg"}


def _text_plain(obj):
    try:
        return repr(obj)
    except Exception as exc:  # a broken __repr__ must not break the cell's output
        return f"<{type(obj).__name__} object: repr() failed: {exc!r}>"


def _call_repr(obj, method, *args, **kwargs):
    """Call a ``_repr_*_`` method found on the type; None when missing or failing."""
    func = getattr(type(obj), method, None)
    if func is None:
        return None
    try:
        return getattr(obj, method)(*args, **kwargs)
    except Exception:
        return None


def _split(result):
    """A repr method may return ``data`` or ``(data, metadata)``."""
    if isinstance(result, tuple) and len(result) == 2:
        return result
    return result, None


def format_object(obj, include=None, exclude=None):
    """Return ``(data, metadata)`` for *obj*; data always holds ``text/plain``."""
    data, metadata = {}, {}
    bundle = _call_repr(obj, "_repr_mimebundle_", include=include, exclude=exclude)
    if bundle is not None:
        bundle, extra = _split(bundle)
        data.update(bundle or {})
        metadata.update(extra or {})
    for mime, method in _REPR_METHODS.items():
        if mime in data:
            continue
        value, meta = _split(_call_repr(obj, method))
        if value is None:
            continue
        if mime in _BINARY and isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif mime == "application/json" and isinstance(value, str):
            value = json.loads(value)
        data[mime] = value
        if meta:
            metadata[mime] = meta
    data.setdefault("text/plain", _text_plain(obj))
    if include is not None:
        data = {k: v for k, v in data.items() if k in include or k == "text/plain"}
    if exclude is not None:
        data = {k: v for k, v in data.items() if k not in exclude or k == "text/plain"}
    return data, metadata
