"""Shared fixtures: an isolated Jupyter environment and real gkernel subprocesses.

Every test drives kernels over real sockets with jupyter_client. The
kernelspec is installed by ``gkernel install --prefix`` into a temporary
prefix that JUPYTER_PATH points at, so the tests also exercise installation
and never touch the user's own Jupyter directories.
"""

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import tarfile
import time
import urllib.parse
import urllib.request
from importlib.metadata import PackageNotFoundError, version

import pytest

_root = tempfile.mkdtemp(prefix="gkernel-tests-")
for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                 ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
    os.environ[var] = os.path.join(_root, sub)
os.environ["JUPYTER_PATH"] = os.path.join(_root, "prefix", "share", "jupyter")
os.environ["JUPYTER_PLATFORM_DIRS"] = "1"

GKERNEL = os.path.join(os.path.dirname(sys.executable), "gkernel")
KERNEL_NAME = "gkernel-test"
SERVE_KERNEL_NAME = "gkernel-test-serve"
TIMEOUT = 15


def pytest_configure(config):
    for name, extra in ((KERNEL_NAME, []), (SERVE_KERNEL_NAME, ["--serve"])):
        subprocess.run([GKERNEL, "install", "--prefix", os.path.join(_root, "prefix"), "--name", name, *extra],
                       check=True, capture_output=True)


def pytest_unconfigure(config):
    """Stop gkernel serve hosts the provisioner started on demand (they are detached)."""
    from gkernel.manage import HostClient, HostError, find_host_file

    while (path := find_host_file()) is not None:
        try:
            client = HostClient(path, timeout=5)
            client.stop()
            client.close()
        except HostError:
            break
        deadline = time.monotonic() + 10
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
    shutil.rmtree(_root, ignore_errors=True)


def start_kernel(*extra_arguments, stdout=None):
    """Start a gkernel subprocess through its kernelspec; return (manager, client).

    *stdout*: a file for the kernel process's own stdout.
    """
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=30,
                            extra_arguments=list(extra_arguments), stdout=stdout)


def wait_for(predicate, timeout=20):
    """Poll *predicate* until it is true (True) or *timeout* seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def stop_kernel(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_kernel()
    yield km, kc
    stop_kernel(km, kc)


@pytest.fixture(scope="module")
def kc(kernel):
    return kernel[1]


def flush_iopub(kc):
    """Drop IOPub messages left over by earlier requests."""
    while True:
        try:
            kc.get_iopub_msg(timeout=0.2)
        except Exception:
            return


def collect_iopub(kc, msg_id, timeout=TIMEOUT):
    """IOPub messages of request *msg_id* from ``busy`` to ``idle`` (both included).

    Asserts the wire contract: the first message of the request is status busy,
    the last is status idle, and every message in between has the request as
    parent.
    """
    msgs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    assert msgs[0]["msg_type"] == "status" and msgs[0]["content"]["execution_state"] == "busy"
    return msgs


def get_reply(kc, msg_id, channel="shell", timeout=TIMEOUT):
    get = kc.get_shell_msg if channel == "shell" else kc.get_control_msg
    while True:
        reply = get(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def ready(*clients, timeout=60):
    """What ``wait_for_ready`` makes sure of, for many clients at once and without its closing 0.2 s of
    IOPub flushing (20 s for a hundred kernels): each kernel answered ``kernel_info`` and the client got the
    request's ``status: idle`` on IOPub (its subscription is live; else, as there, the request is sent again)."""
    deadline = time.monotonic() + timeout
    requests = {kc: kc.kernel_info() for kc in clients}
    for kc in clients:
        msg_id = requests[kc]
        while True:
            assert time.monotonic() < deadline, "no kernel_info_reply with its IOPub messages in time"
            assert get_reply(kc, msg_id, timeout=max(1, deadline - time.monotonic()))["msg_type"] == \
                "kernel_info_reply"
            if _idle_arrives(kc, msg_id, within=2):
                break
            msg_id = kc.kernel_info()


def _idle_arrives(kc, msg_id, within):
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=within)
        except queue.Empty:
            return False
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                and msg["content"]["execution_state"] == "idle":
            return True


def execute(kc, code, **kwargs):
    """Run *code*; return (execute_reply, IOPub messages between busy and idle, excluded)."""
    msg_id = kc.execute(code, **kwargs)
    reply = get_reply(kc, msg_id)
    msgs = collect_iopub(kc, msg_id)
    return reply, msgs[1:-1]


