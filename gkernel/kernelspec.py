"""``gkernel install`` / ``gkernel uninstall``: the gkernel kernelspec.

The spec is written into a temporary directory, beside the logos front ends
show in their launchers (``gkernel/resources``: the SVG, and PNGs Chromium
rendered from it), and installed by jupyter_client's KernelSpecManager, so it
lands exactly where ``jupyter kernelspec list`` and every Jupyter client look
for it.
"""

import importlib.util
import json
import os
import sys
import tempfile
from importlib.resources import files

import zmq
from traitlets import Bool, Unicode
from traitlets.config import Application

from . import __version__
from .messages import PROTOCOL_VERSION

__all__ = ["kernel_spec", "install", "InstallApp", "UninstallApp"]

DEFAULT_NAME = "gkernel"
LOGOS = ("logo-svg.svg", "logo-32x32.png", "logo-64x64.png")


def kernel_spec(display_name="Python 3 (gkernel)", python=None, serve=False):
    """The kernel.json content for a kernel run by *python* (default: this interpreter).

    With *serve*, the spec selects the ``gkernel-serve`` provisioner: its
    kernels live in a ``gkernel serve`` host, and the argv is not run.
    """
    spec = {
        "argv": [python or sys.executable, "-m", "gkernel", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        # Both modes reach a cell that spins the CPU; SIGINT also breaks a
        # blocking call outside gevent, which uses no CPU.
        "interrupt_mode": "signal",
        # 5.5: kernel subshells
        "kernel_protocol_version": PROTOCOL_VERSION,
        # JupyterLab offers its debugger for kernels whose spec says so (gkernel.debugger needs debugpy).
        "metadata": {"debugger": importlib.util.find_spec("debugpy") is not None,
                     "gkernel": {"version": __version__}},
    }
    if zmq.has("curve"):
        # jupyter_client then writes a CurveZMQ key pair into the connection info when its manager's
        # transport_encryption is "auto" or "required" (gkernel.transport; the provisioner for serve).
        spec["metadata"]["supported_encryption"] = ["curve"]
    if serve:
        # A host's kernels share its process: a signal cannot pick one of them.
        spec["interrupt_mode"] = "message"
        spec["metadata"]["kernel_provisioner"] = {"provisioner_name": "gkernel-serve"}
    return spec


def install(name=DEFAULT_NAME, display_name=None, user=False, prefix=None, serve=False):
    """Install the kernelspec; return the directory it was installed to."""
    from jupyter_client.kernelspec import KernelSpecManager

    default_display = "Python 3 (gkernel serve)" if serve else "Python 3 (gkernel)"
    spec = kernel_spec(display_name or default_display, serve=serve)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        for logo in LOGOS:
            with open(os.path.join(tmp, logo), "wb") as f:
                f.write((files(__package__) / "resources" / logo).read_bytes())
        # The spec is copied with its modes: a temporary directory's 0700 would hide it from the
        # other users of a --sys-prefix or --prefix install. A spec holds no secret.
        os.chmod(tmp, 0o755)
        for entry in os.listdir(tmp):
            os.chmod(os.path.join(tmp, entry), 0o644)
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
    gkernel install --user --serve     # kernels inside a gkernel serve host (kernelspec gkernel-serve)
    """
    kernel_name = Unicode("", help="Kernelspec name (a directory name; default gkernel, "
                                   "or gkernel-serve with --serve).").tag(config=True)
    display_name = Unicode("", help="Name shown in notebook front ends.").tag(config=True)
    serve = Bool(False, help="Start the kernels in a gkernel serve host (through the gkernel-serve "
                             "provisioner) instead of one process each.").tag(config=True)
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
        "serve": ({"InstallApp": {"serve": True}}, "Kernels live in a gkernel serve host (provisioner)."),
    }

    def start(self):
        if self.user and self.prefix:
            self.log.critical("choose one of --user and --prefix/--sys-prefix")
            self.exit(2)
        name = self.kernel_name or (f"{DEFAULT_NAME}-serve" if self.serve else DEFAULT_NAME)
        try:
            path = install(name, self.display_name or None, user=self.user, prefix=self.prefix or None,
                           serve=self.serve)
        except (OSError, ValueError) as exc:
            self.log.critical("cannot install kernelspec %r: %s", name, exc)
            self.exit(1)
        print(f"Installed kernelspec {name} in {path}")


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
