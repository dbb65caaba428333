"""The debugger on the wire: breakpoints stop one greenlet, the rest of the kernel and host go on.

ipykernel's own tests/test_debugger.py runs unchanged against gkernel in
test_ipykernel_suite.py; these cover what gevent adds: a breakpoint in a
greenlet a cell spawned, a ticker and a neighbour kernel that keep running
while a cell is stopped, two kernels of one host debugged at once, and a
kernel without debugger (no monkey-patching) that says why.
"""

import itertools
import queue
import time

import pytest

from conftest import execute, flush_iopub, get_reply, result_of, start_kernel, stdout_of, stop_kernel

pytestmark = pytest.mark.timeout(120)

pytest.importorskip("debugpy", reason="the debugger needs debugpy (pip install 'gkernel[debugger]')")

_seq = itertools.count(1)

FUNCTION = "def add(a, b):\n    c = a + b\n    return c\n"


def debug(kc, command, **arguments):
    """Send a debug_request; return the debug_reply's content (a DAP response)."""
    msg = kc.session.msg("debug_request", {"type": "request", "seq": next(_seq), "command": command,
                                           "arguments": arguments})
    kc.control_channel.send(msg)
    return get_reply(kc, msg["header"]["msg_id"], channel="control")["content"]


def start_debugging(kc):
    reply = debug(kc, "initialize", clientID="test", adapterID="python", pathFormat="path",
                  linesStartAt1=True, columnsStartAt1=True)
    assert reply["success"], reply
    assert debug(kc, "attach")["success"]


def breakpoint_in(kc, code, line):
    """Dump *code* as JupyterLab does and set a breakpoint at *line*; return its source path."""
    source = debug(kc, "dumpCell", code=code)["body"]["sourcePath"]
    reply = debug(kc, "setBreakpoints", source={"path": source}, breakpoints=[{"line": line}])
    assert reply["success"] and reply["body"]["breakpoints"][0]["verified"], reply
    assert debug(kc, "configurationDone")["success"]
    return source


def debug_events(kc, event, timeout=15):
    """IOPub messages up to and including the first debug_event *event*; (that event, messages before)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["msg_type"] == "debug_event" and msg["content"]["event"] == event:
            return msg["content"], seen
        seen.append(msg)


def rest_of_cell(kc, cell_id, seen):
    """The IOPub messages of cell *cell_id*: those already *seen*, then the rest up to its idle."""
    msgs = [msg for msg in seen if msg["parent_header"].get("msg_id") == cell_id]
    while not (msgs and msgs[-1]["msg_type"] == "status" and msgs[-1]["content"]["execution_state"] == "idle"):
        msg = kc.get_iopub_msg(timeout=15)
        if msg["parent_header"].get("msg_id") == cell_id:
            msgs.append(msg)
    return msgs


def frame_variables(kc, thread_id):
    """{name: value} of the top frame's locals of stopped thread *thread_id*, and the frame."""
    frames = debug(kc, "stackTrace", threadId=thread_id)["body"]["stackFrames"]
    scopes = debug(kc, "scopes", frameId=frames[0]["id"])["body"]["scopes"]
    local = next(scope for scope in scopes if scope["name"] == "Locals")
    variables = debug(kc, "variables", variablesReference=local["variablesReference"])["body"]["variables"]
    return {v["name"]: v["value"] for v in variables}, frames[0]


def ticks_while(kc, ticker_id, seconds):
    """Lines the ticker cell *ticker_id* prints on IOPub within *seconds*."""
    lines = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = kc.get_iopub_msg(timeout=left)
        except Exception:
            break
        if msg["msg_type"] == "stream" and msg["parent_header"].get("msg_id") == ticker_id:
            lines += msg["content"]["text"].count("tick")
    return lines


@pytest.fixture
def kc():
    km, kc = start_kernel()
    yield kc
    debug(kc, "disconnect", restart=False, terminateDebuggee=True)
    stop_kernel(km, kc)


def test_kernel_info_and_kernelspec_offer_the_debugger(kc):
    from jupyter_client.kernelspec import KernelSpecManager

    from conftest import KERNEL_NAME

    kc.kernel_info()
    info = kc.get_shell_msg(timeout=15)["content"]
    assert info["debugger"] is True and "debugger" in info["supported_features"]
    assert KernelSpecManager().get_kernel_spec(KERNEL_NAME).metadata["debugger"] is True


