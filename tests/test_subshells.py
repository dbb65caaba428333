"""Kernel subshells (JEP 91) as greenlet lanes: latency beside a busy main shell, isolation, life cycle.

ipykernel's own subshell tests run against gkernel in test_ipykernel_suite.py; these cover what
gkernel adds or decides: latency figures, the green client, hosts, interrupts, input.
"""

import time

import gevent
import pytest

from conftest import collect_iopub, execute, get_reply, result_of, start_kernel, stdout_of, stop_kernel

pytestmark = pytest.mark.timeout(90)


def control(kc, msg_type, content=None):
    """Send a control request; return its reply's content."""
    msg = kc.session.msg(msg_type, content or {})
    kc.control_channel.send(msg)
    return get_reply(kc, msg["header"]["msg_id"], channel="control")["content"]


def create_subshell(kc):
    return control(kc, "create_subshell_request")["subshell_id"]


def send_execute(kc, code, subshell_id=None, **content):
    msg = kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                             "user_expressions": {}, "allow_stdin": False, **content})
    msg["header"]["subshell_id"] = subshell_id
    kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def round_trips(kc, subshell_id, seconds):
    """Round trips (reply and idle) of `1 + 1` in a subshell for *seconds*."""
    rtts = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.monotonic()
        msg_id = send_execute(kc, "1 + 1", subshell_id)
        assert get_reply(kc, msg_id)["content"]["status"] == "ok"
        collect_iopub(kc, msg_id)
        rtts.append(time.monotonic() - start)
    return sorted(rtts)


@pytest.fixture(scope="module")
def kc():
    km, kc = start_kernel()
    yield kc
    stop_kernel(km, kc)


def test_kernel_info_and_kernelspec_declare_subshells(kc):
    from jupyter_client.kernelspec import KernelSpecManager

    from conftest import KERNEL_NAME

    reply = get_reply(kc, kc.kernel_info())["content"]
    assert "kernel subshells" in reply["supported_features"] and reply["protocol_version"] == "5.5"
    assert KernelSpecManager().get_kernel_spec(KERNEL_NAME).to_dict()["kernel_protocol_version"] == "5.5"


@pytest.mark.parametrize("busy", ["gevent.sleep(3)", "t = time.perf_counter()\nwhile time.perf_counter() - t < 3: pass"])
def test_a_subshell_answers_within_50ms_while_the_main_shell_is_busy(kc, busy):
    subshell = create_subshell(kc)
    try:
        execute(kc, "import gevent, time\nshared = 'main namespace'")
        cell = send_execute(kc, busy)
        time.sleep(0.3)
        rtts = round_trips(kc, subshell, 2)
        assert get_reply(kc, cell)["content"]["status"] == "ok"
        assert len(rtts) > 20 and rtts[int(len(rtts) * 0.99)] < 0.05, \
            f"p50 {rtts[len(rtts) // 2] * 1000:.1f} ms, p99 {rtts[int(len(rtts) * 0.99)] * 1000:.1f} ms"
        # One namespace for all subshells.
        msg_id = send_execute(kc, "print(shared)", subshell)
        get_reply(kc, msg_id)
        assert stdout_of(collect_iopub(kc, msg_id)) == "main namespace\n"
    finally:
        control(kc, "delete_subshell_request", {"subshell_id": subshell})


def test_interrupts_reach_the_main_shell_only_and_input_works_in_a_subshell(kc):
    subshell = create_subshell(kc)
    try:
        main = send_execute(kc, "import gevent\ngevent.sleep(10)")
        side = send_execute(kc, "import gevent\ngevent.sleep(1)\nprint('side done')", subshell)
        time.sleep(0.3)
        assert control(kc, "interrupt_request") == {"status": "ok"}
        assert get_reply(kc, main)["content"]["ename"] == "KeyboardInterrupt"
        assert get_reply(kc, side)["content"]["status"] == "ok"  # as in ipykernel: SIGINT reaches the main thread
        asking = send_execute(kc, "answer = input('in a subshell? ')", subshell, allow_stdin=True)
        request = kc.get_stdin_msg(timeout=10)
        assert request["content"]["prompt"] == "in a subshell? "
        assert request["parent_header"]["msg_id"] == asking
        kc.input("yes")
        assert get_reply(kc, asking)["content"]["status"] == "ok"
        assert result_of(kc, "answer") == "'yes'"
    finally:
        control(kc, "delete_subshell_request", {"subshell_id": subshell})


def test_deleting_a_busy_subshell_ends_its_cell_and_answers_what_was_queued(kc):
    subshell = create_subshell(kc)
    running = send_execute(kc, "import gevent\ngevent.sleep(30)", subshell)
    queued = send_execute(kc, "print('never')", subshell)
    time.sleep(0.3)
    assert control(kc, "delete_subshell_request", {"subshell_id": subshell}) == {"status": "ok"}
    reply = get_reply(kc, queued)["content"]
    assert reply["ename"] == "UnknownSubshellError" and reply["evalue"] == f"Unknown subshell_id {subshell!r}"
    assert control(kc, "list_subshell_request")["subshell_id"] == []
    assert result_of(kc, "'main shell fine'") == "'main shell fine'"
    del running  # its greenlet was killed: a request whose subshell is gone gets no reply


def test_the_green_client_drives_subshells():
    from gkernel.client import start_new_kernel
    from gkernel.client import RequestError

    from conftest import KERNEL_NAME

    km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=30)
    try:
        subshell = kc.create_subshell()
        assert kc.list_subshells() == [subshell]
        main = kc.execute("import gevent\ngevent.sleep(2)")
        started = time.monotonic()
        outputs = []
        reply = kc.execute_interactive("print('from the subshell')", subshell_id=subshell, timeout=10,
                                       output_hook=outputs.append)
        assert reply["content"]["status"] == "ok" and time.monotonic() - started < 1
        assert [m["content"]["text"] for m in outputs if m["msg_type"] == "stream"] == ["from the subshell\n"]
        assert reply["parent_header"]["subshell_id"] == subshell
        assert kc.execute("1", subshell_id=subshell, reply=True, timeout=10)["content"]["status"] == "ok"
        kc._recv_reply(main, timeout=10)
        kc.delete_subshell(subshell)
        with pytest.raises(RequestError, match="Unknown subshell_id"):
            kc.delete_subshell(subshell)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        gevent.sleep(0)


def test_subshells_belong_to_their_kernel_in_a_host(host):
    kernel_id, a = host.kernel()
    _, b = host.kernel()
    subshell = create_subshell(a)
    assert control(a, "list_subshell_request")["subshell_id"] == [subshell]
    assert control(b, "list_subshell_request")["subshell_id"] == []
    msg_id = send_execute(b, "1", subshell)
    assert get_reply(b, msg_id)["content"]["ename"] == "UnknownSubshellError"
    # While a's main shell sleeps, its subshell and kernel b both answer.
    cell = send_execute(a, "import gevent\ngevent.sleep(2)")
    time.sleep(0.2)
    assert max(round_trips(a, subshell, 0.5)) < 0.05
    assert result_of(b, "'b answers'") == "'b answers'"
    get_reply(a, cell)
    # A restart ends the kernel's subshells.
    host.api.restart(kernel_id)
    assert control(a, "list_subshell_request")["subshell_id"] == []
