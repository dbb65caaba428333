"""Executing a notebook with the green client, recording outputs the way nbclient does.

nbclient drives its kernel from an asyncio loop; :class:`NotebookRunner` does
the same work from a greenlet, so that many notebooks run at once in one thread
(``gkernel run --parallel``). The notebook format itself is nbformat's.

Conventions kept from nbclient: empty cells are not run; a cell tagged
``skip-execution`` is skipped and one tagged ``raises-exception`` may fail; the
first failing cell ends the run unless errors are allowed; consecutive stream
outputs of one name are merged; ``clear_output`` and display updates apply;
the state of the widgets the cells created is saved in the notebook's
metadata (``widgets``, ``application/vnd.jupyter.widget-state+json``), so
they render where the notebook is viewed.
"""

import base64
from time import monotonic

import nbformat
from jupyter_client.kernelspec import NoSuchKernel

from .errors import KernelDiedError, KernelTimeoutError, ProvisionerError
from .manager import start_new_kernel

__all__ = ["NotebookRunner", "RunFailed"]

#: How long an interrupted cell has to deliver its KeyboardInterrupt and reply.
INTERRUPT_GRACE = 5.0


class RunFailed(Exception):
    """A notebook run ended early: a cell failed or timed out, or the kernel died or never started."""


class NotebookRunner:
    """Run the code cells of ``nb`` (an nbformat v4 node, updated in place) in a fresh kernel.

    ``progress(text)`` is called with one line per cell and per milestone.
    """

    def __init__(self, nb, kernel_name, cwd=None, timeout=None, allow_errors=False,
                 startup_timeout=60, progress=None):
        self.nb = nb
        self.kernel_name = kernel_name
        self.cwd = cwd
        self.timeout = timeout
        self.allow_errors = allow_errors
        self.startup_timeout = startup_timeout
        self.progress = progress or (lambda text: None)
        self.km = self.kc = None
        self._display_outputs = {}  # display_id -> the outputs showing it, for update_display_data
        self._widgets = _WidgetState()

    def run(self):
        """Execute every code cell in order; raise :class:`RunFailed` if the run ended early."""
        started = monotonic()
        try:
            self.km, self.kc = start_new_kernel(self.startup_timeout, self.kernel_name, cwd=self.cwd)
        except NoSuchKernel:
            raise RunFailed(f"no kernel named {self.kernel_name!r} (see jupyter kernelspec list)") from None
        except (KernelTimeoutError, KernelDiedError, ProvisionerError) as exc:
            raise RunFailed(f"kernel {self.kernel_name} did not start: {exc}") from None
        try:
            self.nb.metadata["language_info"] = self.kc.kernel_info(reply=True, timeout=30)["content"]["language_info"]
            self.progress(f"kernel {self.kernel_name} ready in {monotonic() - started:.2f}s")
            code_cells = [cell for cell in self.nb.cells if cell.cell_type == "code"]
            for number, cell in enumerate(code_cells, 1):
                self._run_cell(cell, f"[{number}/{len(code_cells)}]")
        except BaseException as exc:
            self._widgets.save(self.nb)
            self._stop(now=not isinstance(exc, Exception))  # killed or ^C: no time for manners
            raise
        self._widgets.save(self.nb)
        self._stop(now=False)

    def _stop(self, now):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=now)

    def _run_cell(self, cell, position):
        tags = cell.metadata.get("tags", [])
        if not cell.source.strip() or "skip-execution" in tags:
            self.progress(f"{position} skipped")
            return
        cell.outputs = []
        cell.execution_count = None
        cell_output = _CellOutput(cell, self._display_outputs, self._widgets)
        started = monotonic()
        allowed = self.allow_errors or "raises-exception" in tags
        msg_id = self.kc.execute(cell.source, allow_stdin=False, stop_on_error=not allowed)
        try:
            reply = self.kc.follow(msg_id, self.timeout, cell_output.add, allow_stdin=False)
        except KernelTimeoutError:
            self._interrupt(msg_id, cell_output)
            self.progress(f"{position} timed out after {self.timeout}s")
            raise RunFailed(f"cell {position} did not finish within {self.timeout} s") from None
        except KernelDiedError:
            self.progress(f"{position} kernel died")
            raise RunFailed(f"the kernel died running cell {position}") from None
        elapsed = f"{monotonic() - started:.2f}s"
        content = reply["content"]
        cell.execution_count = content.get("execution_count")
        if content["status"] == "ok":
            self.progress(f"{position} ok {elapsed}")
            return
        error = f"{content.get('ename', 'error')}: {content.get('evalue', '')}"
        self.progress(f"{position} {error} {elapsed}{' (allowed)' if allowed else ''}")
        if not allowed:
            raise RunFailed(f"cell {position} raised {error}")

    def _interrupt(self, msg_id, cell_output):
        """Interrupt the late cell and record how it ended, if it does within the grace period."""
        self.km.interrupt_kernel()
        try:
            self.kc.follow(msg_id, INTERRUPT_GRACE, cell_output.add, allow_stdin=False)
        except (KernelTimeoutError, KernelDiedError):
            pass


