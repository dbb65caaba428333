"""One IPython shell per kernel: IPython's ``InteractiveShell``, speaking through gkernel.

IPython already does what a Python notebook kernel's interpreter must do
(magics, ``!cmd``, input transformation, the display formatter, tracebacks,
completion, inspection, history, top-level ``await``); :class:`GreenShell`
subclasses it, as ipykernel's ``ZMQInteractiveShell`` does, and changes only
what differs in a gevent kernel:

* output: the display publisher, the display hook (``execute_result``) and
  tracebacks (``error``) publish on the IOPub of the shell's kernel, with the
  running cell as parent (:mod:`gkernel.cells`), so ``display()`` from a
  greenlet a cell spawned reaches that cell too;
* waiting: ``!cmd`` and ``x = !cmd`` run under gevent (:mod:`gkernel.system`),
  top-level ``await`` runs the cell's coroutine on an asyncio loop whose
  selector waits through the hub, and history is written by the hub after
  the reply instead of by a thread of its own per shell;
* many shells per process: IPython assumes one. What it makes process-wide
  (``InteractiveShell.instance()``, hence ``get_ipython()``;
  ``sys.displayhook``; the ``get_ipython`` builtin) is routed to the shell of
  the running cell by :func:`install_process_hooks`, and the traps with which
  ``run_cell`` swaps ``sys.displayhook`` and builtins around each cell are
  disabled: with cells of several kernels interleaving on one hub, those
  swaps would not nest.

Hub thread only, like the kernel that owns the shell.
"""

import asyncio
import atexit
import builtins
import os
import shutil
import sys
from contextlib import nullcontext

import gevent
from gevent.selectors import GeventSelector
from IPython.core.autocall import ZMQExitAutocall
from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.display_trap import DisplayTrap
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.history import HistoryManager
from IPython.core.interactiveshell import InteractiveShell, InteractiveShellABC
from IPython.core import page
from IPython.utils.text import LSString, SList
from traitlets import Any, Instance, Type, default

from . import system
from .cells import current_cell

__all__ = ["GreenShell", "install_process_hooks", "uninstall_process_hooks", "current_shell",
           "cooperative_event_loop"]


class GreenDisplayPublisher(DisplayPublisher):
    """``display()``, ``update_display`` and ``clear_output`` as IOPub messages of the shell's kernel."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self._validate_data(data, metadata)
        kernel = self.shell.kernel
        kernel.flush_output()  # text printed before a display appears before it
        content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
        kernel.publisher.publish("update_display_data" if update else "display_data", content,
                                 parent=kernel.current_parent())

    def clear_output(self, wait=False):
        kernel = self.shell.kernel
        kernel.flush_output()
        kernel.publisher.publish("clear_output", {"wait": bool(wait)}, parent=kernel.current_parent())


class GreenDisplayHook(DisplayHook):
    """The value of a cell's last expression as an ``execute_result``."""

    def start_displayhook(self):
        super().start_displayhook()
        self._bundle = None

    def write_output_prompt(self):
        pass  # the execution count travels in the message

    def write_format_data(self, format_dict, md_dict=None):
        self._bundle = (format_dict, md_dict or {})

    def finish_displayhook(self):
        self._is_active = False  # the base class would also write separate_out2 to stdout
        if self._bundle is None:
            return
        data, metadata = self._bundle
        self._bundle = None
        kernel = self.shell.kernel
        kernel.flush_output()
        kernel.publisher.publish("execute_result",
                                 {"execution_count": self.prompt_count, "data": data, "metadata": metadata},
                                 parent=kernel.current_parent())


