//! `ordertrace trace-id ORDER_ID`: the deterministic id of an order's lifecycle trace, as every Envoy
//! computes it, so on-call can jump straight to the order's journey in Jaeger or Tempo.

use ordertrace::config::Config;
use ordertrace::order::lifecycle::{lifecycle_ids, DEFAULT_NAMESPACE};

pub fn run(args: &[String]) -> Result<(), String> {
    let mut order_id = None;
    let mut namespace = None;
    let mut url = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--namespace" => {
                namespace = Some(it.next().ok_or("--namespace needs a value")?.clone())
            }
            "--url" => {
                url = Some(
                    it.next()
                        .ok_or("--url needs a template with {trace_id}")?
                        .clone(),
                )
            }
            "--config" => {
                let path = it.next().ok_or("--config needs a file")?;
                let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
                let c = Config::from_json(&bytes)
                    .map_err(|e| format!("{path}: invalid configuration: {e}"))?;
                namespace = Some(c.lifecycle.namespace.clone());
                if url.is_none() {
                    url = c.lifecycle.trace_url.clone();
                }
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => order_id = Some(s.to_string()),
        }
    }
    let order_id = order_id
        .ok_or("usage: ordertrace trace-id ORDER_ID [--config C | --namespace NS] [--url T]")?;
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