def test_a_breakpoint_stops_the_cell_while_a_ticker_goes_on(kc):
    ticker_id = kc.execute("import gevent\n"
                           "def tick():\n"
                           "    while True:\n"
                           "        print('tick', flush=True)\n"
                           "        gevent.sleep(0.05)\n"
                           "ticker = gevent.spawn(tick)")
    assert get_reply(kc, ticker_id)["content"]["status"] == "ok"
    start_debugging(kc)
    code = FUNCTION + "total = add(2, 3)\ntotal"
    breakpoint_in(kc, code, 2)
    cell_id = kc.execute(code)
    stopped, _ = debug_events(kc, "stopped")
    assert stopped["body"]["reason"] == "breakpoint"
    assert stopped["body"]["threadId"] == 1  # the main shell, as under ipykernel
    assert stopped["body"]["allThreadsStopped"] is False
    assert debug(kc, "debugInfo")["body"]["stoppedThreads"] == [1]

    # Stopped: the ticker of the earlier cell goes on (20 a second), and so does control.
    assert ticks_while(kc, ticker_id, 1.0) >= 10
    started = time.monotonic()
    assert debug(kc, "threads")["success"]
    assert time.monotonic() - started < 1.0

    variables, frame = frame_variables(kc, 1)
    assert (variables["a"], variables["b"]) == ("2", "3")
    assert frame["name"] == "add" and frame["line"] == 2
    evaluated = debug(kc, "evaluate", expression="a * 10 + b", frameId=frame["id"], context="repl")
    assert evaluated["body"]["result"] == "23"

    assert debug(kc, "next", threadId=1)["success"]
    stepped, _ = debug_events(kc, "stopped")
    assert stepped["body"]["reason"] == "step"
    variables, frame = frame_variables(kc, 1)
    assert frame["line"] == 3 and variables["c"] == "5"

    assert debug(kc, "continue", threadId=1)["success"]
    reply = get_reply(kc, cell_id)
    assert reply["content"]["status"] == "ok"
    assert debug(kc, "debugInfo")["body"]["stoppedThreads"] == []
    kc.execute("ticker.kill()")


def test_a_breakpoint_in_a_spawned_greenlet_stops_that_greenlet_only(kc):
    start_debugging(kc)
    code = FUNCTION + ("import gevent\n"
                       "worker = gevent.spawn(add, 20, 22)\n"
                       "beats = 0\n"
                       "while not worker.dead:\n"
                       "    beats += 1\n"
                       "    gevent.sleep(0.01)\n"
                       "print('result', worker.value, 'beats', beats > 20)")
    breakpoint_in(kc, code, 2)
    cell_id = kc.execute(code)
    stopped, before = debug_events(kc, "stopped")
    thread_id = stopped["body"]["threadId"]
    assert thread_id != 1  # not the main shell: the cell itself goes on beating
    threads = {t["id"]: t["name"] for t in debug(kc, "threads")["body"]["threads"]}
    assert thread_id in threads and threads.get(1) == "shell"
    variables, frame = frame_variables(kc, thread_id)
    assert (variables["a"], variables["b"]) == ("20", "22") and frame["name"] == "add"
    time.sleep(0.5)  # the cell's loop beats meanwhile
    assert debug(kc, "continue", threadId=thread_id)["success"]
    assert get_reply(kc, cell_id)["content"]["status"] == "ok"
    assert "result 42 beats True" in stdout_of(rest_of_cell(kc, cell_id, before))


