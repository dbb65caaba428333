"""The gevent runtime: threads, greenlets between cells, monkey-patching, heartbeat, SIGINT."""

import os
import socket
import time

import pytest

from conftest import execute, get_reply, result_of, start_kernel, stdout_of, stop_kernel

pytestmark = pytest.mark.timeout(90)


def thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return names


def test_only_the_heartbeat_thread(kernel):
    km, kc = kernel
    execute(kc, "x = [i for i in range(10)]\nprint(x)")
    get_reply(kc, kc.complete("import o"))
    get_reply(kc, kc.inspect("len"))
    get_reply(kc, kc.history(hist_access_type="tail", n=2))
    names = thread_names(km.provisioner.process.pid)
    zmq_threads = sorted(n for n in names if n.startswith("ZMQbg"))
    # one libzmq context (I/O thread + reaper), shared by the green sockets and the heartbeat
    assert zmq_threads == ["ZMQbg/IO/0", "ZMQbg/Reaper"]
    # the main thread (the hub) and the heartbeat thread: nothing else
    assert len(names) - len(zmq_threads) == 2, names


def test_an_idle_kernel_does_not_wake_up(kernel):
    """Nothing polls: fd-level output is noticed by the signal of its write, not by a timer."""
    km, kc = kernel
    execute(kc, "print('warm')")
    pid = km.provisioner.process.pid

    def switches():
        with open(f"/proc/{pid}/task/{pid}/status") as f:
            fields = dict(line.split(":\t") for line in f.read().splitlines() if "ctxt_switches" in line)
        return sum(int(value) for value in fields.values())

    before = switches()
    time.sleep(2)
    assert switches() - before < 20, "the idle kernel's main thread woke up (a 10 ms timer makes 200)"


def test_greenlet_keeps_running_between_cells(kc):
    execute(kc, "import gevent\nticks = []\n"
                "def ticker():\n    while True:\n        ticks.append(1)\n        gevent.sleep(0.02)\n"
                "ticker_glet = gevent.spawn(ticker)")
    first = int(result_of(kc, "len(ticks)"))
    time.sleep(0.5)  # the kernel is idle: only the hub runs
    assert int(result_of(kc, "len(ticks)")) >= first + 10
    execute(kc, "ticker_glet.kill()")


def test_gevent_server_serves_while_idle(kc):
    port = int(result_of(kc, """
from gevent.server import StreamServer
def echo(sock, addr):
    sock.sendall(b"echo:" + sock.recv(100))
    sock.close()
server = StreamServer(("127.0.0.1", 0), echo)
server.start()
server.server_port"""))
    for i in range(3):  # between cells, from outside the kernel
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"ping%d" % i)
            assert conn.recv(100) == b"echo:ping%d" % i
    execute(kc, "server.stop()")


def test_monkey_patched_by_default(kc):
    assert result_of(kc, "from gevent import monkey\n"
                         "all(monkey.is_module_patched(m) for m in ('socket', 'time', 'threading', 'select'))") == "True"
    # a blocking-looking time.sleep in a cell lets a background greenlet run
    reply, msgs = execute(kc, "import gevent, time\nseen = []\ng = gevent.spawn(lambda: seen.append(1))\n"
                              "time.sleep(0.1)\nprint(len(seen))")
    assert stdout_of(msgs) == "1\n"


def test_patch_all_in_a_cell_is_harmless(kc):
    reply, _ = execute(kc, "from gevent import monkey\nmonkey.patch_all()")
    assert reply["content"]["status"] == "ok"
    assert result_of(kc, "import gevent\ngevent.sleep(0.01)\n'still fine'") == "'still fine'"
    assert get_reply(kc, kc.kernel_info())["content"]["status"] == "ok"


def test_works_without_monkey_patching():
    km, kc = start_kernel("--no-monkey-patch")
    try:
        assert result_of(kc, "from gevent import monkey\nmonkey.is_module_patched('socket')") == "False"
        cell = kc.execute("import gevent\ngevent.sleep(1)\n'slept'")
        time.sleep(0.2)
        msg = kc.session.msg("kernel_info_request", {})
        kc.control_channel.send(msg)
        assert get_reply(kc, msg["header"]["msg_id"], channel="control")["content"]["status"] == "ok"
        assert get_reply(kc, cell)["content"]["status"] == "ok"
    finally:
        stop_kernel(km, kc)
