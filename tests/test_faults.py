"""The fault campaign, bounded, as CI runs it: fuzzed wire input, floods, a host killed with SIGKILL.

Against a single kernel, a kernel of a ``gkernel serve`` host and the host's
management API: thousands of malformed messages (seeded, so a failure can be
replayed), each kind signed and unsigned. What must hold: no process dies or
hangs, nothing unsigned is ever answered, every signed request is answered
(an error reply for the malformed ones), and the kernels keep their state.
"""

import json
import os
import random
import signal
import time

import pytest
import zmq
from jupyter_client.session import Session

from conftest import Host, result_of, start_kernel, stop_kernel, wait_for

pytestmark = pytest.mark.timeout(240)

SEED = int(os.environ.get("GKERNEL_FUZZ_SEED", "20261122"))


def fuzzed_contents(rng, n):
    """*n* message contents: what JSON allows and no handler expects."""
    atoms = [None, True, 0, -1, 2**63, 2**80, 1.5e308, "", "x" * 10_000, "\u00e9\u2603", [], {}, [[[]]]]
    fields = ["code", "cursor_pos", "hist_access_type", "n", "silent", "comm_id", "target_name", "data",
              "restart", "subshell_id", "detail_level", "value", "kernel_id", "connection", "encrypt"]
    for _ in range(n):
        kind = rng.random()
        if kind < 0.15:
            yield rng.choice(atoms)  # not an object at all
        else:
            yield {rng.choice(fields): rng.choice(atoms) for _ in range(rng.randint(0, 4))}


def fuzzed_frames(rng, session, msg_types, n):
    """(frames, signed) pairs: whole signed messages with fuzzed content and header, and raw garbage."""
    for content in fuzzed_contents(rng, n):
        kind = rng.random()
        msg = session.msg(rng.choice(msg_types), {})
        if kind < 0.1:
            msg["header"]["date"] = rng.choice(["yesterday", 0, None, "9999-99-99"])
        if kind < 0.05:
            msg["header"]["msg_type"] = rng.choice(["", "x" * 300, "execute_reply", 5, None, ["a_request"]])
        parts = [json.dumps(p, default=str).encode() for p in (msg["header"], {}, {})]
        try:
            parts.append(json.dumps(content).encode())
        except (ValueError, OverflowError):
            parts.append(b"{")
        if rng.random() < 0.1:
            parts[rng.randrange(4)] = os.urandom(rng.randint(0, 64))  # not JSON, still signed
        signed = rng.random() < 0.6
        signature = session.sign(parts) if signed else os.urandom(32).hex().encode()
        frames = [b"<IDS|MSG>", signature, *parts]
        if rng.random() < 0.1:
            kept = rng.randint(1, len(frames) - 1)
            frames, signed = frames[:kept], False  # truncated
        yield frames, signed


def answered(sock, session, expected, timeout):
    """The msg_ids replied to on *sock*, read until all of *expected* are or *timeout* passed,
    then for half a second more (nothing else may come)."""
    seen = []
    deadline = time.monotonic() + timeout
    while not expected <= set(seen) and sock.poll(max(0, deadline - time.monotonic()) * 1000):
        _, msg_list = session.feed_identities(sock.recv_multipart())
        seen.append(session.deserialize(msg_list)["parent_header"].get("msg_id"))  # signed with the key
    while sock.poll(500):
        _, msg_list = session.feed_identities(sock.recv_multipart())
        seen.append(session.deserialize(msg_list)["parent_header"].get("msg_id"))
    return seen


def fuzz_channel(info, channel, msg_types, n, rng):
    """Send *n* fuzzed messages to *channel* of a kernel (or the API); return (signed requests, replies)."""
    key = info["key"].encode() if isinstance(info["key"], str) else info["key"]
    session = Session(key=key, signature_scheme=info.get("signature_scheme", "hmac-sha256"))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    if info.get("curve_publickey"):
        public, secret = info["curve_publickey"].encode(), info["curve_secretkey"].encode()
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, public
    port = info.get(f"{channel}_port", info.get("port"))
    sock.connect(f"tcp://{info['ip']}:{port}")
    expected = {}
    for frames, signed in fuzzed_frames(rng, session, msg_types, n):
        sock.send_multipart(frames)
        # A signed message whose header parses, with a *_request type, gets a reply (an error one
        # when the rest does not parse or make sense). Nothing else does.
        try:
            header = json.loads(frames[2]) if signed else {}
        except ValueError:
            header = {}
        msg_type = header.get("msg_type") if isinstance(header, dict) else None
        if isinstance(msg_type, str) and msg_type.endswith("_request"):
            expected[header["msg_id"]] = frames
    seen = answered(sock, session, set(expected), timeout=60)
    sock.close()
    missing = [expected[msg_id][2:] for msg_id in set(expected) - set(seen)]
    unexpected = [msg_id for msg_id in seen if msg_id not in expected]
    return len(expected), missing, unexpected, len(seen) - len(set(seen))


