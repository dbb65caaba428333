"""``IPython.display`` publishes through gkernel, when IPython is installed.

Libraries and users call ``IPython.display.display(...)``, ``clear_output``
and friends. Without a running IPython shell those only print a repr, so
gkernel puts its own functions (:mod:`gkernel.display`, same signatures) in
``IPython.core.display_functions``, the module where IPython defines them and
from which ``IPython.display`` and ``IPython.core.display`` re-export them.

Importing IPython costs a few hundred milliseconds, so the kernel does not:
:func:`install` patches the module if it is already imported, and otherwise
adds an import hook that patches it the moment something imports it.
Process-wide and idempotent; the functions find the calling cell's kernel
themselves.
"""

import importlib.abc
import sys

from . import display as _gkernel_display

__all__ = ["install"]

_MODULE = "IPython.core.display_functions"
_NAMES = ("display", "update_display", "clear_output", "publish_display_data")


def install():
    module = sys.modules.get(_MODULE)
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _patch(module):
    for name in _NAMES:
        setattr(module, name, getattr(_gkernel_display, name))


class _Finder(importlib.abc.MetaPathFinder):
    """Finds IPython's display module with the other finders and patches it once loaded."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_source, is_package, ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch(module)
