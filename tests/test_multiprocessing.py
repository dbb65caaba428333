"""multiprocessing in a monkey-patched kernel (gkernel.patching), on the wire.

gevent documents that ``multiprocessing.Pool`` and ``Queue`` hang once
``threading`` is patched; in gkernel they work with each start method, the
kernel's greenlets run while they wait, an interrupt ends a pool's map, and a
``multiprocessing.Lock`` that a greenlet holds no longer stops the process of
the greenlet that waits for it.
"""

import time

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import KERNEL_NAME, SERVE_KERNEL_NAME, execute, get_reply, outputs, plain, stdout_of, stop_kernel

pytestmark = pytest.mark.timeout(120)

#: Work for spawned and forkserver children, which import what they run (a cell's functions are not importable).
WORK = '''
import os
import sys


def square(x):
    return x * x


def shout(x):
    sys.stdout.write(f"worker {x}\\n")  # one write: the lines of workers writing at once stay whole
    sys.stdout.flush()
    return os.getpid()
'''

#: The cell's greenlet: it must keep ticking (every 50 ms) while the cell waits for the pool.
TICKER = "import gevent\nticks = []\nticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(10**6)])"


@pytest.fixture(scope="module", params=[KERNEL_NAME, SERVE_KERNEL_NAME])
def mp_kernel(request, tmp_path_factory):
    """A kernel (one of its own, and one in a serve host) that imports ``mpwork`` from a directory of the test's."""
    directory = tmp_path_factory.mktemp("mp")
    (directory / "mpwork.py").write_text(WORK)
    km, kc = start_new_kernel(kernel_name=request.param, startup_timeout=30)
    ok(kc, f"import sys\nsys.path.insert(0, {str(directory)!r})\nimport multiprocessing as mp, os, time, mpwork\n"
           f"{TICKER}")
    yield km, kc
    ok(kc, "ticker.kill()")
    stop_kernel(km, kc)


def printed(kc, code):
    """What *code* printed to stdout; it must succeed."""
    return stdout_of(ok(kc, code))


def ok(kc, code):
    reply, msgs = execute(kc, code)
    assert reply["content"]["status"] == "ok", plain("".join(reply["content"].get("traceback", [])))
    return msgs


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_maps_while_the_hub_runs(mp_kernel, method):
    km, kc = mp_kernel
    started = time.monotonic()
    text = printed(kc, f"with mp.get_context({method!r}).Pool(2) as pool:\n"
                            "    print('sum', sum(pool.map(mpwork.square, range(1000))))\n"
                            "    print('pids', len(set(pool.map(mpwork.shout, range(4)))) in (1, 2))\n"
                            "    before = len(ticks)\n"
                            "    pool.apply_async(time.sleep, (1,)).get(timeout=10)\n"
                            "    print('ticks while waiting', len(ticks) - before >= 10)\n"
                            "    print('unordered', sorted(pool.imap_unordered(abs, range(-5, 0))))\n")
    lines = text.splitlines()
    assert [line for line in lines if "worker" not in line] == [
        "sum 332833500", "pids True", "ticks while waiting True", "unordered [1, 2, 3, 4, 5]"]
    if km.kernel_name == SERVE_KERNEL_NAME and method != "fork":
        # A new interpreter writes to fd 1, which a host leaves alone (README: one per process).
        assert "worker" not in text
    else:  # the workers' own output reaches the cell
        assert sorted(line for line in lines if "worker" in line) == [f"worker {x}" for x in range(4)]
    assert time.monotonic() - started < 30
    # close() and join() instead of the context manager's terminate()
    assert printed(kc, f"pool = mp.get_context({method!r}).Pool(2)\nprint(pool.map(abs, [-1, -2]))\n"
                            "pool.close()\npool.join()\nprint(mp.active_children())") == "[1, 2]\n[]\n"


def test_a_cells_own_function_in_a_forked_pool(mp_kernel):
    _, kc = mp_kernel
    assert printed(kc, "def negate(x):\n    return -x\n"
                            "with mp.get_context('fork').Pool(2) as pool:\n    print(pool.map(negate, range(4)))") \
        == "[0, -1, -2, -3]\n"


