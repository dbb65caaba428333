"""Output capture on the wire: ordering, fd-level output, forks, threads, IPython.display."""

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import (collect_iopub, execute, get_reply, outputs, result_of, start_kernel,
                      stdout_of, stop_kernel, wait_for)

pytestmark = pytest.mark.timeout(90)


def streams_in_order(msgs):
    """[(name, text)] of the stream messages, in arrival order."""
    return [(c["name"], c["text"]) for c in outputs(msgs, "stream")]


def text_of(msgs, name):
    return "".join(text for n, text in streams_in_order(msgs) if n == name)


def test_100k_numbered_lines_arrive_complete_and_in_order(kc):
    # collect_iopub asserts they all come between busy and idle, with the request as parent.
    reply, msgs = execute(kc, "for i in range(100_000):\n    print(i)")
    assert reply["content"]["status"] == "ok"
    assert stdout_of(msgs) == "".join(f"{i}\n" for i in range(100_000))
    assert len(outputs(msgs, "stream")) < 100, "lines are batched into few messages"


def test_interleaved_stdout_and_stderr_keep_write_order(kc):
    _, msgs = execute(kc, "import sys\n"
                          "for i in range(300):\n"
                          "    print(i, file=sys.stderr if i % 3 == 0 else sys.stdout)")
    lines = [(name, line) for name, text in streams_in_order(msgs) for line in text.splitlines()]
    assert lines == [("stderr" if i % 3 == 0 else "stdout", str(i)) for i in range(300)]


def test_mixed_python_and_fd_writes_keep_order(kc):
    _, msgs = execute(kc, "import os, sys\n"
                          "for i in range(500):\n"
                          "    if i % 2:\n"
                          "        os.write(1, f'{i}\\n'.encode())\n"
                          "    else:\n"
                          "        print(i)\n"
                          "    print(f'e{i}', file=sys.stderr) if i % 50 == 0 else None")
    assert text_of(msgs, "stdout") == "".join(f"{i}\n" for i in range(500))
    assert text_of(msgs, "stderr") == "".join(f"e{i}\n" for i in range(0, 500, 50))


def test_fd_output_on_one_stream_goes_before_a_print_on_the_other_and_is_not_held_back(kc):
    # Both files share one write signal: reading for a print to stdout reads fd 2 as well (it
    # had nothing left to signal it: found by hand, the stderr line came when the cell ended).
    msg_id = kc.execute("import os, sys, time\n"
                        "os.write(2, b'fd err\\n')\n"
                        "print('python out')\n"
                        "time.sleep(1.5)\n"
                        "os.write(1, b'fd out\\n')\n"
                        "sys.stderr.write('python err\\n')\n")
    start, arrivals = time.monotonic(), []
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            arrivals += [(line, time.monotonic() - start) for line in msg["content"]["text"].splitlines()]
        if msg.get("content", {}).get("execution_state") == "idle":
            break
    assert [line for line, _ in arrivals] == ["fd err", "python out", "fd out", "python err"]
    assert arrivals[0][1] < 1.0, f"fd 2's line was held back: {arrivals}"
    get_reply(kc, msg_id)


def test_output_of_waited_for_children_and_threads_goes_before_the_next_print(kc):
    # os.system and a native thread's lock block the hub's thread: nothing reads the file
    # meanwhile. What keeps the order is the write signal (gkernel.fdcapture), seen before each write.
    _, msgs = execute(kc, "import os, sys\n"
                          "from gevent.monkey import get_original\n"
                          "start_thread, new_lock = get_original('_thread', ['start_new_thread', 'allocate_lock'])\n"
                          "def write_and_release(text, done):\n"
                          "    os.write(1, text.encode())\n"
                          "    done.release()\n"
                          "for i in range(40):\n"
                          "    os.system(f'echo child {i}')\n"
                          "    print(f'python {i}')\n"
                          "    done = new_lock()\n"
                          "    done.acquire()\n"
                          "    start_thread(write_and_release, (f'thread {i}\\n', done))\n"
                          "    done.acquire()\n"
                          "    sys.stdout.write(f'python again {i}\\n')\n")
    assert text_of(msgs, "stdout") == "".join(f"child {i}\npython {i}\nthread {i}\npython again {i}\n"
                                              for i in range(40))