class GreenHistoryManager(HistoryManager):
    """IPython's history, written by the hub shortly after each cell instead of by a thread.

    IPython writes history from a thread of its own per shell, with a second
    database connection; a host of a thousand kernels would keep a thousand
    of each. Here the one connection writes, from a hub timer that runs once
    the request has been answered, so the write (a fraction of a millisecond
    without fsync; see ``init_db``) never delays a reply.
    """

    save_delay = 0.05

    def __init__(self, shell, **kwargs):
        super().__init__(shell=shell, **kwargs)
        # IPython has just started its saving thread (a greenlet when the
        # standard library is monkey-patched): stop it, this class saves.
        self._stop_save_thread()
        self.using_thread = False
        self._save_timer = None

    def init_db(self):
        super().init_db()
        if self.enabled:
            # No fsync per cell: an OS crash may lose the latest cells, a kernel crash loses none.
            self.db.execute("PRAGMA synchronous=OFF")

    def store_inputs(self, line_num, source, source_raw=None):
        super().store_inputs(line_num, source, source_raw)
        self._save_soon()

    def store_output(self, line_num):
        super().store_output(line_num)
        self._save_soon()

    def _save_soon(self):
        if self._save_timer is None and self.enabled:
            self._save_timer = gevent.get_hub().loop.timer(self.save_delay)
            self._save_timer.start(self._save)

    def _save(self):
        self._save_timer = None
        self.writeout_cache()

    def _get_range_session(self, start=1, stop=None, raw=True, output=False):
        """The current session's rows under its own number: IPython reports it as 0, which a
        client cannot tell from the session before it (and passes back as a relative 0)."""
        for _, line, entry in super()._get_range_session(start, stop, raw, output):
            yield self.session_number, line, entry

    def end_session(self):
        if self._save_timer is not None:
            self._save_timer.close()
            self._save_timer = None
        super().end_session()


class _UntrappedDisplay(DisplayTrap):
    """``sys.displayhook`` stays the process-wide router (:func:`install_process_hooks`)."""

    def set(self):
        pass

    def unset(self):
        pass


class _UntrappedBuiltins(BuiltinTrap):
    """Builtins stay as :func:`install_process_hooks` left them; cells find ``exit``,
    ``quit`` and ``get_ipython`` in their namespace."""

    def activate(self):
        pass

    def deactivate(self):
        pass


class _CooperativeSelector(GeventSelector):
    """A selector that waits through the hub and, meanwhile, is no thread's running loop.

    asyncio keeps its "running loop" per OS thread, and every greenlet of the
    hub shares that thread: a loop left marked as running while its cell
    waits would make ``asyncio.run()`` in another greenlet (another kernel's
    cell, say) fail. Around each wait the marker goes back to what other code
    had set before this loop woke up, and this loop takes it again on waking.
    """

    _outer = None

    def select(self, timeout=None):
        loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self._outer)
        try:
            return super().select(timeout)
        finally:
            self._outer = asyncio.events._get_running_loop()
            asyncio.events._set_running_loop(loop)


def cooperative_event_loop():
    """A new asyncio loop that waits through the hub and hides while it waits (see above)."""
    return asyncio.SelectorEventLoop(_CooperativeSelector())


