"""Every message type of the protocol, driven over real sockets by jupyter_client."""

import time

import pytest
import zmq
from jupyter_client.session import Session

from conftest import collect_iopub, execute, flush_iopub, get_reply, outputs, plain, start_kernel, stop_kernel

pytestmark = pytest.mark.timeout(60)


def send_control(kc, msg_type, content=None):
    msg = kc.session.msg(msg_type, content or {})
    kc.control_channel.send(msg)
    return msg["header"]["msg_id"]


def test_kernel_info(kc):
    msg_id = kc.kernel_info()
    reply = get_reply(kc, msg_id)
    c = reply["content"]
    assert reply["msg_type"] == "kernel_info_reply"
    assert c["status"] == "ok"
    assert tuple(map(int, c["protocol_version"].split("."))) >= (5, 3)
    assert c["implementation"] == "gkernel" and c["implementation_version"]
    li = c["language_info"]
    assert li["name"] == "python" and li["file_extension"] == ".py"
    for key in ("version", "mimetype", "pygments_lexer", "codemirror_mode"):
        assert li[key]
    assert "gkernel" in c["banner"]
    assert all({"text", "url"} <= set(link) for link in c["help_links"]) and c["help_links"]
    msgs = collect_iopub(kc, msg_id)
    assert [m["content"]["execution_state"] for m in msgs] == ["busy", "idle"]


def test_execute_wire_order_and_parents(kc):
    flush_iopub(kc)
    msg_id = kc.execute("print('hello')\n6 * 7")
    reply = get_reply(kc, msg_id)
    msgs = collect_iopub(kc, msg_id)
    types = [m["msg_type"] for m in msgs]
    assert types == ["status", "execute_input", "stream", "execute_result", "status"]
    assert all(m["parent_header"]["msg_id"] == msg_id for m in msgs)
    count = reply["content"]["execution_count"]
    assert msgs[1]["content"] == {"code": "print('hello')\n6 * 7", "execution_count": count}
    assert msgs[2]["content"] == {"name": "stdout", "text": "hello\n"}
    assert msgs[3]["content"]["data"]["text/plain"] == "42"
    assert msgs[3]["content"]["execution_count"] == count
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["payload"] == [] and reply["content"]["user_expressions"] == {}


def test_execution_count_silent_and_store_history(kc):
    first, _ = execute(kc, "1")
    n = first["content"]["execution_count"]
    reply, msgs = execute(kc, "print('quiet'); 99", silent=True)
    assert reply["content"]["execution_count"] == n
    assert [m["msg_type"] for m in msgs] == ["stream"]  # no execute_input, no execute_result
    reply, msgs = execute(kc, "2", store_history=False)
    assert reply["content"]["execution_count"] == n
    assert msgs[0]["content"]["execution_count"] == n
    reply, _ = execute(kc, "3")
    assert reply["content"]["execution_count"] == n + 1


def test_stream_stderr_and_semicolon(kc):
    reply, msgs = execute(kc, "import sys\nsys.stderr.write('oops\\n')\n41;")
    assert outputs(msgs, "stream", "stderr") == [{"name": "stderr", "text": "oops\n"}]
    assert not outputs(msgs, "execute_result")


def test_underscore_results(kc):
    execute(kc, "'a'")
    execute(kc, "'b'")
    execute(kc, "'c'")
    _, msgs = execute(kc, "(_, __, ___)")
    assert outputs(msgs, "execute_result")[0]["data"]["text/plain"] == "('c', 'b', 'a')"


