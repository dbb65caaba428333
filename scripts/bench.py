"""gkernel vs ipykernel, measured by the same jupyter_client code in one run.

Both kernels are started from their kernelspecs by KernelManager and driven by
BlockingKernelClient. Measurements alternate between the two kernels (round
by round) so that machine noise falls on both alike. Reports median and p99
of each measure and the gkernel/ipykernel ratio of the medians.
"""

import argparse
import collections
import statistics
import sys
import time

from bench_notebooks import notebook_figures, notebook_table
from jupyter_client.manager import KernelManager

KERNELS = {"gkernel": "gkernel", "ipykernel": "python3"}


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def start(kernel_name, extra_arguments=(), encryption="disabled"):
    """Start a kernel; return (manager, client, seconds until the first kernel_info_reply,
    seconds until the first execute_reply: the kernel can run cells).

    *encryption*: jupyter_client's transport_encryption ("required": CurveZMQ on every channel)."""
    t0 = time.perf_counter()
    km = KernelManager(kernel_name=kernel_name, transport_encryption=encryption)
    km.start_kernel(extra_arguments=list(extra_arguments))
    kc = km.client()
    kc.start_channels(hb=False)
    while True:
        kc.kernel_info()
        try:
            kc.get_shell_msg(timeout=0.05)
            break
        except Exception:
            if not km.is_alive():
                raise RuntimeError(f"{kernel_name} died while starting")
    elapsed = time.perf_counter() - t0
    wait_reply(kc, kc.execute("pass"))
    ready = time.perf_counter() - t0
    drain(kc)
    return km, kc, elapsed, ready


def drain(kc):
    time.sleep(0.2)
    for get in (kc.get_iopub_msg, kc.get_shell_msg):
        while True:
            try:
                get(timeout=0.05)
            except Exception:
                break


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def rss_mb(km):
    return rss_of(km.provisioner.process.pid)


def wait_idle(kc, msg_id):
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            return


def wait_reply(kc, msg_id):
    while True:
        if kc.get_shell_msg(timeout=10)["parent_header"].get("msg_id") == msg_id:
            return


def execute_round_trip(kc):
    t0 = time.perf_counter()
    msg_id = kc.execute("pass")
    wait_reply(kc, msg_id)
    wait_idle(kc, msg_id)
    return time.perf_counter() - t0


def kernel_info_round_trip(kc):
    t0 = time.perf_counter()
    msg_id = kc.kernel_info()
    wait_reply(kc, msg_id)
    elapsed = time.perf_counter() - t0
    wait_idle(kc, msg_id)
    return elapsed


LINES = 100_000
MEGABYTES = 100


