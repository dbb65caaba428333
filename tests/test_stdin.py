"""input(), getpass and sys.stdin over the stdin channel, with real clients."""

import time

import pytest

from conftest import collect_iopub, execute, get_reply, result_of, start_kernel, stdout_of, stop_kernel

pytestmark = pytest.mark.timeout(60)


def answer_inputs(kc, code, answers, timeout=10):
    """Run *code* with allow_stdin, answering each input_request in turn.

    Returns (execute_reply, IOPub messages, input_request messages).
    """
    msg_id = kc.execute(code, allow_stdin=True)
    requests = []
    for answer in answers:
        request = kc.get_stdin_msg(timeout=timeout)
        requests.append(request)
        kc.input(answer)
    reply = get_reply(kc, msg_id)
    return reply, collect_iopub(kc, msg_id)[1:-1], requests


def test_input_round_trip(kc):
    reply, msgs, [request] = answer_inputs(kc, "name = input('Who? ')\nprint('hello', name)", ["Ada"])
    assert reply["content"]["status"] == "ok"
    assert request["msg_type"] == "input_request"
    assert request["content"] == {"prompt": "Who? ", "password": False}
    assert request["parent_header"]["msg_id"] == reply["parent_header"]["msg_id"]
    assert stdout_of(msgs) == "hello Ada\n"


def test_password_flag_and_sys_stdin(kc):
    reply, msgs, [request] = answer_inputs(kc, "import getpass\nsecret = getpass.getpass()\nprint(len(secret))",
                                           ["hunter2"])
    assert request["content"] == {"prompt": "Password: ", "password": True}
    assert stdout_of(msgs) == "7\n"
    reply, msgs, requests = answer_inputs(
        kc, "import sys\nprint(repr(sys.stdin.readline()))\nprint(repr(sys.stdin.read()))\n"
            "print([line for line in sys.stdin])", ["one", "two", "three", "four", "\x04"])
    assert [r["content"]["prompt"] for r in requests] == [""] * 5
    assert stdout_of(msgs) == "'one\\n'\n'two\\n'\n['three\\n', 'four\\n']\n"


def test_ctrl_d_raises_eof_error(kc):
    reply, msgs, _ = answer_inputs(kc, "input('more? ')", ["\x04"])
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "EOFError"


def test_without_allow_stdin_input_fails_at_once(kc):
    start = time.monotonic()
    reply, _ = execute(kc, "input('nobody answers')", allow_stdin=False)
    assert time.monotonic() - start < 5
    assert reply["content"]["ename"] == "StdinNotImplementedError"
    assert "allow_stdin" in reply["content"]["evalue"]


def test_other_greenlets_and_control_run_while_input_waits(kc):
    msg_id = kc.execute("import gevent\n"
                        "ticks = []\n"
                        "ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])\n"
                        "answer = input('wait for me ')\n"
                        "print(answer, len(ticks) > 10)", allow_stdin=True)
    kc.get_stdin_msg(timeout=10)
    time.sleep(0.3)
    request = kc.session.msg("kernel_info_request", {})
    kc.control_channel.send(request)
    assert get_reply(kc, request["header"]["msg_id"], "control", timeout=2)["content"]["status"] == "ok"
    kc.input("done")
    assert get_reply(kc, msg_id)["content"]["status"] == "ok"
    assert stdout_of(collect_iopub(kc, msg_id)) == "done True\n"


def test_input_from_a_spawned_greenlet(kc):
    reply, msgs, [request] = answer_inputs(
        kc, "import gevent\ng = gevent.spawn(input, 'from a greenlet: ')\nprint('got', g.get())", ["green"])
    assert request["content"]["prompt"] == "from a greenlet: "
    assert stdout_of(msgs) == "got green\n"


def test_stale_replies_are_dropped(kc):
    # A reply to a request that no longer waits (here: made up) must not answer the next input().
    stale = kc.session.msg("input_reply", {"value": "stale"}, parent={"msg_id": "no-such-request"})
    kc.stdin_channel.send(stale)
    reply, msgs, _ = answer_inputs(kc, "print(input('fresh? '))", ["fresh"])
    assert stdout_of(msgs) == "fresh\n"

    # Interrupted while waiting: the late answer is dropped, the next input() gets its own.
    msg_id = kc.execute("input('interrupted? ')", allow_stdin=True)
    request = kc.get_stdin_msg(timeout=10)
    interrupt = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(interrupt)
    assert get_reply(kc, msg_id)["content"]["ename"] == "KeyboardInterrupt"
    collect_iopub(kc, msg_id)
    late = kc.session.msg("input_reply", {"value": "too late"}, parent=request["header"])
    kc.stdin_channel.send(late)
    reply, msgs, _ = answer_inputs(kc, "print(input('next? '))", ["next answer"])
    assert stdout_of(msgs) == "next answer\n"


def test_input_without_monkey_patching():
    km, kc = start_kernel("--no-monkey-patch")
    try:
        reply, msgs, _ = answer_inputs(kc, "print(input('plain? ') * 2)", ["ab"])
        assert stdout_of(msgs) == "abab\n"
        assert result_of(kc, "import gevent.monkey\ngevent.monkey.is_module_patched('socket')") == "False"
    finally:
        stop_kernel(km, kc)


def test_outside_a_request_input_is_refused_after_the_cell_ended(kc):
    msg_id = kc.execute("import gevent\n"
                        "def later():\n"
                        "    gevent.sleep(0.2)\n"
                        "    try:\n"
                        "        input('too late')\n"
                        "    except NotImplementedError as exc:\n"
                        "        print(type(exc).__name__)\n"
                        "gevent.spawn(later)", allow_stdin=True)
    collect_iopub(kc, msg_id)
    get_reply(kc, msg_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=5)
        if msg["msg_type"] == "stream":
            assert msg["content"]["text"] == "StdinNotImplementedError\n"
            assert msg["parent_header"]["msg_id"] == msg_id
            break
    else:
        pytest.fail("the late input() neither failed nor printed")