def test_rich_reprs(kc):
    code = '''
class Rich:
    def _repr_html_(self): return "<b>rich</b>"
    def _repr_markdown_(self): return "**rich**"
    def _repr_svg_(self): return "<svg></svg>"
    def _repr_png_(self): return b"\\x89PNG"
    def _repr_jpeg_(self): return b"\\xff\\xd8"
    def _repr_json_(self): return {"a": 1}
    def _repr_latex_(self): return "$x$"
    def __repr__(self): return "Rich()"
Rich()'''
    _, msgs = execute(kc, code)
    data = outputs(msgs, "execute_result")[0]["data"]
    assert data == {
        "text/plain": "Rich()", "text/html": "<b>rich</b>", "text/markdown": "**rich**",
        "image/svg+xml": "<svg></svg>", "image/png": "iVBORw==", "image/jpeg": "/9g=",
        "application/json": {"a": 1}, "text/latex": "$x$",
    }
    _, msgs = execute(kc, '''
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": "<i>b</i>", "application/x-custom": "c"}, {"text/html": {"isolated": True}}
Bundle()''')
    result = outputs(msgs, "execute_result")[0]
    assert result["data"]["application/x-custom"] == "c" and result["data"]["text/html"] == "<i>b</i>"
    assert result["data"]["text/plain"].startswith("<__main__.Bundle")
    assert result["metadata"] == {"text/html": {"isolated": True}}


def test_display_functions(kc):
    _, msgs = execute(kc, "display('x', {'a': 1})\nfrom IPython.display import clear_output\nclear_output(wait=True)")
    types = [m["msg_type"] for m in msgs]
    assert types == ["execute_input", "display_data", "display_data", "clear_output"]
    assert msgs[1]["content"]["data"] == {"text/plain": "'x'"}
    assert msgs[3]["content"] == {"wait": True}
    _, msgs = execute(kc, "h = display('one', display_id='d1')\nh.update('two')")
    shown, updated = outputs(msgs, "display_data")[0], outputs(msgs, "update_display_data")[0]
    assert shown["transient"] == updated["transient"] == {"display_id": "d1"}
    assert updated["data"]["text/plain"] == "'two'"


def test_error_traceback_shows_cell_source(kc):
    execute(kc, "def inner():\n    raise ValueError('bad value')")
    reply, msgs = execute(kc, "x = 1\ninner()")
    c = reply["content"]
    assert c["status"] == "error" and c["ename"] == "ValueError" and c["evalue"] == "bad value"
    err = outputs(msgs, "error")[0]
    assert err["ename"] == "ValueError"
    text = plain("\n".join(err["traceback"]))
    assert "inner()" in text and "raise ValueError('bad value')" in text
    assert "gkernel/" not in text  # the kernel's own frames are hidden
    reply, _ = execute(kc, "def broken(:\n    pass")
    assert reply["content"]["ename"] == "SyntaxError"
    assert "def broken(:" in plain("\n".join(reply["content"]["traceback"]))


def test_user_expressions(kc):
    execute(kc, "ue = 21")
    reply, _ = execute(kc, "pass", user_expressions={"double": "ue * 2", "bad": "1/0"})
    ue = reply["content"]["user_expressions"]
    assert ue["double"] == {"status": "ok", "data": {"text/plain": "42"}, "metadata": {}}
    assert ue["bad"]["status"] == "error" and ue["bad"]["ename"] == "ZeroDivisionError"


def test_stop_on_error_aborts_queued_requests(kc):
    flush_iopub(kc)
    failing = kc.execute("import gevent; gevent.sleep(0.3); 1/0")
    queued = [kc.execute(f"aborted_{i} = True") for i in range(3)]
    assert get_reply(kc, failing)["content"]["status"] == "error"
    for msg_id in queued:
        reply = get_reply(kc, msg_id)
        assert reply["content"]["status"] == "aborted"
        assert [m["content"]["execution_state"] for m in collect_iopub(kc, msg_id)] == ["busy", "idle"]
    reply, msgs = execute(kc, "'aborted_0' in globals()")
    assert reply["content"]["status"] == "ok"  # the kernel serves again after the queue
    assert outputs(msgs, "execute_result")[0]["data"]["text/plain"] == "False"


