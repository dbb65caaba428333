"""gkernel serve: many kernels in one process, driven by unmodified jupyter_client clients."""

import json
import os
import signal
import stat
import subprocess
import time

import pytest

from conftest import GKERNEL, SERVE_KERNEL_NAME, Host, collect_iopub, execute, get_reply, outputs, ready, result_of, wait_for

pytestmark = pytest.mark.timeout(90)


def test_host_file_is_private_and_the_api_lists_kernels(host):
    assert stat.S_IMODE(os.stat(host.host_file).st_mode) == 0o600
    with open(host.host_file) as f:
        info = json.load(f)
    assert info["ip"] == "127.0.0.1" and info["pid"] == host.proc.pid
    a, kc_a = host.kernel()
    b, kc_b = host.kernel()
    execute(kc_a, "x = 1")
    listed = {k["id"]: k for k in host.api.list()}
    assert set(listed) == {a, b}
    assert listed[a]["execution_count"] == 1 and listed[b]["execution_count"] == 0
    assert listed[a]["state"] == "idle"
    assert listed[a]["connection"]["shell_port"] != listed[b]["connection"]["shell_port"]
    assert listed[a]["connection"]["key"] != listed[b]["connection"]["key"]
    assert host.api.stats()["kernels"] == 2


def test_kernels_are_isolated(host):
    a, kc_a = host.kernel()
    b, kc_b = host.kernel()
    execute(kc_a, "x = 'a'")
    reply, _ = execute(kc_b, "x")
    assert reply["content"]["ename"] == "NameError"
    # Background greenlets of both print after their cells ended, at the same time.
    for kc, name in ((kc_a, "A"), (kc_b, "B")):
        execute(kc, "import gevent, os\n"
                    "def chatter():\n"
                    "    for i in range(5):\n"
                    "        gevent.sleep(0.02)\n"
                    f"        print('{name}', i)\n"
                    "g = gevent.spawn(chatter)")
    for kc, name in ((kc_a, "A"), (kc_b, "B")):
        msg_id = kc.execute("g.join()")
        texts = []
        while True:  # every stream message until this cell's idle, whatever its parent
            msg = kc.get_iopub_msg(timeout=10)
            if msg["msg_type"] == "stream":
                texts.append(msg["content"]["text"])
            if msg["parent_header"].get("msg_id") == msg_id and msg["content"].get("execution_state") == "idle":
                break
        get_reply(kc, msg_id)
        assert "".join(texts) == "".join(f"{name} {i}\n" for i in range(5))
    # exit() in A ends A only; an error escaping a greenlet of B stays in B.
    reply, _ = execute(kc_a, "exit()")
    assert reply["content"]["payload"][0]["source"] == "ask_exit"
    assert wait_for(lambda: a not in {k["id"] for k in host.api.list()}, timeout=10)
    msg_id = kc_b.execute("gevent.spawn(lambda: 1 / 0)\ngevent.sleep(0.1)")
    stderr = "".join(c["text"] for c in outputs(collect_iopub(kc_b, msg_id), "stream", "stderr"))
    get_reply(kc_b, msg_id)
    assert "ZeroDivisionError" in stderr
    assert result_of(kc_b, "'b alive'") == "'b alive'"


def test_interrupting_a_spinning_kernel_interrupts_it_only(host):
    a, kc_a = host.kernel()
    b, kc_b = host.kernel()
    execute(kc_b, "import gevent\nbeats = []\nbeater = gevent.spawn(lambda: [beats.append(gevent.sleep(0.01)) "
                  "for _ in range(10**6)])")
    cell = kc_a.execute("while True:\n    pass")
    time.sleep(0.4)
    interrupt = kc_a.session.msg("interrupt_request", {})
    kc_a.control_channel.send(interrupt)  # what a manager in interrupt_mode "message" sends
    assert get_reply(kc_a, cell, timeout=5)["content"]["ename"] == "KeyboardInterrupt"
    assert result_of(kc_b, "n = len(beats)\ngevent.sleep(0.1)\nlen(beats) > n") == "True"
    # The API interrupts a waiting cell too.
    cell = kc_a.execute("import gevent\ngevent.sleep(30)")
    time.sleep(0.3)
    host.api.interrupt(a)
    assert get_reply(kc_a, cell, timeout=5)["content"]["ename"] == "KeyboardInterrupt"


