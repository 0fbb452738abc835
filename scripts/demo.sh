#!/usr/bin/env bash
# `make demo`: the three Envoy edges (envoy/*-edge.yaml) with ordertrace.wasm, a reference upstream
# behind each (`ordertrace refapi`), and the span sink (`ordertrace sink`). Drives two orders from
# INITIATED to CLOSED through the edges (the second fails one step and retries it), then prints the
# spans grouped by order and, per order, its lifecycle trace id (`ordertrace trace-id`) and its
# transitions in order. A third order never gets its price: `ordertrace watch` (fed by the sink) reports
# it stuck, in the terminal and on its page. Everything it starts is stopped on exit or Ctrl-C.
#
# Overrides: ENVOY (default .venv/bin/envoy), CLI (default target/release/ordertrace),
#            DEMO_KEEP=1 keeps the work dir (logs, spans.jsonl) even on success.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY=${ENVOY:-.venv/bin/envoy}
CLI=${CLI:-target/release/ordertrace}
WASM=dist/ordertrace.wasm

# service  edge-port  upstream-port  admin-port
EDGES=(
  "shop 10000 18000 9900"
  "crm  10001 18001 9901"
  "mes  10002 18002 9902"
)
SINK_PORT=4318
WATCH_PORT=4320

say() { printf '\033[1m%s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- prerequisites --------------------------------------------------------------------------------
[[ -x $ENVOY ]] || die "$ENVOY is missing: run \`make setup\`"
[[ -f $WASM ]] || die "$WASM is missing: run \`make build\`"
[[ -x $CLI ]] || die "$CLI is missing: run \`make build\`"
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed (standard library only)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
busy=()
for e in "${EDGES[@]}"; do
  read -r _ edge up admin <<<"$e"
  for p in "$edge" "$up" "$admin"; do port_busy "$p" && busy+=("$p"); done
done
port_busy "$SINK_PORT" && busy+=("$SINK_PORT")
port_busy "$WATCH_PORT" && busy+=("$WATCH_PORT")
if ((${#busy[@]})); then
  die "port(s) already in use on 127.0.0.1: ${busy[*]} (a previous demo still running? see \`ss -ltnp\`)"
fi

# --- start everything -----------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ordertrace-demo.XXXXXX")
PIDS=()
NAMES=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    echo
    say "stopping ${NAMES[*]}"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      local alive=0
      for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
  fi
  if ((rc != 0)) || [[ ${DEMO_KEEP:-0} == 1 ]]; then
    echo "logs, requests and spans kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # name logfile command...
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
}

# Waits for `curl URL` to succeed (and print LIVE when $3 is given); dies with the log tail otherwise.
wait_http() { # name url log [expect]
  local name=$1 url=$2 log=$3 expect=${4:-}
  for _ in $(seq 600); do
    local out
    if out=$(curl -sf --max-time 1 "$url" 2>/dev/null) && [[ -z $expect || $out == *"$expect"* ]]; then
      return 0
    fi
    local i
    for i in "${!NAMES[@]}"; do
      if [[ ${NAMES[$i]} == "$name" ]] && ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
        tail -n 30 "$log" >&2
        die "$name exited during start-up (log: $log)"
      fi
    done
    sleep 0.1
  done
  tail -n 30 "$log" >&2
  die "$name not ready at $url within 60 s (log: $log)"
}

say "starting the span sink, three reference APIs and three Envoy edges (work dir $WORK)"
# The stuck-order watch gets a copy of every export from the sink. Its config is the Shop edge's
# lifecycle with the price-calculation SLA cut to 8 s, so the demo's third order goes stuck in time.
python3 - envoy/shop-edge.yaml "$WORK/watch.json" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().split("\n")
start = next(i for i, l in enumerate(lines) if l.strip() == "value: |")
indent = len(lines[start]) - len(lines[start].lstrip())
block = []
for l in lines[start + 1:]:
    if l.strip() and len(l) - len(l.lstrip()) <= indent:
        break
    block.append(l)
lc = json.loads("\n".join(block))["lifecycle"]
lc.setdefault("sla", {})["PRICE_CALCULATION_STARTED"] = "8s"
json.dump({"lifecycle": lc}, open(sys.argv[2], "w"))
PY
start watch "$WORK/watch.log" "$CLI" watch --config "$WORK/watch.json" --db "$WORK/watch.db" \
  --listen "127.0.0.1:$WATCH_PORT" --sweep-interval-ms 500
start sink "$WORK/sink.log" "$CLI" sink --listen "127.0.0.1:$SINK_PORT" --jsonl "$WORK/spans.jsonl" \
  --forward "http://127.0.0.1:$WATCH_PORT/v1/traces"
for e in "${EDGES[@]}"; do
  read -r svc _ up _ <<<"$e"
  start "refapi-$svc" "$WORK/refapi-$svc.log" "$CLI" refapi --service "$svc" --listen "127.0.0.1:$up" \
    --record "$WORK/requests-$svc.jsonl"
done
base=$(( ($$ % 20000) * 10 + 7 ))
for e in "${EDGES[@]}"; do
  read -r svc _ _ _ <<<"$e"
  base=$((base + 1))
  start "envoy-$svc" "$WORK/envoy-$svc.out" "$ENVOY" -c "envoy/$svc-edge.yaml" --concurrency 1 \
    --base-id "$base" --log-level info --log-path "$WORK/envoy-$svc.log"
done

wait_http watch "http://127.0.0.1:$WATCH_PORT/healthz" "$WORK/watch.log"
wait_http sink "http://127.0.0.1:$SINK_PORT/healthz" "$WORK/sink.log"
for e in "${EDGES[@]}"; do
  read -r svc edge up admin <<<"$e"
  wait_http "refapi-$svc" "http://127.0.0.1:$up/healthz" "$WORK/refapi-$svc.log"
  wait_http "envoy-$svc" "http://127.0.0.1:$admin/ready" "$WORK/envoy-$svc.log" LIVE
done
echo "  shop edge :10000 -> shop API :18000    crm edge :10001 -> crm API :18001    mes edge :10002 -> mes API :18002"
echo "  spans -> ordertrace sink :$SINK_PORT ($WORK/spans.jsonl)"

# --- drive two orders -----------------------------------------------------------------------------
SHOP=http://127.0.0.1:10000
CRM=http://127.0.0.1:10001
MES=http://127.0.0.1:10002
CALLS=0

# call LABEL METHOD URL [curl args...]: prints one line, leaves the body in $WORK/last.json,
# the status in $STATUS.
call() {
  local label=$1 method=$2 url=$3
  shift 3
  STATUS=$(curl -sS -o "$WORK/last.json" -w '%{http_code}' -X "$method" "$@" "$url") || STATUS=000
  CALLS=$((CALLS + 1))
  printf '  %-9s %-6s %-44s -> %s %s\n' "$label" "$method" "${url#http://127.0.0.1}" "$STATUS" \
    "$(head -c 110 "$WORK/last.json" | tr -d '\n')"
}

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/last.json" "$1"; }

head -c 3000000 /dev/urandom >"$WORK/model-a.stl"
head -c 1500000 /dev/urandom >"$WORK/model-b.stl"
head -c 500000 /dev/urandom >"$WORK/model-c.stl"

say "a third order whose price calculation never comes back (the watch will find it stuck)"
call order-c POST "$SHOP/api/orders" -H 'content-type: application/json' \
  --data '{"email":"cy@example.com","phone":"+1 555 0102","name":"Cy Example","address":"3 Low St","product":"brooch","material":"platinum","partnerId":"p-5"}'
[[ $STATUS == 201 ]] || die "creating order C failed ($STATUS)"
C=$(json_field id)
call "$C" PUT "$SHOP/api/orders/$C/model" -H 'content-type: model/stl' --data-binary "@$WORK/model-c.stl"
call "$C" POST "$SHOP/api/orders/$C/submit"
call "$C" POST "$MES/api/orders/$C/price"
STUCK_SINCE=$(date +%s)

say "driving two orders through the edges"
call order-a POST "$SHOP/api/orders" -H 'content-type: application/json' \
  --data '{"email":"ann@example.com","phone":"+1 555 0100","name":"Ann Example","address":"1 Main St","product":"ring","material":"gold-750","partnerId":"p-17"}'
[[ $STATUS == 201 ]] || die "creating order A failed ($STATUS)"
A=$(json_field id)
call order-b POST "$SHOP/api/orders" -H 'content-type: application/json' \
  --data '{"email":"bob@example.com","phone":"+1 555 0101","name":"Bob Example","address":"2 High St","product":"pendant","material":"silver-925","partnerId":"p-42"}'
[[ $STATUS == 201 ]] || die "creating order B failed ($STATUS)"
B=$(json_field id)

call "$A" PUT "$SHOP/api/orders/$A/model" -H 'content-type: model/stl' --data-binary "@$WORK/model-a.stl"
call "$B" PUT "$SHOP/api/orders/$B/model" -H 'content-type: model/stl' --data-binary "@$WORK/model-b.stl"
for id in "$A" "$B"; do call "$id" POST "$SHOP/api/orders/$id/submit"; done
for id in "$A" "$B"; do call "$id" POST "$MES/api/orders/$id/price"; done
call dashboard GET "$MES/api/orders?status=NEW&page=1"
# The calculation's result (in production the `order.price_calculated` message) is recorded on MES the
# way operators set statuses; without it MES would see PRICE_CALCULATION_STARTED -> MANUFACTURING_STARTED,
# a transition the lifecycle does not allow (flagged order.transition.unexpected).
for id in "$A" "$B"; do
  call "$id" PUT "$MES/api/orders/$id/status" -H 'content-type: application/json' \
    --data '{"status":"PRICE_CALCULATED","operatorId":"price-calculator"}'
done
for id in "$A" "$B"; do
  call "$id" POST "$CRM/api/orders/$id/approve" -H 'content-type: application/json' --data '{"managerId":"m-7"}'
done
for status in MANUFACTURING_STARTED MANUFACTURING_COMPLETED PACKAGING SHIPPED; do
  for id in "$A" "$B"; do
    body="{\"status\":\"$status\",\"operatorId\":\"op-17\"}"
    if [[ $id == "$B" && $status == PACKAGING ]]; then
      # Order B: the MES fails this step once (x-demo-fail makes the reference API answer 500)...
      call "$id" PUT "$MES/api/orders/$id/status" -H 'content-type: application/json' -H 'x-demo-fail: 500' --data "$body"
      [[ $STATUS == 500 ]] || die "the failing step answered $STATUS, not 500"
      sleep 0.3
      # ...and the operator retries it.
    fi
    call "$id" PUT "$MES/api/orders/$id/status" -H 'content-type: application/json' --data "$body"
  done
done
for id in "$A" "$B"; do call "$id" POST "$CRM/api/orders/$id/close"; done

# --- collect and print ----------------------------------------------------------------------------
say "waiting for the edges to flush their spans (flush_interval_ms = 1000)"
lines=0
for _ in $(seq 150); do
  # One SERVER span per request; the filter may add INTERNAL order-lifecycle spans on top.
  lines=$( (grep -c '"kind":"SERVER"' "$WORK/spans.jsonl") 2>/dev/null || echo 0)
  ((lines >= CALLS)) && break
  sleep 0.1
done
((lines >= CALLS)) || echo "  only $lines of $CALLS request spans arrived (see $WORK/envoy-*.log)" >&2
sleep 0.5 # lifecycle spans of the last requests may come in the next batch

say "spans grouped by order (from $WORK/spans.jsonl)"
python3 - "$WORK/spans.jsonl" <<'PY'
import json, sys
from collections import OrderedDict

spans = []
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if line:
            spans.append(json.loads(line))
spans.sort(key=lambda s: s.get("start_time_unix_nano", 0))

# Request spans (SERVER, one per request through an edge) grouped by order id; the filter's
# order-lifecycle spans (INTERNAL, one trace per order) are summarised under each order.
groups = OrderedDict()
lifecycle = {}
for s in spans:
    order = s.get("attributes", {}).get("order.id") or "(no order id)"
    if s.get("kind") == "SERVER":
        groups.setdefault(order, []).append(s)
    else:
        lifecycle.setdefault(order, []).append(s)

def row(s):
    a = s.get("attributes", {})
    if "order.status" in a:
        status = a["order.status"]
    elif "order.status.attempted" in a:
        status = "attempted " + str(a["order.status.attempted"])
    else:
        status = "-"
    err = "  ERROR " + str(a.get("error.type", "")) if s.get("status", {}).get("code") == "ERROR" else ""
    return "  %s  %-9s %-12s %-36s %3s %8.1f ms  trace %s%s" % (
        s.get("time", "")[11:23], s.get("service") or "-", s.get("name", ""), status,
        a.get("http.response.status_code", "-"), s.get("duration_ms", 0.0), s.get("trace_id", "")[:16], err)

for order in sorted(set(groups) | set(lifecycle), key=lambda o: (o.startswith("("), o)):
    ss = groups.get(order, [])
    traces = len({s.get("trace_id") for s in ss})
    print("\n%s  (%d requests in %d traces)" % (order, len(ss), traces))
    for s in ss:
        print(row(s))
    path = [s["attributes"]["order.status"] for s in ss if "order.status" in s.get("attributes", {})]
    if path:
        print("  lifecycle: " + " -> ".join(path))
    life = lifecycle.get(order, [])
    if life:
        ids = sorted({s.get("trace_id", "") for s in life})
        stages = [s for s in life if "order.status" in s.get("attributes", {})]
        print("  order trace %s: %d lifecycle spans (%d stages)" % (", ".join(ids), len(life), len(stages)))
print("\n%d spans in total (%d request spans)" % (len(spans), sum(len(v) for v in groups.values())))
PY

# --- each order's own lifecycle trace --------------------------------------------------------------
# Every Envoy derives the same trace id from the order id and the lifecycle namespace of its config;
# `ordertrace trace-id` computes it offline (and the Jaeger URL from lifecycle.trace_url).
python3 - envoy/shop-edge.yaml "$WORK/shop-plugin.json" <<'PY'
import sys
lines = open(sys.argv[1]).read().split("\n")
start = next(i for i, l in enumerate(lines) if l.strip() == "value: |")
indent = len(lines[start]) - len(lines[start].lstrip())
block = []
for l in lines[start + 1:]:
    if l.strip() and len(l) - len(l.lstrip()) <= indent:
        break
    block.append(l)
open(sys.argv[2], "w").write("\n".join(block))
PY
echo
say "order lifecycles: one trace per order (ordertrace trace-id), its transitions from $WORK/spans.jsonl"
for id in "$A" "$B"; do
  out=$("$CLI" trace-id "$id" --config "$WORK/shop-plugin.json") || die "ordertrace trace-id $id failed"
  trace=$(sed -n 's/.* lifecycle trace \([0-9a-f]\{32\}\) .*/\1/p' <<<"$out")
  [[ -n $trace ]] || die "no trace id in: $out"
  echo
  sed 's/^/  /' <<<"$out"
  python3 - "$WORK/spans.jsonl" "$trace" <<'PY'
import json, sys
path, trace = sys.argv[1], sys.argv[2]
spans = [json.loads(l) for l in open(path) if l.strip()]
mine = [s for s in spans if s.get("trace_id") == trace]
roots = [s for s in mine if s.get("name") == "order.lifecycle"]
changes = sorted((s for s in mine if "order.status" in s.get("attributes", {})),
                 key=lambda s: (s.get("start_time_unix_nano", 0), s.get("end_time_unix_nano", 0)))
requests = {(s.get("trace_id"), s.get("span_id")): s for s in spans if s.get("kind") == "SERVER"}
print("  %d transitions in the lifecycle trace, root span order.lifecycle %s"
      % (len(changes), "present" if roots else "MISSING"))
for s in changes:
    a = s.get("attributes", {})
    after = ""
    if "order.status.previous" in a:
        after = "after %s, %s ms" % (a["order.status.previous"], a.get("order.stage.duration_ms", "?"))
    flag = "  UNEXPECTED" if a.get("order.transition.unexpected") else ""
    link = (s.get("links") or [{}])[0]
    req = requests.get((link.get("trace_id"), link.get("span_id")))
    via = ("<- %s in trace %s" % (req.get("name", "?"), link.get("trace_id", "")[:16])) if req \
        else "<- request span not found"
    print("    %s  %-26s %-9s %-46s %s%s" % (s.get("time", "")[11:23], a.get("order.status"),
          a.get("service.name", s.get("service") or "-"), after, via, flag))
PY
done

echo
sleep 1.2 # the filter pushes its counters to Envoy on the next tick
say "edge metrics (admin /stats, wasmcustom.ordertrace_*)"
for e in "${EDGES[@]}"; do
  read -r svc _ _ admin <<<"$e"
  printf '  %-5s %s\n' "$svc" "$(curl -sfg "http://127.0.0.1:$admin/stats?filter=wasmcustom.ordertrace_(spans_exported|spans_dropped|export_failures|traceparent_created)" \
    | sed 's/wasmcustom.ordertrace_//' | tr '\n' ' ')"
done
echo
say "labelled metrics (admin /stats/prometheus): transitions by service and status, errors by route"
for e in "${EDGES[@]}"; do
  read -r svc _ _ admin <<<"$e"
  curl -sf "http://127.0.0.1:$admin/stats/prometheus" \
    | grep -E '^ordertrace_(status_transitions|route_errors)\{' | grep -v ' 0$' | sed 's/^/  /' || true
done

echo
say "stuck orders (ordertrace watch: price calculation SLA cut to 8 s for the demo)"
wait_left=$((STUCK_SINCE + 10 - $(date +%s)))
((wait_left > 0)) && sleep "$wait_left"
for _ in $(seq 1 20); do
  "$CLI" stuck --db "$WORK/watch.db" | grep -q "$C" && break
  sleep 0.5
done
"$CLI" stuck --db "$WORK/watch.db" | sed 's/^/  /'
"$CLI" stuck --db "$WORK/watch.db" | grep -q "$C" || die "the watch did not report order $C as stuck"
echo
"$CLI" journey "$C" --db "$WORK/watch.db" | sed 's/^/  /'
echo
say "the same on the watch page: http://127.0.0.1:$WATCH_PORT/  (order: http://127.0.0.1:$WATCH_PORT/orders/$C)"
curl -sf "http://127.0.0.1:$WATCH_PORT/" | grep -q "$C" || die "the watch page does not list $C"
echo "  the page lists $C as stuck at PRICE_CALCULATION_STARTED"
if [[ -t 0 ]]; then
  read -r -p "  open the page in a browser; press Enter to stop the demo " _ || true
fi