def test_stop_on_error_aborts_everything_sent_before_the_error(kc):
    """Ten requests sent at once, the second failing: in 30 rounds, no cell after it runs.

    Requests that arrive while the failing cell runs are not read yet when it
    fails; each must still be aborted, since it was sent before the error reply.
    """
    execute(kc, "ran_after_error = 0")
    for _ in range(30):
        flush_iopub(kc)
        ids = [kc.execute("pass"), kc.execute("1/0")]
        ids += [kc.execute("ran_after_error += 1") for _ in range(8)]
        statuses = [get_reply(kc, msg_id)["content"]["status"] for msg_id in ids]
        assert statuses == ["ok", "error"] + ["aborted"] * 8
    # One still on its way when the cell failed (made, hence dated, before; delivered after).
    in_transit = kc.session.msg("execute_request", {"code": "ran_after_error += 1", "silent": False})
    assert get_reply(kc, kc.execute("1/0"))["content"]["status"] == "error"
    kc.shell_channel.send(in_transit)
    assert get_reply(kc, in_transit["header"]["msg_id"])["content"]["status"] == "aborted"
    reply, msgs = execute(kc, "ran_after_error")  # sent after the error reply: runs
    assert outputs(msgs, "execute_result")[0]["data"]["text/plain"] == "0"


def test_stop_on_error_false_runs_queued_requests(kc):
    failing = kc.execute("import gevent; gevent.sleep(0.2); 1/0", stop_on_error=False)
    queued = kc.execute("'still runs'")
    assert get_reply(kc, failing)["content"]["status"] == "error"
    assert get_reply(kc, queued)["content"]["status"] == "ok"


def test_complete_with_jedi(kc):
    execute(kc, "import os\nmy_variable = 1")
    code = "my_var"
    reply = get_reply(kc, kc.complete(code))
    c = reply["content"]
    assert c["status"] == "ok" and "my_variable" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (0, len(code))
    reply = get_reply(kc, kc.complete("x = os.pa", cursor_pos=9))
    assert "path" in reply["content"]["matches"] and reply["content"]["cursor_start"] == 7
    types = reply["content"]["metadata"]["_jupyter_types_experimental"]
    assert {"text": "path", "type": "module"}.items() <= next(t for t in types if t["text"] == "path").items()


def test_complete_without_jedi():
    km, kc = start_kernel("--IPCompleter.use_jedi=False")
    try:
        execute(kc, "import os\nmy_variable = 1")
        c = get_reply(kc, kc.complete("my_va"))["content"]
        assert c["matches"] == ["my_variable"] and c["cursor_start"] == 0
        code = "os.pat"
        c = get_reply(kc, kc.complete(code))["content"]
        completed = {code[:c["cursor_start"]] + match + code[c["cursor_end"]:] for match in c["matches"]}
        assert "os.path" in completed
    finally:
        stop_kernel(km, kc)


def test_inspect(kc):
    execute(kc, "def documented(a, b=2):\n    'Adds things.'\n    return a + b")
    c = get_reply(kc, kc.inspect("documented(1, ", cursor_pos=13))["content"]
    assert c["status"] == "ok" and c["found"]
    text = plain(c["data"]["text/plain"])
    assert "documented(a, b=2)" in text and "Adds things." in text
    c = get_reply(kc, kc.inspect("documented", detail_level=1))["content"]
    assert "return a + b" in plain(c["data"]["text/plain"])
    c = get_reply(kc, kc.inspect("no_such_name"))["content"]
    assert c == {"status": "ok", "found": False, "data": {}, "metadata": {}}


def test_help_pager_payload(kc):
    reply, _ = execute(kc, "len?")
    payload = reply["content"]["payload"]
    assert len(payload) == 1 and payload[0]["source"] == "page"
    assert "Return the number of items" in plain(payload[0]["data"]["text/plain"])


