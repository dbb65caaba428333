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
* waiting: ``!cmd`` and ``x = !cmd`` run under gevent (:mod:`gkernel.system`);
  each kernel has an asyncio loop whose selector waits through the hub,
  which runs in a greenlet between cells (tasks a cell created go on, like
  its greenlets) and in the cell's greenlet during a top-level ``await``;
  history is written by the hub after the reply instead of by a thread of
  its own per shell;
* many shells per process: IPython assumes one. What it makes process-wide
  (``InteractiveShell.instance()``, hence ``get_ipython()``;
  ``sys.displayhook``; the ``get_ipython`` builtin; asyncio's event loop
  policy) is routed to the shell of the running cell by
  :func:`install_process_hooks`, and the traps with which
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
from gevent import getcurrent
from gevent.event import Event
from gevent.selectors import GeventSelector
from IPython.core.autocall import ZMQExitAutocall
from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.compilerop import CachingCompiler
from IPython.core.display_trap import DisplayTrap
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.history import HistoryManager
from IPython.core import page
from IPython.core.interactiveshell import InteractiveShell, InteractiveShellABC
from IPython.core.magics.execution import ExecutionMagics, Timer
from IPython.core.profiledir import ProfileDir
from IPython.core.shellapp import InteractiveShellApp
from IPython.utils.text import LSString, SList
from traitlets import Any, Instance, Type, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import system
from .cells import Cell, current_cell, redirect_current, restore_current
from .cpuwatch import add_entry_point

__all__ = ["GreenShell", "ShellStartup", "SpareShells", "install_process_hooks", "uninstall_process_hooks",
           "current_shell", "cooperative_event_loop"]

# Where IPython runs a cell's code: a spinning cell may be time-sliced above these frames.
for _runs_user_code in (InteractiveShell.run_code, ExecutionMagics.time, Timer.timeit):
    add_entry_point(_runs_user_code)


class GreenDisplayPublisher(DisplayPublisher):
    """``display()``, ``update_display`` and ``clear_output`` as IOPub messages of the shell's kernel."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        self._validate_data(data, metadata)
        content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
        self.shell.kernel.publish_for_caller("update_display_data" if update else "display_data", content)

    def clear_output(self, wait=False):
        self.shell.kernel.publish_for_caller("clear_output", {"wait": bool(wait)})


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
        self.shell.kernel.publish_for_caller(
            "execute_result", {"execution_count": self.prompt_count, "data": data, "metadata": metadata})


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
        self._save_timer = None
        super().__init__(shell=shell, **kwargs)
        self.save_thread = None
        self.using_thread = False

    @validate("save_thread")
    def _never_start_a_saving_thread(self, proposal):
        # HistoryManager.__init__ makes its saving thread and starts it at once:
        # what it gets to start instead does nothing (see the class docstring).
        return None if proposal.value is None else _NotStarted()

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

    def forget(self):
        """In a forked child: write nothing (the parent writes this session, and an SQLite
        connection must not be used across a fork)."""
        if self._save_timer is not None:
            self._save_timer.close()
            self._save_timer = None
        self.enabled = False

    def end_session(self):
        if self._save_timer is not None:
            self._save_timer.close()
            self._save_timer = None
        super().end_session()


class _NotStarted:
    """Stands in for the history saving thread IPython would start."""

    def start(self):
        pass

    def stop(self):
        pass


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
            # In descriptor order, as select() reports them: a script's stdout before its stderr.
            return sorted(super().select(timeout), key=lambda ready: ready[0].fd)
        finally:
            self._outer = asyncio.events._get_running_loop()
            asyncio.events._set_running_loop(loop)


class _GreenEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop for greenlets: it waits through the hub, and work scheduled on
    it from another greenlet (a cell creating a task) wakes it, as from another thread."""

    _greenlet = None

    def __init__(self):
        super().__init__(_CooperativeSelector())

    def run_forever(self):
        self._greenlet = getcurrent()
        try:
            super().run_forever()
        finally:
            self._greenlet = None

    def call_soon(self, callback, *args, context=None):
        if getcurrent() is self._greenlet:
            return super().call_soon(callback, *args, context=context)
        return self.call_soon_threadsafe(callback, *args, context=context)

    def call_at(self, when, callback, *args, context=None):
        handle = super().call_at(when, callback, *args, context=context)
        if self._greenlet is not None and getcurrent() is not self._greenlet:
            self._write_to_self()  # its wait may end earlier now
        return handle


