"""gkernel's magics: ``%greenlets`` for gevent users, and the magics of a kernel.

``%greenlets`` lists and kills what this kernel's cells spawned. A greenlet started in a cell outlives the cell (that is the point of the
hub running between cells), so a notebook gathers servers, tickers and
crawlers nobody can see any more. ``%greenlets`` shows those of the calling
kernel that still live; other kernels of the process are never listed.

:class:`KernelMagics` has what a kernel's front end needs instead of a
terminal's pager and editor (``%connect_info``, ``%clear``, ``%less``,
``%more``, ``%man``, ``%edit``), as in ipykernel.
"""

import json
import os
import time

import gevent
from IPython.core import page
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from .cells import cell_greenlets

__all__ = ["GeventMagics", "KernelMagics"]


@magics_class
class GeventMagics(Magics):

    @line_magic
    def greenlets(self, line):
        """List or kill the live greenlets this kernel's cells spawned.

        Usage::

          %greenlets              one line per greenlet: id, cell, function, state, cell age
          %greenlets kill ID ...  kill those greenlets (GreenletExit), waiting up to 1 s
          %greenlets kill all     kill every one of them

        *cell* is the ``In[n]`` whose request spawned the greenlet, directly or
        through other greenlets; *cell age* is how long ago that cell started,
        so the greenlet is at most that old. Returns nothing; prints a table.
        """
        kernel = self.shell.kernel
        requests = {kernel.dispatcher.shell_greenlet}  # the cells themselves are not listed
        glets = sorted((g for g in cell_greenlets([kernel]) if g not in requests), key=lambda g: g.minimal_ident)
        args = line.split()
        if not args:
            self._print_table(glets)
        elif args[0] == "kill" and len(args) > 1:
            self._kill(glets, args[1:])
        else:
            raise UsageError("usage: %greenlets [kill ID ... | kill all]")

    @staticmethod
    def _print_table(glets):
        if not glets:
            print("No greenlet spawned by this kernel's cells is alive.")
            return
        now = time.monotonic()
        rows = [("id", "cell", "function", "state", "cell age")]
        for glet in glets:
            cell = glet.spawn_tree_locals["gkernel.cell"]
            count = cell.execution_count
            rows.append((str(glet.minimal_ident), f"In[{count}]" if count is not None else "-",
                         _function_name(glet), _state(glet), f"{now - cell.started:.1f} s"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())

    @staticmethod
    def _kill(glets, ids):
        if ids == ["all"]:
            chosen = glets
        else:
            by_id = {str(g.minimal_ident): g for g in glets}
            unknown = [i for i in ids if i not in by_id]
            if unknown:
                raise UsageError(f"no live greenlet of this kernel with id {', '.join(unknown)}")
            chosen = [by_id[i] for i in ids]
        gevent.killall(chosen, timeout=1)
        still = [g for g in chosen if not g.dead]
        print(f"killed {len(chosen) - len(still)} greenlet(s)"
              + (f"; still alive after 1 s: {', '.join(str(g.minimal_ident) for g in still)}" if still else ""))


def _function_name(glet):
    func = getattr(glet, "_run", None)
    func = getattr(func, "func", func)  # functools.partial
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return name


def _state(glet):
    return "waiting" if glet.started else "not started"



@magics_class
class KernelMagics(Magics):
    """The magics a kernel adds to IPython's because its front end is not a terminal.

    The names and behaviour are those users know from ipykernel: a pager is
    a ``page`` payload the front end shows, an editor is an ``edit_magic``
    payload, and ``%clear`` clears the cell's output. ``%qtconsole`` and
    ``%autosave`` (for the classic notebook) have no use here.
    """

    @line_magic
    def connect_info(self, line):
        """Print the kernel's connection info: saved to a file, it lets another client attach."""
        print(json.dumps(self.shell.kernel.transport.info, indent=1, sort_keys=True))
        print("\nSave the above JSON to a file, then attach another client, e.g.:\n"
              "    $> jupyter console --existing FILE")

    @line_magic
    def clear(self, line):
        """Clear this cell's output so far (ipykernel's clears a terminal front end's screen)."""
        from IPython.display import clear_output
        clear_output()

    @line_magic
    def less(self, line):
        """Show a file in the pager: ``%less FILE`` (``%more`` too)."""
        if not line.strip():
            raise UsageError("usage: %less FILE")
        with open(os.path.expanduser(line.strip()), encoding="utf-8", errors="replace") as f:
            page.page(f.read())

    more = line_magic("more")(less)

    @line_magic
    def man(self, line):
        """Show a man page in the pager: ``%man TOPIC``."""
        out = self.shell.getoutput(f"man {line} | col -b", split=False)
        page.page(str(out))

    @line_magic
    def edit(self, line):
        """Ask the front end to open a file for editing: ``%edit FILE``."""
        if not line.strip():
            raise UsageError("usage: %edit FILE (an editor opens in the front end, if it has one)")
        filename = os.path.abspath(os.path.expanduser(line.strip()))
        self.shell.payload_manager.write_payload(
            {"source": "edit_magic", "filename": filename, "line_number": 0})