def test_restart_keeps_the_connection_and_clears_the_namespace(host):
    a, kc_a = host.kernel()
    execute(kc_a, "x = 1")
    ports = {k["id"]: k["connection"]["shell_port"] for k in host.api.list()}
    restarted = host.api.restart(a)
    assert restarted["id"] == a and restarted["connection"]["shell_port"] == ports[a]
    assert restarted["execution_count"] == 0
    kc_a.wait_for_ready(timeout=30)
    reply, _ = execute(kc_a, "x")
    assert reply["content"]["ename"] == "NameError"
    host.api.shutdown(a)
    assert host.api.list() == []


def test_bad_requests_get_clear_errors(host, tmp_path):
    from gkernel.manage import HostClient, HostError

    with pytest.raises(HostError, match="no kernel 'nope'"):
        host.api.shutdown("nope")
    with pytest.raises(HostError, match="unknown operation"):
        host.api.request("explode")
    with pytest.raises(HostError, match="kernel_id"):
        host.api.request("interrupt")
    # A wrong secret is never answered.
    with open(host.host_file) as f:
        info = json.load(f)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**info, "key": "not-the-secret"}))
    os.chmod(forged, 0o600)  # a private file of ours: only the secret is wrong
    client = HostClient(str(forged), timeout=1)
    with pytest.raises(HostError, match="did not answer"):
        client.list()
    client.close()
    assert len(host.api.list()) == 0  # and the host still serves


@pytest.mark.parametrize("op", ["create", "interrupt", "restart", "shutdown", "list", "stats"])
@pytest.mark.parametrize("content", [[], "text", 7, None])
def test_a_request_whose_content_is_not_an_object_gets_an_error_and_the_api_lives(host, op, content):
    from jupyter_client.session import Session

    from gkernel.manage import HostError

    session = Session(key=host.api.info["key"].encode(), signature_scheme=host.api.info["signature_scheme"])
    msg = session.msg(f"{op}_request", {})
    msg["content"] = json.dumps(content).encode()  # packed already: Session would refuse a non-object
    session.send(host.api._socket, msg)
    assert host.api._socket.poll(10000), f"{op} with content {content!r} was not answered"
    _, parts = session.feed_identities(host.api._socket.recv_multipart())
    reply = session.deserialize(parts)
    assert reply["content"]["status"] == "error" and "must be an object" in reply["content"]["evalue"]
    with pytest.raises(HostError, match="no kernel"):
        host.api.shutdown("still-answering")


@pytest.mark.parametrize("connection, refused", [
    ({"key": "k", "ip": "0.0.0.0", "transport": "tcp"}, "binds kernels on 127.0.0.1"),
    ({"key": "", "ip": "127.0.0.1", "transport": "tcp"}, "non-empty string"),
    ({"ip": "127.0.0.1", "transport": "tcp"}, "non-empty string"),
    ({"key": "k", "ip": "127.0.0.1", "transport": "tcp", "shell_port": "9"}, "port number"),
    ({"key": "k", "ip": "127.0.0.1", "transport": "tcp", "shell_port": 70000}, "port number"),
    ({"key": "k", "ip": "127.0.0.1", "transport": "udp"}, "binds tcp"),
    ({"key": "k", "ip": "127.0.0.1", "transport": "tcp", "signature_scheme": "rot13"}, "signature_scheme"),
])
def test_create_refuses_a_connection_the_host_may_not_bind(host, connection, refused):
    from gkernel.manage import HostError

    with pytest.raises(HostError, match=refused):
        host.api.create(connection)
    assert host.api.list() == []  # nothing half-built
    _, kc = host.kernel()
    assert result_of(kc, "'fine'") == "'fine'"
    host.proc.send_signal(signal.SIGTERM)  # and the host still ends at once
    assert host.proc.wait(timeout=10) == 0