def test_a_running_greenlet_a_cell_spawned_is_listed_and_can_be_paused(kc):
    start_debugging(kc)
    execute(kc, "import gevent\nticks = 0\n"
                "def tick():\n    global ticks\n    while True:\n        ticks += 1\n        gevent.sleep(0.01)\n"
                "ticker = gevent.spawn(tick)")
    time.sleep(0.3)
    listed = [t for t in debug(kc, "threads")["body"]["threads"] if t["id"] != 1]
    assert listed and all(not t["name"].startswith("gkernel") for t in listed), listed
    found = None
    for thread in listed:  # the ticker is one of them: pause each, look at where it stopped
        if not debug(kc, "pause", threadId=thread["id"])["success"]:
            continue
        stopped, _ = debug_events(kc, "stopped", timeout=5)
        frames = debug(kc, "stackTrace", threadId=stopped["body"]["threadId"])["body"]["stackFrames"]
        if frames and frames[0]["name"] == "tick":
            found = stopped["body"]["threadId"]
        assert debug(kc, "continue", threadId=stopped["body"]["threadId"], singleThread=True)["success"]
        if found:
            break
    assert found is not None, f"no listed thread was the ticker: {listed}"
    before = int(result_of(kc, "ticks"))
    time.sleep(0.3)
    assert int(result_of(kc, "ticks")) > before  # resumed


def test_pause_stops_a_spinning_cell_and_inspect_variables_lists_the_namespace(kc):
    start_debugging(kc)
    reply = debug(kc, "pause", threadId=1)  # no cell ran since the session began
    assert not reply["success"] and "runs no cell" in reply["message"], reply
    reply, _ = execute(kc, "answer = {'x': [1, 2, 3]}\n_items = 'mine'\n'an output'")
    variables = debug(kc, "inspectVariables")["body"]["variables"]
    answer = next(v for v in variables if v["name"] == "answer")
    assert answer["type"] == "dict" and answer["variablesReference"] > 0
    names = {v["name"] for v in variables}
    assert "_items" in names  # the user's, though it starts like IPython's _i<n>
    assert not names & {"In", "Out", "get_ipython", "open", "exit", "_i", "_ii", "_", "_i1", "_1"}
    children = debug(kc, "variables", variablesReference=answer["variablesReference"])["body"]["variables"]
    assert [(c["name"], c["value"], c["evaluateName"]) for c in children] == [("'x'", "[1, 2, 3]", "answer['x']")]
    grandchildren = debug(kc, "variables", variablesReference=children[0]["variablesReference"])["body"]["variables"]
    assert [(c["value"], c["evaluateName"]) for c in grandchildren] == [("1", "answer['x'][0]"), ("2", "answer['x'][1]"),
                                                                         ("3", "answer['x'][2]")]
    # Shown by a bounded repr on the control channel: the full one of this list takes about a second.
    execute(kc, "big = [0] * 10_000_000")
    started = time.monotonic()
    big = next(v for v in debug(kc, "inspectVariables")["body"]["variables"] if v["name"] == "big")
    assert time.monotonic() - started < 0.5 and big["value"].endswith(", ...]") and len(big["value"]) < 1000
    execute(kc, "del big")
    rich = debug(kc, "richInspectVariables", variableName="answer")
    assert rich["body"]["data"] == {"text/plain": "{'x': [1, 2, 3]}"}

    cell_id = kc.execute("import time\nspins = 0\nwhile True:\n    spins += 1\n")
    time.sleep(0.5)
    assert debug(kc, "pause", threadId=1)["success"]  # JupyterLab pauses thread 1 when none is stopped
    stopped, _ = debug_events(kc, "stopped")
    assert stopped["body"]["reason"] == "pause" and stopped["body"]["threadId"] == 1
    variables, _ = frame_variables(kc, 1)
    assert int(variables["spins"]) > 0
    assert debug(kc, "continue", threadId=1)["success"]
    kc.control_channel.send(kc.session.msg("interrupt_request", {}))
    assert get_reply(kc, cell_id, timeout=15)["content"]["status"] == "error"


def test_malformed_debug_requests_get_an_error_and_the_kernel_goes_on(kc):
    for content in ({}, {"command": 3}, {"command": "attach", "arguments": []}, {"command": "stackTrace"}):
        msg = kc.session.msg("debug_request", content)
        kc.control_channel.send(msg)
        reply = get_reply(kc, msg["header"]["msg_id"], channel="control")["content"]
        assert reply["success"] is False and reply["message"], (content, reply)
    # Arguments of the wrong type for commands the kernel answers itself: DAP error responses.
    start_debugging(kc)
    for command, arguments in (("modules", {"startModule": "x"}), ("modules", {"moduleCount": [1]}),
                               ("copyToGlobals", {"srcVariableName": 3, "dstVariableName": "b"})):
        reply = debug(kc, command, **arguments)
        assert reply["success"] is False and reply["command"] == command and reply["message"], (command, reply)
    reply, msgs = execute(kc, "print('still here')")
    assert reply["content"]["status"] == "ok" and stdout_of(msgs) == "still here\n"


