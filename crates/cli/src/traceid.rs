//! `ordertrace trace-id ORDER_ID`: the deterministic id of an order's lifecycle trace, as every Envoy
//! computes it, so on-call can jump straight to the order's journey in Jaeger or Tempo.

use ordertrace::config::Config;
use ordertrace::order::lifecycle::{lifecycle_ids, DEFAULT_NAMESPACE};

/// `ordertrace trace-id ORDER_ID`.
#[derive(clap::Args)]
pub struct Args {
    /// The order id, as the edges see it in `order.id`
    order_id: String,
    /// Take the namespace (and the trace URL) from this edge plugin config
    #[arg(long, value_name = "CONFIG.json", conflicts_with = "namespace")]
    config: Option<String>,
    /// The lifecycle namespace (lifecycle.namespace of the edges' config)
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Also print a trace URL: TEMPLATE with {trace_id} replaced (overrides lifecycle.trace_url)
    #[arg(long, value_name = "TEMPLATE")]
    url: Option<String>,
}

pub fn run(args: Args) -> Result<(), String> {
    let Args {
        order_id,
        config,
        mut namespace,
        mut url,
    } = args;
    if let Some(path) = config {
        let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        let c =
            Config::from_json(&bytes).map_err(|e| format!("{path}: invalid configuration: {e}"))?;
        namespace = Some(c.lifecycle.namespace.clone());
        if url.is_none() {
            url = c.lifecycle.trace_url.clone();
        }
    }
    let ns = namespace.unwrap_or_else(|| {
        eprintln!(
            "note: no --config or --namespace given; using the default namespace {DEFAULT_NAMESPACE:?}, \
             which matches only edges whose lifecycle.namespace is unset"
        );
        DEFAULT_NAMESPACE.to_string()
    });
    let (trace_id, root) = lifecycle_ids(&ns, &order_id);
    println!("order {order_id}: lifecycle trace {trace_id} (root span {root}, namespace {ns:?})");
    if let Some(u) = url {
        println!("{}", u.replace("{trace_id}", &trace_id.to_hex()));
    }
    Ok(())
}
