"""The ``gkernel`` command: ``kernel``, ``serve``, ``run``, ``install`` and ``uninstall`` subcommands.

Subcommands are named by import string, so ``gkernel install`` never imports
the kernel runtime and ``gkernel kernel`` can patch before heavy imports.
"""

from traitlets.config import Application

from . import __version__

__all__ = ["GKernelCLI", "main"]


class GKernelCLI(Application):
    name = "gkernel"
    version = __version__
    description = "gkernel: a Jupyter kernel for Python whose whole runtime is gevent."
    examples = """
    gkernel install --user             # make the kernel available to Jupyter
    gkernel kernel -f kernel-1.json    # what Jupyter runs (same as python -m gkernel)
    gkernel serve                      # many kernels in one process; gkernel serve stop ends it
    gkernel run *.ipynb --parallel 8   # execute notebooks, eight at once
    gkernel uninstall
    """
    subcommands = {
        "kernel": ("gkernel.kernelapp.GKernelApp", "Start one kernel (what the kernelspec runs)."),
        "serve": ("gkernel.serveapp.ServeApp", "Host many kernels in one process (management API)."),
        "run": ("gkernel.runapp.RunApp", "Execute notebooks with the green client, several at once."),
        "install": ("gkernel.kernelspec.InstallApp", "Install the gkernel kernelspec."),
        "uninstall": ("gkernel.kernelspec.UninstallApp", "Remove an installed gkernel kernelspec."),
    }

    def start(self):
        if self.subapp is None:
            self.print_help()
            self.exit(2)
        self.subapp.start()


def main(argv=None):
    app = GKernelCLI.instance()
    app.initialize(argv)
    app.start()


if __name__ == "__main__":
    main()
