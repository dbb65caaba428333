"""The command line: install/uninstall, --help, connection files, configuration."""

import json
import os
import signal
import stat
import struct
import subprocess
import sys

import pytest
from jupyter_client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager

from conftest import GKERNEL, KERNEL_NAME, execute, outputs, wait_for

pytestmark = pytest.mark.timeout(60)


def run(*args, **kwargs):
    return subprocess.run([GKERNEL, *args], capture_output=True, text=True, timeout=30, **kwargs)


def test_install_and_uninstall_with_prefix(tmp_path):
    result = run("install", "--prefix", str(tmp_path), "--name", "gk-cli", "--display-name", "GK CLI")
    assert result.returncode == 0, result.stderr
    spec_dir = tmp_path / "share" / "jupyter" / "kernels" / "gk-cli"
    assert f"Installed kernelspec gk-cli in {spec_dir}" in result.stdout
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == [sys.executable, "-m", "gkernel", "-f", "{connection_file}"]
    assert spec["display_name"] == "GK CLI" and spec["language"] == "python"
    assert spec["interrupt_mode"] == "signal"
    assert spec["metadata"]["gkernel"]["version"]
    # Readable by the other users of the prefix, whatever the umask of whoever installed it.
    assert stat.S_IMODE(spec_dir.stat().st_mode) == 0o755
    for name in ("kernel.json", "logo-svg.svg", "logo-32x32.png", "logo-64x64.png"):
        assert stat.S_IMODE((spec_dir / name).stat().st_mode) == 0o644, name
    # The logos front ends show in their launchers: PNGs of the size their names say, and the SVG.
    for size in (32, 64):
        png = (spec_dir / f"logo-{size}x{size}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (size, size)
    assert (spec_dir / "logo-svg.svg").read_text().startswith("<svg ")
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "share" / "jupyter")}
    listed = subprocess.run([os.path.join(os.path.dirname(sys.executable), "jupyter"), "kernelspec", "list", "--json"],
                            capture_output=True, text=True, env=env, check=True)
    assert "gk-cli" in json.loads(listed.stdout)["kernelspecs"]
    result = run("uninstall", "--name", "gk-cli", env=env)
    assert result.returncode == 0, result.stderr
    assert not spec_dir.exists()
    result = run("uninstall", "--name", "gk-cli", env=env)
    assert result.returncode == 1 and "no kernelspec named 'gk-cli'" in result.stderr


def test_install_user_and_sys_prefix_locations(tmp_path):
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "user")}
    result = run("install", "--user", "--name", "gk-user", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "user" / "kernels" / "gk-user" / "kernel.json").exists()
    result = run("install", "--user", "--prefix", str(tmp_path))
    assert result.returncode == 2 and "choose one of --user and --prefix" in result.stderr
    result = run("install", "--sys-prefix", "--name", "gk-sys-prefix-test")
    assert result.returncode == 0, result.stderr
    spec_dir = os.path.join(sys.prefix, "share", "jupyter", "kernels", "gk-sys-prefix-test")
    try:
        assert os.path.exists(os.path.join(spec_dir, "kernel.json"))
        found = KernelSpecManager().find_kernel_specs()  # a venv's prefix is on Jupyter's path
        assert os.path.realpath(found["gk-sys-prefix-test"]) == os.path.realpath(spec_dir)
    finally:
        assert run("uninstall", "--name", "gk-sys-prefix-test").returncode == 0


def test_help_explains_options():
    top = run("--help")
    assert top.returncode == 0 and "kernel" in top.stdout and "install" in top.stdout
    kernel_help = run("kernel", "--help-all").stdout
    for option in ("--no-monkey-patch", "-f", "--GKernelApp.monkey_patch", "--IPCompleter.use_jedi",
                   "--HistoryManager.hist_file", "--Kernel.stream_flush_interval"):
        assert option in kernel_help, option
    # The short help too: its aliases name the IPython shell's options (--profile), imported only for help.
    for command in ("kernel", "serve"):
        short = run(command, "--help")
        assert short.returncode == 0 and "--profile=" in short.stdout and "Traceback" not in short.stderr, short.stderr
    assert "--encrypt" in run("kernel", "--help").stdout
    install_help = run("install", "--help").stdout
    for option in ("--user", "--sys-prefix", "--prefix", "--name", "--display-name"):
        assert option in install_help, option
    assert run().returncode == 2  # no subcommand: help and a usage error


def own_file_kernel(tmp_path, env):
    """Start ``python -m gkernel`` without -f; return the process and its connection file path."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), **env}
    proc = subprocess.Popen([sys.executable, "-m", "gkernel"], env=env, stderr=subprocess.PIPE, text=True)
    path = tmp_path / f"kernel-{proc.pid}.json"
    assert wait_for(path.exists)
    return proc, path


def result_via_file(path, code):
    """Attach a client through connection file *path*, run *code*, return its text/plain result."""
    kc = BlockingKernelClient(connection_file=str(path))
    kc.load_connection_file()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=20)
        _, msgs = execute(kc, code)
        return outputs(msgs, "execute_result")[0]["data"]["text/plain"]
    finally:
        kc.stop_channels()


def test_kernel_writes_its_own_connection_file(tmp_path):
    proc, path = own_file_kernel(tmp_path, {})
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        info = json.loads(path.read_text())
        assert info["ip"] == "127.0.0.1" and len(info["key"]) >= 32
        assert result_via_file(path, "21 * 2") == "42"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"jupyter console --existing {path}" in err
    assert not path.exists()  # the kernel chose the file, so it removes it


def test_missing_connection_file_is_written_and_kept(tmp_path):
    path = tmp_path / "given.json"
    proc = subprocess.Popen([GKERNEL, "kernel", "-f", str(path)], stderr=subprocess.DEVNULL)
    try:
        assert wait_for(path.exists)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0 and path.exists()  # named by the client: the client's to remove


def test_unreadable_connection_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    result = subprocess.run([sys.executable, "-m", "gkernel", "-f", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot read connection file {path}" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_is_honoured(tmp_path):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "gkernel_config.py").write_text("c.GKernelApp.monkey_patch = False\n")
    proc, path = own_file_kernel(tmp_path, {"JUPYTER_CONFIG_DIR": str(config_dir)})
    try:
        assert result_via_file(path, "from gevent import monkey\nmonkey.is_module_patched('socket')") == "False"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_kernel_ends_when_its_launcher_dies(tmp_path):
    """A client killed without shutting its kernel down must not leave the kernel running."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import os, subprocess\n"
        "from jupyter_client.manager import KernelManager\n"
        f"km = KernelManager(kernel_name={KERNEL_NAME!r})\n"
        "km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=30)\n"
        "print(km.provisioner.process.pid, flush=True)\n"
        "os._exit(0)  # dies without a word to its kernel\n")
    done = subprocess.run([sys.executable, str(launcher)], capture_output=True, text=True, timeout=60)
    kernel_pid = int(done.stdout.split()[-1])

    def gone():
        try:
            os.kill(kernel_pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{kernel_pid}/stat") as f:
            return f.read().split()[2] == "Z"  # exited, not yet reaped
    try:
        assert wait_for(gone, timeout=15), "the orphaned kernel kept running"
    finally:
        if not gone():
            os.kill(kernel_pid, signal.SIGKILL)