def output_run(kc, code):
    """Run *code*; return (seconds until idle, text received, stream messages, seconds to first output)."""
    t0 = time.perf_counter()
    msg_id = kc.execute(code)
    parts, first = [], None
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            first = first or time.perf_counter() - t0
            parts.append(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            elapsed = time.perf_counter() - t0
            break
    wait_reply(kc, msg_id)
    return elapsed, "".join(parts), len(parts), first


def output_throughput(kc, result):
    """100k numbered lines, 100 MB of text, and the delay of a cell's first output."""
    elapsed, text, messages, _ = output_run(kc, f"for i in range({LINES}):\n    print(i)")
    expected = "".join(f"{i}\n" for i in range(LINES))
    result["lines_time"].append(elapsed)
    result["lines_per_s"].append(LINES / elapsed)
    result["lines_messages"].append(messages)
    result["lines_lost"].append(LINES - len(set(text.splitlines()) & set(expected.splitlines())))
    elapsed, text, messages, _ = output_run(
        kc, f"line = 'x' * 999\nfor i in range({MEGABYTES} * 1000):\n    print(line)")
    assert len(text) == MEGABYTES * 1_000_000, f"lost {MEGABYTES * 1_000_000 - len(text)} characters"
    result["mb_time"].append(elapsed)
    result["mb_per_s"].append(MEGABYTES / elapsed)
    result["mb_messages"].append(messages)
    _, _, _, first = output_run(kc, "import time\nprint('first')\ntime.sleep(0.3)")
    result["first_output"].append(first)


def encrypted_figures(name, spec, extra, result, rounds, output_rounds):
    """The execute round trip and the 100k-line output of a kernel whose channels are CurveZMQ-encrypted."""
    km, kc, _, _ = start(spec, extra, encryption="required")
    assert km.get_connection_info().get("curve_publickey"), f"{name} started without a Curve key pair"
    for _ in range(20):
        execute_round_trip(kc)
    result["execute_curve"] += [execute_round_trip(kc) for _ in range(50 * rounds)]
    for _ in range(output_rounds):
        elapsed, text, _, _ = output_run(kc, f"for i in range({LINES}):\n    print(i)")
        assert text.count("\n") == LINES, f"{name} lost lines over an encrypted IOPub"
        result["lines_per_s_curve"].append(LINES / elapsed)
    stop(km, kc)


def heartbeat_while_spinning(km, kc, result, seconds=3):
    """Heartbeat echo round trips while a cell spins the CPU."""
    import zmq

    info = km.get_connection_info()
    hb = zmq.Context.instance().socket(zmq.REQ)
    hb.linger = 0
    hb.connect(f"tcp://{info['ip']}:{info['hb_port']}")
    try:
        cell = kc.execute(f"import time\nend = time.perf_counter() + {seconds}\n"
                          "while time.perf_counter() < end: pass")
        time.sleep(0.3)
        deadline = time.monotonic() + seconds - 0.6
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            hb.send(b"ping")
            if not hb.poll(5000):
                raise RuntimeError("heartbeat did not answer within 5 s")
            hb.recv()
            result["hb_spin"].append(time.perf_counter() - t0)
            time.sleep(0.02)
        wait_reply(kc, cell)
        wait_idle(kc, cell)
    finally:
        hb.close()


def control_while_sleeping(kc, result):
    """kernel_info on the control channel while a cell waits in gevent.sleep(2)."""
    cell = kc.execute("import gevent\ngevent.sleep(2)")
    time.sleep(0.2)
    for _ in range(20):
        request = kc.session.msg("kernel_info_request", {})
        t0 = time.perf_counter()
        kc.control_channel.send(request)
        while kc.get_control_msg(timeout=10)["parent_header"].get("msg_id") != request["header"]["msg_id"]:
            pass
        result["control_sleep"].append(time.perf_counter() - t0)
        time.sleep(0.02)
    wait_reply(kc, cell)
    wait_idle(kc, cell)


def interrupt_reply_time(km, kc, code, by_message=False):
    """Seconds from SIGINT (or an interrupt_request on control) to the KeyboardInterrupt reply."""
    cell = kc.execute(code)
    time.sleep(0.5)
    t0 = time.perf_counter()
    if by_message:
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
    else:
        km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == cell:
            break
    elapsed = time.perf_counter() - t0
    if reply["content"].get("ename") != "KeyboardInterrupt":
        raise RuntimeError(f"interrupt gave {reply['content']}")
    wait_idle(kc, cell)
    return elapsed


SPIN = "end = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end: pass"


def spinning_cell(kc, result):
    """Seconds to the busy status and to the first output of a cell that prints, then spins 1.5 s."""
    t0 = time.perf_counter()
    msg_id = kc.execute("import time\nprint('started')\n" + SPIN.format(seconds=1.5))
    busy = first = None
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
            busy = time.perf_counter() - t0
        elif msg["msg_type"] == "stream" and first is None:
            first = time.perf_counter() - t0
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    wait_reply(kc, msg_id)
    result["spin_busy"].append(busy)
    result["spin_first_output"].append(first)


def spin_rate(kc, seconds=2):
    """Iterations per second of a pure-Python loop in a cell."""
    code = f"import time\nn = 0\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end:\n    n += 1\nn"
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=seconds + 10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_result":
            rate = int(msg["content"]["data"]["text/plain"]) / seconds
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    wait_reply(kc, msg_id)
    return rate


def control_request(kc, msg_type, content=None):
    msg = kc.session.msg(msg_type, content or {})
    kc.control_channel.send(msg)
    while True:
        reply = kc.get_control_msg(timeout=10)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]