@pytest.mark.parametrize("code, status", [
    ("x = 1", "complete"),
    ("def f(x):\n    return x\n\n", "complete"),
    ("for i in range(3):", "incomplete"),
    ("print('''hello", "incomplete"),
    ("x = (1,", "incomplete"),
    ("import = 7q", "invalid"),
])
def test_is_complete(kc, code, status):
    c = get_reply(kc, kc.is_complete(code))["content"]
    assert c["status"] == status
    if code == "for i in range(3):":
        assert c["indent"] == "    "


def test_history_tail_range_search(kc):
    for code in ["hist_a = 1", "hist_b = 2", "hist_a + hist_b"]:
        execute(kc, code)
    c = get_reply(kc, kc.history(hist_access_type="tail", n=3, output=False, raw=True))["content"]
    assert [h[2] for h in c["history"]] == ["hist_a = 1", "hist_b = 2", "hist_a + hist_b"]
    session, first = c["history"][0][:2]
    c = get_reply(kc, kc.history(hist_access_type="tail", n=1, output=True, raw=True))["content"]
    # (input, output); the output is kept only with --HistoryManager.db_log_output, as in IPython
    assert c["history"][0][2] == ["hist_a + hist_b", None]
    c = get_reply(kc, kc.history(hist_access_type="range", session=session, start=first,
                                 stop=first + 2, raw=True, output=False))["content"]
    assert [h[1:] for h in c["history"]] == [[first, "hist_a = 1"], [first + 1, "hist_b = 2"]]
    c = get_reply(kc, kc.history(hist_access_type="range", session=0, start=first, stop=first + 1,
                                 raw=True, output=False))["content"]
    assert c["history"] == [[session, first, "hist_a = 1"]]  # 0 = the current session
    execute(kc, "hist_a = 1")
    c = get_reply(kc, kc.history(hist_access_type="search", pattern="hist_a*", raw=True, output=False))["content"]
    assert [h[2] for h in c["history"]] == ["hist_a = 1", "hist_a + hist_b", "hist_a = 1"]
    c = get_reply(kc, kc.history(hist_access_type="search", pattern="hist_a*", unique=True,
                                 raw=True, output=False))["content"]
    assert [h[2] for h in c["history"]] == ["hist_a + hist_b", "hist_a = 1"]
    c = get_reply(kc, kc.history(hist_access_type="search", pattern="hist_*", n=2,
                                 raw=True, output=False))["content"]
    assert [h[2] for h in c["history"]] == ["hist_a + hist_b", "hist_a = 1"]


def test_history_persists_across_kernel_sessions():
    km, kc = start_kernel()
    try:
        execute(kc, "persisted_marker = 'from an earlier session'")
        session = get_reply(kc, kc.history(hist_access_type="tail", n=1))["content"]["history"][0][0]
    finally:
        stop_kernel(km, kc)
    km, kc = start_kernel()
    try:
        c = get_reply(kc, kc.history(hist_access_type="search", pattern="persisted_marker*"))["content"]
        assert [h[0] for h in c["history"]] == [session]
        c = get_reply(kc, kc.history(hist_access_type="range", session=session, start=1))["content"]
        assert c["history"][-1][2] == "persisted_marker = 'from an earlier session'"
    finally:
        stop_kernel(km, kc)


def test_comm_info_and_connect(kernel):
    km, kc = kernel
    c = get_reply(kc, kc.comm_info())["content"]
    assert c == {"status": "ok", "comms": {}}
    msg = kc.session.msg("connect_request", {})
    kc.shell_channel.send(msg)
    c = get_reply(kc, msg["header"]["msg_id"])["content"]
    info = km.get_connection_info()
    for name in ("shell", "iopub", "stdin", "hb", "control"):
        assert c[f"{name}_port"] == info[f"{name}_port"]


