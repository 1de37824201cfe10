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
