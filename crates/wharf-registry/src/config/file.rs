//! registry:2's `config.yml`, with its `REGISTRY_*` environment overrides, read into
//! [`Config`]. Keys wharf does not act on yet are reported by path, so nobody believes a
//! setting took effect when it did not; bad values are errors that name their key.

use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::{Mapping, Value};

use super::Config;
use crate::auth::policy::AccessPolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: not valid YAML: {source}")]
    Yaml {
        origin: String,
        source: serde_norway::Error,
    },
    #[error("{origin}: {message}")]
    Unknown { origin: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Value {
        origin: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// `key` in `origin` is wrong, and why.
    pub(super) fn value(origin: &str, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            origin: origin.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Read a config file (if any) and apply the `REGISTRY_*` variables of `env` over it.
/// Returns the config and warnings for keys that were ignored.
pub fn load(
    path: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Vec<String>), ConfigError> {
    let (mut tree, origin) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?;
            let origin = p.display().to_string();
            let tree: Value =
                serde_norway::from_str(&text).map_err(|source| ConfigError::Yaml {
                    origin: origin.clone(),
                    source,
                })?;
            (tree, origin)
        }
        None => (Value::Mapping(Mapping::new()), "environment".to_owned()),
    };
    if tree.is_null() {
        tree = Value::Mapping(Mapping::new());
    }
    let from_env = super::env::apply_env(&mut tree, env);
    let mut ignored = Vec::new();
    let file: File = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        tree,
        &mut |path: serde_ignored::Path| {
            // serde_ignored writes `?` for each Option it passed through; users never wrote those.
            ignored.push(
                path.to_string()
                    .split('.')
                    .filter(|seg| *seg != "?")
                    .collect::<Vec<_>>()
                    .join("."),
            );
        },
    ))
    .map_err(|e| ConfigError::Value {
        origin: origin.clone(),
        key: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    if let Some(key) = ignored.iter().find(|k| cannot_honour(k)) {
        let message = if key.starts_with("http.") {
            "wharf does not check client certificates, so it would let in callers this \
             setting keeps out; remove it and use auth: (htpasswd, tokens), or terminate \
             mutual TLS in a proxy in front of wharf"
        } else {
            "wharf cannot honour this setting, and would otherwise store images somewhere \
             else than configured; remove it or use storage.filesystem"
        };
        return Err(ConfigError::Value {
            origin,
            key: key.clone(),
            message: message.into(),
        });
    }
    let warnings = sort_unread(ignored, &from_env, &origin)?;
    let mut warnings = warnings;
    let config = file.into_config(&origin, &mut warnings)?;
    Ok((config, warnings))
}

/// Keys wharf did not read: registry:2's are warnings (real configs carry them); a key
/// nobody defines stops the start, naming the closest key that exists. A variable is only
/// warned about, as registry:2 does: orchestrators set `REGISTRY_*` variables of their own
/// (Kubernetes' `REGISTRY_PORT` for a service named registry).
fn sort_unread(
    ignored: Vec<String>,
    from_env: &[(String, String)],
    origin: &str,
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for key in ignored {
        let variable = from_env
            .iter()
            .find(|(_, path)| key == *path || key.starts_with(&format!("{path}.")));
        match (super::keys::classify(&key), variable) {
            (super::keys::Unread::Foreign, _) => warnings.push(format!(
                "{origin}: `{key}` is not supported by wharf yet and is ignored"
            )),
            (super::keys::Unread::Unknown(message), Some((var, _))) => {
                warnings.push(format!("ignoring environment variable {var}: {message}"))
            }
            (super::keys::Unread::Unknown(message), None) => {
                return Err(ConfigError::Unknown {
                    origin: origin.to_owned(),
                    message,
                })
            }
        }
    }
    Ok(warnings)
}

/// A storage driver that is not built in: ignoring it would put pushes in
/// the default root without a word, so it stops the start instead. So does registry:2's
/// client-certificate check: ignored, it would leave open a registry meant to be closed.
fn cannot_honour(key: &str) -> bool {
    let mut parts = key.split('.');
    match (parts.next(), parts.next()) {
        (Some("http"), Some("tls")) => {
            matches!(parts.next(), Some("clientcas" | "clientauth"))
        }
        // Every key of `storage.s3` that wharf models is honoured; any other would be
        // silently different from what the operator asked (encryption, a KMS key).
        (Some("storage"), Some("s3")) => true,
        (Some("storage"), Some(section)) => !matches!(
            section,
            "filesystem" | "delete" | "maintenance" | "cache" | "redirect" | "tag"
        ),
        _ => false,
    }
}

// The file model: registry:2's keys, each optional. Anything not modelled is reported.

#[derive(Deserialize, Default)]
struct File {
    version: Option<Value>,
    #[serde(default)]
    log: super::log::Log,
    #[serde(default)]
    storage: super::storage::Storage,
    #[serde(default)]
    http: super::http::Http,
    auth: Option<super::auth::Auth>,
    /// wharf's own: who may pull, push and delete what.
    access: Option<AccessPolicy>,
    /// wharf's own: garbage collection inside `wharf serve`.
    gc: Option<super::gc::Gc>,
    /// GitLab's metadata database (PostgreSQL).
    database: Option<super::database::Database>,
    /// registry:2's pull-through cache, with wharf's several upstreams.
    proxy: Option<super::proxy::ProxyFile>,
    notifications: Option<super::observe::Notifications>,
    health: Option<super::observe::Health>,
    /// wharf's own governance: retention, immutable tags, quotas.
    retention: Option<super::governance::Retention>,
    immutable: Option<Vec<super::governance::ImmutableRule>>,
    quotas: Option<Vec<super::governance::QuotaRule>>,
    /// wharf's own: the web UI.
    ui: Option<super::ui::Ui>,
    /// wharf's own: the audit log.
    audit: Option<super::audit::Audit>,
    /// wharf's own: push replication and pull sync.
    replication: Option<super::replication::ReplicationFile>,
    /// wharf's own: signatures pulls must carry.
    trust: Option<Vec<super::trust::TrustRule>>,
}

impl File {
    /// Each section in turn; warnings come out in the order of the sections.
    fn into_config(self, origin: &str, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
        check_version(self.version.as_ref(), origin)?;
        let database = match self.database {
            Some(d) => d.into_config(origin, warnings)?,
            None => None,
        };
        let storage = self.storage.into_config(origin, warnings)?;
        let (addr, http) = self.http.into_config(origin)?;
        let mut config = Config::with_storage(storage.driver);
        config.database = database;
        if let Some(addr) = addr {
            config.addr = addr;
        }
        config.delete_enabled = storage.delete_enabled;
        config.read_only = storage.read_only;
        config.upload_purging = storage.upload_purging;
        config.log = self.log.into_config();
        config.http = http;
        if let Some(a) = self.auth {
            let sections = a.into_sections(origin, warnings)?;
            config.auth = sections.method;
            config.ldap = sections.ldap;
            config.oidc = sections.oidc;
            config.workload = sections.workload;
        }
        config.access = self.access;
        config.governance = super::governance::Governance {
            retention: self.retention,
            immutable: self.immutable.unwrap_or_default(),
            quotas: self.quotas.unwrap_or_default(),
        };
        config.proxy = match self.proxy {
            Some(p) => p.into_config(origin)?,
            None => None,
        };
        if let Some(n) = self.notifications {
            config.include_references = n.include_references();
            config.event_log = n.event_log();
            config.notifications = n.into_config(origin)?;
            if !config.event_log && !config.notifications.is_empty() {
                return Err(ConfigError::Value {
                    origin: origin.to_owned(),
                    key: "notifications.eventlog".into(),
                    message: "is false, but endpoints need the event log: remove the endpoints or the key".into(),
                });
            }
        }
        config.health = self.health.and_then(|h| h.into_config());
        if let Some(ui) = self.ui {
            config.ui = ui.into_config(origin)?;
        }
        config.gc = self.gc.and_then(|g| g.into_config());
        config.audit = self.audit.unwrap_or_default().into_config();
        if let Some(r) = self.replication {
            config.replication = r.into_config(origin)?;
        }
        config.trust = self.trust.unwrap_or_default();
        for (i, rule) in config.trust.iter().enumerate() {
            rule.check(origin, i)?;
        }
        Ok(config)
    }
}

/// registry:2 reads only version 0.1; a number (`version: 0.1` unquoted) is the same.
fn check_version(version: Option<&Value>, origin: &str) -> Result<(), ConfigError> {
    let Some(v) = version else {
        return Ok(());
    };
    let text = match v {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    if text != "0.1" {
        return Err(ConfigError::value(
            origin,
            "version",
            format!("{text:?} is not supported (registry:2 configs are version 0.1)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::AuthConfig;
    use crate::store::StorageConfig;

    fn load_str(yaml: &str, env: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        load(
            Some(f.path()),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// The config.yml the registry:2 image ships.
    const REGISTRY2_DEFAULT: &str = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

    #[test]
    fn a_storage_driver_wharf_lacks_stops_the_start_naming_the_key() {
        let azure = "version: 0.1\nstorage:\n  azure:\n    container: images\n";
        let err = load_str(azure, &[])
            .expect_err("storage.azure must be refused")
            .to_string();
        assert!(err.contains("storage.azure:"), "{err}");
        let env = [("REGISTRY_STORAGE", "gcs")];
        let err = load_str("version: 0.1\n", &env)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("storage.gcs"), "{err}");
        // An S3 setting wharf does not act on would store differently than asked.
        let encrypted =
            "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    encrypt: true\n";
        let err = load_str(encrypted, &[]).expect_err("refused").to_string();
        assert!(err.contains("storage.s3.encrypt"), "{err}");
    }

    #[test]
    fn storage_s3_comes_from_registry2_keys_and_variables() {
        let env = [
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "images"),
            ("REGISTRY_STORAGE_S3_REGION", "garage"),
            (
                "REGISTRY_STORAGE_S3_REGIONENDPOINT",
                "http://127.0.0.1:3900",
            ),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "GK1"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "s3cr3t"),
            ("REGISTRY_STORAGE_S3_SECURE", "false"),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "6291456"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/wharf"),
            ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true"),
        ];
        let (c, warnings) = load_str("version: 0.1\n", &env).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let StorageConfig::S3 { s3, .. } = c.storage else {
            panic!("storage.s3 expected, got {:?}", c.storage);
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("images", "garage")
        );
        assert_eq!(s3.regionendpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(
            (s3.secure, s3.chunksize, s3.redirect),
            (false, 6291456, false)
        );
        assert_eq!(s3.rootdirectory, "/wharf");
        let small =
            "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    chunksize: 1024\n";
        let err = load_str(small, &[]).expect_err("refused").to_string();
        assert!(err.contains("storage.s3.chunksize"), "{err}");
        let both = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n  s3:\n    bucket: b\n    region: r\n";
        assert!(load_str(both, &[]).is_err());
    }

    #[test]
    fn registry2_image_default_config_loads_without_warnings() {
        let (c, warnings) = load_str(REGISTRY2_DEFAULT, &[]).unwrap();
        assert_eq!(c.addr.port(), 5000);
        assert_eq!(c.storage.local_root(), Path::new("/var/lib/registry"));
        assert_eq!(
            c.http.headers,
            [("X-Content-Type-Options".to_owned(), "nosniff".to_owned())]
        );
        // Everything in it is acted on now: `health` is, and the cache needs no setting.
        assert!(warnings.is_empty(), "{warnings:?}");
        let h = c.health.expect("health.storagedriver");
        assert_eq!((h.interval, h.threshold), (Duration::from_secs(10), 3));
    }

    #[test]
    fn env_overrides_follow_registry2() {
        let env = [
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/data"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:5050"),
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/certs/domain.crt"),
            ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
            ("REGISTRY_HTTP_SECRET", "0123"),
        ];
        let (c, warnings) = load_str(REGISTRY2_DEFAULT, &env).unwrap();
        assert_eq!(c.storage.local_root(), Path::new("/data"));
        assert!(c.delete_enabled);
        assert_eq!(c.addr.to_string(), "127.0.0.1:5050");
        assert_eq!(c.http.secret.as_deref(), Some("0123"));
        assert_eq!(c.http.tls.unwrap().key, PathBuf::from("/certs/domain.key"));
        match c.auth.unwrap() {
            AuthConfig::Htpasswd {
                realm,
                path,
                tokens,
            } => {
                assert_eq!(realm, "Registry Realm");
                assert_eq!(path, PathBuf::from("/auth/htpasswd"));
                assert!(tokens.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn env_alone_is_a_config() {
        let (c, _) = load(
            None,
            [(
                "REGISTRY_STORAGE_DELETE_ENABLED".to_owned(),
                "false".to_owned(),
            )],
        )
        .unwrap();
        assert!(!c.delete_enabled);
    }

    #[test]
    fn typos_and_bad_values_name_their_key() {
        // A key nobody defines stops the start; registry:2's own are only warned about.
        let err = load_str(
            "version: 0.1\nstorage:\n  delete:\n    enabeld: true\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown key `storage.delete.enabeld`; did you mean `enabled`?"),
            "{err}"
        );
        let (_, warnings) = load_str("version: 0.1\nredis:\n  addr: r:6379\n", &[]).unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("`redis` is not supported")),
            "{warnings:?}"
        );
        // A variable nobody defines is only warned about (Kubernetes sets REGISTRY_PORT).
        let (_, warnings) =
            load_str("version: 0.1\n", &[("REGISTRY_PORT", "tcp://x:5000")]).unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("REGISTRY_PORT")),
            "{warnings:?}"
        );
        let err = load_str(
            "version: 0.1\nstorage:\n  delete:\n    enabled: maybe\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("storage.delete.enabled") && err.contains("maybe"),
            "{err}"
        );
        let err = load_str("version: 0.1\nhttp:\n  addr: nowhere\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.addr"), "{err}");
        let err = load_str("version: 0.1\nauth:\n  htpasswd:\n    realm: r\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.htpasswd.path"), "{err}");
        let err = load_str("version: 0.1\nhttp: [\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid YAML"), "{err}");
        let err = load_str("version: 0.2\n", &[]).unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn gc_schedule_from_the_file_or_the_environment() {
        let (c, warnings) = load_str(
            "version: 0.1\ngc:\n  interval: 6h\n  deleteuntagged: true\n",
            &[],
        )
        .unwrap();
        let gc = c.gc.expect("gc: turns scheduled collection on");
        assert_eq!(gc.interval, Duration::from_secs(6 * 3600));
        assert!(gc.delete_untagged);
        assert_eq!(gc.grace, crate::config::DEFAULT_GC_GRACE);
        assert!(warnings.is_empty(), "{warnings:?}");
        let (c, _) = load_str(
            "version: 0.1\n",
            &[("REGISTRY_GC_INTERVAL", "30m"), ("REGISTRY_GC_GRACE", "0s")],
        )
        .unwrap();
        let gc = c.gc.unwrap();
        assert_eq!(
            (gc.interval, gc.grace),
            (Duration::from_secs(1800), Duration::ZERO)
        );
        assert!(load_str("version: 0.1\n", &[]).unwrap().0.gc.is_none());
        assert!(load_str("gc:\n  enabled: false\n", &[])
            .unwrap()
            .0
            .gc
            .is_none());
    }
}