class _CellOutput:
    """What one cell's IOPub messages make of its ``outputs``."""

    def __init__(self, cell, display_outputs, widgets):
        self.cell = cell
        self.display_outputs = display_outputs
        self.widgets = widgets
        self.clear_before_next = False

    def add(self, msg):
        msg_type, content = msg["msg_type"], msg["content"]
        if msg_type == "execute_input":
            self.cell.execution_count = content["execution_count"]
        elif msg_type == "clear_output":
            if content.get("wait"):
                self.clear_before_next = True
            else:
                self.cell.outputs = []
        elif msg_type == "update_display_data":
            for output in self.display_outputs.get(content.get("transient", {}).get("display_id"), ()):
                output.data, output.metadata = content["data"], content["metadata"]
        elif msg_type in ("stream", "display_data", "execute_result", "error"):
            self._append(msg, content)
        elif msg_type in ("comm_open", "comm_msg"):
            self.widgets.add(content, msg.get("buffers") or [])

    def _append(self, msg, content):
        if self.clear_before_next:
            self.cell.outputs = []
            self.clear_before_next = False
        outputs = self.cell.outputs
        if msg["msg_type"] == "stream" and outputs and outputs[-1].output_type == "stream" \
                and outputs[-1].name == content["name"]:
            outputs[-1].text += content["text"]
            return
        output = nbformat.v4.output_from_msg(msg)
        outputs.append(output)
        display_id = content.get("transient", {}).get("display_id")
        if display_id:
            self.display_outputs.setdefault(display_id, []).append(output)


class _WidgetState:
    """The widget models' latest state, from their comm messages, as nbclient saves it."""

    def __init__(self):
        self.states = {}  # comm id -> state
        self.buffers = {}  # comm id -> {buffer path: encoded buffer}

    def add(self, content, buffers):
        data = content.get("data") or {}
        if not isinstance(data.get("state"), dict):
            return  # a custom message, not a state update
        comm_id = content["comm_id"]
        self.states.setdefault(comm_id, {}).update(data["state"])
        for path, buffer in zip(data.get("buffer_paths") or [], buffers):
            self.buffers.setdefault(comm_id, {})[tuple(path)] = {
                "data": base64.b64encode(bytes(buffer)).decode(), "encoding": "base64", "path": path}

    def save(self, nb):
        models = {}
        for comm_id, state in self.states.items():
            if "_model_name" not in state:
                continue
            models[comm_id] = {"model_name": state["_model_name"], "model_module": state.get("_model_module"),
                               "model_module_version": state.get("_model_module_version"), "state": state}
            if comm_id in self.buffers:
                models[comm_id]["buffers"] = list(self.buffers[comm_id].values())
        if models:
            nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
                "state": models, "version_major": 2, "version_minor": 0}}
