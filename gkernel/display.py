"""Rich display from cells: ``display``, ``update_display``, ``clear_output``.

These publish on the IOPub channel of the kernel whose cell is running the
caller (see :mod:`gkernel.cells`), with that cell as parent, so they work from
greenlets a cell spawned too. ``display`` is also put in every user namespace.
"""

import uuid

from .cells import current_cell
from .formatters import format_object

__all__ = ["DisplayHandle", "display", "update_display", "clear_output", "publish_display_data"]


def _cell():
    cell = current_cell()
    if cell is None:
        raise RuntimeError("gkernel.display: not called from a gkernel cell")
    return cell


def publish_display_data(data, metadata=None, transient=None, update=False, **ignored):
    """Publish a ready-made mime bundle as display_data (or update_display_data).

    Keywords IPython's version accepts and gkernel has no use for (``source``) are ignored.
    """
    cell = _cell()
    cell.kernel.flush_output()  # text printed before a display appears before it
    content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
    msg_type = "update_display_data" if update else "display_data"
    cell.kernel.publisher.publish(msg_type, content, parent=cell.parent)


def display(*objs, include=None, exclude=None, metadata=None, transient=None, display_id=None,
            raw=False, clear=False, update=False):
    """Show each object in the cell's output, as rich as its reprs allow.

    The signature is IPython's. With ``raw=True`` each object is already a
    mime bundle. ``display_id`` (a string, or True for a fresh one) lets a
    later ``update_display`` change the output in place; a
    :class:`DisplayHandle` for it is then returned, as IPython does.
    ``clear=True`` replaces the cell's output once this arrives. An object
    with an ``_ipython_display_`` method displays itself.
    """
    if display_id is True:
        display_id = uuid.uuid4().hex
    if display_id:
        transient = {**(transient or {}), "display_id": display_id}
    if clear:
        clear_output(wait=True)
    for obj in objs:
        if raw:
            data, meta = obj, {}
        elif hasattr(obj, "_ipython_display_"):
            obj._ipython_display_()
            continue
        else:
            data, meta = format_object(obj, include=include, exclude=exclude)
        if metadata:
            meta = {**meta, **metadata}
        publish_display_data(data, meta, transient=transient, update=update)
    return DisplayHandle(display_id) if display_id else None


class DisplayHandle:
    """One output that can be shown again or updated in place: IPython's DisplayHandle."""

    __slots__ = ("display_id",)

    def __init__(self, display_id=None):
        self.display_id = display_id or uuid.uuid4().hex

    def __repr__(self):
        return f"<{type(self).__name__} display_id={self.display_id}>"

    def display(self, obj, **kwargs):
        display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj, **kwargs):
        update_display(obj, display_id=self.display_id, **kwargs)


def update_display(obj, *, display_id, **kwargs):
    """Replace the output shown under ``display_id`` with *obj*."""
    display(obj, display_id=display_id, update=True, **kwargs)


def clear_output(wait=False):
    """Clear the cell's output now, or (``wait=True``) when new output arrives."""
    cell = _cell()
    cell.kernel.flush_output()
    cell.kernel.publisher.publish("clear_output", {"wait": bool(wait)}, parent=cell.parent)