def cooperative_event_loop():
    """A new asyncio loop that waits through the hub and hides while it waits (see above)."""
    return _GreenEventLoop()


class _GreenEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's policy, for a process whose threads are shared by greenlets.

    In a cell, ``asyncio.get_event_loop()`` is the kernel's loop (as in
    ipykernel, whose cells run on its loop); every new loop (``asyncio.run()``,
    ``asyncio.new_event_loop()``, IPython's script magics) waits through the
    hub, so other greenlets run meanwhile, also without monkey-patching.
    """

    def get_event_loop(self):
        shell = _cell_shell()
        if self._local._loop is None and shell is not None:
            return shell.asyncio_loop()
        return super().get_event_loop()

    def new_event_loop(self):
        return cooperative_event_loop()


class ShellStartup(InteractiveShellApp, LoggingConfigurable):
    """What ``ipython`` and ipykernel run in a new shell: IPython's own start-up steps.

    Extensions (``InteractiveShellApp.extensions``), the profile's startup
    files, ``PYTHONSTARTUP``, ``exec_lines`` and ``exec_files``, configured as
    for IPython.
    """

    def __init__(self, shell, **kwargs):
        super().__init__(shell=shell, **kwargs)
        # What InteractiveShellApp expects of the application it is mixed into.
        self.profile_dir = shell.profile_dir
        self.ipython_dir = shell.ipython_dir
        self.extra_args = []

    def run(self):
        self.init_extensions()
        self.init_code()


class CellFileCompiler(CachingCompiler):
    """Compiles each cell under the file name the debugger's front end computes for it.

    JupyterLab sets a breakpoint in a cell as a breakpoint in the file
    ``debugInfo`` names for the cell's source (see
    :class:`gkernel.debugger.CellFiles`); the cell's code must carry that
    name from its first run, as the debugger may start later. Tracebacks
    still say ``Cell In[n]``: IPython maps the name to the cell's number.
    """

    #: the kernel's :class:`gkernel.debugger.CellFiles`, when its debugger can run
    cell_files = None

    def get_code_name(self, raw_code, transformed_code, number):
        if self.cell_files is None:
            return super().get_code_name(raw_code, transformed_code, number)
        return self.cell_files.path(raw_code)


class GreenShell(InteractiveShell):
    """The IPython shell of one gkernel kernel."""

    kernel = Any(help="The gkernel Kernel this shell runs cells for.")
    profile_name = Unicode("default", help="IPython profile (in IPYTHONDIR) whose history, "
                                           "startup files and extensions the kernel uses.").tag(config=True)
    profile_location = Unicode("", help="An IPython profile directory to use instead of "
                                        "profile_name's.").tag(config=True)
    displayhook_class = Type(GreenDisplayHook)
    display_pub_class = Type(GreenDisplayPublisher)
    compiler_class = Type(CellFileCompiler)
    exiter = Instance(ZMQExitAutocall)
    keepkernel_on_exit = None

    @default("exiter")
    def _default_exiter(self):
        return ZMQExitAutocall(self)

    def __init__(self, kernel=None, **kwargs):
        """A shell for *kernel*; without one, a spare that :meth:`bind` gives a kernel later."""
        install_process_hooks()
        super().__init__(kernel=kernel, **kwargs)
        #: the kernel's asyncio loop (made on first use) and the greenlet running it between cells
        self._event_loop = None
        self._loop_runner = None
        self.loop_runner = self._run_coroutine
        if kernel is not None:
            self._serve(kernel)

    def bind(self, kernel):
        """Give a spare shell (see :class:`SpareShells`) its kernel."""
        self.kernel = kernel
        self.init_sys_modules()  # its namespace is __main__ now, as with a shell built for the kernel
        self._serve(kernel)

    def _serve(self, kernel):
        self.configurables.append(kernel)  # %config Kernel.time_slicing = False
        if kernel.debugger.available:
            self.compile.cell_files = kernel.debugger.cell_files
        _live_shells.append(self)

    # -- construction: what differs from a terminal IPython -------------------------

    def init_profile_dir(self, profile_dir):
        if profile_dir is None and self.profile_location:
            profile_dir = ProfileDir.find_profile_dir(self.profile_location)
        elif profile_dir is None:
            profile_dir = ProfileDir.create_profile_dir_by_name(self.ipython_dir, self.profile_name)
        self.profile_dir = profile_dir

    def init_sys_modules(self):
        """``sys.modules['__main__']`` is the namespace of the newest kernel (a spare has none yet)."""
        if self.kernel is not None:
            super().init_sys_modules()

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
        from .magics import GeventMagics, KernelMagics
        self.register_magics(GeventMagics, KernelMagics)

    #: matplotlib backends that draw in the notebook itself and need no GUI event loop
    NOTEBOOK_BACKENDS = (None, "inline", "nbagg", "notebook", "webagg", "ipympl", "widget")

    def enable_gui(self, gui=None):
        """No GUI event loop (Qt, Tk, ...) can share the hub's thread; notebook backends need none."""
        if gui not in self.NOTEBOOK_BACKENDS:
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

    # ipykernel's API for output of threads: which request does the caller's output belong to?

    def get_parent(self):
        """The request the calling code's output goes to (its cell's, else the latest cell's)."""
        return self.kernel.current_parent()

    @property
    def parent_header(self):
        """The header of :meth:`get_parent` (what ipykernel's shell calls its parent header)."""
        return (self.kernel.current_parent() or {}).get("header", {})

    def set_thread_parent(self, parent):
        """Send the calling thread's (or greenlet's) output to request *parent*; returns a token.

        In gkernel a thread or greenlet already writes to the cell that
        started it; this is for code that wants another cell.
        """
        return redirect_current(Cell(self.kernel, parent))

    def reset_thread_parent(self, token):
        """Undo :meth:`set_thread_parent`."""
        restore_current(token)

    def set_parent(self, parent):
        """As :meth:`set_thread_parent`, without a token (ipykernel also makes *parent* the
        default of code outside any cell; in gkernel that stays the latest cell).

        Setting the parent the calling code already has changes nothing: ipywidgets' Output
        does that on entering ``with out:``, and the cell must stay the cell (its stdin, its count).
        """
        cell = current_cell()
        if cell is None or cell.kernel is not self.kernel or cell.parent.get("header", {}).get("msg_id") \
                != (parent or {}).get("header", {}).get("msg_id"):
            self.set_thread_parent(parent)

    def _showtraceback(self, etype, evalue, stb):
        if issubclass(etype, gevent.GreenletExit):
            return  # the kernel is ending this cell; see Kernel.execute_request
        if issubclass(etype, asyncio.CancelledError) and self._in_interrupted_task():
            return
        error = {"ename": etype.__name__, "evalue": str(evalue), "traceback": stb}
        cell = current_cell()
        if cell is not None and cell.kernel is self.kernel:  # else: not a request's (a greenlet's, say)
            cell.error = error
            if self.displayhook.is_active:
                cell.error_in_display = True  # IPython's formatter caught it; the cell still failed
            if cell.silent:
                return
        self.kernel.publish_for_caller("error", error)

    def _get_exc_info(self, exc_tuple=None):
        etype, value, tb = super()._get_exc_info(exc_tuple)
        return etype, value, trim_internal_frames(tb)

    def _in_interrupted_task(self):
        loop = self._event_loop
        task = asyncio.current_task(loop) if loop is not None and loop.is_running() else None
        return getattr(task, "gkernel_interrupted", False)

    def format_exception(self, exc):
        """Text of *exc*'s traceback as IPython shows it, without gevent's or gkernel's frames."""
        tb = trim_internal_frames(exc.__traceback__, head=True)
        return self.InteractiveTB.stb2text(self.InteractiveTB.structured_traceback(type(exc), exc, tb))

    # -- waiting cooperatively ------------------------------------------------------

    def asyncio_loop(self):
        """This kernel's asyncio loop, running between cells (made and started on first use)."""
        if self._event_loop is None:
            self._event_loop = cooperative_event_loop()
            self._start_loop_runner()
        return self._event_loop

    def _start_loop_runner(self):
        runner = gevent.Greenlet(self._event_loop.run_forever)
        runner.spawn_tree_locals = {}  # no cell's: each task carries its own (gkernel.cells.CELL_VAR)
        runner.start()
        self._loop_runner = runner

    def _stop_loop_runner(self):
        self._event_loop.call_soon_threadsafe(self._event_loop.stop)
        self._loop_runner.join()
        self._loop_runner = None

    def _run_coroutine(self, coro):
        """The runner of top-level ``await``: the cell's greenlet runs the kernel's loop until *coro* is done.

        Tasks that earlier cells created run meanwhile, as between cells. An
        interrupt cancels the cell's task (and stops its traceback, which
        the interrupt already reported).
        """
        loop = self.asyncio_loop()
        if self._loop_runner is None:
            return self._await_beside(loop, coro)
        self._stop_loop_runner()
        task = loop.create_task(coro)
        try:
            return loop.run_until_complete(task)
        except BaseException:
            task.gkernel_interrupted = True
            task.cancel()
            raise
        finally:
            self._start_loop_runner()

    @staticmethod
    def _await_beside(loop, coro):
        """Top-level ``await`` while a cell of another subshell runs the loop: *coro* becomes a
        task there, and this cell's greenlet waits for it (cooperatively)."""
        task = loop.create_task(coro)
        done = Event()
        task.add_done_callback(lambda _: done.set())
        try:
            done.wait()
        except BaseException:
            task.gkernel_interrupted = True
            task.cancel()
            raise
        return task.result()

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
        script_magics = self.magics_manager.registry.get("ScriptMagics")
        if script_magics is not None:  # loaded by a %%script cell; IPython keeps it for atexit
            atexit.unregister(script_magics.kill_bg_processes)
            script_magics.kill_bg_processes()
            script_magics.stop_event_loop()
        for path in self.tempfiles:
            path.unlink(missing_ok=True)
        for path in self.tempdirs:
            shutil.rmtree(path, ignore_errors=True)
        if self._event_loop is not None:
            self._stop_loop_runner()
            self._event_loop.close()


