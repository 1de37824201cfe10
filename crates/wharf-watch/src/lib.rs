//! `wharf watch`

pub mod api;
pub mod check;
pub mod dependants;
pub mod engine;
pub mod events;
pub mod labels;
pub mod notify;
pub mod order;
pub mod policy;
pub mod report;
pub mod schedule;
pub mod session;
pub mod spec;
pub mod sse;
pub mod target;
pub mod update;

/// A panic elsewhere leaves these maps and counters consistent, so poisoning is ignored.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
