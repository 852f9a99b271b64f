//! Internal domains and routes: the names the cell DNS answers and instance certificates
//! carry. Domains must sit under a private top-level domain; a route's host is one DNS label,
//! never digits alone, so no route can be an instance's name (`<index>.<host>.<domain>`).

use crate::db::OptionalExt;
use crate::params;
use crate::state::{parsed, Route, State, StateError};

impl State {
    /// Internal domains.
    pub fn domains(&self) -> Result<Vec<String>, StateError> {
        let mut st = self.db.prepare("SELECT name FROM domains ORDER BY name")?;
        let rows = st.query_map((), |r| r.get(0))?;
        rows.collect::<Result<_, _>>()
    }

    /// Adds an internal domain (validated, lower-cased); adding one that exists is a no-op.
    /// Only names under a top-level domain reserved for private use are internal: the cell DNS
    /// answers for them in every container and instance certificates carry them, so `com` or
    /// `example.com` here would let the platform hijack and certify public names.
    pub fn create_domain(&mut self, name: &str) -> Result<String, StateError> {
        let name = c2c_certs::validate_hostname(name)
            .map_err(|e| StateError::Invalid(format!("invalid domain: {e}")))?;
        validate_internal_domain(&name)?;
        self.write(|tx| {
            let n = tx.execute(
                "INSERT INTO domains (name) VALUES (?) ON CONFLICT DO NOTHING",
                [&name],
            )?;
            Ok((name.clone(), n > 0))
        })
    }

    /// Maps `<host>.<domain>` to an app; true if it was new.
    pub fn map_route(
        &mut self,
        app_guid: &str,
        domain: &str,
        host: &str,
    ) -> Result<bool, StateError> {
        self.map_route_as(app_guid, domain, host, false)
    }

    /// [`State::map_route`] within the app's space's route quota when `quota` (a tenant's
    /// call; see [`crate::budgets`]).
    pub fn map_route_as(
        &mut self,
        app_guid: &str,
        domain: &str,
        host: &str,
        quota: bool,
    ) -> Result<bool, StateError> {
        let limits = self.limits;
        let host = c2c_api::names::validate_route_host(host).map_err(StateError::Invalid)?;
        c2c_certs::validate_hostname(&format!("{host}.{domain}"))
            .map_err(|e| StateError::Invalid(format!("invalid hostname {host:?}: {e}")))?;
        let domain = domain.to_ascii_lowercase();
        self.write(|tx| {
            if tx
                .query_row(
                    "SELECT 1 FROM domains WHERE name = ?",
                    [&domain],
                    |_| Ok(()),
                )
                .optional()?
                .is_none()
            {
                return Err(StateError::Invalid(format!(
                    "domain {domain} is not an internal domain (see GET /v1/domains)"
                )));
            }
            if tx
                .query_row("SELECT 1 FROM apps WHERE guid = ?", [app_guid], |_| Ok(()))
                .optional()?
                .is_none()
            {
                return Err(StateError::UnknownApp(app_guid.into()));
            }
            let mapped = tx
                .query_row(
                    "SELECT 1 FROM routes WHERE host = ? AND domain = ? AND app_guid = ?",
                    params![host.as_str(), domain.as_str(), app_guid],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if quota && !mapped {
                crate::budgets::check_space_routes(tx, limits, app_guid)?;
            }
            let n = tx.execute(
                "INSERT INTO routes (host, domain, app_guid) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                params![host, domain, app_guid],
            )?;
            Ok((n > 0, n > 0))
        })
    }

    /// Unmaps a route from an app; true if it was mapped.
    pub fn unmap_route(
        &mut self,
        app_guid: &str,
        domain: &str,
        host: &str,
    ) -> Result<bool, StateError> {
        let (host, domain) = (host.to_ascii_lowercase(), domain.to_ascii_lowercase());
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM routes WHERE host = ? AND domain = ? AND app_guid = ?",
                params![host, domain, app_guid],
            )?;
            Ok((n > 0, n > 0))
        })
    }

    /// Every route, by name.
    pub fn routes(&self) -> Result<Vec<Route>, StateError> {
        let mut st = self
            .db
            .prepare("SELECT host, domain, app_guid FROM routes ORDER BY domain, host, app_guid")?;
        let rows = st.query_map((), |r| {
            Ok(Route {
                host: r.get(0)?,
                domain: r.get(1)?,
                app_guid: parsed(r, 2)?,
            })
        })?;
        rows.collect::<Result<_, _>>()
    }
}

/// Top-level domains reserved for private use (RFC 6761, RFC 8375, ICANN's `.internal`) or in
/// common private use: an internal domain must end in one.
pub const PRIVATE_TLDS: &[&str] = &[
    "internal",
    "test",
    "local",
    "lan",
    "home.arpa",
    "intranet",
    "corp",
    "private",
];

fn validate_internal_domain(name: &str) -> Result<(), StateError> {
    let private = PRIVATE_TLDS
        .iter()
        .any(|tld| name.ends_with(&format!(".{tld}")) && name.len() > tld.len() + 1);
    if private {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "invalid domain {name:?}: an internal domain needs a name under a private top-level domain ({}), e.g. apps.internal",
            PRIVATE_TLDS.join(", ")
        )))
    }
}
