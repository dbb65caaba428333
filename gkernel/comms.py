"""Comms for the ``comm`` package, per kernel: what ipywidgets and other libraries talk through.

The ``comm`` package (``comm.create_comm()``, ``comm.get_comm_manager()``)
is the API that libraries call; a kernel replaces those two module functions
with its own, as the reference kernel does. Here they are process-wide, so
they resolve the kernel whose cell runs the calling code
(:func:`gkernel.cells.current_cell`; from code outside any cell, the kernel
that most recently ran a cell, the rule output follows), and every kernel has
its own :class:`KernelCommManager`: kernel A's comms never see kernel B's
messages.

* :class:`GreenComm` publishes ``comm_open``, ``comm_msg`` and ``comm_close``
  (with binary buffers) on its kernel's IOPub, as part of the calling code's
  request, after what that code printed.
* Messages from the front end are served by :class:`gkernel.kernel.Kernel`'s
  handlers, which call the kernel's manager; the manager is ``comm``'s own
  ``CommManager`` but for where targets live: a target registered while a
  module is being imported (ipywidgets registers ``jupyter.widget`` when it
  is imported) belongs to the process, as the module does, so the kernels of
  a host that import it later find it too; other targets are the kernel's.

Hub thread only.
"""

import sys
from collections import ChainMap

import comm
from comm.base_comm import BaseComm, CommManager

from .cells import current_cell

__all__ = ["GreenComm", "KernelCommManager", "install", "uninstall"]

#: targets registered during an import: the process's, like the module that registered them
_imported_targets = {}
#: the comm package's own functions, restored by uninstall(); and the kernel for code outside cells
_saved = {}


class GreenComm(BaseComm):
    """A comm of one kernel (by default, the calling code's)."""

    def __init__(self, *args, kernel=None, **kwargs):
        # Before BaseComm's __init__: a primary comm publishes its comm_open from there.
        self.kernel = kernel or calling_kernel()
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        content = {"data": {} if data is None else data, "comm_id": self.comm_id, **keys}
        self.kernel.publish_for_caller(msg_type, content, metadata=metadata, buffers=buffers, topic=self.topic)


class KernelCommManager(CommManager):
    """``comm``'s CommManager for one kernel; targets registered during imports are shared."""

    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel
        self.targets = ChainMap({}, _imported_targets)

    def register_target(self, target_name, f):
        super().register_target(target_name, f)
        if _importing():
            _imported_targets[target_name] = self.targets[target_name]

    def comm_info(self, target_name=None):
        """The ``comms`` of a comm_info_reply."""
        return {comm_id: {"target_name": c.target_name} for comm_id, c in self.comms.items()
                if target_name is None or c.target_name == target_name}


def _importing():
    """Whether the calling code runs while a module is being imported."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == "<frozen importlib._bootstrap>":
            return True
        frame = frame.f_back
    return False


def calling_kernel():
    """The kernel of the calling code's cell, else the host's fallback (the latest kernel to run a cell)."""
    cell = current_cell()
    if cell is not None:
        return cell.kernel
    fallback = _saved.get("fallback")
    return fallback() if fallback is not None else None


def _create_comm(*args, **kwargs):
    if calling_kernel() is None:
        return _saved["create_comm"](*args, **kwargs)  # no kernel here: comm's inert default
    return GreenComm(*args, **kwargs)


def _get_comm_manager():
    kernel = calling_kernel()
    return kernel.comm_manager if kernel is not None else _saved["get_comm_manager"]()


def install(fallback):
    """Make ``comm``'s functions answer per kernel (process-wide); *fallback()* names the kernel
    for code outside any cell."""
    if not _saved:
        _saved.update(create_comm=comm.create_comm, get_comm_manager=comm.get_comm_manager)
    _saved["fallback"] = fallback
    comm.create_comm, comm.get_comm_manager = _create_comm, _get_comm_manager


def uninstall():
    if _saved:
        comm.create_comm, comm.get_comm_manager = _saved["create_comm"], _saved["get_comm_manager"]
        _saved.clear()