InteractiveShellABC.register(GreenShell)


class SpareShells:
    """A shell built ahead of need, so that a new kernel of a host does not wait for one.

    Building a shell takes milliseconds of the hub's CPU, which every kernel
    of a host waits out. A host keeps one spare: a new kernel takes it, and
    the next is built once creations have paused for ``delay`` seconds, so a
    new kernel's first requests and a burst of creations go first.
    """

    def __init__(self, parent, delay=0.1):
        self.parent = parent
        self.delay = delay
        self._spare = None
        self._builder = None

    def take(self, kernel):
        """A shell for *kernel*: the spare if there is one, else one built now."""
        shell, self._spare = self._spare, None
        if shell is None:
            shell = GreenShell(parent=self.parent)
        shell.bind(kernel)
        if self._builder is not None:
            self._builder.kill()
        self._builder = gevent.spawn_later(self.delay, self._build)
        return shell

    def _build(self):
        if self._spare is None:
            self._spare = GreenShell(parent=self.parent)

    def close(self):
        if self._builder is not None:
            self._builder.kill()
        if self._spare is not None:
            self._spare.close()
            self._spare = None


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


def _cell_shell():
    """The shell of the running cell's kernel, or None outside cells (and before it is built)."""
    cell = current_cell()
    return cell.kernel.shell if cell is not None else None


