//! Overlay addressing: one IP per container from the cell's subnet, kept on disk.
//!
//! The decision ([`next_free`]) is a pure function of the subnet and the current leases. The
//! store ([`Ipam`]) applies it under an exclusive lock on a lock file and commits with an atomic
//! rename, so many plugin processes may run at once, and a process killed at any point leaves
//! either the old or the new lease table, never a torn one. The kernel drops a dead process's
//! lock, so nobody waits on it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use c2c_api::net::{Subnet, SubnetError};

/// The lowest address of `subnet` not in `leased`, or `None` if the subnet is full.
pub fn next_free<'a>(
    subnet: &Subnet,
    leased: impl IntoIterator<Item = &'a Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let taken: std::collections::BTreeSet<Ipv4Addr> = leased.into_iter().copied().collect();
    subnet.hosts().find(|ip| !taken.contains(ip))
}

/// Why an IPAM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every address of the subnet is leased.
    #[error("no free address left in {0}: every container address is leased")]
    Exhausted(Subnet),
    /// The container id is empty or would not be a safe key.
    #[error("invalid container id {0:?}")]
    BadContainerId(String),
    /// The store could not be read or written.
    #[error("ipam store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The store file holds something that is not a lease table.
    #[error("ipam store {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
}

/// The lease table of one subnet, on disk under a data dir.
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Subnet,
    table: PathBuf,
    lock: PathBuf,
}

type Leases = BTreeMap<String, Ipv4Addr>;

impl Ipam {
    /// The store for `subnet` under `data_dir` (created if missing).
    pub fn open(data_dir: &Path, subnet: Subnet) -> Result<Self, IpamError> {
        let dir = data_dir.join("ipam");
        fs::create_dir_all(&dir).map_err(|source| IpamError::Io {
            path: dir.clone(),
            source,
        })?;
        let base = format!("{}_{}", subnet.network(), subnet.prefix());
        Ok(Self {
            subnet,
            table: dir.join(format!("{base}.json")),
            lock: dir.join(format!("{base}.lock")),
        })
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The address leased to `container_id`, leasing the lowest free one if it has none.
    /// Idempotent: a repeated call for the same id returns the same address.
    pub fn allocate(&self, container_id: &str) -> Result<Ipv4Addr, IpamError> {
        check_id(container_id)?;
        self.with_table(|leases| {
            if let Some(ip) = leases.get(container_id) {
                return Ok((*ip, false));
            }
            let ip = next_free(&self.subnet, leases.values())
                .ok_or(IpamError::Exhausted(self.subnet))?;
            leases.insert(container_id.to_string(), ip);
            Ok((ip, true))
        })
    }

    /// Releases `container_id`'s address; `None` if it had none (releasing twice is fine).
    pub fn release(&self, container_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        check_id(container_id)?;
        self.with_table(|leases| {
            let ip = leases.remove(container_id);
            Ok((ip, ip.is_some()))
        })
    }

    /// Every lease now: container id -> address.
    pub fn leases(&self) -> Result<BTreeMap<String, Ipv4Addr>, IpamError> {
        self.with_table(|leases| Ok((leases.clone(), false)))
    }

    /// Runs `f` on the table under the lock; writes the table back if `f` says it changed it.
    fn with_table<T>(
        &self,
        f: impl FnOnce(&mut Leases) -> Result<(T, bool), IpamError>,
    ) -> Result<T, IpamError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IpamError::Io { path, source }
        };
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io(&self.lock))?;
        // Released when `lock` is dropped, or by the kernel if this process dies.
        lock.lock().map_err(io(&self.lock))?;
        let mut leases: Leases = match fs::read(&self.table) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| IpamError::Corrupt {
                path: self.table.clone(),
                detail: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Leases::new(),
            Err(e) => return Err(io(&self.table)(e)),
        };
        let (out, changed) = f(&mut leases)?;
        if changed {
            let tmp = self
                .table
                .with_extension(format!("json.tmp-{}", std::process::id()));
            let write = || -> io::Result<()> {
                let mut file = fs::File::create(&tmp)?;
                file.write_all(&serde_json::to_vec_pretty(&leases).map_err(io::Error::other)?)?;
                file.sync_all()?;
                fs::rename(&tmp, &self.table)?;
                if let Some(dir) = self.table.parent() {
                    fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            };
            write().map_err(io(&self.table))?;
        }
        Ok(out)
    }
}

