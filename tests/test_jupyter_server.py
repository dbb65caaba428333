"""gkernel behind jupyter_server: its REST API and a notebook's websocket, as JupyterLab uses them."""

import asyncio
import datetime
import json
import time
import uuid

import pytest

from conftest import KERNEL_NAME, SERVE_KERNEL_NAME, JupyterServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = JupyterServer(str(tmp_path_factory.mktemp("server")))
    yield server
    server.close()


def request(msg_type, content, session):
    """A shell request as a front end sends it over the websocket (JSON, with its channel)."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "test", "session": session,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "version": "5.3"}
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}


async def run_cell(ws, code, session, timeout=30):
    """Send an execute request; return (reply, [IOPub msg_types from busy to idle])."""
    msg = request("execute_request", {"code": code, "silent": False, "store_history": True,
                                      "user_expressions": {}, "allow_stdin": False}, session)
    await ws.write_message(json.dumps(msg))
    msg_id, reply, iopub = msg["header"]["msg_id"], None, []
    deadline = time.monotonic() + timeout
    while reply is None or not iopub or iopub[-1] != "idle":
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no complete answer to {code!r}: reply={reply is not None}, iopub={iopub}"
        try:
            raw = await asyncio.wait_for(ws.read_message(), remaining)
        except asyncio.TimeoutError:
            continue
        assert raw is not None, "the websocket closed"
        answer = json.loads(raw)
        if answer["parent_header"].get("msg_id") != msg_id:
            continue
        if answer["channel"] == "shell":
            reply = answer
        elif answer["channel"] == "iopub":
            kind = answer["msg_type"]
            iopub.append(answer["content"]["execution_state"] if kind == "status" else kind)
    return reply, iopub


@pytest.mark.parametrize("kernel_name", [KERNEL_NAME, SERVE_KERNEL_NAME])
def test_every_request_after_a_restart_gets_all_its_iopub(server, kernel_name):
    from tornado.websocket import websocket_connect

    kernel = server.rest("POST", "/api/kernels", {"name": kernel_name})
    session = uuid.uuid4().hex

    async def restarts():
        ws = await websocket_connect(f"ws://127.0.0.1:{server.port}/api/kernels/{kernel['id']}/channels"
                                     f"?session_id={session}")
        try:
            reply, iopub = await run_cell(ws, "x = 1", session)
            for i in range(10):
                server.rest("POST", f"/api/kernels/{kernel['id']}/restart")
                reply, iopub = await run_cell(ws, f"print({i})", session)
                assert reply["content"]["status"] == "ok"
                # A fresh namespace after each restart, and the whole of the request's IOPub.
                assert iopub == ["busy", "execute_input", "stream", "idle"], f"restart {i}: {iopub}"
                reply, iopub = await run_cell(ws, "x", session)
                assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "NameError"
                await run_cell(ws, "x = 1", session)
        finally:
            ws.close()

    try:
        asyncio.run(restarts())
    finally:
        server.rest("DELETE", f"/api/kernels/{kernel['id']}")
