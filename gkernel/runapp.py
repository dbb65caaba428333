"""``gkernel run``: execute notebooks with the green client, several at once, in one thread.

Each notebook gets a fresh kernel, started in the notebook's directory, from
``--kernel``, else the notebook's own kernelspec, else the default one. Progress
goes to stderr, a line per cell; a notebook that fails does not stop the others.
Exit status: 0 when every notebook ran, 1 when one failed, 2 for a usage error,
130 when interrupted.
"""

import os
import sys
from time import monotonic

import gevent
from gevent.pool import Pool
from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import Application

from . import __version__
from ._limits import raise_limits
from .client.kernelclient import shared_context

__all__ = ["RunApp"]


class RunApp(Application):
    name = "gkernel-run"
    version = __version__
    description = """Execute Jupyter notebooks, several at once, with gkernel's green client.

    Each notebook runs in a fresh kernel started in its directory; cells run in
    order and the first failing cell ends that notebook (unless --allow-errors,
    or the cell is tagged raises-exception). Executed notebooks are saved only
    with --output or --inplace, failed ones too, with the error in place.
    """
    examples = """
    gkernel run analysis.ipynb --inplace
    gkernel run reports/*.ipynb --parallel 8 --output executed/
    gkernel run report.ipynb --kernel python3 --timeout 60 --allow-errors --output report-run.ipynb
    """

    kernel_name = Unicode(
        "", help="Kernelspec for every notebook (default: each notebook's own, else the default kernel)."
    ).tag(config=True)
    output = Unicode(
        "", help="Where to save executed notebooks: a file for one notebook, a directory for several."
    ).tag(config=True)
    inplace = Bool(False, help="Save each executed notebook over its source.").tag(config=True)
    timeout = Float(
        None, allow_none=True, help="Seconds a cell may run before it is interrupted and its notebook fails."
    ).tag(config=True)
    startup_timeout = Float(60, help="Seconds a kernel may take to start answering.").tag(config=True)
    parallel = Integer(1, help="How many notebooks run at once.").tag(config=True)
    allow_errors = Bool(False, help="Go on after a failing cell; the notebook then counts as run.").tag(config=True)

    aliases = {
        "kernel": "RunApp.kernel_name",
        "output": "RunApp.output",
        "timeout": "RunApp.timeout",
        "startup-timeout": "RunApp.startup_timeout",
        "parallel": "RunApp.parallel",
        "log-level": "Application.log_level",
    }
    flags = {
        "inplace": ({"RunApp": {"inplace": True}}, "Save each executed notebook over its source."),
        "allow-errors": ({"RunApp": {"allow_errors": True}}, "Go on after a failing cell."),
    }

    def start(self):
        targets = self._targets(self.extra_args)
        raise_limits(shared_context(), self.log)  # each running notebook holds a dozen fds
        started = monotonic()
        pool = Pool(max(1, self.parallel))
        runs = [pool.spawn(self._run_one, source, destination) for source, destination in targets]
        try:
            gevent.joinall(runs, raise_error=True)
        except KeyboardInterrupt:
            pool.kill()  # each run stops its kernel on the way out
            print("interrupted", file=sys.stderr)
            self.exit(130)
        failed = [(source, run.value) for (source, _), run in zip(targets, runs) if run.value]
        print(f"{len(targets)} notebook{'s' if len(targets) > 1 else ''} in {monotonic() - started:.2f}s: "
              f"{len(targets) - len(failed)} ok, {len(failed)} failed", file=sys.stderr)
        for source, error in failed:
            print(f"  {source}: {error}", file=sys.stderr)
        self.exit(1 if failed else 0)

    def _usage_error(self, message):
        self.log.critical("%s", message)
        self.exit(2)

    def _targets(self, paths):
        """``(source, destination or None)`` per notebook, or a usage error."""
        if not paths:
            self._usage_error("give one or more notebooks to run (see gkernel run --help)")
        if self.inplace and self.output:
            self._usage_error("--output and --inplace exclude each other")
        if self.inplace:
            return [(path, path) for path in paths]
        if not self.output:
            return [(path, None) for path in paths]
        if len(paths) == 1 and not (os.path.isdir(self.output) or self.output.endswith(os.sep)):
            return [(paths[0], self.output)]
        destinations = [os.path.join(self.output, os.path.basename(path)) for path in paths]
        clashes = sorted({path for path in destinations if destinations.count(path) > 1})
        if clashes:
            self._usage_error(f"two notebooks would be saved as {clashes[0]}; run them with separate --output")
        os.makedirs(self.output, exist_ok=True)
        return list(zip(paths, destinations))

    def _run_one(self, source, destination):
        """Run one notebook and save it if asked; returns None, or why it failed."""
        nbformat = _nbformat()
        from .client.notebook import NotebookRunner, RunFailed

        def progress(text):
            print(f"{source} {text}", file=sys.stderr, flush=True)

        started = monotonic()
        try:
            nb = nbformat.read(source, as_version=4)
        except OSError as exc:
            progress(f"cannot be read: {exc.strerror}")
            return f"cannot be read: {exc.strerror}"
        except Exception as exc:  # nbformat's errors for JSON that is not a notebook share no base
            progress(f"is not a notebook: {exc}")
            return f"is not a notebook: {exc}"
        kernel_name = self.kernel_name or nb.metadata.get("kernelspec", {}).get("name") or NATIVE_KERNEL_NAME
        runner = NotebookRunner(nb, kernel_name, cwd=os.path.dirname(os.path.abspath(source)),
                                timeout=self.timeout, allow_errors=self.allow_errors,
                                startup_timeout=self.startup_timeout, progress=progress)
        error = None
        try:
            runner.run()
        except RunFailed as exc:
            error = str(exc)
        saved = "not saved"
        if destination is not None:
            nbformat.write(nb, destination)
            saved = f"saved to {destination}"
        outcome = f"FAILED ({error})" if error else "done"
        progress(f"{outcome} in {monotonic() - started:.2f}s, {saved}")
        return error


def _nbformat():
    """``nbformat``, imported when a notebook is read, without jsonschema's IRI format checker.

    nbformat imports jsonschema, and jsonschema imports rfc3987-syntax where it
    is installed (jupyter_server's dependencies bring it) to check the ``iri``
    format; that import builds a grammar and took 3 s here, at every ``gkernel
    run`` (python-jsonschema/jsonschema#1392). Nothing in this process checks
    formats, and jsonschema goes without that checker when the module cannot
    be imported; a usage error or ``--help`` does not import nbformat at all.
    """
    sys.modules.setdefault("rfc3987_syntax", None)
    import nbformat

    return nbformat
