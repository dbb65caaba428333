"""The green client drives real gkernel and ipykernel subprocesses from greenlets, with no OS thread of its own."""

import json
import logging
import os
import queue
import resource
import signal
import time

import gevent
import pytest
import zmq
import zmq.green
from jupyter_client.session import Session
from traitlets import TraitError

from conftest import KERNEL_NAME, Host
from gkernel.client import (
    ConnectionFileError, GreenKernelClient, GreenKernelManager, KernelDiedError, KernelTimeoutError,
    ProvisionerError, start_new_kernel,
)
from gkernel.client.manager import _completed

pytestmark = pytest.mark.timeout(120)

KERNELS = [KERNEL_NAME, "python3"]  # gkernel and ipykernel


def os_threads():
    return len(os.listdir("/proc/self/task"))


def thread_counter():
    """A check that no OS thread started since this call. The shared zmq.green
    context's libzmq threads start with its first socket, so one is made first."""
    zmq.green.Context.instance().socket(zmq.PUB).close()
    before = os_threads()
    return lambda: os_threads() == before


@pytest.fixture
def no_new_thread():
    """Assert that the test started no OS thread."""
    unchanged = thread_counter()
    yield unchanged
    assert unchanged()


@pytest.fixture(params=KERNELS)
def kernel(request, no_new_thread):
    km, kc = start_new_kernel(kernel_name=request.param, startup_timeout=60)
    assert no_new_thread()
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel()
    assert not km.is_alive()


def test_execute_interactive_on_the_wire(kernel):
    km, kc = kernel
    seen = []
    reply = kc.execute_interactive("print('out'); 6 * 7", output_hook=seen.append, timeout=20)
    msg_id = reply["parent_header"]["msg_id"]
    assert reply["msg_type"] == "execute_reply" and reply["content"]["status"] == "ok"
    assert [m["msg_type"] for m in seen] == ["status", "execute_input", "stream", "execute_result", "status"]
    assert all(m["parent_header"]["msg_id"] == msg_id for m in seen)
    assert seen[2]["content"] == {"name": "stdout", "text": "out\n"}
    assert seen[3]["content"]["data"]["text/plain"] == "42"
    assert seen[-1]["content"]["execution_state"] == "idle"


def test_request_reply_methods(kernel):
    km, kc = kernel
    info = kc.kernel_info(reply=True, timeout=10)
    assert info["msg_type"] == "kernel_info_reply" and info["content"]["language_info"]["name"] == "python"
    kc.execute_interactive("alpha_value = 1", output_hook=lambda m: None, timeout=20)
    complete = kc.complete("alpha_v", reply=True, timeout=10)
    assert "alpha_value" in complete["content"]["matches"]
    inspect = kc.inspect("len", reply=True, timeout=10)
    assert inspect["msg_type"] == "inspect_reply" and inspect["content"]["found"]
    assert kc.is_complete("for x in y:", reply=True, timeout=10)["content"]["status"] == "incomplete"
    assert kc.comm_info(reply=True, timeout=10)["msg_type"] == "comm_info_reply"
    history = kc.history(hist_access_type="tail", n=5, reply=True, timeout=10)
    assert any("alpha_value = 1" in entry[2] for entry in history["content"]["history"])


def test_input_waits_cooperatively(kernel):
    """input() and getpass reach the stdin hook; other greenlets of the client run while it answers."""
    km, kc = kernel
    ticks = []

    def tick():
        while True:
            gevent.sleep(0.02)
            ticks.append(time.monotonic())

    ticker = gevent.spawn(tick)
    requests = []

    def answer(msg):
        requests.append(msg)
        gevent.sleep(0.3)  # a slow user; the ticker keeps going
        kc.input("secret" if msg["content"]["password"] else "gevent")

    code = "import getpass\nname = input('name? ')\npw = getpass.getpass('pw? ')\nprint(name, pw)"
    seen = []
    reply = kc.execute_interactive(code, output_hook=seen.append, stdin_hook=answer, timeout=20)
    ticker.kill()
    assert reply["content"]["status"] == "ok"
    assert [(r["msg_type"], r["content"]["prompt"], r["content"]["password"]) for r in requests] == [
        ("input_request", "name? ", False), ("input_request", "pw? ", True)]
    assert all(r["parent_header"]["msg_id"] == reply["parent_header"]["msg_id"] for r in requests)
    assert "gevent secret\n" in "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
    assert len(ticks) > 20