CAPTURE_ORDER_SCRIPT = """
import os, sys
from gkernel.fdcapture import FdCapture, WriteSignal
received = []
capture = FdCapture(1, lambda text, target: received.append(text))
if sys.argv[1] == "signal":
    WriteSignal([capture])
for i in range(50):
    os.write(1, f"fd {i}\\n".encode()) if i % 2 else os.system(f"echo child {i}")
    if capture.unread:  # what the stream router asks before each write
        capture.poll()
    received.append(f"python {i}\\n")
    capture.poll()
    received.append(f"unread after a poll: {capture.unread}\\n")
capture.close()
sys.stderr.write("".join(received))
"""


@pytest.mark.parametrize("mode", ["signal", "no signal"])
def test_fd_capture_keeps_order_with_and_without_the_write_signal(mode):
    # Without a WriteSignal (no inotify: its per-user limit), every write asks the file instead.
    proc = subprocess.run([sys.executable, "-c", CAPTURE_ORDER_SCRIPT, mode], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    expected = "".join(f"{'fd' if i % 2 else 'child'} {i}\npython {i}\nunread after a poll: {mode != 'signal'}\n"
                       for i in range(50))
    assert proc.stderr == expected


def test_fd_output_written_outside_any_request_arrives_without_polling(kc):
    # A background child writes while the kernel is idle: the hub reads when the file is
    # written (not on a timer), and the text goes to the cell that started the child.
    msg_id = kc.execute("import subprocess\n"
                        "subprocess.Popen(['sh', '-c', 'sleep 0.5; echo late from the child'])")
    start = time.monotonic()
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["msg_type"] == "stream":
            break
    assert msg["parent_header"]["msg_id"] == msg_id
    assert msg["content"]["text"] == "late from the child\n"
    assert 0.5 <= time.monotonic() - start < 1.5
    get_reply(kc, msg_id)


def test_fd_level_output_reaches_the_cell(kc):
    _, msgs = execute(kc, "import os, subprocess, ctypes\n"
                          "os.write(1, b'os.write\\n')\n"
                          "os.write(2, b'os.write to 2\\n')\n"
                          "os.system('echo from-system; echo system-err >&2')\n"
                          "subprocess.run(['echo', 'from-subprocess'])\n"
                          "os.system('echo appended >> /dev/stdout')\n"
                          "os.system('echo truncating > /dev/stdout')  # refused: it would lose output\n"
                          "ctypes.CDLL(None).printf(b'from C printf\\n')\n"
                          "print('python', flush=True)")
    assert text_of(msgs, "stdout") == "os.write\nfrom-system\nfrom-subprocess\nappended\nfrom C printf\npython\n"
    stderr = text_of(msgs, "stderr")
    assert stderr.startswith("os.write to 2\nsystem-err\n")
    assert "/dev/stdout" in stderr and "not permitted" in stderr
    assert result_of(kc, "import sys\n(sys.stdout.fileno(), sys.stderr.fileno())") == "(1, 2)"


def test_10mb_single_writes_to_fd_1_and_2_do_not_deadlock(kc):
    reply, msgs = execute(kc, "import os\n"
                              "n1 = os.write(1, b'o' * 10_000_000)\n"
                              "n2 = os.write(2, b'e' * 10_000_000)\n"
                              "print('after', n1, n2)")
    assert reply["content"]["status"] == "ok"
    out, err = text_of(msgs, "stdout"), text_of(msgs, "stderr")
    assert out == "o" * 10_000_000 + "after 10000000 10000000\n"
    assert err == "e" * 10_000_000
    assert max(len(c["text"]) for c in outputs(msgs, "stream")) <= 1 << 16


def test_output_of_a_background_greenlet_after_the_cell_goes_to_its_cell(kc):
    first = kc.execute("import gevent\n"
                       "def later():\n"
                       "    gevent.sleep(0.3)\n"
                       "    print('late line')\n"
                       "g = gevent.spawn(later)")
    collect_iopub(kc, first)
    get_reply(kc, first)
    second = kc.execute("gevent.sleep(0.6)")
    streams = []
    while True:  # until the second cell's idle, while the first cell's greenlet prints
        msg = kc.get_iopub_msg(timeout=10)
        if msg["msg_type"] == "stream":
            streams.append((msg["parent_header"]["msg_id"], msg["content"]["text"]))
        if msg["parent_header"].get("msg_id") == second and msg["content"].get("execution_state") == "idle":
            break
    assert streams == [(first, "late line\n")]
    get_reply(kc, second)


def test_first_output_is_published_at_once(kc):
    msg_id = kc.execute("import gevent\nprint('early')\ngevent.sleep(1)")
    start = time.monotonic()
    arrivals = {}
    while "idle" not in arrivals:
        msg = kc.get_iopub_msg(timeout=5)
        if msg["parent_header"].get("msg_id") == msg_id:
            kind = msg["content"].get("execution_state") or msg["msg_type"]
            arrivals.setdefault(kind, time.monotonic() - start)
    assert arrivals["stream"] < 0.5 < arrivals["idle"], f"first print waited for the cell's end: {arrivals}"
    get_reply(kc, msg_id)


def test_forked_children_send_output_to_the_forking_cell(kc):
    reply, msgs = execute(kc, "import os, sys\n"
                              "pid = os.fork()\n"
                              "if pid == 0:\n"
                              "    print('child line')\n"
                              "    os._exit(0)  # no flush: the child's output is line-buffered\n"
                              "os.waitpid(pid, 0)\n"
                              "print('parent line')")
    assert reply["content"]["status"] == "ok"
    assert stdout_of(msgs) == "child line\nparent line\n"

    # A child that returns from the cell exits quietly: the parent alone replies.
    msg_id = kc.execute("pid = os.fork()\n"
                        "if pid == 0:\n"
                        "    print('child returns')\n"
                        "else:\n"
                        "    os.waitpid(pid, 0)\n"
                        "    print('parent waited')")
    msgs = collect_iopub(kc, msg_id)
    assert stdout_of(msgs) == "child returns\nparent waited\n"
    assert [m["msg_type"] for m in msgs].count("status") == 2
    assert get_reply(kc, msg_id)["content"]["status"] == "ok"
    with pytest.raises(Exception):
        get_reply(kc, msg_id, timeout=1)  # no second reply from the child

    reply, msgs = execute(kc, "import multiprocessing\n"
                              "ctx = multiprocessing.get_context('fork')\n"
                              "procs = [ctx.Process(target=print, args=(f'worker {i}',)) for i in range(3)]\n"
                              "for p in procs: p.start()\n"
                              "for p in procs: p.join()\n"
                              "print('exit codes', [p.exitcode for p in procs])")
    assert reply["content"]["status"] == "ok"
    assert sorted(stdout_of(msgs).splitlines()) == ["exit codes [0, 0, 0]", "worker 0", "worker 1", "worker 2"]
    assert result_of(kc, "40 + 2") == "42"


def test_a_forked_child_that_waits_goes_on_and_sigterm_ends_it(kc):
    # The child's hub runs while it waits: nothing of the parent's kernel may wake up there
    # (the launcher watch saw a new parent pid and closed the kernel, killing the child's cell).
    reply, msgs = execute(kc, "import os, signal, time\n"
                              "pid = os.fork()\n"
                              "if pid == 0:\n"
                              "    time.sleep(1.5)\n"
                              "    print('child slept')\n"
                              "    os._exit(7)\n"
                              "print('exit status', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    assert reply["content"]["status"] == "ok"
    assert stdout_of(msgs) == "child slept\nexit status 7\n"
    started = time.monotonic()
    reply, msgs = execute(kc, "pid = os.fork()\n"
                              "if pid == 0:\n"
                              "    time.sleep(60)\n"
                              "time.sleep(0.5)\n"
                              "os.kill(pid, signal.SIGTERM)\n"
                              "print('exit status', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    assert stdout_of(msgs) == f"exit status {-signal.SIGTERM}\n"
    assert time.monotonic() - started < 5


def test_ipython_display_publishes_through_gkernel(kc):
    reply, msgs = execute(kc, "from IPython.display import display, HTML, Markdown, clear_output, update_display\n"
                              "display(HTML('<b>bold</b>'), Markdown('*md*'))\n"
                              "h = display('first', display_id='d1')\n"
                              "update_display('second', display_id='d1')\n"
                              "clear_output(wait=True)")
    assert reply["content"]["status"] == "ok"
    msgs = [m for m in msgs if m["msg_type"] != "execute_input"]
    kinds = [(m["msg_type"], m["content"].get("data", {}).get("text/plain")) for m in msgs]
    assert kinds[0][0] == kinds[1][0] == "display_data"
    assert msgs[0]["content"]["data"]["text/html"] == "<b>bold</b>"
    assert msgs[1]["content"]["data"]["text/markdown"] == "*md*"
    assert kinds[2:] == [("display_data", "'first'"), ("update_display_data", "'second'"),
                         ("clear_output", None)]
    assert msgs[2]["content"]["transient"] == {"display_id": "d1"} == msgs[3]["content"]["transient"]


def test_capture_off_and_real_threads(tmp_path):
    """--no-capture-fd leaves fd 1 alone; a real thread's output goes to the cell that started it."""
    with open(tmp_path / "stdout.txt", "w") as out:
        km, kc = start_kernel("--no-capture-fd", "--no-monkey-patch", stdout=out)
        try:
            reply, msgs = execute(kc, "import io, os, sys\n"
                                      "os.write(1, b'to the real fd\\n')\n"
                                      "try:\n"
                                      "    sys.stdout.fileno()\n"
                                      "except io.UnsupportedOperation:\n"
                                      "    print('no fileno')")
            assert stdout_of(msgs) == "no fileno\n"
            starter = kc.execute("import threading, time\n"
                                 "go = threading.Event()\n"
                                 "def work():\n"
                                 "    go.wait()\n"
                                 "    print('from a real thread', threading.get_ident() != main)\n"
                                 "main = threading.get_ident()\n"
                                 "t = threading.Thread(target=work); t.start()")
            collect_iopub(kc, starter)
            # The thread prints while another cell runs: it still belongs to its starter.
            reply, msgs = execute(kc, "go.set(); t.join(); print('joined')")
            assert stdout_of(msgs) == "joined\n"
            msg = kc.get_iopub_msg(timeout=5)
            while msg["msg_type"] != "stream":
                msg = kc.get_iopub_msg(timeout=5)
            assert msg["content"]["text"] == "from a real thread True\n"
            assert msg["parent_header"]["msg_id"] == starter
            _, msgs = execute(kc, "import gevent\n"
                                  "gevent.get_hub().threadpool.spawn(print, 'from the hub threadpool').get()")
            assert stdout_of(msgs) == "from the hub threadpool\n"
        finally:
            stop_kernel(km, kc)
    assert "to the real fd\n" in (tmp_path / "stdout.txt").read_text()


def test_fds_are_restored_at_shutdown(tmp_path):
    """At exit, after the kernel shut down, fd 1 is the process's original stdout again."""
    with open(tmp_path / "stdout.txt", "w") as out:
        km, kc = start_kernel(stdout=out)
        try:
            reply, msgs = execute(kc, "import atexit, os\n"
                                      "atexit.register(os.write, 1, b'written at exit\\n')\n"
                                      "os.write(1, b'captured\\n')")
            assert stdout_of(msgs) == "captured\n"
        finally:
            stop_kernel(km, kc)
    assert (tmp_path / "stdout.txt").read_text() == "written at exit\n"


def test_kernel_log_never_reaches_a_cell(kc):
    # The kernel logs a warning for the bad control request while the cell runs.
    msg_id = kc.execute("import gevent\ngevent.sleep(0.5)\nprint('only this')")
    bogus = kc.session.msg("bogus_request", {})
    kc.control_channel.send(bogus)
    assert get_reply(kc, bogus["header"]["msg_id"], "control")["content"]["ename"] == "InvalidRequest"
    msgs = collect_iopub(kc, msg_id)
    assert streams_in_order(msgs) == [("stdout", "only this\n")]
    get_reply(kc, msg_id)


def _memory_mb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _flood(kc, megabytes):
    """Print *megabytes* MB in one cell; return the number of characters kc received."""
    msg_id = kc.execute(f"line = 'x' * 999\nfor i in range({megabytes} * 1000):\n    print(line)")
    received = sum(len(c["text"]) for c in outputs(collect_iopub(kc, msg_id, timeout=60), "stream"))
    assert get_reply(kc, msg_id)["content"]["status"] == "ok"
    return received


@pytest.mark.timeout(120)
def test_a_stalled_subscriber_neither_stalls_the_kernel_nor_grows_its_memory():
    """100 MB floods while one IOPub subscriber never reads.

    Policy (README): zmq keeps at most ``iopub_hwm`` messages for a subscriber
    that does not read and drops the rest for it alone; the kernel's own queue
    is bounded too. So memory stops growing once the stalled pipe is full,
    while a reading client gets every byte.
    """
    import zmq

    km, kc = start_kernel()
    stalled = zmq.Context.instance().socket(zmq.SUB)
    try:
        pid = km.provisioner.process.pid
        stalled.rcvhwm = 1
        stalled.setsockopt(zmq.RCVBUF, 4096)
        stalled.setsockopt(zmq.SUBSCRIBE, b"")
        stalled.connect(f"tcp://127.0.0.1:{km.iopub_port}")
        assert stalled.poll(5000), "no iopub_welcome for the stalled subscriber"
        before = _memory_mb(pid, "VmRSS")

        assert _flood(kc, 100) == 100_000_000
        peak_first = _memory_mb(pid, "VmHWM")
        assert peak_first - before < 100, "the flood accumulated in the kernel"
        assert _flood(kc, 100) == 100_000_000
        peak_second = _memory_mb(pid, "VmHWM")
        assert peak_second - peak_first < 10, f"memory grew with output: {peak_first:.0f} -> {peak_second:.0f} MB"
        start = time.monotonic()
        kc.kernel_info(reply=True, timeout=5)
        assert time.monotonic() - start < 1

        # The stalled subscriber reads again: it gets what zmq kept, then new output.
        while stalled.poll(500):
            stalled.recv_multipart()
        reply, _ = execute(kc, "print('after the flood')")
        frames = []
        while stalled.poll(5000):
            frames = stalled.recv_multipart()
            if b"after the flood" in frames[-1]:
                break
        assert b"after the flood" in frames[-1]
    finally:
        stalled.close(linger=0)
        stop_kernel(km, kc)


LINGERING_CHILDREN = ("import os, signal, time\n"
                      "children = []\n"
                      "for ignore_term in (False, True):\n"
                      "    pid = os.fork()\n"
                      "    if pid == 0:\n"
                      "        if ignore_term:\n"
                      "            signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "        while True:\n"
                      "            time.sleep(1)\n"
                      "    children.append(pid)\n"
                      "children")


def _alive(pid):
    from gkernel._trust import start_ticks

    return start_ticks(pid) is not None


def test_forked_children_that_never_exit_do_not_keep_the_ports_over_a_restart():
    """They inherited the listening sockets: the restarted kernel could not bind its ports."""
    km, kc = start_kernel()
    try:
        children = json.loads(result_of(kc, LINGERING_CHILDREN))
        assert all(_alive(pid) for pid in children)
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=30)
        assert result_of(kc, "'restarted'") == "'restarted'"
        assert wait_for(lambda: not any(_alive(pid) for pid in children), timeout=5), \
            "a forked child outlived its kernel (one ignores SIGTERM: it needs SIGKILL)"
    finally:
        stop_kernel(km, kc)


def test_forked_children_end_with_their_kernel_in_a_host_and_with_the_host(host):
    kernel_id, kc = host.kernel()
    children = json.loads(result_of(kc, LINGERING_CHILDREN))
    host.api.restart(kernel_id)  # the same ports, in the same process
    kc.wait_for_ready(timeout=30)
    assert result_of(kc, "'restarted'") == "'restarted'"
    assert wait_for(lambda: not any(_alive(pid) for pid in children), timeout=5)
    children = json.loads(result_of(kc, LINGERING_CHILDREN))
    host.api.stop()
    host.proc.wait(timeout=20)
    assert wait_for(lambda: not any(_alive(pid) for pid in children), timeout=5), "children outlived the host"
