//! The registry's settings. [`load`] reads registry:2's `config.yml` and `REGISTRY_*`
//! environment into the same struct the command line fills.

mod audit;
mod auth;
mod database;
mod env;
mod file;
mod gc;
pub mod governance;
mod http;
mod keys;
mod ldap;
mod lenient;
mod log;
mod observe;
mod oidc;
pub mod proxy;
pub mod replication;
mod storage;
pub mod trust;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use file::{load, ConfigError};

use crate::auth::policy::AccessPolicy;
pub use crate::auth::{AuthConfig, BuiltinTokens, CertifiedKey};
use crate::store::StorageConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// `http.addr`.
    pub addr: SocketAddr,
    /// `storage:`: the filesystem root or the bucket (which then comes with a local
    /// directory for wharf's own records).
    pub storage: StorageConfig,
    /// `storage.delete.enabled`: registry:2 refuses deletes unless this is set.
    pub delete_enabled: bool,
    /// `storage.maintenance.readonly.enabled`: refuse every write.
    pub read_only: bool,
    /// `storage.maintenance.uploadpurging`: None disables it.
    pub upload_purging: Option<UploadPurging>,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub auth: Option<AuthConfig>,
    /// `auth.ldap` (wharf's own), with the Basic realm to use when htpasswd names none.
    pub ldap: Option<(crate::auth::ldap::LdapConfig, String)>,
    /// `auth.oidc` (wharf's own): the UI's sign-in through an OpenID Connect provider.
    pub oidc: Option<crate::auth::sso::OidcConfig>,
    /// `auth.workload` (wharf's own): issuers whose ID tokens are docker passwords.
    pub workload: Vec<crate::auth::workload::WorkloadConfig>,
    /// Who may do what; without it every authenticated user may do everything.
    pub access: Option<AccessPolicy>,
    /// `gc:` (wharf's own): collect garbage inside `wharf serve` on a schedule.
    pub gc: Option<GcSchedule>,
    /// `proxy:`: a pull-through cache of one upstream or several.
    pub proxy: Option<proxy::ProxyConfig>,
    /// `notifications.endpoints`, the enabled ones.
    pub notifications: Vec<Endpoint>,
    /// `notifications.events.includereferences`.
    pub include_references: bool,
    /// `notifications.eventlog` (wharf's own): false keeps no event log at all.
    pub event_log: bool,
    /// `health.storagedriver`, when enabled.
    pub health: Option<HealthCheck>,
    /// `retention:`, `immutable:` and `quotas:`.
    pub governance: governance::Governance,
    /// `ui:` (wharf's own): the web UI at `/ui/`.
    pub ui: UiConfig,
    /// `database:`: repositories, manifests and tags in PostgreSQL instead of link files.
    pub database: Option<crate::store::postgres::DatabaseConfig>,
    /// `audit:` (wharf's own): the hash-chained audit log.
    pub audit: AuditConfig,
    /// `replication:` (wharf's own): push replication and pull sync.
    pub replication: replication::ReplicationConfig,
    /// `trust:` (wharf's own): signatures pulls must carry, per repository glob.
    pub trust: Vec<trust::TrustRule>,
}

/// `audit:`: on by default.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Record pulls too.
    pub pulls: bool,
    /// Also append each record to this file as a JSON line.
    pub file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            pulls: false,
            file: None,
        }
    }
}

/// `ui:`: on by default; `admins` may manage users and run GC from it.
#[derive(Debug, Clone)]
pub struct UiConfig {
    pub enabled: bool,
    pub admins: Vec<String>,
    /// `ui.title`: the name in the header; the host the UI is reached at when unset.
    pub title: Option<String>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            admins: Vec::new(),
            title: None,
        }
    }
}

/// A webhook that receives registry:2's event envelopes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Failures in a row after which each retry waits `backoff`.
    pub threshold: u64,
    pub backoff: Duration,
    /// `ignoredmediatypes` and `ignore.mediatypes`.
    pub ignored_media_types: Vec<String>,
    pub ignored_actions: Vec<String>,
}

