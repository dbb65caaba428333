"""Interrupts in both modes, exits, escaping greenlet errors, and the heartbeat under load."""

import os
import signal
import time

import pytest
import zmq

from conftest import collect_iopub, execute, get_reply, outputs, plain, result_of, start_kernel, wait_for

pytestmark = pytest.mark.timeout(60)

BLOCKING_KINDS = {
    "gevent.sleep": "import gevent\ngevent.sleep(30)",
    "socket accept": "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\ns.accept()",
    "queue get": "import gevent.queue\ngevent.queue.Queue().get()",
    "input()": "input('never answered: ')",
    "CPU loop": "while True:\n    pass",
    "os.system": "import os\nos.system('sleep 30')",
}


def interrupt(km, kc, mode):
    if mode == "signal":
        km.interrupt_kernel()  # the kernelspec's interrupt_mode: SIGINT
        return None
    request = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(request)  # what a manager in interrupt_mode "message" sends
    return request["header"]["msg_id"]


@pytest.mark.parametrize("mode", ["signal", "message"])
@pytest.mark.parametrize("kind", BLOCKING_KINDS)
def test_interrupt_reaches_the_cell(kernel, mode, kind):
    km, kc = kernel
    execute(kc, "import gevent\nbeats = []\nbeater = gevent.spawn(lambda: [beats.append(gevent.sleep(0.01)) "
                "for _ in range(10**6)])")
    cell = kc.execute(BLOCKING_KINDS[kind], allow_stdin=True)
    queued = kc.execute("print('must be aborted')")
    time.sleep(0.4)
    start = time.monotonic()
    control_id = interrupt(km, kc, mode)
    reply = get_reply(kc, cell, timeout=5)
    elapsed = time.monotonic() - start
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert elapsed < 1, f"interrupt took {elapsed:.3f} s"
    if control_id:
        assert get_reply(kc, control_id, "control")["content"] == {"status": "ok"}
    error = outputs(collect_iopub(kc, cell), "error")
    assert error and error[0]["ename"] == "KeyboardInterrupt"
    assert get_reply(kc, queued)["content"]["status"] == "aborted"  # stop_on_error
    collect_iopub(kc, queued)
    # Background greenlets go on, and the kernel answers as before.
    assert result_of(kc, "n = len(beats)\ngevent.sleep(0.1)\nlen(beats) > n and not beater.dead") == "True"


def test_an_interrupted_os_system_ends_its_command(kernel, tmp_path):
    # The command runs in a session of its own: the interrupt reaches it through the waiting greenlet.
    km, kc = kernel
    pidfile = tmp_path / "pid"
    cell = kc.execute(f"import os\nos.system('echo $$ > {pidfile}; sleep 30; echo never')")
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10)
    group = int(pidfile.read_text())
    interrupt(km, kc, "message")
    assert get_reply(kc, cell, timeout=5)["content"]["ename"] == "KeyboardInterrupt"

    def ended():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        return False

    assert wait_for(ended, timeout=3), "the command's process group outlived the interrupt"
    assert "never" not in "".join(c["text"] for c in outputs(collect_iopub(kc, cell)))


@pytest.mark.parametrize("mode", ["signal", "message"])
def test_interrupt_while_idle_is_harmless(kernel, mode):
    km, kc = kernel
    control_id = interrupt(km, kc, mode)
    if control_id:
        assert get_reply(kc, control_id, "control")["content"] == {"status": "ok"}
    time.sleep(0.2)
    assert result_of(kc, "1 + 1") == "2"
    assert km.is_alive()


def test_heartbeat_answers_within_50ms_while_a_cell_spins_10s(kernel):
    km, kc = kernel
    info = km.get_connection_info()
    hb = zmq.Context.instance().socket(zmq.REQ)
    hb.linger = 0
    hb.connect(f"tcp://{info['ip']}:{info['hb_port']}")
    try:
        cell = kc.execute("import time\nend = time.perf_counter() + 10\nwhile time.perf_counter() < end: pass")
        time.sleep(0.2)
        rtts = []
        deadline = time.monotonic() + 9.5
        while time.monotonic() < deadline:
            start = time.perf_counter()
            hb.send(b"ping")
            assert hb.poll(1000), "heartbeat did not answer within 1 s"
            assert hb.recv() == b"ping"
            rtts.append(time.perf_counter() - start)
            time.sleep(0.05)
        assert len(rtts) > 100
        assert max(rtts) < 0.05, f"slowest heartbeat {max(rtts) * 1000:.1f} ms"
        assert get_reply(kc, cell, timeout=10)["content"]["status"] == "ok"
    finally:
        hb.close()


def test_exit_replies_then_ends_the_kernel():
    km, kc = start_kernel()
    try:
        reply, _ = execute(kc, "exit()")
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["payload"] == [{"source": "ask_exit", "keepkernel": False}]
        deadline = time.monotonic() + 10
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not km.is_alive()
        assert km.provisioner.process.wait(timeout=5) == 0
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_quit_keep_kernel_and_sys_exit_keep_the_kernel(kc):
    reply, _ = execute(kc, "quit(keep_kernel=True)")
    assert reply["content"]["payload"] == [{"source": "ask_exit", "keepkernel": True}]
    reply, msgs = execute(kc, "import sys\nsys.exit(3)")
    assert reply["content"]["status"] == "error"
    assert (reply["content"]["ename"], reply["content"]["evalue"]) == ("SystemExit", "3")
    assert result_of(kc, "'still alive'") == "'still alive'"


def test_errors_escaping_greenlets_are_reported_to_their_cell(kc):
    msg_id = kc.execute("import gevent, sys\n"
                        "def fail():\n"
                        "    gevent.sleep(0.2)\n"
                        "    1 / 0\n"
                        "gevent.spawn(fail)\n"
                        "gevent.spawn(sys.exit, 4)\n"
                        "gevent.spawn(lambda: (_ for _ in ()).throw(KeyboardInterrupt))")
    collect_iopub(kc, msg_id)
    get_reply(kc, msg_id)
    texts = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("ZeroDivisionError" in t for t in texts):
        msg = kc.get_iopub_msg(timeout=5)
        if msg["msg_type"] == "stream":
            assert msg["content"]["name"] == "stderr"
            assert msg["parent_header"]["msg_id"] == msg_id
            texts.append(msg["content"]["text"])
    report = plain("".join(texts))
    assert "Cell In[" in report and "1 / 0" in report and "ZeroDivisionError" in report
    assert "gevent/greenlet.py" not in report  # the report starts at the user's frames
    assert "SystemExit: 4" in report and "failed with KeyboardInterrupt" in report
    assert result_of(kc, "'survived'") == "'survived'"


def test_sigterm_ends_the_kernel_cleanly(tmp_path):
    km, kc = start_kernel()
    connection_file = km.connection_file
    try:
        execute(kc, "import gevent\ng = gevent.spawn(gevent.sleep, 60)")
        km.signal_kernel(signal.SIGTERM)
        assert km.provisioner.process.wait(timeout=10) == 0
        assert os.path.exists(connection_file), "the client's connection file must stay"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