class GreenShell(InteractiveShell):
    """The IPython shell of one gkernel kernel."""

    kernel = Any(help="The gkernel Kernel this shell runs cells for.")
    displayhook_class = Type(GreenDisplayHook)
    display_pub_class = Type(GreenDisplayPublisher)
    exiter = Instance(ZMQExitAutocall)
    keepkernel_on_exit = None

    @default("exiter")
    def _default_exiter(self):
        return ZMQExitAutocall(self)

    def __init__(self, kernel, **kwargs):
        super().__init__(kernel=kernel, **kwargs)
        self._event_loop = None
        #: the error content of the current request's last traceback, if any
        self.last_error = None
        #: whether the current request is silent: its errors are not published
        self.silent = False
        self.loop_runner = self._run_coroutine
        _live_shells.append(self)

    # -- construction: what differs from a terminal IPython -------------------------

    def init_virtualenv(self):
        """No virtualenv detection: a kernel runs in the environment it is installed in."""

    def init_environment(self):
        """Commands run from cells write to a notebook, not to a terminal (as in ipykernel)."""
        env = os.environ
        env["TERM"] = "xterm-color"
        env["CLICOLOR"] = "1"
        env["FORCE_COLOR"] = "1"
        env["CLICOLOR_FORCE"] = "1"
        # A pager would wait for keys nobody can press.
        env["PAGER"] = "cat"
        env["GIT_PAGER"] = "cat"

    def init_history(self):
        self.history_manager = GreenHistoryManager(shell=self, parent=self)
        self.configurables.append(self.history_manager)

    def init_builtins(self):
        super().init_builtins()
        self.builtin_trap = _UntrappedBuiltins(shell=self)

    def init_displayhook(self):
        super().init_displayhook()
        self.display_trap = _UntrappedDisplay(hook=self.displayhook)

    def init_hooks(self):
        super().init_hooks()
        # obj? and %magic? help goes into the reply as a pager payload, as in ipykernel.
        self.set_hook("show_in_pager", page.as_hook(self._page_payload), 99)

    def init_magics(self):
        super().init_magics()
        from IPython.core.magics import configured_script_magics

        from .magics import GeventMagics
        self.register_magics(GeventMagics)
        # IPython declares its script magics lazily; gkernel's variant replaces them (see GreenScriptMagics).
        for name in ("script", *configured_script_magics(self.config)):
            self.magics_manager.register_lazy(name, "gkernel.magics:GreenScriptMagics", "cell")
        self.magics_manager.register_lazy("killbgscripts", "gkernel.magics:GreenScriptMagics", "line")

    def enable_gui(self, gui=None):
        """GUI event loops cannot share the hub's thread; only ``inline`` plotting is supported."""
        if gui not in (None, "inline"):
            from IPython.core.error import UsageError
            raise UsageError(f"gkernel runs no GUI event loop ({gui!r}); use %matplotlib inline")

    def _tee(self, channel):
        """No per-cell copy of stdout/stderr into history.

        IPython patches ``sys.stdout.write`` for the duration of each cell to
        keep everything printed in memory for ``%history -o``. The streams are
        process-wide and cells of several kernels interleave, so the patches
        would not nest, and the copy would grow without bound; output reaches
        the client, and ``Out`` keeps the results.
        """
        return nullcontext()

    # -- talking to the kernel ------------------------------------------------------

    def _page_payload(self, strg, start=0, screen_lines=0, pager_cmd=None):
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self.payload_manager.write_payload({"source": "page", "data": data, "start": max(0, start)})

    def ask_exit(self):
        """``exit``/``quit`` in a cell: an ``ask_exit`` payload, then the kernel ends unless kept."""
        keep = bool(self.keepkernel_on_exit)
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": keep})
        self.kernel.ask_exit(keep)

    def set_next_input(self, text, replace=False):
        self.payload_manager.write_payload({"source": "set_next_input", "text": text, "replace": replace})

    def run_cell(self, *args, **kwargs):
        self.last_error = None
        return super().run_cell(*args, **kwargs)

    def _showtraceback(self, etype, evalue, stb):
        if issubclass(etype, gevent.GreenletExit):
            return  # the kernel is ending this cell; see Kernel.execute_request
        self.last_error = {"ename": etype.__name__, "evalue": str(evalue), "traceback": stb}
        if self.silent:
            return
        kernel = self.kernel
        kernel.flush_output()
        kernel.publisher.publish("error", self.last_error, parent=kernel.current_parent())

    def _get_exc_info(self, exc_tuple=None):
        etype, value, tb = super()._get_exc_info(exc_tuple)
        return etype, value, trim_internal_frames(tb)

    def format_exception(self, exc):
        """Text of *exc*'s traceback as IPython shows it, without gevent's or gkernel's frames."""
        tb = trim_internal_frames(exc.__traceback__, head=True)
        return self.InteractiveTB.stb2text(self.InteractiveTB.structured_traceback(type(exc), exc, tb))

    # -- waiting cooperatively ------------------------------------------------------

    def _run_coroutine(self, coro):
        """The loop runner of top-level ``await``: this kernel's asyncio loop, waiting through the hub."""
        if self._event_loop is None or self._event_loop.is_closed():
            self._event_loop = cooperative_event_loop()
        return self._event_loop.run_until_complete(coro)

    def system_piped(self, cmd):
        """``!cmd``: its output streams to the cell as it comes; the exit code goes to ``_exit_code``."""
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        exit_code = system.run_streaming(self.var_expand(cmd, depth=1), sys.stdout.write)
        self.user_ns["_exit_code"] = exit_code
        if self.system_raise_on_error and exit_code != 0:
            from subprocess import CalledProcessError
            raise CalledProcessError(exit_code, cmd)

    system = system_piped

    def getoutput(self, cmd, split=True, depth=0):
        """``x = !cmd``: the output (stdout, then stderr) as an SList, or an LSString."""
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        out, err, exit_code = system.run_capture(self.var_expand(cmd, depth=depth + 1))
        self.user_ns["_exit_code"] = exit_code
        if self.system_raise_on_error and exit_code != 0:
            from subprocess import CalledProcessError
            raise CalledProcessError(exit_code, cmd)
        text = out + err
        return SList(text.splitlines()) if split else LSString(text)

    # -- the end ----------------------------------------------------------------------

    def close(self):
        """When the kernel ends (the process may live on): end the history session, free what the user made.

        IPython's ``atexit_operations`` does this too, with a full garbage
        collection per shell; a host ending many kernels collects once for all.
        """
        if self in _live_shells:
            _live_shells.remove(self)
        atexit.unregister(self.atexit_operations)
        self.history_manager.end_session()
        self.history_manager.close()
        self.history_manager.output_hist.clear()
        self.user_ns.clear()
        self.user_ns_hidden.clear()
        self.displayhook._ = self.displayhook.__ = self.displayhook.___ = None
        self.clear_main_mod_cache()
        script_magics = self.magics_manager.registry.get("GreenScriptMagics")
        if script_magics is not None:
            script_magics.close()
        for path in self.tempfiles:
            path.unlink(missing_ok=True)
        for path in self.tempdirs:
            shutil.rmtree(path, ignore_errors=True)
        if self._event_loop is not None and not self._event_loop.is_closed():
            self._event_loop.close()