def current_shell():
    """The shell of the running cell's kernel; outside any cell, the newest live shell (or None)."""
    shell = _cell_shell()
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
    """Route IPython's process-wide singleton, ``sys.displayhook`` and ``get_ipython`` per cell.

    The first shell of a process installs them (importing IPython waits
    until then: see :meth:`gkernel.kernel.Kernel.start`), and with them
    IPython's interruptible debugger; idempotent.
    """
    if _saved:
        return
    _saved.update(instance=InteractiveShell.__dict__.get("_instance"), displayhook=sys.displayhook,
                  get_ipython=builtins.__dict__.get("get_ipython"), policy=asyncio.get_event_loop_policy())
    _interruptible_pdb()
    asyncio.set_event_loop_policy(_GreenEventLoopPolicy())
    InteractiveShell._instance = _CurrentShell()
    original = sys.displayhook

    def displayhook(value):
        shell = current_shell()
        (shell.displayhook if shell is not None else original)(value)

    sys.displayhook = displayhook
    builtins.get_ipython = lambda: current_shell()


def _interruptible_pdb():
    """``pdb.set_trace()`` in a cell gets IPython's debugger, which quits on an interrupt
    (as in ipykernel): the standard one catches KeyboardInterrupt and asks for input again."""
    import pdb

    from IPython.core import debugger

    debugger.Pdb = debugger.InterruptiblePdb
    pdb.Pdb = debugger.InterruptiblePdb
    pdb.set_trace = debugger.set_trace


def uninstall_process_hooks():
    if not _saved:
        return
    if _saved["instance"] is None:
        del InteractiveShell._instance
    else:
        InteractiveShell._instance = _saved["instance"]
    sys.displayhook = _saved["displayhook"]
    asyncio.set_event_loop_policy(_saved["policy"])
    if _saved["get_ipython"] is None:
        builtins.__dict__.pop("get_ipython", None)
    else:
        builtins.get_ipython = _saved["get_ipython"]
    _saved.clear()
