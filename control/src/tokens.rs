//! Who is calling the external API: the admin token from the state dir, or a user's token made
//! with `c2c token create`, with CF's two scopes (`network.admin`, `network.write`) and the apps
//! a `network.write` user may manage. Tokens are kept as SHA-256 hashes only; the admin token
//! is compared in constant time, users' tokens are found by their hash.

use std::collections::BTreeSet;

use crate::db::OptionalExt;
use crate::params;

use crate::state::{State, StateError};
use c2c_api::types::{Scope, TokenCreated, UserRecord};
use c2c_api::AppGuid;

/// The user the state dir's token speaks for.
pub const ADMIN_USER: &str = "admin";

/// An authenticated caller of the external API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user (what `whoami` answers).
    pub user: String,
    /// Its authority.
    pub scope: Scope,
    /// Apps a `network.write` caller may manage (GUIDs); unused for admins.
    pub apps: BTreeSet<String>,
    /// Spaces (GUIDs) granted to a `network.write` caller: it may create apps in them, place
    /// and remove their instances and map their routes (CF's SpaceDeveloper, what `c2c push`
    /// and a runtime's `c2c-hook` need); unused for admins.
    pub spaces: BTreeSet<String>,
    /// Cells a `network.write` caller may place on (a runtime's token bound to its host);
    /// empty: any cell. Unused for admins.
    pub cells: BTreeSet<String>,
}

impl Caller {
    /// The admin of the state dir's token.
    pub fn admin() -> Self {
        Caller {
            user: ADMIN_USER.into(),
            scope: Scope::Admin,
            apps: BTreeSet::new(),
            spaces: BTreeSet::new(),
            cells: BTreeSet::new(),
        }
    }

    /// Whether the caller may place instances on `cell`.
    pub fn may_place_on(&self, cell: &str) -> bool {
        self.is_admin() || self.cells.is_empty() || self.cells.contains(cell)
    }

    /// Whether the caller is `network.admin`.
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }

    /// Whether the caller may manage the app with this GUID.
    pub fn may_manage(&self, guid: &str) -> bool {
        self.is_admin() || self.apps.contains(guid)
    }

    /// Whether the caller may create apps in the space with this GUID.
    pub fn may_develop_in(&self, space_guid: &str) -> bool {
        self.is_admin() || self.spaces.contains(space_guid)
    }
}