def test_interrupt_and_restart(kernel):
    km, kc = kernel
    running = gevent.spawn(kc.execute_interactive, "import time; time.sleep(30)",
                           output_hook=lambda m: None, timeout=20)
    gevent.sleep(1)
    started = time.monotonic()
    km.interrupt_kernel()
    reply = running.get(timeout=10)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 5
    kc.execute_interactive("kept = 1", output_hook=lambda m: None, timeout=20)
    km.restart_kernel()
    kc.wait_for_ready(timeout=60)
    reply = kc.execute_interactive("kept", output_hook=lambda m: None, timeout=20)
    assert reply["content"]["ename"] == "NameError"


def test_interrupt_by_message(tmp_path, no_new_thread):
    """A kernelspec with interrupt_mode message gets an interrupt_request on control."""
    spec_dir = os.path.join(os.environ["JUPYTER_PATH"], "kernels", "gkernel-test-message")
    os.makedirs(spec_dir, exist_ok=True)
    with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
        spec = json.load(open(os.path.join(os.environ["JUPYTER_PATH"], "kernels", KERNEL_NAME, "kernel.json")))
        json.dump(dict(spec, interrupt_mode="message"), f)
    km, kc = start_new_kernel(kernel_name="gkernel-test-message", startup_timeout=60)
    try:
        running = gevent.spawn(kc.execute_interactive, "while True: pass", output_hook=lambda m: None, timeout=20)
        gevent.sleep(0.5)
        km.interrupt_kernel()
        assert running.get(timeout=10)["content"]["ename"] == "KeyboardInterrupt"
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def test_many_kernels_many_greenlets(tmp_path):
    """100 kernels (one gkernel serve host) driven at once by 100 greenlets, each seeing only its own output."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # about a dozen fds per client, as README says
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host = Host(tmp_path, "--max-kernels=200")
    try:
        infos = [host.api.create()["connection"] for _ in range(100)]
        unchanged = thread_counter()  # after the (native, blocking) management client made its threads

        def drive(n, info):
            kc = GreenKernelClient()
            kc.load_connection_info(info)
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=60)
                seen = []
                reply = kc.execute_interactive(f"import gevent; gevent.sleep(0.5); print('kernel', {n})",
                                               output_hook=seen.append, timeout=60)
                assert reply["content"]["status"] == "ok" and unchanged()
                return "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream")
            finally:
                kc.stop_channels()

        started = time.monotonic()
        drivers = [gevent.spawn(drive, n, info) for n, info in enumerate(infos)]
        gevent.joinall(drivers, timeout=90, raise_error=True)
        assert [g.value for g in drivers] == [f"kernel {n}\n" for n in range(100)]
        assert time.monotonic() - started < 60 and unchanged()
    finally:
        host.close()


def test_managers_start_concurrently(no_new_thread):
    """Six kernel processes, gkernel and ipykernel, started and stopped by six greenlets at once."""

    def lifecycle(name):
        km, kc = start_new_kernel(kernel_name=name, startup_timeout=60)
        try:
            return kc.execute_interactive("print(2 + 2)", output_hook=lambda m: None, timeout=30)["content"]["status"]
        finally:
            kc.stop_channels()
            km.shutdown_kernel()

    jobs = [gevent.spawn(lifecycle, name) for name in KERNELS * 3]
    gevent.joinall(jobs, timeout=100, raise_error=True)
    assert [job.value for job in jobs] == ["ok"] * 6


def test_dead_kernel_is_reported(no_new_thread):
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60)
    try:
        with pytest.raises(KernelDiedError, match="died while waiting"):
            kc.execute_interactive("import os; os._exit(3)", output_hook=lambda m: None, timeout=30)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_dead_kernel_without_manager_via_heartbeat(no_new_thread):
    """A client made from connection info alone learns of the death from the heartbeat."""
    km, launcher = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60)
    launcher.stop_channels()
    kc = GreenKernelClient()
    kc.load_connection_file(km.connection_file)
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        gevent.spawn_later(0.5, km.signal_kernel, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(KernelDiedError):
            kc.execute_interactive("import time; time.sleep(60)", output_hook=lambda m: None)
        assert time.monotonic() - started < 10
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_timeouts_are_documented_exceptions():
    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60)
    try:
        with pytest.raises(KernelTimeoutError) as raised:
            kc.execute_interactive("import time; time.sleep(3)", output_hook=lambda m: None, timeout=0.5)
        assert isinstance(raised.value, TimeoutError) and isinstance(raised.value, queue.Empty)
        with pytest.raises(queue.Empty):
            kc.get_shell_msg(timeout=0.1)
        with pytest.raises(TimeoutError):
            kc.kernel_info(reply=True, timeout=0.5)  # the kernel still sleeps: no reply in time
        # The client stays usable: the late replies are skipped by the next request.
        assert kc.kernel_info(reply=True, timeout=10)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def test_bad_connection_files(tmp_path):
    kc = GreenKernelClient()
    with pytest.raises(ConnectionFileError, match="cannot read connection file .*No such file"):
        kc.load_connection_file(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConnectionFileError, match="is not JSON"):
        kc.load_connection_file(str(tmp_path / "broken.json"))
    (tmp_path / "partial.json").write_text(json.dumps({"shell_port": 1, "key": "k"}))
    with pytest.raises(ConnectionFileError, match="lacks iopub_port, stdin_port, control_port, hb_port"):
        kc.load_connection_file(str(tmp_path / "partial.json"))


def test_native_context_refused():
    with pytest.raises(TraitError, match="zmq.green.Context"):
        GreenKernelClient(context=zmq.Context())


def test_provisioner_that_waits_on_asyncio_is_refused():
    import asyncio

    async def waits():
        await asyncio.sleep(0.01)

    async def finishes():
        return 5

    assert _completed(finishes()) == 5
    with pytest.raises(ProvisionerError, match="waits on an asyncio loop"):
        _completed(waits())


def test_forged_messages_are_dropped(caplog):
    """A message with a bad signature never reaches get_*_msg; the next good one does."""
    context = zmq.green.Context.instance()
    kernel_session, forger = Session(key=b"right"), Session(key=b"wrong")
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    kc = GreenKernelClient(session=Session(key=b"right"), ip="127.0.0.1", iopub_port=port)
    kc.start_channels(shell=False, stdin=False, hb=False, control=False)
    try:
        gevent.sleep(0.3)  # let the subscription reach the PUB socket
        with caplog.at_level(logging.WARNING):
            forger.send(pub, "stream", {"name": "stdout", "text": "forged"})
            kernel_session.send(pub, "stream", {"name": "stdout", "text": "genuine"})
            assert kc.get_iopub_msg(timeout=5)["content"]["text"] == "genuine"
        assert "dropped a message" in caplog.text
    finally:
        kc.stop_channels()
        pub.close(linger=0)


def test_green_manager_uses_the_kernelspec(no_new_thread):
    km = GreenKernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel()
    try:
        assert km.is_alive() and km.kernel_spec.language == "python"
        assert os.stat(km.connection_file).st_mode & 0o077 == 0
        kc = km.client()
        assert isinstance(kc, GreenKernelClient) and kc.parent is km
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        kc.stop_channels()
    finally:
        km.shutdown_kernel()
    assert not km.is_alive() and not os.path.exists(km.connection_file)