def test_after_disconnect_nothing_is_traced_and_a_neighbour_can_debug_once_the_kernel_is_gone(host):
    id_a, a = host.kernel()
    start_debugging(a)
    assert debug(a, "disconnect", restart=False, terminateDebuggee=True)["success"]
    # pydevd's tracer of the greenlet that detached must not stay on for every greenlet.
    assert result_of(a, "import sys\nrepr(sys.gettrace())") == "'None'"
    a.stop_channels()
    host.clients.remove(a)
    host.api.shutdown(id_a)
    _, b = host.kernel()
    start_debugging(b)
    evaluated = debug(b, "evaluate", expression="'a' + 'b'", context="repl")
    assert evaluated["success"] and evaluated["body"]["result"] == "ab", evaluated


def test_without_monkey_patching_the_debugger_is_off_and_says_why():
    km, kc = start_kernel("--no-monkey-patch")
    try:
        kc.kernel_info()
        info = kc.get_shell_msg(timeout=15)["content"]
        assert info["debugger"] is False and "debugger" not in info["supported_features"]
        reply = debug(kc, "initialize", clientID="test", adapterID="python")
        assert reply["success"] is False and "monkey-patching" in reply["message"]
    finally:
        stop_kernel(km, kc)


def test_two_kernels_of_a_host_are_debugged_at_once_and_a_neighbour_keeps_answering(host):
    _, a = host.kernel()
    _, b = host.kernel()
    _, neighbour = host.kernel()
    for kc in (a, b):
        start_debugging(kc)
    code_a = FUNCTION + "add(1, 2)"
    code_b = FUNCTION + "add(30, 40)"  # another cell file: each kernel's breakpoints are its own
    breakpoint_in(a, code_a, 2)
    breakpoint_in(b, code_b, 2)
    id_a = a.execute(code_a)
    stopped_a, _ = debug_events(a, "stopped")
    id_b = b.execute(code_b)
    stopped_b, _ = debug_events(b, "stopped")
    assert stopped_a["body"]["threadId"] == stopped_b["body"]["threadId"] == 1
    assert frame_variables(a, 1)[0]["a"] == "1"
    assert frame_variables(b, 1)[0]["a"] == "30"

    # Two cells of the host stopped: a third kernel answers at once.
    started = time.monotonic()
    reply, msgs = execute(neighbour, "print(6 * 7)")
    assert stdout_of(msgs) == "42\n" and time.monotonic() - started < 1.0

    # A session cannot drive another kernel's threads, whatever id it tries.
    for guess in range(2, 40):
        reply = debug(a, "stackTrace", threadId=guess)
        assert not reply["success"], f"kernel a saw thread {guess}: {reply}"

    # Each kernel sees only its own events.
    assert debug(b, "continue", threadId=1)["success"]
    assert get_reply(b, id_b)["content"]["status"] == "ok"
    assert debug(a, "debugInfo")["body"]["stoppedThreads"] == [1]
    assert debug(a, "continue", threadId=1)["success"]
    assert get_reply(a, id_a)["content"]["status"] == "ok"
    for kc in (a, b):
        assert debug(kc, "disconnect", restart=False, terminateDebuggee=True)["success"]


