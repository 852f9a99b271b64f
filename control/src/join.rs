//! Cells that join over the network: an operator makes a one-time join token (`c2c cell token
//! create`); a new host presents its secret with its CSR (`c2c cell join`), having checked that
//! control's issuer is the one pinned in the token. Control keeps only the secret's hash; a
//! token is used once, and not after it expires.

use crate::db::OptionalExt;
use crate::params;
use crate::state::{State, StateError};
use crate::tokens::{new_secret, sha256_hex};
use c2c_api::types::JoinTokenCreated;

/// Hex digits of a join token's hash that name it.
const JOIN_TOKEN_ID: usize = 12;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl State {
    /// Makes a join token valid for `ttl_secs`: for a new cell name, or, bound to `cell`, for
    /// that name only (which may replace the identity of a registered cell of that name).
    pub fn create_join_token(
        &mut self,
        ttl_secs: u64,
        cell: Option<&str>,
    ) -> Result<JoinTokenCreated, StateError> {
        if let Some(c) = cell {
            crate::state::validate_cell_name(c)?;
        }
        let secret = new_secret()?;
        let expires_at = now() + ttl_secs.min(30 * 24 * 3600) as i64;
        let hash = sha256_hex(secret.as_bytes());
        self.write(|tx| {
            tx.execute(
                "INSERT INTO join_tokens (hash, expires_at, cell) VALUES (?, ?, ?)",
                params![hash, expires_at, cell],
            )?;
            Ok(((), false))
        })?;
        Ok(JoinTokenCreated {
            secret,
            expires_at,
            control: self.replicas()?,
        })
    }

    /// The join tokens still of interest: unused and unexpired, or used or expired within the
    /// last day (older rows are deleted here). Never a secret: an id from its hash.
    pub fn join_tokens(&mut self) -> Result<Vec<c2c_api::types::JoinTokenRecord>, StateError> {
        let old = now() - 24 * 3600;
        self.write(|tx| {
            tx.execute(
                "DELETE FROM join_tokens WHERE expires_at < ?1 OR used_at < ?1",
                [old],
            )?;
            Ok(((), false))
        })?;
        self.db.query_map(
            "SELECT hash, cell, expires_at, used_by FROM join_tokens ORDER BY expires_at, hash",
            (),
            |r| {
                let hash: String = r.get(0)?;
                Ok(c2c_api::types::JoinTokenRecord {
                    id: hash[..JOIN_TOKEN_ID.min(hash.len())].to_string(),
                    cell: r.get(1)?,
                    expires_at: r.get(2)?,
                    used_by: r.get(3)?,
                })
            },
        )
    }

    /// Revokes the unused join token whose id (see [`State::join_tokens`]) is `id`; false if
    /// there is none (used ones are spent already).
    pub fn revoke_join_token(&mut self, id: &str) -> Result<bool, StateError> {
        if id.len() != JOIN_TOKEN_ID || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::Invalid(format!(
                "a join token's id is {JOIN_TOKEN_ID} hex digits (see c2c cell token list)"
            )));
        }
        let id = id.to_ascii_lowercase();
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM join_tokens WHERE substr(hash, 1, 12) = ? AND used_by IS NULL",
                [&id],
            )?;
            Ok((n > 0, false))
        })
    }

    /// Whether `secret` is a join token that cell `name` may use now (nothing is changed).
    pub fn check_join_token(&self, secret: &str, name: &str) -> Result<(), StateError> {
        join_token_state(&self.db, secret, name)
    }

    /// Uses the join token `secret` for cell `name` and registers the cell with the fingerprint
    /// of the certificate just signed for it, in one transaction: two hosts racing with one
    /// token get one cell.
    pub fn join_cell(
        &mut self,
        secret: &str,
        name: &str,
        fingerprint: &str,
    ) -> Result<(), StateError> {
        crate::state::validate_cell_name(name)?;
        let hash = sha256_hex(secret.as_bytes());
        self.write(|tx| {
            join_token_state(tx, secret, name)?;
            tx.execute(
                "UPDATE join_tokens SET used_by = ?, used_at = ? WHERE hash = ?",
                params![name, now(), hash],
            )?;
            tx.execute(
                "INSERT INTO cell_identities (name, fingerprint, registered_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET fingerprint = ?2, registered_at = ?3",
                params![name, fingerprint, now()],
            )?;
            Ok(((), true))
        })
    }
}

fn join_token_state(db: &crate::db::Db, secret: &str, name: &str) -> Result<(), StateError> {
    let hash = sha256_hex(secret.as_bytes());
    let row: Option<(i64, Option<String>, Option<String>)> = db
        .query_row(
            "SELECT expires_at, cell, used_by FROM join_tokens WHERE hash = ?",
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (expires_at, bound) = match row {
        None => return Err(StateError::Forbidden("invalid join token".into())),
        Some((_, _, Some(cell))) => {
            return Err(StateError::Forbidden(format!(
                "this join token was already used (by cell {cell}); make a new one with `c2c cell token create`"
            )))
        }
        Some((exp, bound, None)) => (exp, bound),
    };
    if expires_at < now() {
        return Err(StateError::Forbidden(
            "this join token has expired; make a new one with `c2c cell token create`".into(),
        ));
    }
    match bound {
        // A token for one name joins that name, replacing whatever identity it had.
        Some(b) if b != name => Err(StateError::Forbidden(format!(
            "this join token is for cell {b}, not {name}"
        ))),
        Some(_) => Ok(()),
        // Any other token joins a new name only: a leaked token cannot take over a cell.
        None => {
            let taken = db
                .query_row(
                    "SELECT 1 FROM cell_identities WHERE name = ?",
                    [name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if taken {
                Err(StateError::Conflict(format!(
                    "cell {name} is registered already; a join token for it replaces its identity: `c2c cell token create --name {name}` (or `c2c cell remove {name}` first)"
                )))
            } else {
                Ok(())
            }
        }
    }
}
