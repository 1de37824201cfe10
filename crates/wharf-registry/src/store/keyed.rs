//! Exclusive locks by name within one process: the first step of every backend's
//! [`Locks::exclusive`](super::Locks::exclusive). Tasks of one process queue here (fairly,
//! in tokio's mutex) rather than each waiting on the backend's lock, which would tie up a
//! blocking thread or a database connection per waiter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use wharf_oci::sync::lock;

#[derive(Default)]
pub struct KeyedMutex {
    held: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held until dropped; the name's entry goes when its last user does.
pub struct KeyedGuard {
    guard: Option<OwnedMutexGuard<()>>,
    name: String,
    held: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl KeyedMutex {
    pub async fn lock(&self, name: &str) -> KeyedGuard {
        let m = lock(&self.held).entry(name.to_owned()).or_default().clone();
        let guard = m.lock_owned().await;
        KeyedGuard {
            guard: Some(guard),
            name: name.to_owned(),
            held: self.held.clone(),
        }
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        let mut map = lock(&self.held);
        drop(self.guard.take());
        // Two references: the map's and the one the dropped guard held is gone, so the
        // map's alone means no task holds or waits for the name.
        if map
            .get(&self.name)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_name_and_entries_go_when_unused() {
        let k = Arc::new(KeyedMutex::default());
        let a = k.lock("a").await;
        let _b = k.lock("b").await;
        let k2 = k.clone();
        let waiter = tokio::spawn(async move { drop(k2.lock("a").await) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second holder of one name waits");
        drop(a);
        waiter.await.unwrap();
        assert_eq!(lock(&k.held).len(), 1, "only b is still held");
    }
}