def subshell_while_busy(kc, result, seconds=3):
    """Execute round trips in a kernel subshell while the main shell sleeps, then while it spins."""
    subshell = control_request(kc, "create_subshell_request")["subshell_id"]
    try:
        for key, busy in (("subshell_sleep", f"import time\ntime.sleep({seconds})"),
                          ("subshell_spin", "import time\n" + SPIN.format(seconds=seconds))):
            cell = kc.execute(busy)
            time.sleep(0.3)
            deadline = time.monotonic() + seconds - 0.6
            while time.monotonic() < deadline:
                msg = kc.session.msg("execute_request", {"code": "pass", "silent": False})
                msg["header"]["subshell_id"] = subshell
                t0 = time.perf_counter()
                kc.shell_channel.send(msg)
                wait_reply(kc, msg["header"]["msg_id"])
                wait_idle(kc, msg["header"]["msg_id"])
                result[key].append(time.perf_counter() - t0)
            wait_reply(kc, cell)
            wait_idle(kc, cell)
    finally:
        control_request(kc, "delete_subshell_request", {"subshell_id": subshell})


def spin_rates_side_by_side(clients, results, rounds=20, seconds=0.25):
    """A spinning cell's loop rate: gkernel with time-slicing on and off, and ipykernel, in short cells
    that alternate in rotating order, and the ratios of each round's neighbouring cells.

    This machine's speed moves by 2x or more over seconds (a helper measured it: same process, same
    loop, full CPU share, no steal): rates taken minutes apart compare the host's load, not the
    kernels. Neighbouring 0.25 s windows still differ by about 15%.
    """
    gkernel, ipykernel = clients["gkernel"][1], clients["ipykernel"][1]
    variants = [("on", gkernel, True), ("off", gkernel, False), ("ipykernel", ipykernel, None)]
    g = results["gkernel"]
    for round_ in range(rounds):
        rates = {}
        for label, kc, slicing in variants[round_ % 3:] + variants[:round_ % 3]:
            if slicing is not None:
                msg_id = kc.execute(f"%config Kernel.time_slicing = {slicing}")
                wait_reply(kc, msg_id)
                wait_idle(kc, msg_id)
            rates[label] = spin_rate(kc, seconds)
        g["spin_rate"].append(rates["on"])
        g["spin_rate_unsliced"].append(rates["off"])
        results["ipykernel"]["spin_rate"].append(rates["ipykernel"])
        g["spin_on_vs_off"].append(rates["on"] / rates["off"])
        g["spin_vs_ipykernel"].append(rates["on"] / rates["ipykernel"])
    msg_id = gkernel.execute("%config Kernel.time_slicing = True")
    wait_reply(gkernel, msg_id)
    wait_idle(gkernel, msg_id)


def neighbour_while_spinning(name, result, seconds=3):
    """Execute round trips of one kernel while another spins the CPU: two kernels of one
    gkernel serve host, or two ipykernel processes."""
    from jupyter_client import BlockingKernelClient

    if name == "gkernel":
        proc, api = serve_host(2)
        clients = []
        for _ in range(2):
            kc = BlockingKernelClient()
            kc.load_connection_info(api.create()["connection"])
            kc.start_channels(hb=False)
            kc.wait_for_ready(timeout=30)
            clients.append(kc)
    else:
        kernels = [start(KERNELS[name]) for _ in range(2)]
        clients = [kc for _, kc, _, _ in kernels]
    try:
        spinner, neighbour = clients
        for _ in range(20):
            execute_round_trip(neighbour)
        cell = spinner.execute("import time\n" + SPIN.format(seconds=seconds))
        time.sleep(0.3)
        deadline = time.monotonic() + seconds - 0.6
        while time.monotonic() < deadline:
            result["neighbour_spin"].append(execute_round_trip(neighbour))
        wait_reply(spinner, cell)
    finally:
        if name == "gkernel":
            for kc in clients:
                kc.stop_channels()
            api.stop()
            proc.wait(timeout=60)
        else:
            for km, kc, _, _ in kernels:
                stop(km, kc)