/// `health.storagedriver`: probe the storage every `interval`; unhealthy after
/// `threshold` failures in a row.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub interval: Duration,
    pub threshold: u64,
}

/// `http.debug`: a second listener for metrics and health.
#[derive(Debug, Clone)]
pub struct DebugConfig {
    pub addr: SocketAddr,
    /// `prometheus.path` when `prometheus.enabled`.
    pub prometheus: Option<String>,
}

/// Content retained this recently is never collected: it covers a push whose blobs are up
/// but whose manifest is not yet.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct GcSchedule {
    pub interval: Duration,
    pub delete_untagged: bool,
    pub grace: Duration,
    /// With `database:`: review-queue workers per replica (`gc.workers`).
    pub workers: usize,
    /// With `database:`: the delay between an event and its review (GitLab's
    /// `gc.reviewafter`); the grace period when unset.
    pub review_after: Option<Duration>,
    /// With `database:`: a worker's pause after a pass that found nothing due
    /// (GitLab's `gc.blobs.interval`, 5 s).
    pub review_interval: Duration,
}

impl Default for GcSchedule {
    fn default() -> Self {
        GcSchedule {
            interval: Duration::from_secs(24 * 3600),
            delete_untagged: false,
            grace: DEFAULT_GC_GRACE,
            workers: 1,
            review_after: None,
            review_interval: Duration::from_secs(5),
        }
    }
}

/// registry:2's defaults: uploads older than a week are removed once a day.
#[derive(Debug, Clone)]
pub struct UploadPurging {
    pub age: Duration,
    pub interval: Duration,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `log.level`; `WHARF_LOG` wins over it.
    pub level: Option<String>,
    /// `log.formatter: json`.
    pub json: bool,
    /// `log.accesslog.disabled: false` (the default) logs every request.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: None,
            json: false,
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// `http.host`: the externally visible base URL, e.g. `https://registry.example.com`.
    pub host: Option<String>,
    /// `http.relativeurls`: wharf's Location headers are always relative; kept for the record.
    pub relative_urls: bool,
    /// `http.draintimeout`: how long shutdown waits for requests in flight.
    pub drain_timeout: Option<Duration>,
    /// `http.secret`: signs the built-in tokens when set (so replicas agree).
    pub secret: Option<String>,
    /// `http.headers`: added to every response.
    pub headers: Vec<(String, String)>,
    pub tls: Option<TlsConfig>,
    pub debug: Option<DebugConfig>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// registry:2's defaults, on a filesystem root.
    pub fn new(root: PathBuf) -> Config {
        Config::with_storage(StorageConfig::Filesystem { root })
    }

    /// registry:2's defaults, on `storage`.
    pub fn with_storage(storage: StorageConfig) -> Config {
        Config {
            addr: SocketAddr::from(([0, 0, 0, 0], 5000)),
            storage,
            delete_enabled: false,
            read_only: false,
            upload_purging: Some(UploadPurging::default()),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            auth: None,
            ldap: None,
            oidc: None,
            workload: Vec::new(),
            access: None,
            gc: None,
            proxy: None,
            notifications: Vec::new(),
            include_references: false,
            event_log: true,
            health: None,
            ui: UiConfig::default(),
            governance: governance::Governance::default(),
            database: None,
            audit: AuditConfig::default(),
            replication: Default::default(),
            trust: Vec::new(),
        }
    }
}

/// Where data goes when no configuration names a root: `/var/lib/registry` when it can be
/// written (as registry:2), else `$XDG_DATA_HOME/wharf` or `~/.local/share/wharf`.
pub fn default_root() -> PathBuf {
    let system = PathBuf::from("/var/lib/registry");
    let writable = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).is_ok() && {
            let probe = dir.join(format!(".wharf-probe-{}", std::process::id()));
            let ok = std::fs::write(&probe, b"").is_ok();
            let _ = std::fs::remove_file(&probe);
            ok
        }
    };
    if writable(&system) {
        return system;
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map(|d| d.join("wharf"))
        .unwrap_or(system)
}

/// `host:port`, or registry:2's `:port` meaning every interface.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|e| format!("{s:?} is not host:port ({e})"))
}
