//! TLS sessions that end when the access rules change. Resuming a session skips the
//! certificate check of a full handshake, so a session made while the app required no identity
//! (or by a caller its rules allowed then) must not be resumed under other rules: each stored
//! session carries the [`AccessStore`] generation it was made under, and one made under another
//! is not found, so the client makes a full handshake and its certificate is checked as any new
//! caller's. (The listener also re-checks a resumed session's caller: see
//! [`crate::identity::refuse_resumed`].)

use std::sync::Arc;

use rustls::server::StoresServerSessions;

use crate::identity::AccessStore;

/// Session storage keyed to the rules in service.
#[derive(Debug)]
pub struct Sessions {
    inner: Arc<dyn StoresServerSessions>,
    access: Arc<AccessStore>,
}

impl Sessions {
    /// Stores sessions in `inner`, each tagged with `access`'s generation.
    pub fn new(inner: Arc<dyn StoresServerSessions>, access: Arc<AccessStore>) -> Self {
        Self { inner, access }
    }

    /// The session if it was made under the rules in service.
    fn current(&self, stored: Vec<u8>) -> Option<Vec<u8>> {
        let (tag, value) = stored.split_at_checked(8)?;
        (tag == self.access.generation().to_be_bytes()).then(|| value.to_vec())
    }
}

impl StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut tagged = self.access.generation().to_be_bytes().to_vec();
        tagged.extend_from_slice(&value);
        self.inner.put(key, tagged)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current(self.inner.get(key)?)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current(self.inner.take(key)?)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_made_under_other_rules_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let access = Arc::new(AccessStore::open(dir.path()));
        let s = Sessions::new(
            rustls::server::ServerSessionMemoryCache::new(8),
            access.clone(),
        );
        assert!(s.put(b"k".to_vec(), b"session".to_vec()));
        // Same rules: resumed as stored.
        assert_eq!(s.get(b"k").as_deref(), Some(&b"session"[..]));
        // The rules change: the session is gone, the client makes a full handshake.
        std::fs::write(
            dir.path().join(c2c_api::access::ACCESS_FILE),
            serde_json::to_vec(&c2c_api::access::Access {
                client_identity: c2c_api::ClientIdentity::Required,
                ..Default::default()
            })
            .unwrap(),
        )
        .unwrap();
        assert!(access.reload());
        assert_eq!(s.get(b"k"), None);
        assert_eq!(s.take(b"k"), None);
        // One made now is found.
        assert!(s.put(b"k2".to_vec(), b"new".to_vec()));
        assert_eq!(s.take(b"k2").as_deref(), Some(&b"new"[..]));
    }
}