def result_of(kc, code):
    """Run *code*, assert it succeeded, return its execute_result's text/plain."""
    reply, msgs = execute(kc, code)
    assert reply["content"]["status"] == "ok", reply["content"]
    return outputs(msgs, "execute_result")[0]["data"]["text/plain"]


def outputs(msgs, msg_type="stream", name=None):
    return [m["content"] for m in msgs
            if m["msg_type"] == msg_type and (name is None or m["content"].get("name") == name)]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text):
    """*text* without terminal colours (IPython colours tracebacks and help)."""
    return _ANSI.sub("", text)


def stdout_of(msgs):
    return "".join(c["text"] for c in outputs(msgs, "stream", "stdout"))


class Host:
    """A ``gkernel serve`` subprocess and a management client for it."""

    def __init__(self, tmp_path, *args, name="host.json"):
        from gkernel.manage import HostClient

        self.host_file = str(tmp_path / name)
        self.log = open(tmp_path / "host.log", "w")
        self.proc = subprocess.Popen([GKERNEL, "serve", "--host-file", self.host_file, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_for(lambda: os.path.exists(self.host_file)), "the host wrote no host file"
        self.api = HostClient(self.host_file)
        self.clients = []

    def kernel(self):
        """Create a kernel through the API; return (kernel id, ready BlockingKernelClient)."""
        from jupyter_client import BlockingKernelClient

        kernel = self.api.create()
        kc = BlockingKernelClient()
        kc.load_connection_info(kernel["connection"])
        kc.start_channels()
        ready(kc, timeout=30)
        self.clients.append(kc)
        return kernel["id"], kc

    def close(self):
        for kc in self.clients:
            kc.stop_channels()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # never leave a host behind for the next tests
                self.proc.wait()
                raise
        self.api.close()
        self.log.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterServer:
    """A ``python -m <module>`` Jupyter server (jupyter_server, jupyterlab) without authentication,
    on a free loopback port, serving *root*; *args* are more options, *env* its environment."""

    def __init__(self, root, module="jupyter_server", args=(), env=None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(root, f"{module}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--no-browser", "--allow-root", f"--port={self.port}",
             "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
             "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}", *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            assert wait_for(self._up, timeout=60), f"{module} did not start: see {self.log_path}"
        except BaseException:
            self.close()
            raise

    def _up(self):
        assert self.proc.poll() is None, f"the server exited: see {self.log_path}"
        try:
            self.rest("GET", "/api/status")
            return True
        except OSError:
            return False

    def rest(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def host(tmp_path):
    """A ``gkernel serve`` host for one test."""
    host = Host(tmp_path)
    yield host
    host.close()


def sdist(package, parts, release=None):
    """Files of *package*'s source distribution from PyPI: the folder it unpacks to.

    *parts* are the paths (folders end with ``/``) to extract; *release*
    defaults to the installed version. The archive is checked against the
    sha256 PyPI lists and cached in the venv, so tests can run other
    projects' own test files and notebooks without copying them here.
    """
    if release is None:
        try:
            release = version(package)
        except PackageNotFoundError:
            raise AssertionError(f"{package} is not installed (a test dependency)") from None
    cache = os.path.join(sys.prefix, "cache")
    root = os.path.join(cache, f"{package}-{release}")
    if os.path.isdir(root):
        return root
    index = f"https://pypi.org/pypi/{package}/json"
    with urllib.request.urlopen(index, timeout=60) as response:
        entry = next(u for u in json.load(response)["releases"][release] if u["packagetype"] == "sdist")
    with urllib.request.urlopen(urllib.parse.urljoin(index, entry["url"]), timeout=120) as response:
        data = response.read()
    assert hashlib.sha256(data).hexdigest() == entry["digests"]["sha256"], f"{package} sdist does not match PyPI"
    os.makedirs(cache, exist_ok=True)
    archive = os.path.join(cache, entry["filename"])
    with open(archive, "wb") as f:
        f.write(data)
    prefixes = tuple(f"{os.path.basename(root)}/{part}" for part in parts)
    with tarfile.open(archive) as tar:
        tar.extractall(cache, members=[m for m in tar.getmembers() if m.name.startswith(prefixes)], filter="data")
    return root