/// SHA-256 of `b`, lower-case hex.
pub fn sha256_hex(b: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A new random secret: 32 bytes, hex.
pub fn new_secret() -> Result<String, StateError> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| StateError::Internal("no system randomness for a token".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A user name: 1-64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_user(user: &str) -> Result<(), StateError> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "invalid user name {user:?}: use 1-64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

impl State {
    /// Makes a token for `user` with `scope`, granting `apps` (names or GUIDs) besides what the
    /// user was granted before. The token is returned this once; only its hash is kept.
    pub fn create_token(
        &mut self,
        user: &str,
        scope: Scope,
        apps: &[String],
    ) -> Result<TokenCreated, StateError> {
        validate_user(user)?;
        if user == ADMIN_USER {
            return Err(StateError::Invalid(format!(
                "{ADMIN_USER:?} is the state dir's token; pick another user name"
            )));
        }
        let token = new_secret()?;
        let hash = sha256_hex(token.as_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let granted = self.write(|tx| {
            for a in apps {
                let guid: String = tx
                    .query_row(
                        "SELECT guid FROM apps WHERE name = ?1 OR guid = ?1",
                        [a],
                        |r| r.get(0),
                    )
                    .optional()?
                    .ok_or_else(|| StateError::UnknownApp(a.clone()))?;
                tx.execute(
                    "INSERT INTO grants (username, app_guid) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    params![user, guid],
                )?;
            }
            tx.execute(
                "INSERT INTO tokens (hash, username, scope, created_at) VALUES (?, ?, ?, ?)",
                params![hash, user, scope.as_str(), now],
            )?;
            let granted: Vec<AppGuid> = tx
                .prepare("SELECT app_guid FROM grants WHERE username = ? ORDER BY app_guid")?
                .query_map([user], |r| Ok(AppGuid::from(r.get::<String>(0)?.as_str())))?
                .collect::<Result<_, _>>()?;
            // Tokens are not part of what cells see: no new revision.
            Ok((granted, false))
        })?;
        let spaces = self.granted_spaces(user)?;
        Ok(TokenCreated {
            user: user.into(),
            scope,
            token,
            apps: granted,
            spaces,
        })
    }

    /// Grants `user` the apps of `spaces`, now and later. All or nothing: an unknown space
    /// grants none.
    pub fn grant_spaces(
        &mut self,
        user: &str,
        spaces: &[c2c_api::types::SpaceRef],
    ) -> Result<(), StateError> {
        validate_user(user)?;
        let mut guids = vec![];
        for sp in spaces {
            guids.push(self.space(&sp.org, &sp.space)?.guid);
        }
        self.write(|tx| {
            for g in &guids {
                tx.execute(
                    "INSERT INTO space_grants (username, space_guid) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    params![user, g.as_str()],
                )?;
            }
            Ok(((), false))
        })
    }

    /// Binds `user`'s placements to `cells` (added to those before): a runtime's token places
    /// only on its own host.
    pub fn grant_cells(&mut self, user: &str, cells: &[String]) -> Result<(), StateError> {
        validate_user(user)?;
        for c in cells {
            crate::state::validate_cell_name(c)?;
        }
        self.write(|tx| {
            for c in cells {
                tx.execute(
                    "INSERT INTO cell_grants (username, cell) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    params![user, c.as_str()],
                )?;
            }
            Ok(((), false))
        })
    }

    /// The spaces granted to `user`, as `org/space`.
    fn granted_spaces(&self, user: &str) -> Result<Vec<String>, StateError> {
        self.db.query_map(
            "SELECT o.name || '/' || s.name FROM space_grants g JOIN spaces s ON s.guid = g.space_guid
             JOIN orgs o ON o.guid = s.org_guid WHERE g.username = ? ORDER BY 1",
            [user],
            |r| r.get(0),
        )
    }

    /// Revokes every token of `user` and its grants. Returns how many tokens were revoked.
    pub fn revoke_user(&mut self, user: &str) -> Result<usize, StateError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM tokens WHERE username = ?", [user])?;
            tx.execute("DELETE FROM grants WHERE username = ?", [user])?;
            tx.execute("DELETE FROM space_grants WHERE username = ?", [user])?;
            tx.execute("DELETE FROM cell_grants WHERE username = ?", [user])?;
            Ok((n, false))
        })
    }

    /// The caller a token hash belongs to, with its grants.
    pub fn caller(&self, hash: &str) -> Result<Option<Caller>, StateError> {
        let found: Option<(String, String)> = self
            .db
            .query_row(
                "SELECT username, scope FROM tokens WHERE hash = ?",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((user, scope)) = found else {
            return Ok(None);
        };
        let scope: Scope = scope.parse().map_err(StateError::Internal)?;
        // The apps granted one by one and those of granted spaces, as they are now: an app
        // pushed into a granted space later is the user's at its next request.
        let apps = self
            .db
            .prepare(
                "SELECT app_guid FROM grants WHERE username = ?1
                 UNION SELECT a.guid FROM apps a JOIN space_grants g ON g.space_guid = a.space_guid
                 WHERE g.username = ?1",
            )?
            .query_map([&user], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let spaces = self
            .db
            .prepare("SELECT space_guid FROM space_grants WHERE username = ?")?
            .query_map([&user], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let cells = self
            .db
            .prepare("SELECT cell FROM cell_grants WHERE username = ?")?
            .query_map([&user], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(Caller {
            user,
            scope,
            apps,
            spaces,
            cells,
        }))
    }

    /// Users with tokens.
    pub fn users(&self) -> Result<Vec<UserRecord>, StateError> {
        let rows: Vec<(String, String, i64)> = self
            .db
            .prepare("SELECT username, MIN(scope), COUNT(*) FROM tokens GROUP BY username ORDER BY username")?
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(user, scope, tokens)| {
                let apps = self
                    .db
                    .prepare("SELECT app_guid FROM grants WHERE username = ? ORDER BY app_guid")?
                    .query_map([&user], |r| Ok(AppGuid::from(r.get::<String>(0)?.as_str())))?
                    .collect::<Result<_, _>>()?;
                let spaces = self.granted_spaces(&user)?;
                let cells = self
                    .db
                    .prepare("SELECT cell FROM cell_grants WHERE username = ? ORDER BY cell")?
                    .query_map([&user], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(UserRecord {
                    spaces,
                    cells,
                    user,
                    // "network.admin" < "network.write": MIN is the widest.
                    scope: scope.parse().map_err(StateError::Internal)?,
                    tokens: tokens as usize,
                    apps,
                })
            })
            .collect()
    }
}
