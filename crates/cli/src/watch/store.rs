//! The durable per-order state: SQLite (bundled) in WAL mode.
//!
//! - `transitions`: every lifecycle transition once (UNIQUE (order_id, status, at_ns): a span delivered
//!   twice — retries, several collectors — is stored once);
//! - `orders`: the current status of each order = its latest transition by event time, whatever the
//!   arrival order (recomputed from `transitions` whenever an order gets a new one);
//! - `stages`: (from, to, duration) of each order's completed stages, for the histograms;
//! - `gaps`: each gap once (UNIQUE (order_id, kind, status, since_ns)), so a restart neither loses nor
//!   re-raises one;
//! - `meta`: the lifecycle section the service runs with, for `ordertrace journey` and `stuck`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ordertrace::order::lifecycle::Lifecycle;
use rusqlite::{params, Connection, OptionalExtension};

use super::fmt_ms;
use super::gaps::{self, Gap, Step, Stuck};
use super::ingest::Transition;

/// Stage duration histogram bounds, milliseconds (the edges' bounds: every SLA is one).
pub const BUCKETS_MS: [u64; 16] = [
    100,
    1_000,
    10_000,
    60_000,
    300_000,
    900_000,
    1_800_000,
    3_600_000,
    14_400_000,
    43_200_000,
    86_400_000,
    172_800_000,
    259_200_000,
    604_800_000,
    1_209_600_000,
    2_592_000_000,
];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
  order_id TEXT NOT NULL, status TEXT NOT NULL, at_ns INTEGER NOT NULL,
  service TEXT NOT NULL, edge_previous TEXT, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,
  request_trace_id TEXT, request_span_id TEXT, received_ns INTEGER NOT NULL,
  UNIQUE (order_id, status, at_ns));
CREATE TABLE IF NOT EXISTS orders (
  order_id TEXT PRIMARY KEY, status TEXT NOT NULL, since_ns INTEGER NOT NULL,
  first_ns INTEGER NOT NULL, terminal INTEGER NOT NULL, purged INTEGER NOT NULL DEFAULT 0,
  updated_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS orders_watched ON orders (terminal, status, since_ns);
CREATE TABLE IF NOT EXISTS stages (
  order_id TEXT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL,
  from_ns INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
  PRIMARY KEY (order_id, from_ns, to_status));
CREATE TABLE IF NOT EXISTS gaps (
  order_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL, since_ns INTEGER NOT NULL,
  detail TEXT NOT NULL, detected_ns INTEGER NOT NULL, resolved_ns INTEGER,
  UNIQUE (order_id, kind, status, since_ns));
";

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn db_err(e: rusqlite::Error) -> String {
    format!("store: {e}")
}

/// An order's row.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub order_id: String,
    pub status: String,
    pub since_ns: u64,
    pub first_ns: u64,
    pub terminal: bool,
    pub purged: bool,
}

/// Result of one ingest.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ingested {
    pub stored: u64,
    pub duplicates: u64,
    /// Transitions of orders already removed by retention.
    pub purged: u64,
}

/// One (from, to) stage histogram: cumulative counts per bound of [`BUCKETS_MS`], sum, count.
pub struct StageHistogram {
    pub from: String,
    pub to: String,
    pub cumulative: Vec<u64>,
    pub sum_ms: u64,
    pub count: u64,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, String> {
        let conn =
            Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
        // journal_mode returns a row.
        let _: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(db_err)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL;")
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        Ok(Store { conn })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(db_err)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, String> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(db_err)
    }