def test_a_session_neither_traces_nor_stops_a_neighbour_kernel_in_a_shared_module(host, tmp_path):
    (tmp_path / "shared_module.py").write_text("def double(x):\n    y = x * 2\n    return y\n")
    _, debugged = host.kernel()
    _, neighbour = host.kernel()
    execute(debugged, f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport shared_module")
    start_debugging(debugged)
    reply = debug(debugged, "setBreakpoints", source={"path": str(tmp_path / "shared_module.py")},
                  breakpoints=[{"line": 2}])
    assert reply["success"] and reply["body"]["breakpoints"][0]["verified"], reply
    assert debug(debugged, "configurationDone")["success"]

    # The neighbour (no session) runs the module's code, untraced, and nothing reaches the session.
    flush_iopub(debugged)
    reply, msgs = execute(neighbour, "import sys, shared_module\nprint(shared_module.double(21), sys.gettrace())")
    assert stdout_of(msgs) == "42 None\n"
    with pytest.raises(queue.Empty):  # no debug_event, nor anything else
        debugged.get_iopub_msg(timeout=0.5)

    # The debugged kernel stops there.
    cell_id = debugged.execute("shared_module.double(5)")
    stopped, _ = debug_events(debugged, "stopped")
    assert stopped["body"]["threadId"] == 1 and frame_variables(debugged, 1)[0]["x"] == "5"
    assert debug(debugged, "continue", threadId=1)["success"]
    assert get_reply(debugged, cell_id)["content"]["status"] == "ok"
    assert debug(debugged, "disconnect", restart=False, terminateDebuggee=True)["success"]


def test_a_forked_child_leaves_the_debugger_connection_to_its_parent(kc):
    # The child inherits the process's connection to pydevd: it must not read the parent's
    # responses and events, nor write into the connection.
    start_debugging(kc)
    reply, msgs = execute(kc, "import os, time\n"
                              "child = os.fork()\n"
                              "if child == 0:\n"
                              "    time.sleep(1.5)\n"
                              "    os._exit(0)\n"
                              "print('forked')")
    assert stdout_of(msgs) == "forked\n"
    started = time.monotonic()
    while time.monotonic() - started < 2:  # while the child lives, and a little after
        reply = debug(kc, "threads")
        assert reply["success"] and reply["request_seq"] and isinstance(reply["body"]["threads"], list)
    code = FUNCTION + "add(6, 7)"
    breakpoint_in(kc, code, 2)
    cell_id = kc.execute(code)
    stopped, _ = debug_events(kc, "stopped")
    assert frame_variables(kc, 1)[0]["a"] == "6"
    assert debug(kc, "continue", threadId=1)["success"]
    assert get_reply(kc, cell_id)["content"]["status"] == "ok"
    assert result_of(kc, "os.waitpid(child, 0)[1]") == "0"


def test_an_interrupt_ends_a_stopped_cell_and_the_debugger_stops_it_again(kc):
    start_debugging(kc)
    code = FUNCTION + "add(4, 5)"
    breakpoint_in(kc, code, 2)
    for attempt in range(2):
        cell_id = kc.execute(code)
        debug_events(kc, "stopped")
        if attempt == 0:
            kc.control_channel.send(kc.session.msg("interrupt_request", {}))
            reply = get_reply(kc, cell_id)["content"]
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        else:
            assert debug(kc, "continue", threadId=1)["success"]
            assert get_reply(kc, cell_id)["content"]["status"] == "ok"
    reply, msgs = execute(kc, "print('after')")
    assert stdout_of(msgs) == "after\n"


def test_a_kernel_stopped_at_a_breakpoint_shuts_down_and_its_host_goes_on(host):
    kernel_id, stopped = host.kernel()
    _, other = host.kernel()
    start_debugging(stopped)
    code = FUNCTION + "add(1, 1)"
    breakpoint_in(stopped, code, 2)
    stopped.execute(code)
    debug_events(stopped, "stopped")
    host.api.shutdown(kernel_id)
    assert kernel_id not in {k["id"] for k in host.api.list()}
    # The host and its other kernel go on, and the other kernel can still debug.
    start_debugging(other)
    breakpoint_in(other, code, 2)
    cell_id = other.execute(code)
    debug_events(other, "stopped")
    assert debug(other, "continue", threadId=1)["success"]
    assert get_reply(other, cell_id)["content"]["status"] == "ok"


def test_a_session_ended_while_a_cell_is_stopped_resumes_it_and_the_next_session_stops_again(kc):
    code = FUNCTION + "add(5, 6)"
    for session in range(2):
        start_debugging(kc)
        breakpoint_in(kc, code, 2)
        cell_id = kc.execute(code)
        debug_events(kc, "stopped")
        if session == 0:  # the front end turns the debugger off while the cell is stopped
            assert debug(kc, "disconnect", restart=False, terminateDebuggee=True)["success"]
            assert get_reply(kc, cell_id)["content"]["status"] == "ok"
        else:
            assert debug(kc, "continue", threadId=1)["success"]
            assert get_reply(kc, cell_id)["content"]["status"] == "ok"