def test_queue_manager_and_process_pool_executor(mp_kernel):
    _, kc = mp_kernel
    text = printed(kc, "import queue\n"
                            "q = mp.Queue()\n"
                            "child = mp.Process(target=q.put, args=(b'y' * 1_000_000,))\n"
                            "child.start()\n"
                            "print(len(q.get(timeout=10)))\n"
                            "child.join()\n"
                            "print('exit code', child.exitcode)\n"
                            "started = time.monotonic()\n"
                            "try:\n    q.get(timeout=0.3)\nexcept queue.Empty:\n"
                            "    print('empty after 0.3 s', 0.3 <= time.monotonic() - started < 0.6)\n"
                            "with mp.Manager() as manager:\n"
                            "    shared = manager.dict()\n"
                            "    shared['a'] = 1\n"
                            "    print(dict(shared))\n"
                            "from concurrent.futures import ProcessPoolExecutor\n"
                            "with ProcessPoolExecutor(2) as executor:\n"
                            "    print(list(executor.map(mpwork.square, range(5))))")
    assert text == "1000000\nexit code 0\nempty after 0.3 s True\n{'a': 1}\n[0, 1, 4, 9, 16]\n"


def test_a_lock_held_by_a_greenlet_is_waited_for_cooperatively(mp_kernel):
    # Stock: the waiting greenlet blocks the process in sem_wait, the holder never runs again: a hang.
    _, kc = mp_kernel
    text = printed(kc, "lock = mp.Lock()\n"
                            "def hold():\n"
                            "    global released\n"
                            "    with lock:\n        gevent.sleep(0.3)\n"
                            "    released = time.monotonic()\n"
                            "holder = gevent.spawn(hold)\n"
                            "gevent.sleep(0.05)\n"
                            "started = time.monotonic()\n"
                            "print(lock.acquire(timeout=0.1), 0.1 <= time.monotonic() - started < 0.3)\n"
                            "with lock:\n    print('taken after the release', 0 <= time.monotonic() - released < 0.1)")
    assert text == "False True\ntaken after the release True\n"


def test_a_pool_in_a_forked_child_and_a_tcp_connection(mp_kernel):
    # In a forked child the semaphores wait in sem_wait (in slices): a pool there needs its greenlets to run.
    # A TCP connection gets each message in one write: in PIPE_BUF pieces Nagle's delay made a 16 KB
    # round trip take 88 ms.
    _, kc = mp_kernel
    text = printed(kc, "def child():\n"
                            "    with mp.get_context('fork').Pool(2) as pool:\n"
                            "        print('child pool', sum(pool.map(mpwork.square, range(100))), flush=True)\n"
                            "process = mp.get_context('fork').Process(target=child)\n"
                            "process.start()\n"
                            "process.join(20)\n"
                            "print('exit code', process.exitcode)\n"
                            "from multiprocessing.connection import Listener, Client\n"
                            "with Listener(('127.0.0.1', 0)) as listener:\n"
                            "    def echo():\n"
                            "        with listener.accept() as server:\n"
                            "            for _ in range(10):\n"
                            "                server.send_bytes(server.recv_bytes())\n"
                            "    echoer = gevent.spawn(echo)\n"
                            "    with Client(listener.address) as client:\n"
                            "        started = time.monotonic()\n"
                            "        for _ in range(10):\n"
                            "            client.send_bytes(b'x' * 16384)\n"
                            "            assert client.recv_bytes() == b'x' * 16384\n"
                            "        print('10 round trips within 0.3 s', time.monotonic() - started < 0.3)")
    assert text == "child pool 328350\nexit code 0\n10 round trips within 0.3 s True\n"


def test_a_spawned_process_reaped_by_the_hub_has_its_exit_code(mp_kernel):
    # Once any child is watched (os.system's is), libev's SIGCHLD handler reaps every child that ends;
    # a spawned one stayed "alive" for multiprocessing, with no exit code, and pools left such workers behind.
    _, kc = mp_kernel
    text = printed(kc, "from multiprocessing.connection import wait\n"
                            "os.system('true')\n"
                            "process = mp.get_context('spawn').Process(target=os.getpid)\n"
                            "process.start()\n"
                            "print(wait([process.sentinel], 20) != [])\n"
                            "gevent.sleep(0.2)  # the hub handles the SIGCHLD\n"
                            "process.join(5)\n"
                            "print(process.exitcode, mp.active_children())")
    assert text == "True\n0 []\n"


def test_an_interrupt_ends_a_pools_map(mp_kernel):
    km, kc = mp_kernel
    msg_id = kc.execute("with mp.get_context('fork').Pool(2) as pool:\n    pool.map(time.sleep, [30, 30])")
    time.sleep(2)
    started = time.monotonic()
    if km.kernel_spec.interrupt_mode == "signal":
        km.interrupt_kernel()
    else:
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
    reply = get_reply(kc, msg_id, timeout=10)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 3
    assert printed(kc, "print(mp.active_children())") == "[]\n"
    assert outputs(ok(kc, "len(ticks) > 0"), "execute_result")[0]["data"]["text/plain"] == "True"