    /// Stores new transitions (duplicates ignored) and recomputes the orders they touch.
    pub fn ingest(
        &mut self,
        lc: &Lifecycle,
        ts: &[Transition],
        now_ns: u64,
    ) -> Result<Ingested, String> {
        let tx = self.conn.transaction().map_err(db_err)?;
        let mut out = Ingested::default();
        let mut touched = BTreeSet::new();
        for t in ts {
            let purged: Option<bool> = tx
                .query_row(
                    "SELECT purged FROM orders WHERE order_id = ?1",
                    [&t.order_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if purged == Some(true) {
                out.purged += 1;
                continue;
            }
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO transitions (order_id, status, at_ns, service,
                       edge_previous, trace_id, span_id, request_trace_id, request_span_id, received_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        t.order_id,
                        t.status,
                        i(t.at_ns),
                        t.service,
                        t.edge_previous,
                        t.trace_id,
                        t.span_id,
                        t.request_trace_id,
                        t.request_span_id,
                        i(now_ns)
                    ],
                )
                .map_err(db_err)?;
            if n == 0 {
                out.duplicates += 1;
            } else {
                out.stored += 1;
                touched.insert(t.order_id.clone());
            }
        }
        for order_id in &touched {
            recompute(&tx, lc, order_id, now_ns)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Records an `sla` gap for every watched order whose current stage has outlived its SLA.
    /// Returns how many gaps are new.
    pub fn sweep(&mut self, lc: &Lifecycle, now_ns: u64) -> Result<u64, String> {
        let stuck = self.stuck_sla(lc, now_ns)?;
        let tx = self.conn.transaction().map_err(db_err)?;
        let mut new = 0;
        for s in stuck {
            new += u64::try_from(
                tx.execute(
                    "INSERT OR IGNORE INTO gaps (order_id, kind, status, since_ns, detail, detected_ns)
                     VALUES (?1, 'sla', ?2, ?3, ?4, ?5)",
                    params![s.order_id, s.status, i(s.since_ns), s.detail, i(now_ns)],
                )
                .map_err(db_err)?,
            )
            .unwrap_or(0);
        }
        tx.commit().map_err(db_err)?;
        Ok(new)
    }

    fn stuck_sla(&self, lc: &Lifecycle, now_ns: u64) -> Result<Vec<Stuck>, String> {
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT order_id, since_ns FROM orders
                 WHERE terminal = 0 AND purged = 0 AND status = ?1 AND since_ns < ?2
                 ORDER BY since_ns",
            )
            .map_err(db_err)?;
        for (status, sla_ms) in &lc.sla_ms {
            if lc.terminal.contains(status) {
                continue;
            }
            let cutoff = now_ns.saturating_sub(sla_ms.saturating_mul(1_000_000));
            let rows = stmt
                .query_map(params![status, i(cutoff)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(db_err)?;
            for row in rows {
                let (order_id, since) = row.map_err(db_err)?;
                let age_ms = now_ns.saturating_sub(u(since)) / 1_000_000;
                out.push(Stuck {
                    order_id,
                    status: status.clone(),
                    since_ns: u(since),
                    age_ms,
                    sla_ms: Some(*sla_ms),
                    reason: "sla".into(),
                    detail: format!(
                        "in {status} for {}, SLA {}",
                        fmt_ms(age_ms),
                        fmt_ms(*sla_ms)
                    ),
                });
            }
        }
        Ok(out)
    }

    /// The orders stuck now: current stage over its SLA, or a skipped required status (open gap).
    /// Sorted by stage (lifecycle order), oldest first.
    pub fn stuck(&self, lc: &Lifecycle, now_ns: u64) -> Result<Vec<Stuck>, String> {
        let mut out = self.stuck_sla(lc, now_ns)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT o.order_id, o.status, o.since_ns, g.detail FROM gaps g
                 JOIN orders o ON o.order_id = g.order_id
                 WHERE g.kind = 'skipped' AND g.resolved_ns IS NULL AND o.terminal = 0 AND o.purged = 0
                 ORDER BY g.since_ns",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(db_err)?;
        for row in rows {
            let (order_id, status, since, detail) = row.map_err(db_err)?;
            if out
                .iter()
                .any(|s| s.order_id == order_id && s.reason == "skipped")
            {
                continue;
            }
            out.push(Stuck {
                sla_ms: lc.sla_ms(&status),
                order_id,
                status,
                since_ns: u(since),
                age_ms: now_ns.saturating_sub(u(since)) / 1_000_000,
                reason: "skipped".into(),
                detail,
            });
        }
        let idx = |s: &str| {
            lc.statuses
                .iter()
                .position(|x| x == s)
                .unwrap_or(usize::MAX)
        };
        out.sort_by(|a, b| {
            (idx(&a.status), a.since_ns, &a.order_id).cmp(&(
                idx(&b.status),
                b.since_ns,
                &b.order_id,
            ))
        });
        Ok(out)
    }

    pub fn order(&self, order_id: &str) -> Result<Option<OrderRow>, String> {
        self.conn
            .query_row(
                "SELECT order_id, status, since_ns, first_ns, terminal, purged FROM orders
                 WHERE order_id = ?1",
                [order_id],
                |r| {
                    Ok(OrderRow {
                        order_id: r.get(0)?,
                        status: r.get(1)?,
                        since_ns: u(r.get(2)?),
                        first_ns: u(r.get(3)?),
                        terminal: r.get(4)?,
                        purged: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
    }

    pub fn transitions(&self, order_id: &str) -> Result<Vec<Transition>, String> {
        load_transitions(&self.conn, order_id)
    }

    pub fn gaps(&self, order_id: &str) -> Result<Vec<Gap>, String> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kind, status, since_ns, detail, detected_ns, resolved_ns FROM gaps
                 WHERE order_id = ?1 ORDER BY since_ns, kind",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([order_id], |r| {
                Ok(Gap {
                    kind: r.get(0)?,
                    status: r.get(1)?,
                    since_ns: u(r.get(2)?),
                    detail: r.get(3)?,
                    detected_ns: u(r.get(4)?),
                    resolved_ns: r.get::<_, Option<i64>>(5)?.map(u),
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    /// (status, orders) for every current status of orders still kept.
    pub fn orders_per_status(&self) -> Result<Vec<(String, u64)>, String> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT status, COUNT(*) FROM orders WHERE purged = 0 GROUP BY status ORDER BY status",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, u(r.get(1)?))))
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    /// (kind, gaps ever recorded, gaps open).
    pub fn gap_counts(&self) -> Result<Vec<(String, u64, u64)>, String> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kind, COUNT(*), SUM(resolved_ns IS NULL) FROM gaps GROUP BY kind ORDER BY kind",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, u(r.get(1)?), u(r.get(2)?)))
            })
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    pub fn stage_histograms(&self) -> Result<Vec<StageHistogram>, String> {
        let buckets: Vec<String> = BUCKETS_MS
            .iter()
            .map(|b| format!("SUM(duration_ms <= {b})"))
            .collect();
        let sql = format!(
            "SELECT from_status, to_status, COUNT(*), SUM(duration_ms), {} FROM stages
             GROUP BY from_status, to_status ORDER BY from_status, to_status",
            buckets.join(", ")
        );
        let mut stmt = self.conn.prepare(&sql).map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| {
                let mut cumulative = Vec::with_capacity(BUCKETS_MS.len());
                for k in 0..BUCKETS_MS.len() {
                    cumulative.push(u(r.get(k + 4)?));
                }
                Ok(StageHistogram {
                    from: r.get(0)?,
                    to: r.get(1)?,
                    count: u(r.get(2)?),
                    sum_ms: u(r.get(3)?),
                    cumulative,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }

    /// Deletes the transitions and gaps of orders that reached a terminal status more than
    /// `closed_days` ago (the order row stays, marked purged, so late duplicates do not bring it
    /// back), and stage samples older than `aggregate_days`. Returns the orders purged.
    pub fn retention(
        &mut self,
        now_ns: u64,
        closed_days: u64,
        aggregate_days: u64,
    ) -> Result<u64, String> {
        let day_ns: u64 = 86_400 * 1_000_000_000;
        let cutoff = now_ns.saturating_sub(closed_days.saturating_mul(day_ns));
        let agg_cutoff = now_ns.saturating_sub(aggregate_days.saturating_mul(day_ns));
        let tx = self.conn.transaction().map_err(db_err)?;
        let ids: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT order_id FROM orders WHERE terminal = 1 AND purged = 0 AND since_ns < ?1",
                )
                .map_err(db_err)?;
            let rows = stmt.query_map([i(cutoff)], |r| r.get(0)).map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?
        };
        for id in &ids {
            tx.execute("DELETE FROM transitions WHERE order_id = ?1", [id])
                .map_err(db_err)?;
            tx.execute("DELETE FROM gaps WHERE order_id = ?1", [id])
                .map_err(db_err)?;
            tx.execute("UPDATE orders SET purged = 1 WHERE order_id = ?1", [id])
                .map_err(db_err)?;
        }
        tx.execute("DELETE FROM stages WHERE from_ns < ?1", [i(agg_cutoff)])
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(u64::try_from(ids.len()).unwrap_or(0))
    }
}

fn load_transitions(conn: &Connection, order_id: &str) -> Result<Vec<Transition>, String> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT order_id, status, at_ns, service, edge_previous, trace_id, span_id,
                    request_trace_id, request_span_id
             FROM transitions WHERE order_id = ?1",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([order_id], |r| {
            Ok(Transition {
                order_id: r.get(0)?,
                status: r.get(1)?,
                at_ns: u(r.get(2)?),
                service: r.get(3)?,
                edge_previous: r.get(4)?,
                trace_id: r.get(5)?,
                span_id: r.get(6)?,
                request_trace_id: r.get(7)?,
                request_span_id: r.get(8)?,
            })
        })
        .map_err(db_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
}

/// Recomputes an order's row, stages and journey gaps from all its transitions.
fn recompute(conn: &Connection, lc: &Lifecycle, order_id: &str, now_ns: u64) -> Result<(), String> {
    let steps: Vec<Step> = gaps::journey(lc, load_transitions(conn, order_id)?);
    let Some((status, since)) = gaps::current(&steps) else {
        return Ok(());
    };
    let first = steps.first().map_or(since, |s| s.t.at_ns);
    let terminal = lc.terminal.iter().any(|t| t == status);
    conn.execute(
        "INSERT INTO orders (order_id, status, since_ns, first_ns, terminal, updated_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, since_ns = excluded.since_ns,
           first_ns = excluded.first_ns, terminal = excluded.terminal, updated_ns = excluded.updated_ns",
        params![order_id, status, i(since), i(first), terminal, i(now_ns)],
    )
    .map_err(db_err)?;
    conn.execute("DELETE FROM stages WHERE order_id = ?1", [order_id])
        .map_err(db_err)?;
    let mut stage_start: Option<u64> = None;
    let mut skip_keys: Vec<(String, u64)> = Vec::new();
    for s in steps.iter().filter(|s| !s.repeat) {
        if let (Some(prev), Some(ms), Some(from_ns)) = (&s.previous, s.stage_ms, stage_start) {
            conn.execute(
                "INSERT OR REPLACE INTO stages (order_id, from_status, to_status, from_ns, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![order_id, prev, s.t.status, i(from_ns), i(ms)],
            )
            .map_err(db_err)?;
            if s.over_sla && !terminal {
                let sla = s.stage_sla_ms.unwrap_or(0);
                conn.execute(
                    "INSERT OR IGNORE INTO gaps (order_id, kind, status, since_ns, detail,
                       detected_ns, resolved_ns)
                     VALUES (?1, 'sla', ?2, ?3, ?4, ?5, ?6)",
                    params![
                        order_id,
                        prev,
                        i(from_ns),
                        format!("in {prev} for {}, SLA {}", fmt_ms(ms), fmt_ms(sla)),
                        i(now_ns),
                        i(s.t.at_ns)
                    ],
                )
                .map_err(db_err)?;
            }
        }
        if !s.skipped.is_empty() {
            skip_keys.push((s.t.status.clone(), s.t.at_ns));
            if !terminal {
                conn.execute(
                    "INSERT OR IGNORE INTO gaps (order_id, kind, status, since_ns, detail, detected_ns)
                     VALUES (?1, 'skipped', ?2, ?3, ?4, ?5)",
                    params![
                        order_id,
                        s.t.status,
                        i(s.t.at_ns),
                        format!(
                            "{} → {} skipped {}",
                            s.previous.as_deref().unwrap_or("?"),
                            s.t.status,
                            s.skipped.join(", ")
                        ),
                        i(now_ns)
                    ],
                )
                .map_err(db_err)?;
            }
        }
        stage_start = Some(s.t.at_ns);
    }
    // Close what no longer holds: an SLA gap of a stage the order has left, a skip that a late
    // transition filled in, anything once the order is terminal.
    let open: Vec<(String, String, u64)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT kind, status, since_ns FROM gaps WHERE order_id = ?1 AND resolved_ns IS NULL",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([order_id], |r| Ok((r.get(0)?, r.get(1)?, u(r.get(2)?))))
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?
    };
    for (kind, gstatus, gsince) in open {
        let still = !terminal
            && match kind.as_str() {
                "sla" => gstatus == status && gsince == since,
                _ => skip_keys
                    .iter()
                    .any(|(s, at)| *s == gstatus && *at == gsince),
            };
        if !still {
            conn.execute(
                "UPDATE gaps SET resolved_ns = ?1
                 WHERE order_id = ?2 AND kind = ?3 AND status = ?4 AND since_ns = ?5",
                params![i(now_ns), order_id, kind, gstatus, i(gsince)],
            )
            .map_err(db_err)?;
        }
    }
    Ok(())
}
