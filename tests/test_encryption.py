"""CurveZMQ transport encryption: what jupyter_client's ``transport_encryption`` asks for, on the wire.

jupyter_client 8.9+ writes a Curve key pair into a kernel's connection info
when its manager's ``transport_encryption`` is ``auto`` or ``required`` and
the kernelspec declares ``supported_encryption: ["curve"]``; for
``gkernel-serve`` kernels the host makes the pair. Every channel, the
heartbeat included, must then be encrypted and refuse a plaintext peer, even
one holding the HMAC key.
"""

import json
import os
import stat
import subprocess
import sys
import time

import pytest
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session

from conftest import GKERNEL, KERNEL_NAME, SERVE_KERNEL_NAME, Host, result_of, wait_for

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CurveZMQ (libsodium)")]


def plaintext_answers(info, channel="shell", wait=1.5):
    """Whether a plaintext client that holds the HMAC key gets a kernel_info_reply on *channel*."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(f"tcp://{info['ip']}:{info[f'{channel}_port']}")
        key = info["key"].encode() if isinstance(info["key"], str) else info["key"]
        Session(key=key, signature_scheme=info["signature_scheme"]).send(sock, "kernel_info_request", {})
        return bool(sock.poll(int(wait * 1000)))
    finally:
        sock.close()


def plaintext_heartbeat_answers(info, wait=1.5):
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    try:
        sock.connect(f"tcp://{info['ip']}:{info['hb_port']}")
        sock.send(b"ping")
        return bool(sock.poll(int(wait * 1000)))
    finally:
        sock.close()


@pytest.fixture(params=[KERNEL_NAME, SERVE_KERNEL_NAME])
def encrypted(request):
    km = KernelManager(kernel_name=request.param, transport_encryption="required")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=30)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def test_both_kernelspecs_declare_curve():
    from jupyter_client.kernelspec import KernelSpecManager

    for name in (KERNEL_NAME, SERVE_KERNEL_NAME):
        assert KernelSpecManager().get_kernel_spec(name).metadata["supported_encryption"] == ["curve"]


def test_required_encryption_serves_over_curve_and_refuses_plaintext(encrypted):
    km, kc = encrypted
    info = km.get_connection_info()
    assert info["curve_publickey"] and info["curve_secretkey"]
    assert result_of(kc, "6 * 7") == "42"
    assert kc.is_alive()  # the heartbeat answers the client's encrypted pings
    # Every channel refuses a client that speaks plaintext, HMAC key or not.
    assert not plaintext_answers(info, "shell")
    assert not plaintext_answers(info, "control")
    assert not plaintext_heartbeat_answers(info)
    # A restart keeps the kernel's key pair (jupyter_client keeps it, as it keeps the HMAC key).
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=30)
    assert km.get_connection_info()["curve_publickey"] == info["curve_publickey"]
    assert result_of(kc, "'after restart'") == "'after restart'"
    assert not plaintext_answers(km.get_connection_info(), "shell")


def test_without_encryption_a_kernel_is_plaintext_and_says_so(tmp_path):
    km = KernelManager(kernel_name=KERNEL_NAME)  # transport_encryption defaults to "disabled"
    log = open(tmp_path / "kernel.log", "w")
    km.start_kernel(stderr=log)
    try:
        info = km.get_connection_info()
        assert "curve_publickey" not in info
        assert plaintext_answers(info, "shell", wait=15)
        assert plaintext_heartbeat_answers(info, wait=5)
    finally:
        km.shutdown_kernel(now=False)
        log.close()
    text = (tmp_path / "kernel.log").read_text()
    assert text.count("the channels are not encrypted") == 1


def test_a_kernel_writing_its_own_connection_file_encrypts_with_encrypt(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "gkernel", "--encrypt"], stderr=subprocess.PIPE, text=True)
    try:
        runtime = os.environ["JUPYTER_RUNTIME_DIR"]
        path = os.path.join(runtime, f"kernel-{proc.pid}.json")
        assert wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        info = json.load(open(path))
        assert len(info["curve_publickey"]) == len(info["curve_secretkey"]) == 40
        kc = BlockingKernelClient()
        kc.load_connection_file(path)
        kc.start_channels()
        kc.wait_for_ready(timeout=30)
        assert result_of(kc, "'encrypted'") == "'encrypted'"
        kc.stop_channels()
        assert not plaintext_answers(info, "shell")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("change, reason", [
    ({"curve_secretkey": "too short"}, "curve_secretkey must be a 40-character Z85 CurveZMQ key"),
    ({"curve_publickey": zmq.curve_keypair()[0].decode()}, "curve_publickey is not the public key of curve_secretkey"),
])
def test_an_unusable_key_pair_is_a_one_line_error(tmp_path, change, reason):
    public, secret = zmq.curve_keypair()
    info = {"transport": "tcp", "ip": "127.0.0.1", "key": "k", "signature_scheme": "hmac-sha256",
            "curve_publickey": public.decode(), "curve_secretkey": secret.decode(), **change}
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps(info))
    run = subprocess.run([GKERNEL, "kernel", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and reason in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_a_host_serves_encrypted_and_plaintext_kernels_side_by_side_and_encrypts_its_api(tmp_path):
    host = Host(tmp_path)
    try:
        plain = host.api.create()
        secure = host.api.create(encrypt=True)
        assert "curve_publickey" not in plain["connection"]
        assert secure["connection"]["curve_publickey"]
        for kernel in (plain, secure):
            kc = BlockingKernelClient()
            kc.load_connection_info(kernel["connection"])
            kc.start_channels()
            kc.wait_for_ready(timeout=30)
            assert result_of(kc, "1 + 1") == "2"
            time.sleep(1.0)
            assert kc.is_alive()  # one heartbeat socket, an encrypted and a plaintext endpoint
            kc.stop_channels()
        assert plaintext_answers(plain["connection"], "shell", wait=5)
        assert plaintext_heartbeat_answers(plain["connection"])
        assert not plaintext_answers(secure["connection"], "shell")
        assert not plaintext_heartbeat_answers(secure["connection"])
        # The management API: the host file's HMAC key is not enough without its Curve keys.
        api = json.load(open(host.host_file))
        assert api["curve_publickey"] and stat.S_IMODE(os.stat(host.host_file).st_mode) == 0o600
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(f"tcp://{api['ip']}:{api['port']}")
        Session(key=api["key"].encode(), signature_scheme=api["signature_scheme"]).send(sock, "list_request", {})
        assert not sock.poll(1500)
        sock.close()
        assert len(host.api.list()) == 2
        # A caller's key pair that cannot be used is refused with the reason.
        from gkernel.manage import HostError

        bad = {**secure["connection"], "curve_secretkey": "x" * 39, "shell_port": 0, "iopub_port": 0,
               "stdin_port": 0, "control_port": 0, "hb_port": 0}
        with pytest.raises(HostError, match="curve_secretkey must be a 40-character"):
            host.api.create(connection=bad)
    finally:
        host.close()
