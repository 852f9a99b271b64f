//! Flows the cells report (their traffic logs' records), kept in memory by the replica they
//! report to: a ring per cell, so one cell's flood overwrites only its own oldest flows, and
//! the whole bounded by the cells there are. Queries narrow by app, verdict and age; a user
//! sees only flows of apps it may read. Nothing here touches the database or the revision:
//! flows never wake a watch.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use c2c_api::types::{Flow, FlowBatch, FlowQuery, MAX_FLOWS_PER_BATCH};

/// Flows kept per cell (the oldest go first).
pub(crate) const PER_CELL: usize = 2_048;
/// The most flows one query answers (the newest of those that match).
pub(crate) const MAX_ANSWER: usize = 1_000;
/// The longest text a flow's field may hold (an app name, a group, a time).
const MAX_FIELD: usize = 256;

/// One cell's recent flows, with when this replica received each.
#[derive(Default)]
struct Ring {
    flows: VecDeque<(Instant, Flow)>,
}

/// Every cell's ring and the counts, behind one lock (held for a push or a query's scan only).
#[derive(Default)]
pub(crate) struct Flows {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_cell: HashMap<String, Ring>,
    /// Each cell's last reported revision, and when it came.
    revisions: HashMap<String, (u64, Instant)>,
    seq: u64,
    /// Reported dropped by cells, plus overwritten here.
    dropped: u64,
}

/// Why a batch was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// More than [`MAX_FLOWS_PER_BATCH`] flows.
    TooMany(usize),
    /// A field past [`MAX_FIELD`] bytes, or a verdict that is none.
    Malformed(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::TooMany(n) => {
                write!(f, "{n} flows in one report; at most {MAX_FLOWS_PER_BATCH}")
            }
            Refused::Malformed(m) => write!(f, "malformed flow: {m}"),
        }
    }
}

fn check(f: &Flow) -> Result<(), Refused> {
    let texts = [
        Some(&f.time),
        Some(&f.kind),
        Some(&f.verdict),
        Some(&f.protocol),
        f.source.app.as_ref(),
        f.source.app_guid.as_ref(),
        f.destination.app.as_ref(),
        f.destination.app_guid.as_ref(),
        f.security_group.as_ref(),
    ];
    if let Some(t) = texts.into_iter().flatten().find(|t| t.len() > MAX_FIELD) {
        return Err(Refused::Malformed(format!(
            "a field of {} bytes (at most {MAX_FIELD})",
            t.len()
        )));
    }
    if !matches!(f.verdict.as_str(), "accept" | "deny" | "unknown") {
        return Err(Refused::Malformed(format!("verdict {:?}", f.verdict)));
    }
    Ok(())
}

impl Flows {
    /// Takes `cell`'s report: each flow gets the cell's name (its certificate's, never the
    /// cell's word) and a sequence number. Returns how many were kept.
    pub(crate) fn push(
        &self,
        cell: &str,
        batch: FlowBatch,
        now: Instant,
    ) -> Result<usize, Refused> {
        if batch.flows.len() > MAX_FLOWS_PER_BATCH {
            return Err(Refused::TooMany(batch.flows.len()));
        }
        batch.flows.iter().try_for_each(check)?;
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        inner.dropped += batch.dropped;
        if let Some(r) = batch.revision {
            inner.revisions.insert(cell.to_string(), (r, now));
        }
        let ring = inner.by_cell.entry(cell.to_string()).or_default();
        let n = batch.flows.len();
        for mut f in batch.flows {
            inner.seq += 1;
            f.seq = inner.seq;
            f.cell = Some(cell.to_string());
            if ring.flows.len() == PER_CELL {
                ring.flows.pop_front();
                inner.dropped += 1;
            }
            ring.flows.push_back((now, f));
        }
        Ok(n)
    }

