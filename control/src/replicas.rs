//! Several control replicas on one PostgreSQL database: each follows the database's revision, so
//! a watch on replica B wakes for a change written through replica A. Writes `NOTIFY` at commit
//! (see `State::write`); each replica `LISTEN`s on a connection of its own and re-reads the
//! revision on every notification, after every (re)connect and at least every second, so a
//! notification lost with a dropped connection delays a change by at most a second and never
//! loses it.

use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::Ctx;
use crate::state::{Revision, REVISION_CHANNEL};

/// The follower's connections' `application_name` (in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "c2c-revisions";

/// How long the follower waits for a notification before it re-reads the revision anyway.
pub const REREAD: Duration = Duration::from_secs(1);

fn read(c: &mut postgres::Client) -> Result<Revision, postgres::Error> {
    let rev: i64 = c.query_one("SELECT rev FROM revision", &[])?.get(0);
    Ok(Revision(rev as u64))
}

/// Follows the revision of the database at `url` into `ctx`'s watches until `stop`, on a thread
/// of its own.
pub fn follow(url: String, ctx: Arc<Ctx>, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("c2c-revisions".into())
        .spawn(move || {
            let mut connected_once = false;
            while !stop.is_cancelled() {
                let connected = crate::pg_tls::config(&url).and_then(|(mut cfg, tls)| {
                    cfg.application_name(APPLICATION_NAME);
                    cfg.connect(tls).map_err(crate::state::StateError::from)
                });
                let mut c = match connected {
                    Ok(c) => c,
                    Err(error) => {
                        warn!(%error, "revision follower: cannot reach the database; retrying");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                };
                if let Err(error) = c.batch_execute(&format!("LISTEN {REVISION_CHANNEL}")) {
                    warn!(%error, "revision follower: LISTEN failed; reconnecting");
                    continue;
                }
                if connected_once {
                    info!("revision follower reconnected; re-reading the revision");
                }
                connected_once = true;
                loop {
                    // After (re)connecting, on a notification, or after REREAD without one.
                    match read(&mut c) {
                        Ok(rev) => {
                            if rev > ctx.current_revision() {
                                debug!(revision = rev.0, "revision from the database");
                                ctx.metrics.revisions_followed.inc();
                            }
                            ctx.publish_revision(rev)
                        }
                        Err(error) => {
                            warn!(%error, "revision follower: read failed; reconnecting");
                            break;
                        }
                    }
                    if stop.is_cancelled() {
                        return;
                    }
                    let waited = {
                        let mut n = c.notifications();
                        let first = n.timeout_iter(REREAD).next().map(|note| {
                            // The commit's time, as its writer's clock had it.
                            let sent = note.and_then(|n| n.payload().parse::<i64>().ok());
                            if let Some(sent) = sent {
                                let lag = (crate::state::now_ms() - sent).max(0);
                                ctx.metrics.notify_lag_seconds.observe(lag as f64 / 1000.0);
                            }
                        });
                        // Drain what else arrived: one read covers them all.
                        while let Ok(Some(_)) = n.iter().next() {}
                        first
                    };
                    if let Err(error) = waited {
                        warn!(%error, "revision follower: connection lost; reconnecting");
                        break;
                    }
                    if c.is_closed() {
                        break;
                    }
                }
            }
        })
        .expect("spawn the revision follower thread")
}
