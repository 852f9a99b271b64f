//! The instance's identity in the container: bind mounts made in its own mount namespace, at
//! paths resolved inside its root and never through a symlink.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::OciState;

/// Bind-mounts the instance's identity dir and system-certificates dir (read-only) at Cloud
/// Foundry's paths in the container: `/etc/cf-instance-credentials` and
/// `/etc/cf-system-certificates`. Done in the container's own mount namespace at `createRuntime`
/// (it exists, its root is mounted, pivot_root has not happened and nothing of the container
/// has run), so the mounts are the container's alone and host paths are still visible there.
/// A bind mount of the directory, not a copy, is what lets the agent renew the identity in
/// place (a new generation and a `..data` link swap inside it). The image decides what is at
/// those paths: a symlink there (or at `/etc`) is refused rather than followed, so an image
/// cannot make the hook create or mount anything outside its root.
pub(super) fn mount_identity(state: &OciState, certs: &Path) -> Result<(), String> {
    let pid = state
        .pid
        .ok_or("the OCI state names no container process (is the hook at createRuntime?)")?;
    let rootfs = rootfs(state)?;
    let mounts = [
        (
            c2c_api::layout::identity_dir(certs),
            c2c_certs::identity::CONTAINER_IDENTITY_DIR,
        ),
        (
            c2c_api::layout::system_certs_dir(certs),
            c2c_certs::identity::CONTAINER_SYSTEM_CERTS_DIR,
        ),
    ];
    for (source, inside) in mounts {
        let target = mount_point(&rootfs, inside)?;
        let out = std::process::Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .args(["--", "mount", "--bind", "-o", "ro"])
            .arg(&source)
            .arg(&target)
            .output()
            .map_err(|e| format!("running nsenter: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting {} at {inside} in container {}: {}",
                source.display(),
                state.id,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// The container's root filesystem, from the bundle's config.json (`root.path`, absolute or
/// relative to the bundle).
fn rootfs(state: &OciState) -> Result<PathBuf, String> {
    #[derive(Deserialize)]
    struct Root {
        path: PathBuf,
    }
    #[derive(Deserialize)]
    struct Spec {
        root: Root,
    }
    let bundle = state
        .bundle
        .as_ref()
        .ok_or("the OCI state names no bundle")?;
    let raw = std::fs::read(bundle.join("config.json"))
        .map_err(|e| format!("reading {}/config.json: {e}", bundle.display()))?;
    let spec: Spec = serde_json::from_slice(&raw)
        .map_err(|e| format!("{}/config.json: {e}", bundle.display()))?;
    Ok(if spec.root.path.is_absolute() {
        spec.root.path
    } else {
        bundle.join(spec.root.path)
    })
}

/// `inside` (an absolute path such as `/etc/cf-instance-credentials`) under `rootfs`, each
/// directory on the way made if missing (0755) and refused if it is anything but a directory:
/// a symlink planted by the image is never followed.
fn mount_point(rootfs: &Path, inside: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let mut at = rootfs.to_path_buf();
    for part in Path::new(inside).components().skip(1) {
        let std::path::Component::Normal(name) = part else {
            return Err(format!("{inside}: not a plain path"));
        };
        at.push(name);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "the image has something other than a directory at {} (a symlink is never followed); not mounting the identity there",
                    at.strip_prefix(rootfs).unwrap_or(&at).display()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&at)
                .map_err(|e| format!("creating {}: {e}", at.display()))?,
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_mount_points_are_made_in_the_root_and_never_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        // Missing: made, inside the root.
        let at = mount_point(&root, "/etc/cf-instance-credentials").unwrap();
        assert_eq!(at, root.join("etc/cf-instance-credentials"));
        assert!(at.is_dir());
        // An image whose /etc/cf-system-certificates points at the host's /etc (the attack):
        // refused, and nothing made outside the root.
        let outside = t.path().join("host-etc");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/cf-system-certificates")).unwrap();
        let e = mount_point(&root, "/etc/cf-system-certificates").unwrap_err();
        assert!(e.contains("symlink is never followed"), "{e}");
        // So is a symlinked /etc on the way.
        let root2 = t.path().join("rootfs2");
        std::fs::create_dir(&root2).unwrap();
        std::os::unix::fs::symlink(&outside, root2.join("etc")).unwrap();
        assert!(mount_point(&root2, "/etc/cf-instance-credentials").is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}