def under_load(km, kc, result):
    spinning_cell(kc, result)
    heartbeat_while_spinning(km, kc, result)
    control_while_sleeping(kc, result)
    result["interrupt_sleep"].append(interrupt_reply_time(km, kc, "import time\ntime.sleep(30)"))
    result["interrupt_cpu"].append(interrupt_reply_time(km, kc, "while True:\n    pass"))
    result["interrupt_msg_cpu"].append(interrupt_reply_time(km, kc, "while True:\n    pass", by_message=True))


class ShellPinger:
    """A lean client (a DEALER, and a SUB that is never read): enough for requests across a thousand
    kernels. It subscribes to IOPub as every Jupyter client does: a kernel's first request waits
    (up to Kernel.iopub_subscriber_wait) for a subscriber."""

    def __init__(self, context, info):
        import zmq
        from jupyter_client.session import Session

        self.session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
        self.iopub = context.socket(zmq.SUB)
        self.iopub.linger = 0
        self.iopub.rcvhwm = 1  # never read: keep next to nothing
        self.iopub.subscribe(b"")
        self.iopub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
        self.socket = context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(f"tcp://{info['ip']}:{info['shell_port']}")

    def request(self, msg_type, content=None):
        """Seconds until the reply to one request."""
        t0 = time.perf_counter()
        msg = self.session.send(self.socket, msg_type, content or {})
        while True:
            if not self.socket.poll(30000):
                raise RuntimeError(f"no {msg_type} reply within 30 s")
            _, frames = self.session.feed_identities(self.socket.recv_multipart())
            if self.session.deserialize(frames)["parent_header"]["msg_id"] == msg["header"]["msg_id"]:
                return time.perf_counter() - t0


def serve_sizes(n):
    """The host sizes at which memory per kernel is measured."""
    return sorted({size for size in (10, 100, n) if size <= n})


def serve_host(max_kernels):
    """Start a gkernel serve host; return (process, management client)."""
    import os
    import subprocess
    import tempfile

    from gkernel.manage import HostClient

    host_file = os.path.join(tempfile.mkdtemp(prefix="gkernel-bench-"), "host.json")
    gkernel = os.path.join(os.path.dirname(sys.executable), "gkernel")
    proc = subprocess.Popen([gkernel, "serve", "--host-file", host_file, f"--max-kernels={max_kernels}"],
                            stderr=subprocess.DEVNULL)
    while not os.path.exists(host_file):
        time.sleep(0.02)
    return proc, HostClient(host_file, timeout=60)


def serve_figures(result, max_kernels):
    """Kernels in one gkernel serve host: creation, memory per kernel, kernel_info across idle kernels, load."""
    import resource

    import zmq

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = zmq.Context()
    context.max_sockets = 4 * max_kernels + 100  # a DEALER and a SUB per kernel
    proc, api = serve_host(max_kernels)
    try:
        base = rss_of(proc.pid)
        pingers = []

        def create(label):
            t0 = time.perf_counter()
            kernel = api.create()
            pinger = ShellPinger(context, kernel["connection"])
            pinger.request("kernel_info_request")
            result[label].append(time.perf_counter() - t0)
            pinger.request("execute_request", {"code": "pass", "silent": False})
            result[label + "_ready"].append(time.perf_counter() - t0)
            pingers.append(pinger)

        for _ in range(min(20, max_kernels)):  # one at a time, as users open notebooks
            create("serve_create_spaced")
            time.sleep(0.3)
        for target in serve_sizes(max_kernels):
            while len(pingers) < target:  # back to back
                create("serve_create")
            time.sleep(0.5)
            result[f"serve_rss_{target}"].append((rss_of(proc.pid) - base) / target)
        for pinger in pingers:
            result["serve_kernel_info"].append(pinger.request("kernel_info_request"))
        # Up to 100 kernels busy with cooperative work while another one answers execute requests.
        busy = "import gevent\nfor _ in range(300):\n    gevent.sleep(0.01)"
        for pinger in pingers[1:101]:
            pinger.session.send(pinger.socket, "execute_request", {"code": busy, "silent": False})
        time.sleep(0.3)
        for _ in range(50):
            result["serve_execute_busy"].append(pingers[0].request("execute_request", {"code": "pass"}))
    finally:
        api.stop()
        proc.wait(timeout=120)
        context.destroy(linger=0)


