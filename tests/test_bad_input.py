"""Malformed, unauthenticated and invalid messages: logged, answered where possible, never fatal."""

import json
import os
import time

import pytest
import zmq
from jupyter_client.session import Session

from conftest import KERNEL_NAME, collect_iopub, stop_kernel

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A kernel whose stderr (its log) is kept, and a raw DEALER on its shell port."""
    from jupyter_client.manager import KernelManager

    log_path = tmp_path_factory.mktemp("log") / "kernel.log"
    log = open(log_path, "w")
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel(stderr=log)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    info = km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
    yield RawClient(sock, session, kc, log_path)
    sock.close()
    stop_kernel(km, kc)
    log.close()


class RawClient:
    def __init__(self, sock, session, kc, log_path):
        self.sock, self.session, self.kc, self.log_path = sock, session, kc, log_path

    def send_frames(self, frames):
        self.sock.send_multipart(frames)

    def send(self, msg_type, content):
        msg = self.session.msg(msg_type, content)
        self.sock.send_multipart(self.session.serialize(msg))
        return msg

    def header(self, msg_type):
        """A header as sent on the wire (its date a string)."""
        header = self.session.msg_header(msg_type)
        header["date"] = header["date"].isoformat()
        return header

    def signed_raw(self, header, content_bytes):
        """Frames with a valid signature over arbitrary content bytes."""
        parts = [json.dumps(header).encode(), b"{}", b"{}", content_bytes]
        return [b"<IDS|MSG>", self.session.sign(parts), *parts]

    def reply(self, timeout=5):
        if not self.sock.poll(timeout * 1000):
            return None
        _, msg_list = self.session.feed_identities(self.sock.recv_multipart())
        return self.session.deserialize(msg_list)

    def no_reply(self, wait=0.5):
        return not self.sock.poll(int(wait * 1000))

    def log(self):
        time.sleep(0.2)
        with open(self.log_path) as f:
            return f.read()

    def assert_serving(self):
        msg = self.send("kernel_info_request", {})
        reply = self.reply()
        assert reply is not None and reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
        assert reply["content"]["status"] == "ok"


def test_wrong_signature_is_dropped_and_logged(raw):
    forger = Session(key=b"not-the-key")
    raw.send_frames(forger.serialize(forger.msg("execute_request", {"code": "pwned = 1"})))
    assert raw.no_reply()
    assert "dropped an unauthenticated or malformed message" in raw.log()
    raw.assert_serving()
    raw.send("execute_request", {"code": "'pwned' in globals()"})
    reply = raw.reply()
    assert reply["content"]["status"] == "ok"
    iopub = collect_iopub(raw.kc, reply["parent_header"]["msg_id"])
    result = [m for m in iopub if m["msg_type"] == "execute_result"]
    assert result[0]["content"]["data"]["text/plain"] == "False"


def test_garbage_frames(raw):
    raw.send_frames([os.urandom(50)])
    raw.send_frames([b"<IDS|MSG>"])
    raw.send_frames([b"<IDS|MSG>", b"sig", b"not json", b"{}", b"{}", b"{}"])
    assert raw.no_reply()
    assert "no <IDS|MSG> delimiter" in raw.log()
    raw.assert_serving()


def test_replayed_message_is_dropped(raw):
    msg = raw.session.msg("kernel_info_request", {})
    frames = raw.session.serialize(msg)
    raw.send_frames(frames)
    assert raw.reply() is not None
    raw.send_frames(frames)
    assert raw.no_reply()
    assert "Duplicate Signature" in raw.log()
    raw.assert_serving()


def test_signed_header_without_msg_type(raw):
    header = {"msg_id": "m1", "session": "s", "username": "u", "date": "2026-01-01T00:00:00Z", "version": "5.3"}
    raw.send_frames(raw.signed_raw(header, b"{}"))
    assert raw.no_reply()
    raw.assert_serving()


def test_unknown_request_type_gets_error_reply(raw):
    msg = raw.send("frobnicate_request", {})
    reply = raw.reply()
    assert reply["msg_type"] == "frobnicate_reply"
    assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "InvalidRequest"
    assert "unknown message type 'frobnicate_request'" in reply["content"]["evalue"]
    states = [m["content"]["execution_state"] for m in collect_iopub(raw.kc, msg["header"]["msg_id"])]
    assert states == ["busy", "idle"]
    raw.send("stray_notification", {})
    assert raw.no_reply()
    assert "unknown message type 'stray_notification'" in raw.log()
    raw.assert_serving()


@pytest.mark.parametrize("content, reason", [
    ({}, "missing field 'code'"),
    ({"code": 5}, "field 'code' must be str, not int"),
    ({"code": "1", "silent": "yes"}, "field 'silent' must be bool, not str"),
    ({"code": "1", "user_expressions": []}, "field 'user_expressions' must be dict, not list"),
])
def test_invalid_execute_request(raw, content, reason):
    raw.send("execute_request", content)
    reply = raw.reply()
    assert reply["msg_type"] == "execute_reply"
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "InvalidRequest"
    assert reason in reply["content"]["evalue"]
    raw.assert_serving()


def test_wrong_types_in_other_requests(raw):
    raw.send("complete_request", {"code": "im", "cursor_pos": "2"})
    assert "field 'cursor_pos' must be int" in raw.reply()["content"]["evalue"]
    raw.send("history_request", {"hist_access_type": "sideways"})
    assert "unknown hist_access_type 'sideways'" in raw.reply()["content"]["evalue"]
    raw.send("inspect_request", {"code": "len", "cursor_pos": True})
    assert "field 'cursor_pos' must be int, not bool" in raw.reply()["content"]["evalue"]
    raw.assert_serving()


@pytest.mark.parametrize("msg_type, content_bytes, reason", [
    ("history_request", b'{"hist_access_type": "tail", "n": 1208925819614629174706176}',
     "field 'n' is out of range (more than 64 bits)"),
    ("history_request", b'{"hist_access_type": "range", "session": -1, "start": -99999999999999999999}',
     "field 'start' is out of range"),
    ("execute_request", b'{"code": "x = \'\\ud800\'"}',
     "field 'code' is not valid Unicode (a lone surrogate at position 5)"),
    ("complete_request", b'{"code": "\\udfff", "cursor_pos": 1}', "field 'code' is not valid Unicode"),
])
def test_values_json_allows_but_no_handler_can_use_get_a_clear_error(raw, msg_type, content_bytes, reason):
    header = raw.header(msg_type)
    raw.send_frames(raw.signed_raw(header, content_bytes))
    reply = raw.reply()
    assert reply["parent_header"]["msg_id"] == header["msg_id"]
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "InvalidRequest"
    assert reason in reply["content"]["evalue"]
    raw.assert_serving()


@pytest.mark.parametrize("content_bytes", [b"{not json", b"[1, 2, 3]"])
def test_bad_content_with_valid_signature(raw, content_bytes):
    header = raw.header("execute_request")
    raw.send_frames(raw.signed_raw(header, content_bytes))
    reply = raw.reply()
    assert reply["msg_type"] == "execute_reply" and reply["content"]["status"] == "error"
    assert reply["parent_header"]["msg_id"] == header["msg_id"]
    assert reply["content"]["ename"] == "InvalidRequest"
    raw.assert_serving()


def test_flood_of_garbage_then_serving(raw):
    for i in range(2000):
        raw.send_frames([b"junk", os.urandom(16)])
    raw.assert_serving()


@pytest.mark.timeout(180)
def test_garbage_cannot_flush_the_replay_history(raw):
    # jupyter_client's Session records digests before checking them and culls a random 10% of its
    # history each time it passes 65,536 entries: after 100,000 forged messages (about 5 culls) each
    # captured request would run again with a chance of 2 in 5, so one of the ten would all but surely.
    captured = [raw.session.serialize(raw.session.msg("kernel_info_request", {})) for _ in range(10)]
    for frames in captured:
        raw.send_frames(frames)
        assert raw.reply() is not None
    forged = Session(key=b"not-the-key", signature_scheme="hmac-sha256")
    frames = forged.serialize(forged.msg("kernel_info_request", {}))
    for _ in range(100_000):
        frames[1] = os.urandom(32)  # a new (wrong) digest each time
        raw.send_frames(frames)
    raw.assert_serving()  # every forged message was read (they come in order) and none answered
    for frames in captured:
        raw.send_frames(frames)
    assert raw.no_reply(wait=1), "a captured request was answered again after the flood"
    raw.assert_serving()
    # The flood is logged in a few lines, not 100,000.
    assert raw.log().count("dropped an unauthenticated or malformed message") <= 20
