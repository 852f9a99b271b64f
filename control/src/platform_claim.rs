//! Which platform a database belongs to, and which replicas serve it.
//!
//! The platform's keys are not in the database: each control replica's state dir holds a copy
//! of `ca/` and `control/token`. A replica started without that copy would make a new CA and a
//! new admin token and serve the shared database with them; every cell would then refuse it
//! (issue #30). So the first replica to open a database claims it with the SHA-256 of its root
//! CA certificate and of its admin token, and a replica whose copy differs refuses to start.
//!
//! Each replica also notes the URL it is reached by (`https://<first --san>:<port>`), so the
//! join hint names every replica, not only the one the operator asked.

use crate::params;
use crate::state::{State, StateError};

/// How long a replica that stopped noting its URL is still named (it notes it every minute).
pub const REPLICA_SEEN_WITHIN_SECS: i64 = 600;

/// The SHA-256 digests (hex) a database is claimed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Of the root CA certificate (DER).
    pub ca_sha256: String,
    /// Of the admin token.
    pub token_sha256: String,
}

impl State {
    /// The platform this database belongs to, if a replica claimed it.
    pub fn platform_claim(&self) -> Result<Option<Claim>, StateError> {
        let rows = self.db.query_map(
            "SELECT ca_sha256, token_sha256 FROM platform WHERE id = 1",
            (),
            |r| {
                Ok(Claim {
                    ca_sha256: r.get(0)?,
                    token_sha256: r.get(1)?,
                })
            },
        )?;
        Ok(rows.into_iter().next())
    }

    /// Claims the database for the platform of `mine`, or checks that it is that platform's: a
    /// [`StateError::Conflict`] that says what differs if another platform claimed it.
    pub fn claim_platform(&mut self, mine: &Claim) -> Result<(), StateError> {
        let theirs = self.write(|tx| {
            tx.execute(
                "INSERT INTO platform (id, ca_sha256, token_sha256) VALUES (1, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
                params![mine.ca_sha256.as_str(), mine.token_sha256.as_str()],
            )?;
            Ok(((), false))
        });
        theirs?;
        let theirs = self
            .platform_claim()?
            .ok_or_else(|| StateError::Internal("the platform claim was not recorded".into()))?;
        let mut differs = vec![];
        if theirs.ca_sha256 != mine.ca_sha256 {
            differs.push(format!(
                "its platform CA is SHA-256 {}, this state dir's is {}",
                theirs.ca_sha256, mine.ca_sha256
            ));
        }
        if theirs.token_sha256 != mine.token_sha256 {
            differs.push("its admin token differs from this state dir's control/token".into());
        }
        if differs.is_empty() {
            return Ok(());
        }
        Err(StateError::Conflict(format!(
            "this database belongs to another control's platform: {}. Copy ca/ and control/token \
             from a replica of that platform into this state dir (or give this replica its own \
             database)",
            differs.join("; ")
        )))
    }

    /// Notes that a replica is reached at `url` now.
    pub fn note_replica(&mut self, url: &str) -> Result<(), StateError> {
        let now = crate::state::now();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO replicas (url, seen_at) VALUES (?, ?)
                 ON CONFLICT (url) DO UPDATE SET seen_at = excluded.seen_at",
                params![url, now],
            )?;
            Ok(((), false))
        })
    }

    /// The URLs of the replicas seen within [`REPLICA_SEEN_WITHIN_SECS`], in order.
    pub fn replicas(&self) -> Result<Vec<String>, StateError> {
        self.db.query_map(
            "SELECT url FROM replicas WHERE seen_at >= ? ORDER BY url",
            params![crate::state::now() - REPLICA_SEEN_WITHIN_SECS],
            |r| r.get(0),
        )
    }
}
