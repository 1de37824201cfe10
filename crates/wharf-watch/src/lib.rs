//! `wharf watch`: a container updater compatible with watchtower's flags, labels and
//! environment. It reads the running containers from the Docker Engine (bollard), checks
//! their images in their registries through wharf-client (on a schedule, or at once on a
//! registry event or an API call), follows tag policies (semver ranges, regexes, a minimum
//! age), replaces containers transactionally with rollback, and notifies (webhook, Slack,
//! email).

pub mod api;
pub mod check;
pub mod compose;
pub mod dashboard;
pub mod dependants;
pub mod engine;
pub mod events;
pub mod fleet;
pub mod fleet_api;
pub mod history;
pub mod hold;
pub mod hosts;
pub mod identity;
pub mod labels;
pub mod notify;
pub mod order;
pub mod policy;
pub mod rejected;
pub mod report;
pub mod resume;
pub mod schedule;
pub mod session;
pub mod spec;
pub mod sse;
pub mod target;
pub mod update;
pub mod verify;
pub mod window;