def test_usage_request_on_control(kc):
    msg_id = send_control(kc, "usage_request")
    reply = get_reply(kc, msg_id, channel="control")
    c = reply["content"]
    assert reply["msg_type"] == "usage_reply"
    assert c["kernel_memory"] > 10 * 2**20 and c["cpu_count"] >= 1 and c["pid"] > 0
    assert 0.0 <= c["host_cpu_percent"] <= 100.0 and c["kernel_cpu"] >= 0.0
    assert {"total", "available"} <= set(c["host_virtual_memory"])


def test_control_served_while_shell_sleeps(kc):
    flush_iopub(kc)
    cell = kc.execute("import gevent\ngevent.sleep(3)\n'woke'")
    time.sleep(0.3)
    start = time.monotonic()
    info = send_control(kc, "kernel_info_request")
    reply = get_reply(kc, info, channel="control")
    elapsed = time.monotonic() - start
    assert reply["content"]["status"] == "ok" and elapsed < 1.0
    assert get_reply(kc, cell)["content"]["status"] == "ok"


def test_control_before_shell_when_both_queued(kc):
    # A CPU-bound cell keeps every greenlet from running: the requests sent
    # meanwhile are all queued when it ends; control must be served first.
    flush_iopub(kc)
    busy = kc.execute("import time\nend = time.perf_counter() + 0.5\nwhile time.perf_counter() < end: pass")
    time.sleep(0.1)
    shell_id = kc.execute("'shell'")
    control_id = send_control(kc, "kernel_info_request")
    get_reply(kc, busy)
    order = []
    while len(order) < 2:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
            if msg["parent_header"]["msg_id"] in (shell_id, control_id):
                order.append(msg["parent_header"]["msg_id"])
    assert order == [control_id, shell_id]
    get_reply(kc, shell_id)


@pytest.mark.parametrize("restart", [False, True])
def test_shutdown_exits_promptly(restart):
    km, kc = start_kernel()
    try:
        msg_id = send_control(kc, "shutdown_request", {"restart": restart})
        reply = get_reply(kc, msg_id, channel="control")
        assert reply["content"] == {"status": "ok", "restart": restart}
        iopub = collect_iopub(kc, msg_id)
        assert [m["msg_type"] for m in iopub] == ["status", "shutdown_reply", "status"]
        start = time.monotonic()
        assert km.provisioner.process.wait(timeout=5) == 0
        assert time.monotonic() - start < 3
    finally:
        kc.stop_channels()
        km.cleanup_resources()


def test_shutdown_while_a_cell_runs():
    km, kc = start_kernel()
    try:
        kc.execute("import gevent\ngevent.sleep(30)")
        time.sleep(0.3)
        msg_id = send_control(kc, "shutdown_request", {"restart": False})
        assert get_reply(kc, msg_id, channel="control")["content"]["status"] == "ok"
        assert km.provisioner.process.wait(timeout=5) == 0
    finally:
        kc.stop_channels()
        km.cleanup_resources()


def test_iopub_welcome_per_subscription(kernel):
    km, kc = kernel
    info = km.get_connection_info()
    session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
    ctx = zmq.Context.instance()
    subs = []
    try:
        for topic in (b"status", b""):  # a specific topic, then a second client for everything
            sub = ctx.socket(zmq.SUB)
            sub.linger = 0
            sub.subscribe(topic)
            sub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
            subs.append(sub)
            assert sub.poll(5000), f"no iopub_welcome for topic {topic!r}"
            _, msg_list = session.feed_identities(sub.recv_multipart())
            msg = session.deserialize(msg_list)
            assert msg["msg_type"] == "iopub_welcome"
            assert msg["content"] == {"subscription": topic.decode()}
        execute(kc, "print('not a status message')")
        status_sub = subs[0]
        seen = set()
        while status_sub.poll(500):
            _, msg_list = session.feed_identities(status_sub.recv_multipart())
            seen.add(session.deserialize(msg_list)["msg_type"])
        assert seen == {"status"}  # the topic filter holds: no stream, no execute_input
    finally:
        for sub in subs:
            sub.close()
