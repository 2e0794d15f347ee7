#!/usr/bin/env python3
"""The chaos run (issue 26): every fault at random while clients write and read, then a check that nothing
acknowledged is lost, duplicated or reordered, and that write-back's objects hold the store's bytes.

What runs, all on 127.0.0.1, as processes of their own (each in its own process group and tied to this script
with PR_SET_PDEATHSIG, so a killed run leaves nothing behind):
  - SeaweedFS (`weed mini`), the object store;
  - an `eddy store` and three `eddy node`s writing back to SeaweedFS (--flush-idle 2);
  - 8 writers, `eddy append chaos/events --servers A,B,C --key key-W --writer chaos-W`, each fed 5 lines
    every 0.1 s; the pointers they print are the acknowledged events;
  - 50 readers through the nodes: 25 `eddy tail ... --format json` from the start (they must see every
    acknowledged event exactly once, in order per key), 25 catch-up readers that `eddy read` from the start
    again and again (each read must hold a gapless prefix of every writer's events);
  - a killer that every 2-6 s SIGKILLs one of the nodes, the store or SeaweedFS and restarts it, and once a
    minute cuts node 2 off for 10 s. Node 2 runs in a network namespace of its own (`ip netns`), where its
    127.0.0.1 is its own: the ports it reaches (store, peers, S3) and its own port as the others reach it go
    through a relay over Unix sockets (a path reaches across namespaces), and a cut makes the relay pass nothing
    either way (connections hang, as behind a partition, and carry on after it). Where namespaces cannot be
    made, a cut is a SIGSTOP and SIGCONT of a node instead, and the run says so.

At the end the writers finish their input, the tail readers are waited for, the store is stopped cleanly and
scripts/verify-objects.py compares every flushed object with the store's segment files.
Last line: `chaos: K kills (store S, nodes N, object store O), P partitions, E events acknowledged, 0 lost,
0 duplicated, order kept` and exit 0; otherwise the first problem, and exit 1.

Usage: scripts/chaos.sh [--minutes M] [--cut-every SECONDS] (this file is what it runs: python3 scripts/chaos.py --eddy BINARY ...)
"""
import argparse
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
PR_SET_PDEATHSIG = 1
WRITERS = 8
TAIL_READERS = 25
CATCHUP_READERS = 25
LINES_PER_TICK = 5
STREAM = "chaos/events"
NAMESPACE = f"eddy-chaos-{os.getpid()}"
BUCKET = "chaos"
PREFIX = "eddy"
ACCESS, SECRET = "chaoskey", "chaossecret"


def tie():
    """In the child before exec: SIGKILL when the spawning thread (this script's main or killer thread) ends."""
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def say(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class Server:
    """A server process: started, waited for (`ready` says when it serves), SIGKILLed, restarted."""

    def __init__(self, name, argv, log, ready, env=None):
        self.name, self.argv, self.log, self.ready, self.env = name, argv, log, ready, env
        self.process = None

    def start(self, timeout=60):
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env,
                start_new_session=True, preexec_fn=tie)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.ready():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start; the end of {self.log}:\n" + tail(self.log))

    def kill(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def signal(self, sig):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, grace=20):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()


