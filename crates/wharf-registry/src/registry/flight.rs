//! Single flight: one piece of work per key at a time, however many ask for it.
//!
//! The first asker starts the work and later askers join it. The task doing the work owns
//! its place in the table (a [`Landing`]) and gives it up when the work is over, before it
//! publishes the outcome: whoever asks next then finds the result in the store, or, after
//! a failure, starts afresh. No asker removes anything, so no asker can remove a newer
//! flight than the one it joined.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Each flight with the flag its landing sets. A landing only sets the flag, never takes
/// the lock: it may be dropped while the table is locked (a task refused by a runtime
/// that is shutting down drops its future inside `start`).
pub struct Flights<K, V>(Mutex<HashMap<K, (V, Arc<AtomicBool>)>>);

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights(Mutex::default())
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    /// The flight under `key`, if one is under way.
    pub fn get(&self, key: &K) -> Option<V> {
        let flights = self.lock();
        let (v, landed) = flights.get(key)?;
        (!landed.load(Ordering::Acquire)).then(|| v.clone())
    }

    /// Join the flight under `key`, or start one with `start`, which is handed the place
    /// its task must hold until the work is over. `start` runs under the table's lock:
    /// it spawns the work and returns at once.
    pub fn join_or_start(&self, key: K, start: impl FnOnce(Landing) -> V) -> V {
        let mut flights = self.lock();
        // Landed flights leave here, on the next start: a few at most, as each lands once.
        flights.retain(|_, (_, landed)| !landed.load(Ordering::Acquire));
        if let Some((v, _)) = flights.get(&key) {
            return v.clone();
        }
        let landed = Arc::new(AtomicBool::new(false));
        let v = start(Landing(landed.clone()));
        flights.insert(key, (v.clone(), landed));
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Arc<AtomicBool>)>> {
        wharf_oci::sync::lock(&self.0)
    }
}

/// A flight's place in the table: given up when dropped.
pub struct Landing(Arc<AtomicBool>);

impl Drop for Landing {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn askers_join_until_the_worker_lands() {
        let flights: Flights<&str, u32> = Flights::default();
        let mut held = None;
        let first = flights.join_or_start("k", |landing| {
            held = Some(landing);
            1
        });
        let second = flights.join_or_start("k", |_| 2);
        assert_eq!((first, second), (1, 1));
        assert_eq!(flights.get(&"k"), Some(1));
        drop(held);
        assert_eq!(flights.get(&"k"), None);
        // A landing dropped at once (work refused as it starts) neither deadlocks nor
        // leaves a flight behind.
        let third = flights.join_or_start("k", |_| 3);
        assert_eq!(third, 3);
        assert_eq!(flights.get(&"k"), None);
        assert_eq!(flights.join_or_start("k", |_| 4), 4);
    }
}
