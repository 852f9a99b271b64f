//! Cells: registered identities (the certificate control last signed for each name) and
//! subnet leases, renewed by the agents and expired when they are not.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use c2c_api::{CellName, Lease};

use crate::db::OptionalExt;
use crate::params;
use crate::state::*;

impl State {
    /// Registers cell `name` with the SHA-256 fingerprint (hex) of the client certificate just
    /// signed for it, replacing an earlier one (whose certificate is refused from now on).
    pub fn register_cell(&mut self, name: &str, fingerprint: &str) -> Result<(), StateError> {
        validate_cell_name(name)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO cell_identities (name, fingerprint, registered_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET fingerprint = ?2, registered_at = ?3",
                params![name, fingerprint, now()],
            )?;
            // A new revision: every replica's cache of verified cell certificates is keyed by
            // it, so a replaced certificate is refused everywhere from now on.
            Ok(((), true))
        })
    }

    /// Whether `name` is a registered cell whose current certificate has `fingerprint`.
    pub fn cell_identity_ok(&self, name: &str, fingerprint: &str) -> Result<bool, StateError> {
        Ok(self
            .db
            .prepare_cached("SELECT fingerprint FROM cell_identities WHERE name = ?")?
            .query_row([name], |r| r.get::<String>(0))
            .optional()?
            .is_some_and(|f| constant_time_eq(f.as_bytes(), fingerprint.as_bytes())))
    }

    /// Every registered cell's certificate fingerprint, by name (one read for a whole fan-out).
    pub fn cell_identities(&self) -> Result<HashMap<String, String>, StateError> {
        self.db
            .query_map("SELECT name, fingerprint FROM cell_identities", (), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map(|v: Vec<(String, String)>| v.into_iter().collect())
    }

    /// Registered cells, by name.
    pub fn cells(&self) -> Result<Vec<CellName>, StateError> {
        let mut st = self
            .db
            .prepare("SELECT name FROM cell_identities ORDER BY name")?;
        let rows = st.query_map((), |r| parsed(r, 0))?;
        rows.collect::<Result<_, _>>()
    }

    /// Revokes cell `name`: its certificate is refused from now on, its lease is freed (the
    /// other cells drop their routes to it) and its instances are removed. False if it was not
    /// registered.
    pub fn remove_cell(&mut self, name: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM cell_identities WHERE name = ?", [name])?;
            let leases = tx.execute("DELETE FROM cells WHERE name = ?", [name])?;
            let insts = tx.execute("DELETE FROM instances WHERE cell = ?", [name])?;
            // The tag groups it made through CF's internal API: their tags are free again.
            let groups = tx.execute("DELETE FROM tag_groups WHERE owner = ?", [name])?;
            // Any revocation is a new revision (see `register_cell`).
            Ok((n > 0, n + leases + insts + groups > 0))
        })
    }

    /// Gives `cell` a subnet: the one it holds (renewed), else the lowest free /24, else the
    /// oldest expired lease of another cell.
    pub fn acquire_lease(
        &mut self,
        cell: &str,
        underlay_ip: Ipv4Addr,
    ) -> Result<Lease, StateError> {
        self.acquire_lease_preferring(cell, underlay_ip, None)
    }

    /// [`State::acquire_lease`], giving `prefer` (the subnet the cell held before) when it is a
    /// subnet of the overlay that no cell holds.
    pub fn acquire_lease_preferring(
        &mut self,
        cell: &str,
        underlay_ip: Ipv4Addr,
        prefer: Option<Subnet>,
    ) -> Result<Lease, StateError> {
        let (net, prefix) = self.overlay;
        let ttl = self.lease_ttl_secs;
        let cell_prefix = self.cell_prefix;
        validate_underlay_ip(underlay_ip, self.overlay)?;
        self.write(|tx| {
            let t = now();
            // Another live cell's underlay address: taking it would route that cell's overlay
            // traffic (and the VXLAN that other cells accept from it) to the claimant.
            let owner: Option<(String, i64)> = tx
                .query_row(
                    "SELECT name, renewed_at FROM cells WHERE underlay_ip = ? AND name != ?",
                    params![underlay_ip.to_string(), cell],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((other, renewed)) = owner {
                if renewed >= t.saturating_sub(ttl as i64) {
                    return Err(StateError::Conflict(format!(
                        "underlay address {underlay_ip} belongs to cell {other}'s live lease"
                    )));
                }
                tx.execute("DELETE FROM cells WHERE name = ?", [&other])?;
            }
            let held: Option<(Subnet, String)> = tx
                .query_row("SELECT subnet, underlay_ip FROM cells WHERE name = ?", [cell], |r| {
                    Ok((parsed(r, 0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((subnet, was)) = held {
                tx.execute("UPDATE cells SET underlay_ip = ?, renewed_at = ? WHERE name = ?", params![underlay_ip.to_string(), t, cell])?;
                // Taking the lease it holds again (an agent restart) changes what other cells
                // route only if the underlay address moved: no wake-up for every cell otherwise.
                let moved = was != underlay_ip.to_string();
                return Ok((Lease { cell: cell_name(cell)?, underlay_ip, subnet, renewed_at: t }, moved));
            }
            let taken: Vec<Subnet> =
                tx.prepare("SELECT subnet FROM cells")?.query_map((), |r| parsed(r, 0))?.collect::<Result<_, _>>()?;
            // Subnets of the cell size, in order; one that overlaps a held lease (of this or,
            // after a change of size, another size) is not free.
            let count = 1u32 << (cell_prefix - prefix);
            let step = 1u32 << (32 - cell_prefix);
            let base = u32::from(net);
            let candidates = (0..count)
                .filter_map(|i| Subnet::new(Ipv4Addr::from(base + i * step), cell_prefix).ok());
            let overlaps = |s: &Subnet| {
                taken.iter().any(|t| t.contains(s.network()) || s.contains(t.network()))
            };
            let preferred = prefer.filter(|p| {
                !overlaps(p) && candidates.clone().any(|c| c == *p)
            });
            let free = preferred.or_else(|| candidates.clone().find(|s| !overlaps(s)));
            let subnet = match free {
                Some(s) => s,
                None => {
                    let expired: Option<(String, Subnet)> = tx
                        .query_row(
                            "SELECT name, subnet FROM cells WHERE renewed_at < ? ORDER BY renewed_at LIMIT 1",
                            [t.saturating_sub(ttl as i64)],
                            |r| Ok((r.get(0)?, parsed(r, 1)?)),
                        )
                        .optional()?;
                    let (old, s) = expired.ok_or_else(|| StateError::NoSubnet(format!("{net}/{prefix} (cells get /{cell_prefix}s)")))?;
                    tx.execute("DELETE FROM cells WHERE name = ?", [old])?;
                    s
                }
            };
            tx.execute("INSERT INTO cells (name, underlay_ip, subnet, renewed_at) VALUES (?, ?, ?, ?)", params![cell, underlay_ip.to_string(), subnet.to_string(), t])?;
            Ok((Lease { cell: cell_name(cell)?, underlay_ip, subnet, renewed_at: t }, true))
        })
    }

    /// Renews `cell`'s lease. Renewal alone does not bump the revision (nothing a cell routes on
    /// changed).
    pub fn renew_lease(&mut self, cell: &str) -> Result<Lease, StateError> {
        let tx = self.db.begin_write()?;
        let n = tx.execute(
            "UPDATE cells SET renewed_at = ? WHERE name = ?",
            params![now(), cell],
        )?;
        tx.commit()?;
        if n == 0 {
            return Err(StateError::NoLease(cell.into()));
        }
        self.leases()?
            .into_iter()
            .find(|l| l.cell == cell)
            .ok_or_else(|| StateError::NoLease(cell.into()))
    }

    /// Expires the leases not renewed within the lease TTL: they leave every cell's view (the
    /// other cells drop their routes to them), and the instances on those cells lose their
    /// addresses until their cell confirms them again. Returns the cells whose lease expired.
    pub fn expire_leases(&mut self) -> Result<Vec<String>, StateError> {
        let cutoff = now().saturating_sub(self.lease_ttl_secs as i64);
        self.write(|tx| {
            let gone: Vec<String> = tx.query_map(
                "SELECT name FROM cells WHERE renewed_at < ? ORDER BY name",
                [cutoff],
                |r| r.get(0),
            )?;
            for c in &gone {
                tx.execute("DELETE FROM cells WHERE name = ?", [c])?;
                tx.execute("UPDATE instances SET ip = NULL WHERE cell = ?", [c])?;
            }
            let changed = !gone.is_empty();
            Ok((gone, changed))
        })
    }

    /// Gives each new lease a /`n` (silk's `subnet_prefix_length`; default /24): more than the
    /// overlay's prefix, at most /30 (a VTEP address, two containers and a broadcast address).
    pub fn set_cell_prefix(&mut self, n: u8) -> Result<(), StateError> {
        let overlay = self.overlay.1;
        if n <= overlay || n > 30 {
            return Err(StateError::Invalid(format!(
                "cell subnets of /{n} do not fit the overlay /{overlay}: use /{} to /30",
                overlay + 1
            )));
        }
        self.cell_prefix = n;
        Ok(())
    }

    /// The lease TTL, in seconds.
    pub fn lease_ttl_secs(&self) -> u64 {
        self.lease_ttl_secs
    }

    /// Releases `cell`'s lease.
    pub fn release_lease(&mut self, cell: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM cells WHERE name = ?", [cell])?;
            Ok((n > 0, n > 0))
        })
    }

    /// Every lease.
    pub fn leases(&self) -> Result<Vec<Lease>, StateError> {
        let mut st = self
            .db
            .prepare("SELECT name, underlay_ip, subnet, renewed_at FROM cells ORDER BY name")?;
        let rows = st.query_map((), |r| {
            let ip: String = r.get(1)?;
            Ok(Lease {
                cell: parsed(r, 0)?,
                underlay_ip: ip
                    .parse()
                    .map_err(|e| StateError::Internal(format!("stored address: {e}")))?,
                subnet: parsed(r, 2)?,
                renewed_at: r.get(3)?,
            })
        })?;
        rows.collect::<Result<_, _>>()
    }
}