KERNEL_REQUESTS = ["execute_request", "complete_request", "inspect_request", "history_request",
                   "is_complete_request", "comm_info_request", "kernel_info_request", "comm_open",
                   "comm_msg", "frobnicate_request", "debug_request", "create_subshell_request"]


def test_a_fuzzed_kernel_answers_every_signed_request_and_nothing_else():
    km, kc = start_kernel()
    try:
        kc.execute_interactive("state = 'kept'", timeout=30)
        info = km.get_connection_info()
        rng = random.Random(SEED)
        for channel in ("shell", "control"):
            expected, missing, unexpected, twice = fuzz_channel(info, channel, KERNEL_REQUESTS, 1500, rng)
            assert expected > 500
            assert not missing, f"{channel}: unanswered (seed {SEED}): {missing[:3]}"
            assert not unexpected and not twice, f"{channel}: answers to nothing or twice (seed {SEED})"
        assert km.is_alive()
        assert result_of(kc, "state") == "'kept'"
    finally:
        stop_kernel(km, kc)


def test_a_fuzzed_host_api_and_kernel_answer_every_signed_request_and_the_host_lives(tmp_path):
    host = Host(tmp_path)
    try:
        kernel_id, kc = host.kernel()
        kc.execute_interactive("state = 'kept'", timeout=30)
        rng = random.Random(SEED + 1)
        api = json.load(open(host.host_file))
        # (no "stop" among them: it would end the host, as asked)
        ops = ["create_request", "list_request", "interrupt_request", "restart_request", "shutdown_request",
               "stats_request", "explode_request"]
        for target, info, requests, n in (("API", api, ops, 600), ("kernel", None, KERNEL_REQUESTS, 1000)):
            info = info or next(k["connection"] for k in host.api.list() if k["id"] == kernel_id)
            expected, missing, unexpected, twice = fuzz_channel(info, "shell", requests, n, rng)
            assert expected > 200
            assert not missing, f"{target}: unanswered (seed {SEED}): {missing[:3]}"
            assert not unexpected and not twice, f"{target}: answers to nothing or twice (seed {SEED})"
        assert host.proc.poll() is None
        assert result_of(kc, "state") == "'kept'"
    finally:
        host.close()


def test_a_signed_flood_is_answered_in_full():
    """5,000 requests sent without reading a reply in between: every one answered, in order."""
    km, kc = start_kernel()
    try:
        info = km.get_connection_info()
        session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 0
        sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        sent = [session.send(sock, "kernel_info_request", {})["header"]["msg_id"] for _ in range(5_000)]
        received = []
        deadline = time.monotonic() + 120
        while len(received) < len(sent) and sock.poll(max(0, deadline - time.monotonic()) * 1000):
            _, msg_list = session.feed_identities(sock.recv_multipart())
            received.append(session.deserialize(msg_list)["parent_header"]["msg_id"])
        sock.close()
        assert received == sent
        assert km.is_alive()
    finally:
        stop_kernel(km, kc)


def test_a_host_killed_with_sigkill_leaves_nothing_that_misleads_the_next_kernel(tmp_path):
    """Its clients see the kernel die (heartbeat); its host file is stale and goes; a new host serves."""
    from gkernel.manage import find_host_file

    host = Host(tmp_path, name="gkernel-serve-1.json")  # named as discovery looks for them
    _, kc = host.kernel()
    assert result_of(kc, "1 + 1") == "2"
    host.proc.send_signal(signal.SIGKILL)
    host.proc.wait(timeout=10)
    assert wait_for(lambda: not kc.is_alive(), timeout=10), "a client did not notice its kernel died"
    kc.stop_channels()
    host.clients.clear()
    assert os.path.exists(host.host_file)  # a SIGKILL leaves it behind...
    assert find_host_file(str(tmp_path)) is None  # ...but no one takes it for a host
    assert not os.path.exists(host.host_file)
    fresh = Host(tmp_path, name="gkernel-serve-2.json")
    try:
        _, kc = fresh.kernel()
        assert result_of(kc, "'served'") == "'served'"
    finally:
        fresh.close()