def test_max_kernels_refuses_without_harming_running_ones(tmp_path):
    from gkernel.manage import HostError

    host = Host(tmp_path, "--max-kernels=2")
    try:
        _, kc_a = host.kernel()
        host.kernel()
        with pytest.raises(HostError, match="max-kernels=2"):
            host.api.create()
        assert result_of(kc_a, "'still fine'") == "'still fine'"
    finally:
        host.close()


def test_sigterm_and_stop_end_every_kernel_and_remove_the_host_file(tmp_path):
    host = Host(tmp_path)
    try:
        host.kernel()
        host.kernel()
        host.proc.send_signal(signal.SIGTERM)
        assert host.proc.wait(timeout=20) == 0
        assert not os.path.exists(host.host_file)
    finally:
        host.close()
    host = Host(tmp_path)
    try:
        host.kernel()
        done = subprocess.run([GKERNEL, "serve", "stop", "--host-file", host.host_file],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert host.proc.wait(timeout=20) == 0
        assert not os.path.exists(host.host_file)
    finally:
        host.close()
    done = subprocess.run([GKERNEL, "serve", "stop", "--host-file", host.host_file],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "cannot read host file" in done.stderr


def test_idle_kernels_without_clients_are_culled(tmp_path):
    host = Host(tmp_path, "--cull-idle-timeout=1", "--KernelHost.cull_interval=0.2")
    try:
        lonely = host.api.create()["id"]
        watched, kc = host.kernel()
        assert wait_for(lambda: lonely not in {k["id"] for k in host.api.list()}, timeout=10)
        listed = {k["id"]: k for k in host.api.list()}
        assert listed[watched]["connections"] >= 1  # a connected client keeps it
        time.sleep(1.5)
        assert result_of(kc, "'kept'") == "'kept'"
        kc.stop_channels()
        host.clients.remove(kc)
        assert wait_for(lambda: watched not in {k["id"] for k in host.api.list()}, timeout=10)
    finally:
        host.close()


def _pings(endpoint, timeout=1.0):
    """Whether a heartbeat answers on *endpoint* within *timeout* seconds."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send(b"ping")
        return bool(sock.poll(timeout * 1000)) and sock.recv() == b"ping"
    finally:
        sock.close()


def test_one_heartbeat_thread_answers_for_every_kernel_of_a_host(host):
    from test_runtime import thread_names

    kernels = [host.api.create() for _ in range(20)]
    endpoints = {k["id"]: f"tcp://{k['connection']['ip']}:{k['connection']['hb_port']}" for k in kernels}
    assert all(_pings(endpoint) for endpoint in endpoints.values())
    names = thread_names(host.proc.pid)
    assert len([n for n in names if not n.startswith("ZMQbg")]) == 2, names  # the hub's and the heartbeat's
    gone = kernels[0]["id"]
    host.api.shutdown(gone)
    assert not _pings(endpoints.pop(gone), timeout=0.5), "a closed kernel's heartbeat still answers"
    assert all(_pings(endpoint) for endpoint in endpoints.values())


def test_a_host_without_kernels_ends_after_its_timeout(tmp_path):
    host = Host(tmp_path, "--shutdown-no-kernels-timeout=1")
    try:
        kernel_id, kc = host.kernel()
        time.sleep(2)  # a kernel keeps the host
        assert host.proc.poll() is None and result_of(kc, "'alive'") == "'alive'"
        host.api.shutdown(kernel_id)
        start = time.monotonic()
        assert host.proc.wait(timeout=10) == 0
        assert 0.9 < time.monotonic() - start < 4
        assert not os.path.exists(host.host_file)
    finally:
        host.close()


def test_the_provisioner_starts_hosts_that_end_when_deserted(tmp_path):
    # A host started on demand ends after the provisioner's timeout; the next kernel gets a new one.
    from jupyter_client import KernelManager
    from traitlets.config import Config

    from gkernel.manage import HostClient, find_host_file

    config = Config({"ServeProvisioner": {"host_shutdown_no_kernels_timeout": 1.0}})
    # A runtime directory of its own: the host this test starts is the one it finds.
    os.environ["JUPYTER_RUNTIME_DIR"], saved = str(tmp_path / "runtime"), os.environ["JUPYTER_RUNTIME_DIR"]
    pids = []
    try:
        for _ in range(2):
            km = KernelManager(kernel_name=SERVE_KERNEL_NAME, config=config)
            km.start_kernel()
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
            with open(find_host_file()) as f:
                pids.append(json.load(f)["pid"])
            assert result_of(kc, "'hosted'") == "'hosted'"
            kc.stop_channels()
            km.shutdown_kernel(now=False)
            assert wait_for(lambda: find_host_file() is None, timeout=10), "the host did not end"
            assert wait_for(lambda: not _alive(pids[-1]), timeout=10)
        assert pids[0] != pids[1]
    finally:
        if (path := find_host_file()) is not None:
            HostClient(path).stop()
        os.environ["JUPYTER_RUNTIME_DIR"] = saved


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")


def _raise_open_files_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run_everywhere(clients):
    """Run a sleeping cell in every kernel at once; check each one's output is its own."""
    msg_ids = [kc.execute(f"import gevent\nme = {i}\ngevent.sleep(0.5)\nprint('kernel', me)")
               for i, kc in enumerate(clients)]
    start = time.monotonic()
    for i, (kc, msg_id) in enumerate(zip(clients, msg_ids)):
        assert get_reply(kc, msg_id, timeout=60)["content"]["status"] == "ok"
        streams = outputs(collect_iopub(kc, msg_id, timeout=60), "stream")
        assert [c["text"] for c in streams] == [f"kernel {i}\n"]
    return time.monotonic() - start


@pytest.mark.timeout(300)
def test_100_kernels_through_the_api(host):
    """(1000 in scripts/bench's serve table.)"""
    import zmq
    from jupyter_client import BlockingKernelClient

    _raise_open_files_limit()
    context = zmq.Context()
    context.max_sockets = 4096
    clients = []
    try:
        for _ in range(100):
            kernel = host.api.create()
            kc = BlockingKernelClient(context=context)
            kc.load_connection_info(kernel["connection"])
            kc.start_channels(hb=False)
            clients.append(kc)
        ready(*clients)
        assert len(host.api.list()) == 100
        elapsed = _run_everywhere(clients)
        assert elapsed < 30, f"100 half-second cells took {elapsed:.1f} s: not concurrent"
    finally:
        for kc in clients:
            kc.stop_channels()
        context.destroy(linger=0)


@pytest.mark.timeout(300)
def test_50_kernels_through_the_provisioner():
    """(100 through the API above; here each kernel also costs a KernelManager's start and shutdown.)"""
    from jupyter_client.manager import KernelManager

    from conftest import SERVE_KERNEL_NAME

    _raise_open_files_limit()
    managers, clients = [], []
    try:
        for _ in range(50):
            km = KernelManager(kernel_name=SERVE_KERNEL_NAME)
            km.start_kernel()
            managers.append(km)
            kc = km.client()
            kc.start_channels(hb=False)
            clients.append(kc)
        ready(*clients)
        assert len({km.provisioner.kernel_id_in_host for km in managers}) == 50
        _run_everywhere(clients)
    finally:
        for kc in clients:
            kc.stop_channels()
        for km in managers:
            km.shutdown_kernel(now=True)


def test_shutting_a_kernel_down_returns_its_memory(host):
    def rss_mb():
        with open(f"/proc/{host.proc.pid}/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))

    a, kc = host.kernel()
    before = rss_mb()
    execute(kc, "import gevent\nblob = bytearray(300 * 2**20)\n"
                "holder = gevent.spawn(lambda: gevent.sleep(600) or blob)")  # a greenlet holds it too
    assert rss_mb() - before > 250
    kc.stop_channels()
    host.clients.remove(kc)
    host.api.shutdown(a)
    assert wait_for(lambda: rss_mb() - before < 50, timeout=10), f"still {rss_mb() - before} MB above"


def test_input_and_fd_output_stay_in_their_kernel(host):
    a, kc_a = host.kernel()
    b, kc_b = host.kernel()
    # Both wait for input at once; each answer reaches its own kernel.
    cells = {name: kc.execute(f"print('{name} got', input('{name}? '))", allow_stdin=True)
             for name, kc in (("A", kc_a), ("B", kc_b))}
    requests = {name: kc.get_stdin_msg(timeout=10) for name, kc in (("A", kc_a), ("B", kc_b))}
    assert requests["A"]["content"]["prompt"] == "A? " and requests["B"]["content"]["prompt"] == "B? "
    kc_b.input("bee")
    kc_a.input("ay")
    for name, kc, answer in (("A", kc_a, "ay"), ("B", kc_b, "bee")):
        msgs = collect_iopub(kc, cells[name])
        assert [c["text"] for c in outputs(msgs, "stream")] == [f"{name} got {answer}\n"]
        get_reply(kc, cells[name])
    # fd-level output cannot be told apart by kernel: by default it reaches no cell at all.
    msg_id = kc_a.execute("import os\nos.write(1, b'fd-level from A\\n')\nimport gevent\ngevent.sleep(0.2)")
    other = kc_b.execute("import gevent\nfor i in range(10):\n    gevent.sleep(0.03)\n    print('B', i)")
    for kc, cell in ((kc_a, msg_id), (kc_b, other)):
        texts = "".join(c["text"] for c in outputs(collect_iopub(kc, cell), "stream"))
        assert "fd-level" not in texts
        get_reply(kc, cell)
    host.log.flush()
    assert wait_for(lambda: "fd-level from A" in open(host.log.name).read(), timeout=5)


def test_ipc_transport(tmp_path):
    host = Host(tmp_path, "--transport=ipc")
    try:
        a, kc = host.kernel()
        connection = host.api.list()[0]["connection"]
        assert connection["transport"] == "ipc" and os.path.exists(f"{connection['ip']}-{connection['shell_port']}")
        assert result_of(kc, "'over ipc'") == "'over ipc'"
        host.api.shutdown(a)
        assert wait_for(lambda: not os.path.exists(f"{connection['ip']}-{connection['shell_port']}"), timeout=5)
    finally:
        host.close()


def test_a_header_date_that_is_not_a_date_breaks_no_kernel_of_the_host(host):
    """Clients' header dates are theirs (any clock, any string): output from outside any cell
    (a gevent server's handler, a hub callback) still reaches the kernel that ran a cell last."""
    import socket

    _, a = host.kernel()
    _, b = host.kernel()
    msg = a.session.msg("execute_request", {"code": "'a ran'", "silent": False, "store_history": True,
                                            "user_expressions": {}, "allow_stdin": False})
    msg["header"]["date"] = "yesterday"
    a.shell_channel.send(msg)
    assert get_reply(a, msg["header"]["msg_id"])["content"]["status"] == "ok"
    reply, msgs = execute(b, "import gevent\nfrom gevent.server import StreamServer\n"
                             "def echo(sock, address):\n"
                             "    print('handler got', sock.recv(10).decode())\n"
                             "    sock.sendall(b'pong')\n"
                             "server = StreamServer(('127.0.0.1', 0), echo)\nserver.start()\n"
                             "gevent.get_hub().loop.run_callback(print, 'from the hub')\n"
                             "gevent.sleep(0.1)\nport = server.address[1]")
    assert reply["content"]["status"] == "ok" and "from the hub" in "".join(
        m["content"].get("text", "") for m in msgs)
    port = int(result_of(b, "port"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"pong"  # the handler ran (and did not die printing)
    handled = []
    deadline = time.monotonic() + 10
    while not handled and time.monotonic() < deadline:
        msg = b.get_iopub_msg(timeout=10)
        if msg["msg_type"] == "stream" and "handler got ping" in msg["content"]["text"]:
            handled.append(msg)
    assert handled, "the handler's output did not reach the kernel that ran a cell last"
    assert execute(b, "server.stop()")[0]["content"]["status"] == "ok"