def rss_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=8, help="kernel starts per kernel (default 8)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of 50 requests per kernel (default 10)")
    parser.add_argument("--output-rounds", type=int, default=3,
                        help="rounds of the output throughput runs per kernel (default 3)")
    parser.add_argument("--load-rounds", type=int, default=3,
                        help="rounds of the heartbeat, control and interrupt runs per kernel (default 3)")
    parser.add_argument("--serve-kernels", type=int, default=1000,
                        help="kernels in the gkernel serve host run (default 1000; 0 skips it)")
    parser.add_argument("--notebooks", type=int, default=50,
                        help="small notebooks for the gkernel run vs nbclient run (default 50; 0 skips it)")
    parser.add_argument("--parallel", type=int, default=8,
                        help="notebooks at once for gkernel run and nbclient's threads (default 8)")
    parser.add_argument("--gkernel-arg", action="append", default=[], metavar="ARG",
                        help="extra command-line argument for the gkernel kernels, e.g. --gkernel-arg=--no-capture-fd")
    args = parser.parse_args()
    extra = {"gkernel": args.gkernel_arg, "ipykernel": []}
    results = {name: collections.defaultdict(list) for name in KERNELS}

    print(f"starting each kernel {args.starts} times...", file=sys.stderr)
    for _ in range(args.starts):
        for name, spec in KERNELS.items():
            km, kc, elapsed, ready = start(spec, extra[name])
            results[name]["start"].append(elapsed)
            results[name]["start_ready"].append(ready)
            results[name]["rss"].append(rss_mb(km))
            stop(km, kc)

    clients = {name: start(spec, extra[name]) for name, spec in KERNELS.items()}
    print(f"{args.rounds} rounds of 50 executes and 50 kernel_info requests per kernel...", file=sys.stderr)
    for name, (km, kc, _, _) in clients.items():  # warm up
        for _ in range(20):
            execute_round_trip(kc)
            kernel_info_round_trip(kc)
    for _ in range(args.rounds):
        for name, (km, kc, _, _) in clients.items():
            results[name]["execute"] += [execute_round_trip(kc) for _ in range(50)]
            results[name]["kernel_info"] += [kernel_info_round_trip(kc) for _ in range(50)]
    print(f"{args.output_rounds} rounds of output throughput runs per kernel...", file=sys.stderr)
    for _ in range(args.output_rounds):
        for name, (km, kc, _, _) in clients.items():
            output_throughput(kc, results[name])
    print(f"{args.load_rounds} rounds of heartbeat, control and interrupt runs per kernel...", file=sys.stderr)
    for _ in range(args.load_rounds):
        for name, (km, kc, _, _) in clients.items():
            under_load(km, kc, results[name])
            subshell_while_busy(kc, results[name])
    print("a spinning cell's loop rate, the kernels alternating...", file=sys.stderr)
    spin_rates_side_by_side(clients, results)
    for km, kc, _, _ in clients.values():
        stop(km, kc)
    print("the same with CurveZMQ-encrypted channels...", file=sys.stderr)
    for name, spec in KERNELS.items():
        encrypted_figures(name, spec, extra[name], results[name], args.rounds, args.output_rounds)
    for _ in range(args.load_rounds):
        for name in KERNELS:
            neighbour_while_spinning(name, results[name])
    if args.serve_kernels:
        print(f"a gkernel serve host with {args.serve_kernels} kernels...", file=sys.stderr)
        serve_figures(results["gkernel"], args.serve_kernels)
    if args.notebooks:
        print(f"executing {args.notebooks} notebooks with gkernel run and nbclient...", file=sys.stderr)
        notebooks = notebook_figures(KERNELS, args.notebooks, args.parallel)

    options = f", gkernel with {' '.join(args.gkernel_arg)}" if args.gkernel_arg else ""
    print(f"\ngkernel vs ipykernel (Python {sys.version.split()[0]}{options}); ratio = gkernel / ipykernel\n")
    table("Latency and memory (lower is better)", results, [
        ("start to first kernel_info_reply", "start", 1000, "ms"),
        ("start to first execute_reply (cells can run)", "start_ready", 1000, "ms"),
        ("execute 'pass' round trip (reply + idle)", "execute", 1000, "ms"),
        ("kernel_info round trip", "kernel_info", 1000, "ms"),
        ("RSS after start", "rss", 1, "MB"),
    ])
    table(f"Output throughput (median of {args.output_rounds} runs)", results, [
        (f"{LINES // 1000}k printed lines: time until all arrived", "lines_time", 1000, "ms"),
        (f"{LINES // 1000}k printed lines: lines/s (higher is better)", "lines_per_s", 1, ""),
        (f"{LINES // 1000}k printed lines: stream messages", "lines_messages", 1, ""),
        (f"{LINES // 1000}k printed lines: lines lost", "lines_lost", 1, ""),
        (f"{MEGABYTES} MB printed: time until all arrived", "mb_time", 1000, "ms"),
        (f"{MEGABYTES} MB printed: MB/s (higher is better)", "mb_per_s", 1, ""),
        (f"{MEGABYTES} MB printed: stream messages", "mb_messages", 1, ""),
        ("first output of a cell: time after the request", "first_output", 1000, "ms"),
    ], p99=False)
    encryption_table(results)
    if args.serve_kernels:
        serve_table(results, args.serve_kernels)
    if args.notebooks:
        notebook_table(notebooks, args.notebooks)
    table(f"Under load ({args.load_rounds} rounds; lower is better)", results, [
        ("status busy of a cell that prints, then spins the CPU", "spin_busy", 1000, "ms"),
        ("its first output (printed before the spin)", "spin_first_output", 1000, "ms"),
        ("execute round trip of a kernel while another one spins (gkernel: same host)",
         "neighbour_spin", 1000, "ms"),
        ("execute round trip in a subshell while the main shell runs time.sleep(3)", "subshell_sleep", 1000, "ms"),
        ("execute round trip in a subshell while the main shell spins the CPU", "subshell_spin", 1000, "ms"),
        ("heartbeat echo while a cell spins the CPU", "hb_spin", 1000, "ms"),
        ("kernel_info on control while a cell does gevent.sleep(2)", "control_sleep", 1000, "ms"),
        ("SIGINT to KeyboardInterrupt reply, cell in time.sleep(30)", "interrupt_sleep", 1000, "ms"),
        ("SIGINT to KeyboardInterrupt reply, cell in a CPU loop", "interrupt_cpu", 1000, "ms"),
        ("interrupt_request to KeyboardInterrupt reply, CPU loop", "interrupt_msg_cpu", 1000, "ms"),
    ])
    time_slicing_table(results)