InteractiveShellABC.register(GreenShell)


# -- tracebacks ---------------------------------------------------------------------

#: where frames of gevent (its compiled modules name themselves "src/gevent/...") and of gkernel come from
_INTERNAL = (*(os.path.dirname(module.__file__) + os.sep for module in (gevent, sys.modules[__package__])),
             "src/gevent/")


def _internal(tb):
    return tb.tb_frame.f_code.co_filename.startswith(_INTERNAL)


def trim_internal_frames(tb, head=False):
    """*tb* without its trailing frames in gevent or gkernel (and, with *head*, its leading ones).

    An interrupt lands where the cell waited, deep in the hub's switch; an
    error in a greenlet starts in ``Greenlet.run``. The user's frames, and
    those of the libraries they called, are what explains either.
    """
    if head:
        while tb is not None and _internal(tb):
            tb = tb.tb_next
    last_user, node = None, tb
    while node is not None:
        if not _internal(node):
            last_user = node
        node = node.tb_next
    if last_user is not None:
        last_user.tb_next = None
    return tb


# -- process-wide routing -------------------------------------------------------------

#: shells of the process's live kernels, oldest first
_live_shells = []


def current_shell():
    """The shell of the running cell's kernel; outside any cell, the newest live shell (or None)."""
    cell = current_cell()
    shell = getattr(cell.kernel, "shell", None) if cell is not None else None
    if shell is not None:
        return shell
    return _live_shells[-1] if _live_shells else None


class _CurrentShell:
    """``InteractiveShell._instance``, resolved for the code that asks.

    ``get_ipython()``, ``IPython.display.display`` and every library that
    calls ``InteractiveShell.instance()`` read this class attribute; as a
    descriptor it answers with the shell of the running cell's kernel.
    """

    def __get__(self, instance, owner):
        return current_shell()


_saved = {}


def install_process_hooks():
    """Route IPython's process-wide singleton, ``sys.displayhook`` and ``get_ipython`` per cell."""
    if _saved:
        return
    _saved.update(instance=InteractiveShell.__dict__.get("_instance"), displayhook=sys.displayhook,
                  get_ipython=builtins.__dict__.get("get_ipython"))
    InteractiveShell._instance = _CurrentShell()
    original = sys.displayhook

    def displayhook(value):
        shell = current_shell()
        (shell.displayhook if shell is not None else original)(value)

    sys.displayhook = displayhook
    builtins.get_ipython = lambda: current_shell()


def uninstall_process_hooks():
    if not _saved:
        return
    if _saved["instance"] is None:
        del InteractiveShell._instance
    else:
        InteractiveShell._instance = _saved["instance"]
    sys.displayhook = _saved["displayhook"]
    if _saved["get_ipython"] is None:
        builtins.__dict__.pop("get_ipython", None)
    else:
        builtins.get_ipython = _saved["get_ipython"]
    _saved.clear()
