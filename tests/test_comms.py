"""Comms on the wire: both directions, buffers, comm_info, ipywidgets, isolation, comms beside a running cell."""

import time

import pytest

from conftest import collect_iopub, execute, get_reply, outputs, result_of, stdout_of

pytestmark = pytest.mark.timeout(60)

#: a target that echoes every message back, with the number and content of its buffers
ECHO_TARGET = """\
import comm
def echo_target(c, msg):
    c.send({'opened_with': msg['content']['data']})
    c.on_msg(lambda m: c.send({'echo': m['content']['data'],
                              'buffers': [bytes(b).decode() for b in m['buffers']]},
                             buffers=[b'back'] + [bytes(b) for b in m['buffers']]))
    c.on_close(lambda m: print('closed by the front end', m['content']['data']))
comm.get_comm_manager().register_target('echo', echo_target)
"""


def send_shell(kc, msg_type, content, buffers=None):
    """Send a message on the shell channel (with binary buffers); return its msg_id."""
    msg = kc.session.send(kc.shell_channel.socket, msg_type, content, buffers=buffers)
    return msg["header"]["msg_id"]


def iopub_of(kc, msg_id, timeout=10):
    """IOPub messages whose parent is *msg_id*, until its idle (or, for comm messages served
    beside a cell, until *timeout* passes with nothing more)."""
    msgs = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except Exception:
            if msgs:
                return msgs
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return msgs
    return msgs


def iopub_until_idle_of(kc, msg_id, timeout=20):
    """Every IOPub message, whatever its parent, until the idle status of request *msg_id*."""
    msgs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        msgs.append(msg)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            return msgs


def comm_info(kc, target_name=None):
    content = {} if target_name is None else {"target_name": target_name}
    msg_id = kc.comm_info(**content) if target_name else kc.comm_info()
    return get_reply(kc, msg_id)["content"]["comms"]


def test_a_comm_opened_by_the_kernel_talks_with_buffers(kc):
    msg_id = kc.execute("""\
import comm
c = comm.create_comm(target_name='from_kernel', data={'hello': 1}, metadata={'m': 2}, buffers=[b'one'])
c.send({'step': 2}, buffers=[b'two', memoryview(b'three')])
c.close({'bye': 3})
""")
    assert get_reply(kc, msg_id)["content"]["status"] == "ok"
    msgs = [m for m in collect_iopub(kc, msg_id) if m["msg_type"].startswith("comm_")]
    assert [m["msg_type"] for m in msgs] == ["comm_open", "comm_msg", "comm_close"]
    opened, sent, closed = msgs
    comm_id = opened["content"]["comm_id"]
    assert opened["content"]["target_name"] == "from_kernel" and opened["content"]["data"] == {"hello": 1}
    assert opened["metadata"] == {"m": 2} and [bytes(b) for b in opened["buffers"]] == [b"one"]
    assert sent["content"] == {"comm_id": comm_id, "data": {"step": 2}}
    assert [bytes(b) for b in sent["buffers"]] == [b"two", b"three"]
    assert closed["content"] == {"comm_id": comm_id, "data": {"bye": 3}}
    assert all(m["parent_header"]["msg_id"] == msg_id for m in msgs)
    assert comm_info(kc) == {}  # closed: no longer listed


def test_a_comm_opened_by_the_front_end_with_buffers_both_ways(kc):
    execute(kc, ECHO_TARGET)
    open_id = send_shell(kc, "comm_open", {"comm_id": "c-1", "target_name": "echo", "data": {"x": 1}})
    opened = iopub_of(kc, open_id)
    assert [m["msg_type"] for m in opened] == ["status", "comm_msg", "status"]
    assert opened[1]["content"] == {"comm_id": "c-1", "data": {"opened_with": {"x": 1}}}
    msg_id = send_shell(kc, "comm_msg", {"comm_id": "c-1", "data": {"y": 2}}, buffers=[b"abc", b"de"])
    echo = [m for m in iopub_of(kc, msg_id) if m["msg_type"] == "comm_msg"]
    assert echo[0]["content"]["data"] == {"echo": {"y": 2}, "buffers": ["abc", "de"]}
    assert [bytes(b) for b in echo[0]["buffers"]] == [b"back", b"abc", b"de"]
    assert comm_info(kc) == {"c-1": {"target_name": "echo"}}
    assert comm_info(kc, "echo") == {"c-1": {"target_name": "echo"}}
    assert comm_info(kc, "other") == {}
    close_id = send_shell(kc, "comm_close", {"comm_id": "c-1", "data": {"why": "done"}})
    closing = iopub_of(kc, close_id)
    assert stdout_of(closing[1:-1]) == "closed by the front end {'why': 'done'}\n"
    assert comm_info(kc) == {}


