//! Locks that hold within one process: what S3 with the embedded metadata offers. S3 has
//! no lock, so a second process on the same bucket needs the metadata database, whose
//! advisory locks take this place (docs/storage.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::RwLock;
use wharf_oci::sync::lock;

use crate::store::keyed::KeyedMutex;
use crate::store::{Guard, Locks, StoreResult};

#[derive(Default)]
pub struct LocalLocks {
    /// Writers share it, a collector takes it alone. tokio's lock is fair: a waiting
    /// collector stops new writers, as the protocol requires.
    gate: Arc<RwLock<()>>,
    jobs: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    keyed: KeyedMutex,
}

#[async_trait]
impl Locks for LocalLocks {
    async fn writer(&self) -> StoreResult<Guard> {
        Ok(Box::new(self.gate.clone().read_owned().await))
    }

    async fn collector(&self) -> StoreResult<Guard> {
        Ok(Box::new(self.gate.clone().write_owned().await))
    }

    async fn try_job(&self, name: &str) -> StoreResult<Option<Guard>> {
        let job = lock(&self.jobs).entry(name.to_owned()).or_default().clone();
        Ok(job.try_lock_owned().ok().map(|g| Box::new(g) as Guard))
    }

    async fn exclusive(&self, name: &str) -> StoreResult<Guard> {
        Ok(Box::new(self.keyed.lock(name).await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiting_collector_holds_back_new_writers() {
        let locks = Arc::new(LocalLocks::default());
        let first = locks.writer().await.unwrap();
        let l = locks.clone();
        let collector = tokio::spawn(async move { l.collector().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = tokio::time::timeout(Duration::from_millis(100), locks.writer()).await;
        assert!(
            second.is_err(),
            "a new writer must wait behind the collector"
        );
        drop(first);
        collector.await.unwrap().unwrap();
        assert!(locks.try_job("gc").await.unwrap().is_some());
        let held = locks.try_job("gc").await.unwrap();
        assert!(locks.try_job("gc").await.unwrap().is_none());
        drop(held);
        assert!(locks.try_job("gc").await.unwrap().is_some());
    }
}
