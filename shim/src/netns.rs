//! Running code inside another network namespace.
//!
//! A netlink socket acts in the namespace where it was opened, and `setns` changes the namespace
//! of the calling thread only. So work for a container happens on a dedicated std thread that
//! enters the container's namespace, does its work (with its own current-thread runtime when it
//! needs async netlink) and ends; the thread never returns to a pool, so no other code runs in
//! the wrong namespace. Never call this from a tokio worker and then keep using that worker.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// Entering a namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened (gone, or not a namespace).
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The namespace path, e.g. `/run/netns/x` or `/proc/PID/ns/net`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// setns(2) refused (not a network namespace, or no CAP_SYS_ADMIN).
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        /// The namespace path.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// The work panicked on its thread.
    #[error("work inside network namespace {0} panicked")]
    Panicked(PathBuf),
}

/// Opens a namespace file, for moving links into it by fd.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })
}

/// Runs `work` on a fresh thread inside the network namespace at `path` and returns its value.
pub fn run_in<T, F>(path: &Path, work: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let ns = open(path)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: path.to_owned(),
                source,
            })?;
            Ok(work())
        })
        .join()
        .map_err(|_| NetnsError::Panicked(path.to_owned()))?
    })
}

/// Runs async `work` with its own current-thread runtime inside the namespace at `path`.
pub fn block_on_in<T, F, Fut>(path: &Path, work: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    run_in(path, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| NetnsError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(rt.block_on(work()))
    })?
}

/// Writes a sysctl, given as its path under `/proc/sys` (`net/ipv4/ip_forward`; slashes, since
/// interface names may hold dots), for the calling thread's namespace: network sysctls are per
/// namespace. A missing file (say, IPv6 compiled out) is not an error: returns false.
pub fn sysctl(key: &str, value: &str) -> std::io::Result<bool> {
    let path = Path::new("/proc/sys").join(key);
    match std::fs::write(&path, value) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