def test_unknown_targets_and_comms_are_answered_and_the_kernel_goes_on(kc):
    open_id = send_shell(kc, "comm_open", {"comm_id": "c-2", "target_name": "nobody", "data": {}})
    closed = [m for m in iopub_of(kc, open_id) if m["msg_type"] == "comm_close"]
    assert closed and closed[0]["content"]["comm_id"] == "c-2"  # refused: closed at once, as comm does
    iopub_of(kc, send_shell(kc, "comm_msg", {"comm_id": "no-such-comm", "data": {}}))
    bad = send_shell(kc, "comm_msg", {"data": {}})  # no comm_id: logged, no reply (not a request)
    assert [m["msg_type"] for m in iopub_of(kc, bad)] == ["status", "status"]
    assert result_of(kc, "'still here'") == "'still here'"


def test_a_comm_message_is_handled_while_a_cell_waits_cooperatively(kc):
    execute(kc, ECHO_TARGET + "\nstate = {'v': 0}\n"
                "comm.get_comm_manager().register_target('setter', "
                "lambda c, m: c.on_msg(lambda m: state.update(v=m['content']['data']['v'])))")
    iopub_of(kc, send_shell(kc, "comm_open", {"comm_id": "s-1", "target_name": "setter", "data": {}}))
    cell = kc.execute("import gevent\nfor i in range(20):\n    gevent.sleep(0.1)\n    print(state['v'])")
    time.sleep(0.5)
    sent = time.monotonic()
    msg_id = send_shell(kc, "comm_msg", {"comm_id": "s-1", "data": {"v": 42}})
    reply = get_reply(kc, cell)
    elapsed = time.monotonic() - sent
    assert reply["content"]["status"] == "ok"
    assert elapsed > 0.8, "the cell had ended before the message was sent: nothing was shown"
    iopub_during = iopub_until_idle_of(kc, cell)
    lines = stdout_of([m for m in iopub_during if m["parent_header"].get("msg_id") == cell]).split()
    assert lines[0] == "0" and lines[-1] == "42" and "42" in lines[:15], lines  # seen while the cell ran
    # Beside a running cell a comm message gets its busy and idle (ipywidgets waits for that idle before
    # it sends a model's next update), and the cell's busy follows, for front ends that show the status.
    statuses = [(m["parent_header"]["msg_id"], m["content"]["execution_state"])
                for m in iopub_during if m["msg_type"] == "status"]
    comm_statuses = [state for parent, state in statuses if parent == msg_id]
    assert comm_statuses == ["busy", "idle"]
    assert statuses[statuses.index((msg_id, "idle")) + 1] == (cell, "busy")


def test_a_cell_sees_the_comm_messages_sent_before_it(kc):
    execute(kc, "import gevent\nslow = {'v': 0}\n"
                "def slow_target(c, m):\n"
                "    def on_msg(m):\n"
                "        gevent.sleep(0.3)\n"
                "        slow.update(v=m['content']['data']['v'])\n"
                "    c.on_msg(on_msg)\n"
                "comm.get_comm_manager().register_target('slow', slow_target)")
    iopub_of(kc, send_shell(kc, "comm_open", {"comm_id": "slow-1", "target_name": "slow", "data": {}}))
    send_shell(kc, "comm_msg", {"comm_id": "slow-1", "data": {"v": 7}})
    assert result_of(kc, "slow['v']") == "7"


def test_ipywidgets_slider_interact_and_output(kc):
    reply, msgs = execute(kc, "import ipywidgets as w\ns = w.IntSlider(value=3, max=100)\ns")
    assert reply["content"]["status"] == "ok"
    opens = [m for m in msgs if m["msg_type"] == "comm_open"]
    assert {m["content"]["target_name"] for m in opens} == {"jupyter.widget"}
    states = [m["content"]["data"]["state"] for m in opens]
    slider = next(m for m, state in zip(opens, states) if state["_model_name"] == "IntSliderModel")
    assert slider["content"]["data"]["state"]["value"] == 3
    view = outputs(msgs, "execute_result")[0]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == slider["content"]["comm_id"]
    # The front end moves the slider.
    update = {"method": "update", "state": {"value": 42}, "buffer_paths": []}
    iopub_of(kc, send_shell(kc, "comm_msg", {"comm_id": view["model_id"], "data": update}))
    assert result_of(kc, "s.value") == "42"
    # interact: the function runs again when the front end changes its control.
    reply, msgs = execute(kc, "from ipywidgets import interact\n"
                              "calls = []\n"
                              "@interact(x=5)\n"
                              "def f(x):\n"
                              "    calls.append(x)\n"
                              "    print('x is', x)")
    assert reply["content"]["status"] == "ok"
    control = next(m for m in msgs if m["msg_type"] == "comm_open"
                   and m["content"]["data"]["state"]["_model_name"] == "IntSliderModel")
    iopub_of(kc, send_shell(kc, "comm_msg", {"comm_id": control["content"]["comm_id"],
                                             "data": {"method": "update", "state": {"value": 9},
                                                      "buffer_paths": []}}))
    assert result_of(kc, "calls") == "[5, 9]"