def encryption_table(results):
    print("CurveZMQ encryption (jupyter_client transport_encryption='required'; medians)\n")
    print("| measure | gkernel plain | gkernel encrypted | ipykernel plain | ipykernel encrypted | "
          "ratio, encrypted |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    g, i = results["gkernel"], results["ipykernel"]
    for label, plain, curve, scale, unit in (
            ("execute 'pass' round trip (reply + idle)", "execute", "execute_curve", 1000, " ms"),
            (f"{LINES // 1000}k printed lines: lines/s (higher is better)", "lines_per_s", "lines_per_s_curve", 1, "")):
        gp, gc, ip, ic = (statistics.median(values) * scale for values in (g[plain], g[curve], i[plain], i[curve]))
        print(f"| {label} | {gp:,.2f}{unit} | {gc:,.2f}{unit} | {ip:,.2f}{unit} | {ic:,.2f}{unit} | {gc / ic:.2f}x |")
    print()


def time_slicing_table(results):
    g, i = results["gkernel"], results["ipykernel"]
    on, off, plain = (statistics.median(values) / 1e6 for values in
                      (g["spin_rate"], g["spin_rate_unsliced"], i["spin_rate"]))
    cost, ratio = (statistics.median(g[key]) for key in ("spin_on_vs_off", "spin_vs_ipykernel"))
    print(f"A spinning cell's loop rate (millions of iterations/s; higher is better; {len(g['spin_rate'])} "
          "rounds of 0.25 s cells alternating between the kernels; the last two columns are medians of "
          "each round's ratios)\n")
    print("| gkernel, time-slicing on | gkernel, time-slicing off | ipykernel | cost of time-slicing | "
          "gkernel (on) / ipykernel |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {on:.2f} | {off:.2f} | {plain:.2f} | {(1 - cost) * 100:.1f}% | {ratio:.2f}x |\n")


def serve_table(results, n):
    g, i = results["gkernel"], results["ipykernel"]
    process_start, process_rss = statistics.median(i["start"]) * 1000, statistics.median(i["rss"])
    process_ready = statistics.median(i["start_ready"]) * 1000
    create = statistics.median(g["serve_create"]) * 1000
    create_ready = statistics.median(g["serve_create_ready"]) * 1000
    spaced = statistics.median(g["serve_create_spaced"]) * 1000
    spaced_ready = statistics.median(g["serve_create_spaced_ready"]) * 1000
    print("Many kernels: one gkernel serve host vs one ipykernel process per kernel\n")
    print("| measure | gkernel serve | ipykernel | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for label, info, ready in (("one at a time, 0.3 s apart", spaced, spaced_ready),
                               ("back to back", create, create_ready)):
        print(f"| new kernel until its first kernel_info_reply, {label} (median) | {info:.1f} ms | "
              f"{process_start:.1f} ms | {info / process_start:.3f}x |")
        print(f"| new kernel until its first execute_reply, {label} (median) | {ready:.1f} ms | "
              f"{process_ready:.1f} ms | {ready / process_ready:.3f}x |")
    for target in serve_sizes(n):
        per = statistics.median(g[f"serve_rss_{target}"])
        print(f"| RSS per extra kernel, {target} kernels | {per:.2f} MB | {process_rss:.1f} MB | "
              f"{per / process_rss:.3f}x |")
    info = g["serve_kernel_info"]
    print(f"| kernel_info across {len(info)} idle kernels, p50 / p99 | {percentile(info, 50) * 1000:.2f} / "
          f"{percentile(info, 99) * 1000:.2f} ms | | |")
    busy = g["serve_execute_busy"]
    print(f"| execute round trip while {min(100, n - 1)} kernels of the host run cells, p50 / p99 | "
          f"{percentile(busy, 50) * 1000:.2f} / {percentile(busy, 99) * 1000:.2f} ms | | |")
    print("\n(ipykernel columns: one process per kernel, from the start runs above.)\n")


def table(title, results, rows, p99=True):
    g, i = results["gkernel"], results["ipykernel"]
    print(f"{title}\n")
    if p99:
        print("| measure | gkernel median | gkernel p99 | ipykernel median | ipykernel p99 | ratio |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
    else:
        print("| measure | gkernel | ipykernel | ratio |")
        print("| --- | ---: | ---: | ---: |")
    for label, key, scale, unit in rows:
        if not g[key] or not i[key]:
            continue
        gm, im = statistics.median(g[key]) * scale, statistics.median(i[key]) * scale
        ratio = f"{gm / im:.2f}x" if im else "-"
        if p99:
            gp, ip = percentile(g[key], 99) * scale, percentile(i[key], 99) * scale
            print(f"| {label} | {gm:.2f} {unit} | {gp:.2f} {unit} | {im:.2f} {unit} | {ip:.2f} {unit} | {ratio} |")
        else:
            print(f"| {label} | {gm:,.1f} {unit} | {im:,.1f} {unit} | {ratio} |")
    print()


if __name__ == "__main__":
    main()