fn check_id(id: &str) -> Result<(), IpamError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_control()) {
        return Err(IpamError::BadContainerId(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Subnet {
        x.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses_subnets() {
        let n = s("10.255.7.0/24");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 255, 7, 255));
        assert_eq!(n.hosts().count(), 254);
        assert!(
            n.contains(Ipv4Addr::new(10, 255, 7, 9)) && !n.contains(Ipv4Addr::new(10, 255, 8, 1))
        );
        for bad in [
            "10.255.7.1/24",
            "10.255.7.0",
            "10.255.7.0/33",
            "x/24",
            "10.255.7.0/31",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn next_free_skips_network_broadcast_and_leased() {
        let n = s("10.255.7.0/24");
        assert_eq!(next_free(&n, []), Some(Ipv4Addr::new(10, 255, 7, 1)));
        let leased = [Ipv4Addr::new(10, 255, 7, 1), Ipv4Addr::new(10, 255, 7, 2)];
        assert_eq!(next_free(&n, &leased), Some(Ipv4Addr::new(10, 255, 7, 3)));
        let all: Vec<_> = n.hosts().collect();
        assert_eq!(next_free(&n, &all), None);
    }

    #[test]
    fn allocate_is_idempotent_release_frees_and_full_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), s("10.255.9.0/29")).unwrap(); // 6 hosts
        let a = ipam.allocate("ctr-a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 255, 9, 1));
        assert_eq!(
            ipam.allocate("ctr-a").unwrap(),
            a,
            "same container, same IP"
        );
        for i in 0..5 {
            ipam.allocate(&format!("ctr-{i}")).unwrap();
        }
        let err = ipam.allocate("one-too-many").unwrap_err();
        assert!(matches!(err, IpamError::Exhausted(_)));
        assert_eq!(
            err.to_string(),
            "no free address left in 10.255.9.0/29: every container address is leased"
        );
        assert_eq!(ipam.release("ctr-a").unwrap(), Some(a));
        assert_eq!(
            ipam.release("ctr-a").unwrap(),
            None,
            "release twice is fine"
        );
        assert_eq!(ipam.allocate("late").unwrap(), a, "freed address is reused");
        // State survives a new handle (a new plugin process).
        let again = Ipam::open(dir.path(), s("10.255.9.0/29")).unwrap();
        assert_eq!(again.leases().unwrap().len(), 6);
        assert!(matches!(
            ipam.allocate(""),
            Err(IpamError::BadContainerId(_))
        ));
    }

    #[test]
    fn corrupt_store_is_a_clear_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), s("10.255.9.0/24")).unwrap();
        ipam.allocate("a").unwrap();
        fs::write(&ipam.table, b"{not json").unwrap();
        assert!(matches!(ipam.allocate("b"), Err(IpamError::Corrupt { .. })));
        assert_eq!(
            fs::read(&ipam.table).unwrap(),
            b"{not json",
            "nothing overwritten"
        );
    }

    /// Many allocators at once, each with its own open of the lock file (as separate plugin
    /// processes have): every container gets a distinct address.
    #[test]
    fn concurrent_allocations_get_distinct_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..200)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let ipam = Ipam::open(&d, "10.255.3.0/24".parse().unwrap()).unwrap();
                    ipam.allocate(&format!("ctr-{i}")).unwrap()
                })
            })
            .collect();
        let ips: std::collections::BTreeSet<_> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(ips.len(), 200);
        let ipam = Ipam::open(dir.path(), "10.255.3.0/24".parse().unwrap()).unwrap();
        assert_eq!(ipam.leases().unwrap().len(), 200);
    }
}
