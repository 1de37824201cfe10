//! Manifest bytes by digest. Content-addressed, so an entry is never stale, whichever
//! process wrote what since; whether a repository may serve it is checked on every request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use wharf_oci::Digest;

const CACHE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Default)]
pub struct ManifestCache {
    entries: DashMap<Digest, (Bytes, Arc<str>)>,
    bytes: AtomicUsize,
}

impl ManifestCache {
    pub fn get(&self, d: &Digest) -> Option<(Bytes, Arc<str>)> {
        self.entries.get(d).map(|e| e.clone())
    }

    pub fn insert(&self, d: Digest, bytes: Bytes, media_type: Arc<str>) {
        let size = bytes.len();
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > CACHE_BYTES {
            // Crude but bounded: start over rather than track recency on the hot path.
            self.entries.clear();
            self.bytes.store(size, Ordering::Relaxed);
        }
        self.entries.insert(d, (bytes, media_type));
    }
}