    /// Flows received since this replica started, and dropped (by cells, and overwritten here).
    pub(crate) fn totals(&self) -> (u64, u64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.seq, g.dropped)
    }

    /// The revision `cell` last reported it acted on, and when it said so.
    pub(crate) fn revision_of(&self, cell: &str) -> Option<(u64, Instant)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.revisions.get(cell).copied()
    }

    /// Forgets a removed cell's flows.
    pub(crate) fn forget(&self, cell: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.by_cell.remove(cell);
        g.revisions.remove(cell);
    }

    /// The flows `q` asks for that `may_read` lets through (by either end's app GUID), oldest
    /// first, at most [`MAX_ANSWER`] (the newest of them); and the dropped count.
    pub(crate) fn query(
        &self,
        q: &FlowQuery,
        now: Instant,
        may_read: impl Fn(&str) -> bool,
    ) -> (Vec<Flow>, u64) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let limit = q.limit.unwrap_or(MAX_ANSWER).min(MAX_ANSWER);
        let named = |end: &c2c_api::types::FlowEnd, want: &Option<String>| match want {
            None => true,
            Some(w) => end.app.as_deref() == Some(w.as_str()),
        };
        let mut out: Vec<Flow> = g
            .by_cell
            .values()
            .flat_map(|r| r.flows.iter())
            .filter(|(at, f)| {
                q.after.is_none_or(|a| f.seq > a)
                    && q.since_ms
                        .is_none_or(|ms| now.duration_since(*at).as_millis() <= ms as u128)
                    && q.verdict.as_deref().is_none_or(|v| f.verdict == v)
                    && named(&f.source, &q.from)
                    && named(&f.destination, &q.to)
                    && [&f.source, &f.destination]
                        .iter()
                        .any(|e| e.app_guid.as_deref().is_some_and(&may_read))
            })
            .map(|(_, f)| f.clone())
            .collect();
        drop(g);
        out.sort_by_key(|f| f.seq);
        if out.len() > limit {
            out.drain(..out.len() - limit);
        }
        let dropped = self.inner.lock().map(|g| g.dropped).unwrap_or_default();
        (out, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c_api::types::FlowEnd;

    fn flow(src_app: &str, dst_app: &str, verdict: &str) -> Flow {
        let end = |app: &str, ip: &str| FlowEnd {
            ip: ip.parse().unwrap(),
            port: Some(8080),
            app: (!app.is_empty()).then(|| app.to_string()),
            app_guid: (!app.is_empty()).then(|| format!("g-{app}")),
        };
        Flow {
            time: "2026-12-05T10:00:00.000Z".into(),
            kind: "c2c".into(),
            verdict: verdict.into(),
            protocol: "tcp".into(),
            source: end(src_app, "10.255.0.1"),
            destination: end(dst_app, "10.255.1.1"),
            icmp_type: None,
            icmp_code: None,
            security_group: None,
            cell: Some("the cell's word".into()),
            seq: 99,
        }
    }

    fn batch(flows: Vec<Flow>) -> FlowBatch {
        FlowBatch {
            flows,
            ..Default::default()
        }
    }

    #[test]
    fn a_cell_overwrites_only_its_own_oldest_and_drops_are_counted() {
        let f = Flows::default();
        let now = Instant::now();
        f.push("cell2", batch(vec![flow("b", "a", "accept")]), now)
            .unwrap();
        for _ in 0..(PER_CELL / MAX_FLOWS_PER_BATCH + 1) {
            let flood = vec![flow("a", "b", "deny"); MAX_FLOWS_PER_BATCH];
            f.push(
                "cell1",
                FlowBatch {
                    flows: flood,
                    dropped: 3,
                    revision: Some(7),
                },
                now,
            )
            .unwrap();
        }
        let all = |q: &FlowQuery| f.query(q, now, |_| true);
        let (flows, dropped) = all(&FlowQuery {
            limit: Some(usize::MAX),
            ..Default::default()
        });
        assert_eq!(flows.len(), MAX_ANSWER, "an answer is bounded");
        let pushed = (PER_CELL / MAX_FLOWS_PER_BATCH + 1) * MAX_FLOWS_PER_BATCH;
        let reported = 3 * (PER_CELL / MAX_FLOWS_PER_BATCH + 1) as u64;
        assert_eq!(dropped, reported + (pushed - PER_CELL) as u64);
        // cell2's one flow is still there, with control's cell name and sequence number.
        let (from_b, _) = all(&FlowQuery {
            from: Some("b".into()),
            ..Default::default()
        });
        assert_eq!(from_b.len(), 1);
        assert_eq!(from_b[0].cell.as_deref(), Some("cell2"));
        assert_eq!(from_b[0].seq, 1);
        // The revision a cell said it acted on, and only that cell's.
        assert_eq!(f.revision_of("cell1").map(|r| r.0), Some(7));
        assert_eq!(f.revision_of("cell2"), None);
    }

    #[test]
    fn queries_narrow_and_a_user_sees_only_apps_it_may_read() {
        let f = Flows::default();
        let now = Instant::now();
        f.push(
            "cell1",
            batch(vec![
                flow("a", "b", "deny"),
                flow("a", "b", "accept"),
                flow("c", "d", "accept"),
                flow("", "d", "deny"),
            ]),
            now,
        )
        .unwrap();
        let q = |q: FlowQuery, may: &dyn Fn(&str) -> bool| {
            f.query(&q, now, may)
                .0
                .iter()
                .map(|f| f.seq)
                .collect::<Vec<_>>()
        };
        let all = |_: &str| true;
        assert_eq!(q(FlowQuery::default(), &all), [1, 2, 3, 4]);
        let deny = FlowQuery {
            verdict: Some("deny".into()),
            ..Default::default()
        };
        assert_eq!(q(deny, &all), [1, 4]);
        let to_d = FlowQuery {
            to: Some("d".into()),
            ..Default::default()
        };
        assert_eq!(q(to_d, &all), [3, 4]);
        let after = FlowQuery {
            after: Some(2),
            ..Default::default()
        };
        assert_eq!(q(after, &all), [3, 4]);
        // A user of app b: the two flows into b, nothing of c and d's.
        assert_eq!(q(FlowQuery::default(), &|g| g == "g-b"), [1, 2]);
        // Asking for another tenant's app by name shows nothing of it.
        let c = FlowQuery {
            from: Some("c".into()),
            ..Default::default()
        };
        assert!(q(c, &|g| g == "g-b").is_empty());
        // Age: nothing received within 0 ms of a later time.
        let later = now + std::time::Duration::from_secs(1);
        let recent = FlowQuery {
            since_ms: Some(0),
            ..Default::default()
        };
        assert!(f.query(&recent, later, all).0.is_empty());
    }

    #[test]
    fn reports_past_the_budget_or_malformed_are_refused_whole() {
        let f = Flows::default();
        let now = Instant::now();
        let many = vec![flow("a", "b", "deny"); MAX_FLOWS_PER_BATCH + 1];
        assert_eq!(
            f.push("cell1", batch(many), now),
            Err(Refused::TooMany(MAX_FLOWS_PER_BATCH + 1))
        );
        let mut long = flow("a", "b", "deny");
        long.source.app = Some("x".repeat(10_000));
        assert!(matches!(
            f.push("cell1", batch(vec![flow("a", "b", "deny"), long]), now),
            Err(Refused::Malformed(_))
        ));
        let mut odd = flow("a", "b", "deny");
        odd.verdict = "maybe".into();
        assert!(f.push("cell1", batch(vec![odd]), now).is_err());
        assert!(f.query(&FlowQuery::default(), now, |_| true).0.is_empty());
        // The positive control: a well-formed report is taken.
        assert_eq!(
            f.push("cell1", batch(vec![flow("a", "b", "deny")]), now),
            Ok(1)
        );
    }
}