def test_interactive_output_and_linked_widgets(kc):
    reply, msgs = execute(kc, "import ipywidgets as w\n"
                              "a = w.IntSlider(value=1)\nb = w.IntSlider(value=2)\n"
                              "link = w.link((a, 'value'), (b, 'value'))\n"
                              "shown = []\n"
                              "out = w.interactive_output(lambda x: shown.append(x), {'x': a})\n"
                              "a.comm.comm_id")
    assert reply["content"]["status"] == "ok", reply["content"]
    comm_id = outputs(msgs, "execute_result")[0]["data"]["text/plain"].strip("'")
    update = {"method": "update", "state": {"value": 7}, "buffer_paths": []}
    echoed = iopub_of(kc, send_shell(kc, "comm_msg", {"comm_id": comm_id, "data": update}))
    # The linked slider follows, and the front end is told: a state update for b on the wire.
    assert result_of(kc, "(a.value, b.value, shown)") == "(7, 7, [1, 7])"
    b_id = result_of(kc, "b.comm.comm_id").strip("'")
    assert any(m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == b_id
               and m["content"]["data"].get("state", {}).get("value") == 7 for m in echoed)


def test_an_output_widget_captures_a_greenlet_the_cell_spawned(kc):
    msg_id = kc.execute("import gevent, ipywidgets as w\nfrom IPython.display import display\n"
                        "out = w.Output()\ndisplay(out)\n"
                        "with out:\n    gevent.spawn(print, 'from a greenlet').join()\n"
                        "print('after')")
    assert get_reply(kc, msg_id)["content"]["status"] == "ok"
    msgs = collect_iopub(kc, msg_id)
    # The front end captures into the widget what has the msg_id the widget announced.
    announced = [m["content"]["data"]["state"].get("msg_id") for m in msgs
                 if m["msg_type"] == "comm_msg" and "msg_id" in m["content"]["data"].get("state", {})]
    assert announced == [msg_id, ""]
    streams = [(m["parent_header"]["msg_id"], m["content"]["text"]) for m in msgs if m["msg_type"] == "stream"]
    assert streams == [(msg_id, "from a greenlet\n"), (msg_id, "after\n")]
    kinds = [m["msg_type"] for m in msgs]
    first_update, second_update = (i for i, m in enumerate(msgs) if m["msg_type"] == "comm_msg"
                                   and "msg_id" in m["content"]["data"].get("state", {}))
    assert first_update < kinds.index("stream") < second_update  # the greenlet printed inside the block


def test_tqdm_notebook_progress_bar(kc):
    reply, msgs = execute(kc, "from tqdm.notebook import tqdm\nfor i in tqdm(range(3)):\n    pass")
    assert reply["content"]["status"] == "ok", reply["content"]
    models = {m["content"]["data"]["state"]["_model_name"] for m in msgs if m["msg_type"] == "comm_open"}
    assert {"FloatProgressModel", "HBoxModel", "HTMLModel"} <= models
    assert any("application/vnd.jupyter.widget-view+json" in m["content"]["data"]
               for m in msgs if m["msg_type"] == "display_data")


def test_two_kernels_of_a_host_keep_their_comms_apart(host):
    _, a = host.kernel()
    _, b = host.kernel()
    for kc in (a, b):
        execute(kc, ECHO_TARGET)
    iopub_of(a, send_shell(a, "comm_open", {"comm_id": "only-in-a", "target_name": "echo", "data": {}}))
    assert comm_info(a) == {"only-in-a": {"target_name": "echo"}} and comm_info(b) == {}
    msg_id = send_shell(b, "comm_msg", {"comm_id": "only-in-a", "data": {"to": "b"}})
    assert not [m for m in iopub_of(b, msg_id) if m["msg_type"] == "comm_msg"]
    assert not [m for m in iopub_of(a, msg_id, timeout=1) if m["msg_type"] == "comm_msg"]
    # Widgets imported by both: each kernel opens its own comms, on its own IOPub.
    opened = {}
    for kc in (a, b):
        reply, msgs = execute(kc, "import ipywidgets as w\nslider = w.IntSlider()\nslider.comm.comm_id")
        comm_id = outputs(msgs, "execute_result")[0]["data"]["text/plain"].strip("'")
        opened[kc] = {m["content"]["comm_id"] for m in msgs if m["msg_type"] == "comm_open"}
        assert comm_id in opened[kc] and len(opened[kc]) == 3  # the slider, its layout and its style
        assert set(comm_info(kc, "jupyter.widget")) == opened[kc]
    assert not opened[a] & opened[b]
