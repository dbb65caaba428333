"""``gkernel install`` / ``gkernel uninstall``: the gkernel kernelspec.

The spec is written into a temporary directory and installed by
jupyter_client's KernelSpecManager, so it lands exactly where
``jupyter kernelspec list`` and every Jupyter client look for it.
"""

import json
import os
import sys
import tempfile

from traitlets import Bool, Unicode
from traitlets.config import Application

from . import __version__

__all__ = ["kernel_spec", "install", "InstallApp", "UninstallApp"]

DEFAULT_NAME = "gkernel"


def kernel_spec(display_name="Python 3 (gkernel)", python=None):
    """The kernel.json content for a kernel run by *python* (default: this interpreter)."""
    return {
        "argv": [python or sys.executable, "-m", "gkernel", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        # SIGINT reaches a cell even while it hogs the CPU; a message cannot
        # be read then (the hub is not running).
        "interrupt_mode": "signal",
        "metadata": {"debugger": False, "gkernel": {"version": __version__}},
    }


def install(name=DEFAULT_NAME, display_name=None, user=False, prefix=None):
    """Install the kernelspec; return the directory it was installed to."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = kernel_spec(display_name or "Python 3 (gkernel)")
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        return KernelSpecManager().install_kernel_spec(tmp, name, user=user, prefix=prefix)


class InstallApp(Application):
    name = "gkernel-install"
    description = """Install the gkernel kernelspec so Jupyter can start gkernel kernels.

    Without a location option the spec goes to the system-wide Jupyter data
    directory (which may need root); --user, --sys-prefix or --prefix choose
    another one.
    """
    examples = """
    gkernel install --user
    gkernel install --sys-prefix --name gkernel-dev --display-name "gkernel (dev)"
    """
    kernel_name = Unicode(DEFAULT_NAME, help="Kernelspec name (a directory name).").tag(config=True)
    display_name = Unicode("Python 3 (gkernel)", help="Name shown in notebook front ends.").tag(config=True)
    user = Bool(False, help="Install for the current user.").tag(config=True)
    prefix = Unicode("", help="Install under this prefix (PREFIX/share/jupyter/kernels).").tag(config=True)

    aliases = {
        "name": "InstallApp.kernel_name",
        "display-name": "InstallApp.display_name",
        "prefix": "InstallApp.prefix",
    }
    flags = {
        "user": ({"InstallApp": {"user": True}}, "Install for the current user (~/.local/share/jupyter)."),
        "sys-prefix": ({"InstallApp": {"prefix": sys.prefix}},
                       f"Install into this Python's prefix ({sys.prefix})."),
    }

    def start(self):
        if self.user and self.prefix:
            self.log.critical("choose one of --user and --prefix/--sys-prefix")
            self.exit(2)
        try:
            path = install(self.kernel_name, self.display_name, user=self.user, prefix=self.prefix or None)
        except (OSError, ValueError) as exc:
            self.log.critical("cannot install kernelspec %r: %s", self.kernel_name, exc)
            self.exit(1)
        print(f"Installed kernelspec {self.kernel_name} in {path}")


class UninstallApp(Application):
    name = "gkernel-uninstall"
    description = "Remove an installed gkernel kernelspec (by name)."
    kernel_name = Unicode(DEFAULT_NAME, help="Kernelspec name to remove.").tag(config=True)
    aliases = {"name": "UninstallApp.kernel_name"}

    def start(self):
        from jupyter_client.kernelspec import KernelSpecManager

        try:
            path = KernelSpecManager().remove_kernel_spec(self.kernel_name)
        except KeyError:
            self.log.critical("no kernelspec named %r is installed", self.kernel_name)
            self.exit(1)
        except OSError as exc:
            self.log.critical("cannot remove kernelspec %r: %s", self.kernel_name, exc)
            self.exit(1)
        print(f"Removed kernelspec {self.kernel_name} from {path}")
