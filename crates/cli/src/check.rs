//! `ordertrace check CONFIG.json`: validate a plugin configuration with exactly the code the filter runs in
//! `on_configure`, and print what it will do.

use ordertrace::config::{Config, Source};
use ordertrace_amqp::Amqp;

/// `ordertrace check CONFIG.json`.
#[derive(clap::Args)]
pub struct Args {
    /// The plugin configuration (the JSON Envoy passes to the filter)
    #[arg(value_name = "CONFIG.json")]
    config: String,
}

pub fn run(args: Args) -> Result<(), String> {
    let path = &args.config;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let config =
        Config::from_json(&bytes).map_err(|e| format!("{path}: invalid configuration: {e}"))?;
    // An `amqp` section is the AMQP module's (dist/ordertrace-amqp.wasm): checked as that module loads it.
    let amqp = match &config.amqp {
        Some(_) => Some(
            Amqp::from_config(&config)
                .map_err(|e| format!("{path}: invalid configuration: {e}"))?,
        ),
        None => None,
    };
    print!("{}", describe(&config));
    if let Some(a) = &amqp {
        println!(
            "amqp: {} message rules; load with dist/ordertrace-amqp.wasm (envoy.filters.network.wasm)",
            a.rules.len()
        );
    }
    println!("{path}: OK");
    Ok(())
}

fn source(c: &Config, route: usize, s: &Source) -> String {
    let r = c.routes.get(route);
    match s {
        Source::Literal(l) => format!("{l:?}"),
        Source::PathVar(i) => {
            let name = r
                .and_then(|r| r.template.variables().get(*i))
                .map_or("?", |s| s.as_str());
            format!("path variable {{{name}}}")
        }
        Source::Header(h) => format!("header {h}"),
        Source::Query(q) => format!("query parameter {q}"),
        Source::RequestBody(i) => {
            let p = r
                .and_then(|r| r.request_pointers.get(*i))
                .map_or("?", |p| p.as_str());
            format!("request body {p}")
        }
        Source::ResponseBody(i) => {
            let p = r
                .and_then(|r| r.response_pointers.get(*i))
                .map_or("?", |p| p.as_str());
            format!("response body {p}")
        }
    }
}

pub fn describe(c: &Config) -> String {
    let mut out = String::new();
    let col = &c.collector;
    out.push_str(&format!(
        "service: {}{}\n",
        c.service,
        if c.public_edge { " (public edge)" } else { "" }
    ));
    out.push_str(&format!(
        "export: cluster {} {}{} every {} ms, batches of {} spans, queue bound {} spans, timeout {} ms\n",
        col.cluster, col.authority, col.path, col.flush_interval_ms, col.max_batch_spans, col.max_queue_spans, col.timeout_ms
    ));
    out.push_str(&format!(
        "sampling: {} of new traces; parent decision kept\n",
        c.sampling_ratio
    ));
    out.push_str(&format!(
        "body inspection: first {} bytes of JSON bodies, for routes that need them\n",
        c.body_max_bytes
    ));
    out.push_str(&format!("routes ({}):\n", c.routes.len()));
    for (i, r) in c.routes.iter().enumerate() {
        let methods = if r.methods.is_empty() {
            "*".to_string()
        } else {
            r.methods.join(",")
        };
        out.push_str(&format!(
            "  [{i}] {methods} {} -> span {:?}\n",
            r.template.as_str(),
            r.span_name
        ));
        if let Some(s) = &r.order_id {
            out.push_str(&format!("      order.id     <- {}\n", source(c, i, s)));
        }
        if let Some(s) = &r.status {
            out.push_str(&format!(
                "      order.status <- {} (on 2xx)\n",
                source(c, i, s)
            ));
        }
        for (k, s) in &r.attributes {
            out.push_str(&format!("      {k} <- {}\n", source(c, i, s)));
        }
    }
    let lc = &c.lifecycle;
    if lc.enabled {
        out.push_str(&format!(
            "lifecycle: namespace {:?}, {} statuses, {} allowed transitions, table of {} orders per Envoy\n",
            lc.namespace,
            lc.statuses.len(),
            lc.transitions.len(),
            lc.table_size
        ));
        out.push_str(&format!("  statuses: {}\n", lc.statuses.join(" -> ")));
        for (status, ms) in &lc.sla_ms {
            out.push_str(&format!("  SLA {status}: {}\n", human_ms(*ms)));
        }
        if let Some(u) = &lc.trace_url {
            out.push_str(&format!("  trace URL: {u}\n"));
        }
    } else {
        out.push_str("lifecycle: off\n");
    }
    out.push_str("redaction:\n");
    for line in c.redactor.describe() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn human_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (n, u) in UNITS {
        if ms >= n && ms % n == 0 {
            return format!("{}{u}", ms / n);
        }
    }
    format!("{ms}ms")
}