def tail(path, n=3000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return "(no log)"


def log_says(path, marker, start_at):
    """Whether the log, from byte `start_at()` on, holds `marker` (each restart appends to the same log)."""
    def check():
        try:
            with open(path, "rb") as f:
                f.seek(start_at())
                return marker.encode() in f.read()
        except OSError:
            return False
    return check


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class EddyServer(Server):
    """An eddy server: ready when the log, since this start, says `eddy store ready` or `eddy node ready`."""

    def __init__(self, name, argv, log, marker, env=None):
        self.mark = 0
        super().__init__(name, argv, log, log_says(log, marker, lambda: self.mark), env)

    def start(self, timeout=60):
        self.mark = log_size(self.log)
        super().start(timeout)


class Writer:
    """`eddy append` fed lines `chaos-W-N <padding>`; acked counts the pointers it printed (one per line, in order)."""

    def __init__(self, eddy, w, servers, folder):
        self.w, self.sent, self.acked, self.pointers = w, 0, 0, []
        self.err = os.path.join(folder, f"writer-{w}.err")
        with open(self.err, "wb") as err:
            self.process = subprocess.Popen(
                [eddy, "append", STREAM, "--servers", servers, "--key", f"key-{w}", "--writer", f"chaos-{w}",
                 "--batch", "100"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, start_new_session=True, preexec_fn=tie)
        self.collector = threading.Thread(target=self.collect, daemon=True)
        self.collector.start()

    def collect(self):
        for line in self.process.stdout:
            self.pointers.append(line.decode().strip())
            self.acked += 1

    def feed(self, count):
        lines = "".join(f"chaos-{self.w}-{self.sent + i} {'x' * 20}\n" for i in range(count))
        try:
            self.process.stdin.write(lines.encode())
            self.process.stdin.flush()
            self.sent += count
        except (BrokenPipeError, ValueError):
            pass


EVENT = re.compile(rb'"payload":"chaos-(\d+)-(\d+) ')


def parse_events(path, problems, label):
    """Per writer, the event numbers in the order a reader printed them (JSON lines of `eddy read/tail`; only
    whole lines count, the last may be being written)."""
    seen = {}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return seen
    data = data[: data.rfind(b"\n") + 1]
    lines = data.count(b"\n")
    found = 0
    for m in EVENT.finditer(data):
        seen.setdefault(int(m.group(1)), []).append(int(m.group(2)))
        found += 1
    if found != lines:
        problems.append(f"{label}: {lines - found} of {lines} lines are not events of this run")
    return seen


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def gapless(numbers):
    """None when `numbers` is 0, 1, 2, ...; else (index, what came, what was due)."""
    for i, n in enumerate(numbers):
        if n != i:
            return (i, n, i)
    return None


class Relay:
    """Carries TCP between this network namespace and node 2's over Unix sockets (a path works in both namespaces)
    and cuts it on demand: while `cut` is set no byte passes either way, so connections hang as behind a partition
    (and carry on after it, as TCP does once the network is back)."""

    def __init__(self):
        self.cut = threading.Event()
        self.sockets = []

    def pump(self, source, target):
        try:
            while True:
                if self.cut.is_set():
                    time.sleep(0.05)
                    continue
                data = source.recv(1 << 16)
                if not data:
                    break
                while self.cut.is_set():
                    time.sleep(0.05)
                target.sendall(data)
        except OSError:
            pass
        for s in (source, target):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve(self, listener, connect):
        self.sockets.append(listener)

        def accept_loop():
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=self.link, args=(client, connect), daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()

    def link(self, client, connect):
        while self.cut.is_set():  # a connection made during the cut waits for its end, as a SYN would
            time.sleep(0.05)
        try:
            upstream = connect()
        except OSError:
            client.close()
            return
        threading.Thread(target=self.pump, args=(client, upstream), daemon=True).start()
        self.pump(upstream, client)


def tcp_listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def unix_listener(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(128)
    return s


def tcp_to(port):
    return lambda: socket.create_connection(("127.0.0.1", port))


def unix_to(path):
    def connect():
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        return s
    return connect


def namespace_side(folder, node_port, out_ports):
    """`chaos.py --namespace-side ...`, run in node 2's namespace: its port reached from outside, and the ports
    it reaches (store, peers, S3) as listeners on its own 127.0.0.1 that lead out."""
    relay = Relay()
    relay.serve(unix_listener(f"{folder}/relay/in-{node_port}.sock"), tcp_to(node_port))
    for port in out_ports:
        relay.serve(tcp_listener(port), unix_to(f"{folder}/relay/out-{port}.sock"))
    open(f"{folder}/relay/ready", "w").close()
    while True:
        time.sleep(3600)


def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def main():
    parser = argparse.ArgumentParser(description="Eddy's chaos run (see the file's docstring).")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--eddy", default=".build/release/eddy")
    parser.add_argument("--weed", default=shutil.which("weed") or os.path.join(
        subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('scripts'))"],
                       capture_output=True, text=True).stdout.strip(), "weed"))
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, data)")
    parser.add_argument("--cut-every", type=float, default=60, metavar="SECONDS",
                        help="seconds between the starts of two 10 s cuts (default 60: once a minute)")
    parser.add_argument("--namespace-side", nargs=3, metavar=("FOLDER", "NODE_PORT", "OUT_PORTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.namespace_side:
        folder, node_port, out_ports = args.namespace_side
        namespace_side(folder, int(node_port), [int(p) for p in out_ports.split(",")])
        return
    eddy = os.path.abspath(args.eddy)
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = tempfile.mkdtemp(prefix="eddy-chaos-")
    say(f"folder {folder}, {args.minutes} minutes, eddy {eddy}")
    servers = []
    readers = []
    writers = []
    try:
        status = run(args, eddy, repository, folder, servers, readers, writers)
    finally:
        for w in writers:
            if w.process.poll() is None:
                os.killpg(w.process.pid, signal.SIGKILL)
        for r in readers:
            if r.poll() is None:
                os.killpg(r.pid, signal.SIGKILL)
        for s in servers:
            s.kill()
        ip("netns", "del", NAMESPACE)
        if not args.keep and "status" in locals() and status == 0:
            shutil.rmtree(folder, ignore_errors=True)
    sys.exit(status)


def run(args, eddy, repository, folder, servers, readers, writers):
    # SeaweedFS on a base port with its 8 ports and their gRPC twins (+10000) free.
    for _ in range(200):
        base = random.randrange(3000, 7900)
        if all(port_free(base + i) and port_free(base + 10000 + i) for i in range(9)):
            break
    s3_port = base + 3
    os.makedirs(f"{folder}/weed")
    with open(f"{folder}/s3.json", "w") as f:
        json.dump({"identities": [{"name": "chaos", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
                                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)

    def s3_ready():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{s3_port}/", timeout=1)
            return True
        except urllib.error.HTTPError:
            return True  # it answers (403 without a signature)
        except OSError:
            return False

    weed = Server("SeaweedFS", [
        args.weed, "mini", f"-dir={folder}/weed", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        "-admin.ui=false", f"-s3.config={folder}/s3.json", f"-master.port={base}", f"-volume.port={base + 1}",
        f"-filer.port={base + 2}", f"-s3.port={s3_port}", f"-admin.port={base + 4}", f"-webdav.port={base + 5}",
        f"-s3.port.iceberg={base + 6}", f"-s3.port.lance={base + 7}"], f"{folder}/weed.log", s3_ready)
    servers.append(weed)
    weed.start(120)
    import boto3
    endpoint = f"http://127.0.0.1:{s3_port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                      region_name="us-east-1")
    for attempt in range(60):
        try:
            s3.create_bucket(Bucket=BUCKET)
            break
        except Exception as error:  # SeaweedFS answers before its filer is up
            if attempt == 59:
                raise RuntimeError(f"cannot create the bucket: {error}")
            time.sleep(1)

    store_address = f"127.0.0.1:{free_port()}"
    nodes = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)
    store = EddyServer("store", [eddy, "store", "--data", f"{folder}/store", "--listen", store_address,
                                 "--admin-listen", "none"], f"{folder}/store.log", "eddy store ready", env)
    servers.append(store)
    store.start()
    node_servers = []
    # Node 2 runs in a network namespace of its own, joined to the others only through the relay, which the
    # killer cuts once a minute; where namespaces cannot be made, the cut is a SIGSTOP of a node instead.
    relay = None
    s3_port_number = s3_port
    if ip("netns", "add", NAMESPACE).returncode == 0 and ip("netns", "exec", NAMESPACE, "ip", "link", "set", "lo",
                                                                "up").returncode == 0:
        os.makedirs(f"{folder}/relay")
        node_port = int(nodes[2].split(":")[1])
        out_ports = [int(a.split(":")[1]) for a in [store_address] + nodes[:2]] + [s3_port_number]
        relay = Relay()
        relay.serve(tcp_listener(node_port), unix_to(f"{folder}/relay/in-{node_port}.sock"))
        for port in out_ports:
            relay.serve(unix_listener(f"{folder}/relay/out-{port}.sock"), tcp_to(port))
        side = Server("namespace relay", [
            "ip", "netns", "exec", NAMESPACE, sys.executable, os.path.abspath(__file__), "--namespace-side", folder,
            str(node_port), ",".join(map(str, out_ports))], f"{folder}/relay.log",
            lambda: os.path.exists(f"{folder}/relay/ready"))
        servers.append(side)
        side.start()
        say(f"node 2 runs in network namespace {NAMESPACE}, reached through a relay the killer cuts")
    else:
        say("network namespaces cannot be made here: a cut is a SIGSTOP of a node")
    for i, address in enumerate(nodes):
        prefix = ["ip", "netns", "exec", NAMESPACE] if relay and i == 2 else []
        node = EddyServer(f"node {i}", prefix + [
            eddy, "node", "--listen", address, "--store", store_address, "--members", ",".join(nodes),
            "--admin-listen", "none", "--object-store", f"s3://{BUCKET}/{PREFIX}", "--s3-endpoint", endpoint,
            "--s3-path-style", "--flush-idle", "2"], f"{folder}/node-{i}.log", "eddy node ready", env)
        servers.append(node)
        node_servers.append(node)
        node.start()
    subprocess.run([eddy, "create", STREAM, "--segments", "4", "--server", store_address], check=True,
                   capture_output=True)
    say(f"SeaweedFS on {s3_port}, store on {store_address}, nodes on {', '.join(nodes)}")

    def servers_for(i):
        order = nodes[i % 3:] + nodes[:i % 3]
        return ",".join(order)

    tail_outputs = []
    for r in range(TAIL_READERS):
        path = f"{folder}/tail-{r}.jsonl"
        tail_outputs.append(path)
        with open(path, "wb") as out, open(f"{folder}/tail-{r}.err", "wb") as err:
            readers.append(subprocess.Popen([eddy, "tail", STREAM, "--servers", servers_for(r), "--format", "json"],
                                            stdout=out, stderr=err, start_new_session=True, preexec_fn=tie))
    for w in range(WRITERS):
        writers.append(Writer(eddy, w, servers_for(w), folder))

    problems = []
    catchup_reads = [0]
    stop = threading.Event()

    def catchup(r):
        # Each read through the ring must hold, per writer, a gapless prefix of its events.
        while not stop.is_set():
            path = f"{folder}/catchup-{r}.jsonl"
            with open(path, "wb") as out, open(f"{folder}/catchup-{r}.err", "ab") as err:
                p = subprocess.Popen([eddy, "read", STREAM, "--servers", servers_for(r), "--format", "json"],
                                     stdout=out, stderr=err, start_new_session=True, preexec_fn=tie)
                readers.append(p)
                p.wait()
            if p.returncode == 0:
                for w, numbers in parse_events(path, problems, f"catch-up reader {r}").items():
                    bad = gapless(numbers)
                    if bad:
                        problems.append(f"catch-up reader {r}, writer {w}: at index {bad[0]} event {bad[1]}, "
                                        f"expected {bad[2]}")
                catchup_reads[0] += 1
            time.sleep(random.uniform(5, 15))

    # The catch-up readers' own threads spawn their `eddy read`s (tied to those threads, which live to the end).
    threads = [threading.Thread(target=catchup, args=(r,), daemon=True) for r in range(CATCHUP_READERS)]
    for t in threads:
        t.start()

    def feeder():
        while not stop.is_set():
            for w in writers:
                w.feed(LINES_PER_TICK)
            time.sleep(0.1)

    feeding = threading.Thread(target=feeder, daemon=True)
    feeding.start()

    kills = {"store": 0, "nodes": 0, "object store": 0}
    partitions = 0
    end = time.time() + args.minutes * 60
    next_partition = time.time() + args.cut_every
    while time.time() < end and not problems:
        time.sleep(random.uniform(2, 6))
        if time.time() >= next_partition:
            if relay:
                say("cut node 2 off for 10 s (its namespace's relay passes nothing)")
                relay.cut.set()
                time.sleep(10)
                relay.cut.clear()
            else:
                victim = random.randrange(3)
                say(f"cut node {victim} off for 10 s (SIGSTOP)")
                node_servers[victim].signal(signal.SIGSTOP)
                time.sleep(10)
                node_servers[victim].signal(signal.SIGCONT)
            partitions += 1
            next_partition = time.time() + args.cut_every - 10
            continue
        target = random.choice(["store", "node", "node", "node", "object store"])
        if target == "store":
            victim, kind = store, "store"
        elif target == "node":
            victim, kind = random.choice(node_servers), "nodes"
        else:
            victim, kind = weed, "object store"
        victim.kill()
        victim.start(120)
        kills[kind] += 1
        dead = [w.w for w in writers if w.process.poll() is not None]
        if dead:
            problems.append(f"writer {dead[0]} died: {tail(writers[dead[0]].err, 600)}")
        gone = [i for i, r in enumerate(readers[:TAIL_READERS]) if r.poll() is not None]
        if gone:
            problems.append(f"tail reader {gone[0]} died: {tail(f'{folder}/tail-{gone[0]}.err', 600)}")
        total_kills = sum(kills.values())
        if total_kills % 10 == 0:
            say(f"{total_kills} kills ({kills}), {partitions} partitions, "
                f"{sum(w.acked for w in writers)} events acknowledged, {catchup_reads[0]} catch-up reads")

    stop.set()
    feeding.join()
    for w in writers:
        try:
            w.process.stdin.close()
        except OSError:
            pass
    for w in writers:
        try:
            code = w.process.wait(120)
        except subprocess.TimeoutExpired:
            code = None
        w.collector.join(30)  # the last pointers may still be in the pipe
        if code != 0:
            problems.append(f"writer {w.w} ended with {code}: {tail(w.err, 600)}")
        elif w.acked != w.sent:
            problems.append(f"writer {w.w}: {w.acked} pointers for {w.sent} lines")
    acknowledged = sum(w.acked for w in writers)
    say(f"writers done: {acknowledged} events acknowledged; waiting for the tail readers")

    # Every tail reader must reach every acknowledged event.
    deadline = time.time() + 300
    while time.time() < deadline and any(count_lines(p) < acknowledged for p in tail_outputs):
        time.sleep(2)
    time.sleep(3)  # a duplicate would come after the last event
    for r in readers[:TAIL_READERS]:
        if r.poll() is None:
            os.killpg(r.pid, signal.SIGKILL)
    lost = duplicated = 0
    order_kept = True
    first_missing = None
    for i, path in enumerate(tail_outputs):
        seen = parse_events(path, problems, f"tail reader {i}")
        for w in writers:
            numbers = seen.get(w.w, [])
            counts = {}
            for n in numbers:
                counts[n] = counts.get(n, 0) + 1
            duplicated += sum(c - 1 for c in counts.values())
            missing = [n for n in range(w.acked) if n not in counts]
            lost += len(missing)
            if missing and first_missing is None:
                first_missing = f"tail reader {i} lacks writer {w.w}'s event {missing[0]}, pointer {w.pointers[missing[0]]}"
            if any(b <= a for a, b in zip(numbers, numbers[1:])):
                order_kept = False

    # Write-back: stop the store cleanly (its segment files are then whole), let the nodes flush, compare.
    say("checking the flushed objects against the store's segment files")
    deadline = time.time() + 180
    caught_up = False
    while not caught_up and time.time() < deadline:
        lags = []
        for address in nodes:
            r = subprocess.run([eddy, "admin", "stats", "--format", "json", "--server", address],
                               capture_output=True, text=True)
            try:
                lags.append(json.loads(r.stdout).get("flush_lag_bytes"))
            except ValueError:
                lags.append(None)
        caught_up = all(lag == 0 for lag in lags)
        if not caught_up:
            time.sleep(1)
    if not caught_up:
        problems.append(f"write-back did not catch up within 180 s (flush lag per node: {lags})")
    store.stop()
    expected = f"{folder}/expected"
    os.makedirs(expected)
    scope, name = STREAM.split("/")
    for s in range(4):
        source = f"{folder}/store/segments/{scope}/{name}/{s:08d}.seg"
        if os.path.exists(source):
            shutil.copyfile(source, f"{expected}/{s:08d}.bin")
    verify = subprocess.run([sys.executable, f"{repository}/scripts/verify-objects.py", "--endpoint", endpoint,
                             "--bucket", BUCKET, "--prefix", PREFIX, "--stream", STREAM, "--expected", expected],
                            capture_output=True, text=True, env=env)
    print(verify.stdout.strip())
    if verify.returncode != 0:
        problems.append("flushed objects differ from the store's bytes: " + verify.stdout.strip().split("\n")[-1])

    total = sum(kills.values())
    summary = (f"chaos: {total} kills (store {kills['store']}, nodes {kills['nodes']}, object store "
               f"{kills['object store']}), {partitions} partitions, {acknowledged} events acknowledged, {lost} lost, "
               f"{duplicated} duplicated, {'order kept' if order_kept else 'ORDER BROKEN'}")
    if first_missing:
        print("first missing: " + first_missing)
    for p in problems[:10]:
        print("problem: " + p)
    print(f"({catchup_reads[0]} catch-up reads checked; logs in {folder})")
    print(summary)
    return 0 if not problems and lost == 0 and duplicated == 0 and order_kept else 1


if __name__ == "__main__":
    main()
