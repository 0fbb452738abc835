//! `ordertrace watch`: receives the lifecycle spans (OTLP/HTTP protobuf), keeps every order's state in
//! SQLite, finds stuck orders (a stage over its SLA, a skipped required status) and serves `/metrics`,
//! a JSON API and an offline HTML page. `ordertrace journey` and `ordertrace stuck` read the same store.
//! See docs/watch.md.

mod gaps;
mod http;
mod ingest;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ordertrace::config::Config;
use ordertrace::order::lifecycle::{Lifecycle, RawLifecycle};
use serde_json::{json, Value};

use super::httpd::{Limits, Server};
use gaps::Step;
use store::{OrderRow, Store};

/// `ORDERTRACE_CLOCK_FILE`, like `--clock-file`: a file holding "now" as Unix milliseconds (tests).
pub const CLOCK_ENV: &str = "ORDERTRACE_CLOCK_FILE";
const META_LIFECYCLE: &str = "lifecycle";

/// Where "now" comes from: the system clock, or a file the tests write (read at every use).
#[derive(Debug, Clone)]
pub struct Clock(Option<PathBuf>);

impl Clock {
    fn new(flag: Option<String>) -> Clock {
        Clock(
            flag.or_else(|| std::env::var(CLOCK_ENV).ok().filter(|s| !s.is_empty()))
                .map(PathBuf::from),
        )
    }

