//! Single flight: one piece of work per key at a time, however many ask for it.
//!
//! The first asker starts the work and later askers join it. The task doing the work owns
//! its place in the table (a [`Landing`]) and gives it up when the work is over, before it
//! publishes the outcome: whoever asks next then finds the result in the store, or, after
//! a failure, starts afresh. No asker removes anything, so no asker can remove a newer
//! flight than the one it joined.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

pub struct Flights<K, V>(Mutex<HashMap<K, V>>);

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights(Mutex::default())
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Flights<K, V> {
    /// The flight under `key`, if one is under way.
    pub fn get(&self, key: &K) -> Option<V> {
        self.lock().get(key).cloned()
    }

    /// Join the flight under `key`, or start one with `start`, which is handed the place
    /// its task must hold until the work is over. `start` runs under the table's lock:
    /// it spawns the work and returns at once.
    pub fn join_or_start(self: &Arc<Self>, key: K, start: impl FnOnce(Landing<K, V>) -> V) -> V {
        let mut flights = self.lock();
        if let Some(v) = flights.get(&key) {
            return v.clone();
        }
        let landing = Landing {
            flights: self.clone(),
            key: Some(key.clone()),
        };
        let v = start(landing);
        flights.insert(key, v.clone());
        v
    }

    /// A panic elsewhere cannot leave the map half-changed (every change is one insert or
    /// one remove), so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A flight's place in the table: given up when dropped.
pub struct Landing<K: Hash + Eq + Clone, V: Clone> {
    flights: Arc<Flights<K, V>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Landing<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights.lock().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn askers_join_until_the_worker_lands() {
        let flights: Arc<Flights<&str, u32>> = Arc::default();
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
        let third = flights.join_or_start("k", |_| 3);
        assert_eq!(third, 3);
    }
}