    pub fn now_ns(&self) -> u64 {
        if let Some(ms) = self
            .0
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            return ms.saturating_mul(1_000_000);
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// The running service's shared state.
pub struct State {
    pub store: Mutex<Store>,
    pub lc: Lifecycle,
    pub clock: Clock,
    pub counters: Counters,
    /// Largest OTLP request body accepted (413, counted, beyond).
    pub max_body: u64,
}

impl State {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ingest health counters (since start).
#[derive(Default)]
pub struct Counters {
    pub requests_ok: AtomicU64,
    pub requests_bad: AtomicU64,
    pub requests_too_large: AtomicU64,
    pub requests_failed: AtomicU64,
    pub spans_ignored: AtomicU64,
    pub transitions_stored: AtomicU64,
    pub transitions_duplicate: AtomicU64,
    pub transitions_purged: AtomicU64,
    pub sweeps: AtomicU64,
    pub sweep_errors: AtomicU64,
    pub orders_purged: AtomicU64,
}

/// The lifecycle section of an edge plugin config (checked by the same code as `ordertrace check`),
/// or of a watch config `{"lifecycle": {...}}`. Returns the model and the section's JSON.
pub fn load_lifecycle(bytes: &[u8]) -> Result<(Lifecycle, String), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let section = value.get("lifecycle").cloned().unwrap_or(json!({}));
    let is_watch_config = value
        .as_object()
        .is_some_and(|o| o.keys().all(|k| k == "lifecycle"));
    let lc = if is_watch_config {
        let raw =
            RawLifecycle::from_json(section.to_string().as_bytes()).map_err(|e| e.to_string())?;
        Lifecycle::compile(&raw).map_err(|e| e.to_string())?
    } else {
        Config::from_json(bytes)
            .map_err(|e| e.to_string())?
            .lifecycle
    };
    Ok((lc, section.to_string()))
}

fn lifecycle_from_meta(json: &str) -> Result<Lifecycle, String> {
    let raw =
        RawLifecycle::from_json(json.as_bytes()).map_err(|e| format!("stored lifecycle: {e}"))?;
    Lifecycle::compile(&raw).map_err(|e| format!("stored lifecycle: {e}"))
}

/// `ordertrace watch`.
#[derive(clap::Args)]
#[command(after_help = "See docs/watch.md.")]
pub struct WatchArgs {
    /// An edge plugin config or a watch config {"lifecycle": {...}}: only `lifecycle` is used
    #[arg(long, value_name = "CONFIG.json")]
    config: String,
    /// The SQLite store (created when missing)
    #[arg(long, value_name = "FILE")]
    db: String,
    /// Address for OTLP in (POST /v1/traces), /metrics, the API and the page
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4319")]
    listen: String,
    /// Largest OTLP request accepted (413 and counted beyond)
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body: u64,
    /// Delete the transitions of orders closed more than N days ago
    #[arg(long, value_name = "N", default_value_t = 14)]
    retain_closed_days: u64,
    /// Delete stage duration samples (the histograms) older than N days
    #[arg(long, value_name = "N", default_value_t = 90)]
    retain_aggregate_days: u64,
    /// How often SLA gaps are recorded and retention runs (at least 10 ms)
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    sweep_interval_ms: u64,
    #[command(flatten)]
    clock: ClockArg,
}

/// `--clock-file`, for the service and the terminal commands alike.
#[derive(clap::Args)]
struct ClockArg {
    /// Read "now" from FILE (Unix milliseconds) at every use, for tests and demos [env: ORDERTRACE_CLOCK_FILE]
    #[arg(long, value_name = "FILE")]
    clock_file: Option<String>,
}

/// What `journey` and `stuck` share: the store, its lifecycle model, the output form, the clock.
#[derive(clap::Args)]
struct StoreArgs {
    /// The watch service's SQLite store
    #[arg(long, value_name = "FILE")]
    db: String,
    /// Use this config's lifecycle instead of the one the service stored
    #[arg(long, value_name = "CONFIG.json")]
    config: Option<String>,
    /// Print JSON (as the service's API answers)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    clock: ClockArg,
}

/// `ordertrace journey ORDER_ID --db FILE`.
#[derive(clap::Args)]
pub struct JourneyArgs {
    /// The order id
    order_id: String,
    #[command(flatten)]
    store: StoreArgs,
}

/// `ordertrace stuck --db FILE`.
#[derive(clap::Args)]
pub struct StuckArgs {
    #[command(flatten)]
    store: StoreArgs,
}

/// `ordertrace watch`.
pub fn run(o: WatchArgs) -> Result<(), String> {
    let WatchArgs { config, db, .. } = &o;
    let bytes = std::fs::read(config).map_err(|e| format!("{config}: {e}"))?;
    let (lc, section) = load_lifecycle(&bytes).map_err(|e| format!("{config}: {e}"))?;
    let store = Store::open(Path::new(db))?;
    store.set_meta(META_LIFECYCLE, &section)?;
    let state = Arc::new(State {
        store: Mutex::new(store),
        lc,
        clock: Clock::new(o.clock.clock_file.clone()),
        counters: Counters::default(),
        max_body: o.max_body,
    });
    let handler_state = Arc::clone(&state);
    let server = Server::bind(
        o.listen.as_str(),
        // The handler enforces --max-body itself (so that refusals are counted); the HTTP layer
        // refuses, uncounted and unread, bodies that declare more than 4 times that.
        Limits {
            max_body: o.max_body.saturating_mul(4),
        },
        move |req, body| http::handle(req, body, &handler_state),
    )
    .map_err(|e| format!("cannot listen on {}: {e}", o.listen))?;
    eprintln!(
        "ordertrace watch: listening on http://{} (OTLP: POST /v1/traces), store {db}",
        server.local_addr()
    );
    let interval = Duration::from_millis(o.sweep_interval_ms.max(10));
    let (closed_days, agg_days) = (o.retain_closed_days, o.retain_aggregate_days);
    std::thread::spawn(move || loop {
        std::thread::sleep(interval);
        http::sweep(&state, closed_days, agg_days);
    });
    server.run().map_err(|e| e.to_string())
}

/// Opens a store for the terminal commands, with the lifecycle it was written with (or `--config`).
fn open_for_cli(o: &StoreArgs) -> Result<(Store, Lifecycle), String> {
    let db = &o.db;
    if !Path::new(db).exists() {
        return Err(format!(
            "{db}: no such store (start `ordertrace watch --db {db}` first)"
        ));
    }
    let store = Store::open(Path::new(db))?;
    let lc = match &o.config {
        Some(c) => {
            load_lifecycle(&std::fs::read(c).map_err(|e| format!("{c}: {e}"))?)
                .map_err(|e| format!("{c}: {e}"))?
                .0
        }
        None => match store.meta(META_LIFECYCLE)? {
            Some(json) => lifecycle_from_meta(&json)?,
            None => return Err(format!("{db} has no lifecycle model yet: pass --config")),
        },
    };
    Ok((store, lc))
}

/// `ordertrace journey ORDER_ID --db FILE`.
pub fn run_journey(args: JourneyArgs) -> Result<(), String> {
    let JourneyArgs { order_id, store: o } = args;
    let (store, lc) = open_for_cli(&o)?;
    let now = Clock::new(o.clock.clock_file.clone()).now_ns();
    let Some(view) = journey_view(&store, &lc, &order_id, now)? else {
        return Err(format!("no order {order_id:?} in the store"));
    };
    if o.json {
        println!("{}", view.to_json(&lc));
    } else {
        print!("{}", view.to_text());
    }
    Ok(())
}

/// `ordertrace stuck --db FILE`.
pub fn run_stuck(args: StuckArgs) -> Result<(), String> {
    let o = args.store;
    let (store, lc) = open_for_cli(&o)?;
    let now = Clock::new(o.clock.clock_file.clone()).now_ns();
    let stuck = store.stuck(&lc, now)?;
    if o.json {
        println!("{}", stuck_json(&lc, &stuck));
        return Ok(());
    }
    if stuck.is_empty() {
        println!("no stuck orders");
        return Ok(());
    }
    let mut stage = "";
    for s in &stuck {
        if s.status != stage {
            stage = &s.status;
            let n = stuck.iter().filter(|x| x.status == stage).count();
            println!("{stage} ({n} stuck)");
        }
        println!(
            "  {:<24} {:<8} for {:<10} SLA {:<8} {}",
            s.order_id,
            s.reason,
            fmt_ms(s.age_ms),
            s.sla_ms.map(fmt_ms).unwrap_or_else(|| "-".into()),
            s.detail
        );
    }
    Ok(())
}

pub fn stuck_json(lc: &Lifecycle, stuck: &[gaps::Stuck]) -> Value {
    let items: Vec<Value> = stuck
        .iter()
        .map(|s| s.to_json(lc.url(&lc.trace_ids(&s.order_id).0)))
        .collect();
    json!({ "count": items.len(), "stuck": items })
}

/// Everything shown about one order (JSON, terminal, page).
pub struct JourneyView {
    pub order: OrderRow,
    pub steps: Vec<Step>,
    pub gaps: Vec<gaps::Gap>,
    pub now_ns: u64,
    pub age_ms: u64,
    pub sla_ms: Option<u64>,
    pub stuck: Vec<gaps::Stuck>,
    pub lifecycle_trace_id: String,
}

pub fn journey_view(
    store: &Store,
    lc: &Lifecycle,
    order_id: &str,
    now_ns: u64,
) -> Result<Option<JourneyView>, String> {
    let Some(order) = store.order(order_id)? else {
        return Ok(None);
    };
    let steps = gaps::journey(lc, store.transitions(order_id)?);
    let stuck = if order.terminal {
        Vec::new()
    } else {
        store
            .stuck(lc, now_ns)?
            .into_iter()
            .filter(|s| s.order_id == order_id)
            .collect()
    };
    Ok(Some(JourneyView {
        age_ms: now_ns.saturating_sub(order.since_ns) / 1_000_000,
        sla_ms: lc.sla_ms(&order.status).filter(|_| !order.terminal),
        gaps: store.gaps(order_id)?,
        lifecycle_trace_id: lc.trace_ids(order_id).0.to_hex(),
        order,
        steps,
        now_ns,
        stuck,
    }))
}

/// The trace URL of a (hex) trace id, from `lifecycle.trace_url`.
pub fn trace_url(lc: &Lifecycle, trace_id: &str) -> Option<String> {
    lc.trace_url
        .as_ref()
        .map(|u| u.replace("{trace_id}", trace_id))
}

impl JourneyView {
    pub fn to_json(&self, lc: &Lifecycle) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "status": s.t.status,
                    "at_ns": s.t.at_ns,
                    "at": rfc3339(s.t.at_ns),
                    "service": s.t.service,
                    "repeat": s.repeat,
                    "previous": s.previous,
                    "edge_previous": s.t.edge_previous,
                    "stage_duration_ms": s.stage_ms,
                    "stage_sla_ms": s.stage_sla_ms,
                    "over_sla": s.over_sla,
                    "skipped": s.skipped,
                    "unexpected": s.unexpected,
                    "span_id": s.t.span_id,
                    "request_trace_id": s.t.request_trace_id,
                    "request_span_id": s.t.request_span_id,
                    "request_trace_url": s.t.request_trace_id.as_deref().and_then(|t| trace_url(lc, t)),
                })
            })
            .collect();
        json!({
            "order_id": self.order.order_id,
            "status": self.order.status,
            "since_ns": self.order.since_ns,
            "since": rfc3339(self.order.since_ns),
            "first_ns": self.order.first_ns,
            "terminal": self.order.terminal,
            "purged": self.order.purged,
            "now_ns": self.now_ns,
            "age_ms": self.age_ms,
            "sla_ms": self.sla_ms,
            "stuck": !self.stuck.is_empty(),
            "stuck_reasons": self.stuck.iter().map(|s| s.reason.clone()).collect::<Vec<_>>(),
            "lifecycle_trace_id": self.lifecycle_trace_id,
            "lifecycle_trace_url": trace_url(lc, &self.lifecycle_trace_id),
            "transitions": steps,
            "gaps": self.gaps.iter().map(gaps::Gap::to_json).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "order {}: {} since {} ({}{}){}\nlifecycle trace {}\n",
            self.order.order_id,
            self.order.status,
            rfc3339(self.order.since_ns),
            fmt_ms(self.age_ms),
            self.sla_ms
                .map(|s| format!(", SLA {}", fmt_ms(s)))
                .unwrap_or_default(),
            if self.stuck.is_empty() {
                String::new()
            } else {
                format!(
                    "  STUCK ({})",
                    self.stuck
                        .iter()
                        .map(|s| s.detail.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            },
            self.lifecycle_trace_id
        );
        for s in &self.steps {
            let stage = match (&s.previous, s.stage_ms) {
                (Some(p), Some(ms)) => format!(
                    "after {} in {p}{}{}",
                    fmt_ms(ms),
                    s.stage_sla_ms
                        .map(|x| format!(" (SLA {})", fmt_ms(x)))
                        .unwrap_or_default(),
                    if s.over_sla { " OVER SLA" } else { "" }
                ),
                _ if s.repeat => "repeat".to_string(),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {}  {:<26} {:<12} {}{}  request trace {}\n",
                rfc3339(s.t.at_ns),
                s.t.status,
                s.t.service,
                stage,
                if s.skipped.is_empty() {
                    String::new()
                } else {
                    format!(" SKIPPED {}", s.skipped.join(", "))
                },
                s.t.request_trace_id.as_deref().unwrap_or("-"),
            ));
        }
        for g in &self.gaps {
            out.push_str(&format!(
                "  gap {} {}: {} ({})\n",
                g.kind,
                g.status,
                g.detail,
                if g.resolved_ns.is_some() {
                    "resolved"
                } else {
                    "open"
                }
            ));
        }
        out
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `45m 0s`, `1d 2h`, `350ms`.
pub fn fmt_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `2026-05-01T10:00:00.123Z` (UTC, milliseconds).
pub fn rfc3339(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let millis = (unix_nanos % 1_000_000_000) / 1_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days since 1970-01-01 → civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_ms(45 * 60_000), "45m 0s");
        assert_eq!(fmt_ms(350), "350ms");
        assert_eq!(fmt_ms(90_000_000), "1d 1h");
        assert_eq!(
            rfc3339(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn watch_config_or_edge_config() {
        let (lc, _) = load_lifecycle(br#"{"lifecycle":{"sla":{"SUBMITTED":"15m"}}}"#).unwrap();
        assert_eq!(lc.sla_ms("SUBMITTED"), Some(900_000));
        let e = load_lifecycle(br#"{"lifecycle":{"sla":{"SUBMITTED":"soon"}}}"#).unwrap_err();
        assert!(e.contains("lifecycle.sla.SUBMITTED"), "{e}");
        let edge =
            br#"{"service":"shop-api","collector":{"cluster":"c"},"redaction":{"enabled":false},
                        "lifecycle":{"sla":{"SUBMITTED":"15m"}}}"#;
        assert!(
            load_lifecycle(edge).is_ok(),
            "{:?}",
            load_lifecycle(edge).err()
        );
        assert!(load_lifecycle(br#"{"service":""}"#).is_err());
    }
}
