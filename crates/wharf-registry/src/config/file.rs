//! registry:2's `config.yml`, with its `REGISTRY_*` environment overrides, read into
//! [`Config`]. Keys wharf does not act on yet are reported by path, so nobody believes a
//! setting took effect when it did not; bad values are errors that name their key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::{Mapping, Value};

use super::{
    AuthConfig, BuiltinTokens, CertifiedKey, Config, HttpConfig, LogConfig, TlsConfig,
    UploadPurging,
};
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
    #[error("{origin}: {key}: {message}")]
    Value {
        origin: String,
        key: String,
        message: String,
    },
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
    apply_env(&mut tree, env);
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
        return Err(ConfigError::Value {
            origin,
            key: key.clone(),
            message: "wharf cannot honour this setting, and would otherwise store images \
                      somewhere else than configured; remove it or use storage.filesystem"
                .into(),
        });
    }
    let mut warnings: Vec<String> = ignored
        .into_iter()
        .map(|k| format!("{origin}: `{k}` is not supported by wharf yet and is ignored"))
        .collect();
    let config = file.into_config(&origin, &mut warnings)?;
    Ok((config, warnings))
}

/// A storage driver that is not built in: ignoring it would put pushes in
/// the default root without a word, so it stops the start instead.
fn cannot_honour(key: &str) -> bool {
    let mut parts = key.split('.');
    match (parts.next(), parts.next()) {
        // Every key of `storage.s3` that wharf models is honoured; any other would be
        // silently different from what the operator asked (encryption, a KMS key).
        (Some("storage"), Some("s3")) => true,
        (Some("storage"), Some(section)) => !matches!(
            section,
            "filesystem" | "delete" | "maintenance" | "cache" | "redirect"
        ),
        _ => false,
    }
}

/// registry:2's mapping: `REGISTRY_A_B_C=v` sets `a.b.c: v`. Setting a value on `auth` or
/// `storage` themselves picks the driver (`REGISTRY_AUTH=htpasswd` → `auth: {htpasswd: {}}`).
fn apply_env(tree: &mut Value, env: impl IntoIterator<Item = (String, String)>) {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGISTRY_"))
        .collect();
    vars.sort(); // parents (REGISTRY_AUTH) before children (REGISTRY_AUTH_HTPASSWD_PATH)
    for (key, value) in vars {
        let path: Vec<String> = key["REGISTRY_".len()..]
            .split('_')
            .map(str::to_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        let is_driver = path.len() == 1 && matches!(path[0].as_str(), "auth" | "storage");
        let leaf = if is_driver {
            let mut m = Mapping::new();
            m.insert(
                Value::String(value.to_lowercase()),
                Value::Mapping(Mapping::new()),
            );
            Value::Mapping(m)
        } else if takes_yaml(&path) {
            // registry:2 unmarshals a variable's value as YAML into the field it names:
            // that is how a list such as notifications.endpoints comes from the environment.
            serde_norway::from_str(&value).unwrap_or(Value::String(value))
        } else {
            Value::String(value)
        };
        set_path(tree, &path, leaf);
    }
}

/// Keys whose values are lists or maps, which a variable can only give as YAML text.
fn takes_yaml(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        p.as_slice(),
        ["notifications", "endpoints"]
            | ["notifications"]
            | ["immutable"]
            | ["quotas"]
            | ["retention", "rules"]
    )
}

fn set_path(tree: &mut Value, path: &[String], leaf: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if !tree.is_mapping() {
        *tree = Value::Mapping(Mapping::new());
    }
    let map = tree.as_mapping_mut().expect("mapping");
    let key = Value::String(first.clone());
    if rest.is_empty() {
        match (map.get_mut(&key), leaf) {
            // A driver choice merges with settings the file already has for it.
            (Some(Value::Mapping(existing)), Value::Mapping(new)) => {
                for (k, v) in new {
                    existing.entry(k).or_insert(v);
                }
            }
            (_, leaf) => {
                map.insert(key, leaf);
            }
        }
    } else {
        let child = map.entry(key).or_insert(Value::Mapping(Mapping::new()));
        set_path(child, rest, leaf);
    }
}

/// Environment values arrive as strings; registry:2 accepts them for bools and numbers too.
pub(super) mod lenient {
    use serde::{de, Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Bool(bool),
        Int(u64),
        Str(String),
    }

    /// A whole number (a count, or bytes), as a number or a string of digits (from the
    /// environment).
    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(None),
            Some(Scalar::Int(n)) => Ok(Some(n)),
            Some(Scalar::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| de::Error::custom(format!("{s:?} is not a whole number"))),
            Some(Scalar::Bool(_)) => Err(de::Error::custom("expected a whole number")),
        }
    }

    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(None),
            Some(Scalar::Bool(b)) => Ok(Some(b)),
            Some(Scalar::Str(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" | "" => Ok(Some(false)),
                _ => Err(de::Error::custom(format!("{s:?} is not true or false"))),
            },
            Some(Scalar::Int(n)) => Ok(Some(n != 0)),
        }
    }

    /// Go durations (`168h`, `1m30s`, `500ms`) or a number of seconds.
    pub fn duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<std::time::Duration>, D::Error> {
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(None),
            Some(Scalar::Int(n)) => Ok(Some(std::time::Duration::from_secs(n))),
            Some(Scalar::Str(s)) => wharf_oci::units::parse_duration(&s)
                .map(Some)
                .map_err(de::Error::custom),
            Some(Scalar::Bool(_)) => {
                Err(de::Error::custom("expected a duration like 300s or 168h"))
            }
        }
    }
}

// The file model: registry:2's keys, each optional. Anything not modelled is reported.

#[derive(Deserialize, Default)]
struct File {
    version: Option<Value>,
    #[serde(default)]
    log: Log,
    #[serde(default)]
    storage: Storage,
    #[serde(default)]
    http: Http,
    auth: Option<Auth>,
    /// wharf's own: who may pull, push and delete what.
    access: Option<AccessPolicy>,
    /// wharf's own: garbage collection inside `wharf serve`.
    gc: Option<Gc>,
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
    ui: Option<Ui>,
}

#[derive(Deserialize, Default)]
struct Ui {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    /// A list, or (from `REGISTRY_UI_ADMINS`) one comma-separated string.
    admins: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Gc {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::bool")]
    deleteuntagged: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    grace: Option<Duration>,
}

#[derive(Deserialize, Default)]
struct Log {
    level: Option<String>,
    formatter: Option<String>,
    /// Extra fields registry:2 adds to each line; accepted, not added.
    #[serde(rename = "fields")]
    _fields: Option<BTreeMap<String, Value>>,
    accesslog: Option<AccessLog>,
}

#[derive(Deserialize, Default)]
struct AccessLog {
    #[serde(default, deserialize_with = "lenient::bool")]
    disabled: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Storage {
    filesystem: Option<Filesystem>,
    s3: Option<super::storage::S3File>,
    delete: Option<Enabled>,
    maintenance: Option<Maintenance>,
    /// registry:2's blob descriptor cache; wharf always caches, so this is accepted as is.
    #[serde(rename = "cache")]
    _cache: Option<Value>,
    /// Pulls from S3 redirect to presigned URLs unless `redirect.disable`.
    redirect: Option<Redirect>,
}

#[derive(Deserialize, Default)]
struct Redirect {
    #[serde(default, deserialize_with = "lenient::bool")]
    disable: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Filesystem {
    rootdirectory: Option<PathBuf>,
    /// Go's limit on blocking filesystem threads; tokio's blocking pool bounds ours.
    #[serde(rename = "maxthreads")]
    _maxthreads: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Enabled {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Maintenance {
    uploadpurging: Option<Purging>,
    readonly: Option<Enabled>,
}

#[derive(Deserialize, Default)]
struct Purging {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    age: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::bool")]
    dryrun: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Http {
    addr: Option<String>,
    net: Option<String>,
    host: Option<String>,
    secret: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    relativeurls: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    draintimeout: Option<Duration>,
    tls: Option<Tls>,
    headers: Option<BTreeMap<String, HeaderValues>>,
    debug: Option<super::observe::Debug>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    Many(Vec<String>),
    One(String),
}

#[derive(Deserialize, Default)]
struct Tls {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct Auth {
    htpasswd: Option<Htpasswd>,
    token: Option<Token>,
}

#[derive(Deserialize, Default)]
struct Htpasswd {
    realm: Option<String>,
    path: Option<PathBuf>,
    /// wharf's own: issue Docker registry tokens from these users at `/auth/token`.
    token: Option<BuiltinToken>,
}

#[derive(Deserialize, Default)]
struct BuiltinToken {
    service: Option<String>,
    issuer: Option<String>,
    #[serde(default, deserialize_with = "lenient::duration")]
    expiration: Option<Duration>,
    /// Sign with this certificate's key (`key`) instead of an HMAC secret, so other
    /// registries can trust the tokens.
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct Token {
    realm: Option<String>,
    service: Option<String>,
    issuer: Option<String>,
    rootcertbundle: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::bool")]
    autoredirect: Option<bool>,
}

fn builtin_tokens(t: BuiltinToken, origin: &str) -> Result<BuiltinTokens, ConfigError> {
    let signing = match (t.certificate, t.key) {
        (Some(certificate), Some(key)) => Some(CertifiedKey { certificate, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(missing(
                origin,
                "auth.htpasswd.token.key",
                "the private key of auth.htpasswd.token.certificate",
            ))
        }
        (None, Some(_)) => {
            return Err(missing(
                origin,
                "auth.htpasswd.token.certificate",
                "the certificate of auth.htpasswd.token.key",
            ))
        }
    };
    Ok(BuiltinTokens {
        service: t.service.unwrap_or_else(|| "wharf".into()),
        issuer: t.issuer.unwrap_or_else(|| "wharf".into()),
        expiration: t.expiration.unwrap_or(Duration::from_secs(300)),
        signing,
    })
}

fn missing(origin: &str, key: &str, hint: &str) -> ConfigError {
    ConfigError::Value {
        origin: origin.to_owned(),
        key: key.to_owned(),
        message: format!("is required ({hint})"),
    }
}

impl File {
    fn into_config(self, origin: &str, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Value {
            origin: origin.to_owned(),
            key: key.to_owned(),
            message,
        };
        if let Some(v) = &self.version {
            let text = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            if text != "0.1" {
                return Err(bad(
                    "version",
                    format!("{text:?} is not supported (registry:2 configs are version 0.1)"),
                ));
            }
        }
        let database = match self.database {
            Some(d) => d.into_config(origin, warnings)?,
            None => None,
        };
        let root = self
            .storage
            .filesystem
            .as_ref()
            .and_then(|f| f.rootdirectory.clone())
            .unwrap_or_else(super::default_root);
        let mut config = Config::new(root);
        config.database = database;
        if let Some(s3) = self.storage.s3 {
            if self.storage.filesystem.is_some() {
                return Err(bad(
                    "storage",
                    "names both filesystem and s3: choose one driver".into(),
                ));
            }
            let redirect = !self
                .storage
                .redirect
                .as_ref()
                .and_then(|r| r.disable)
                .unwrap_or(false);
            config.s3 = Some(s3.into_config(redirect).map_err(|(k, m)| bad(k, m))?);
        }
        if let Some(addr) = &self.http.addr {
            config.addr = super::parse_addr(addr).map_err(|e| bad("http.addr", e))?;
        }
        if self.http.net.as_deref().is_some_and(|n| n != "tcp") {
            return Err(bad("http.net", "only tcp is supported".into()));
        }
        config.delete_enabled = self.storage.delete.and_then(|d| d.enabled).unwrap_or(false);
        if let Some(m) = self.storage.maintenance {
            config.read_only = m.readonly.and_then(|r| r.enabled).unwrap_or(false);
            if let Some(p) = m.uploadpurging {
                if p.enabled == Some(false) {
                    config.upload_purging = None;
                } else {
                    let defaults = UploadPurging::default();
                    if p.dryrun == Some(true) {
                        warnings.push(format!("{origin}: `storage.maintenance.uploadpurging.dryrun` is not supported; purging disabled"));
                        config.upload_purging = None;
                    } else {
                        config.upload_purging = Some(UploadPurging {
                            age: p.age.unwrap_or(defaults.age),
                            interval: p.interval.unwrap_or(defaults.interval),
                        });
                    }
                }
            }
        }
        config.log = LogConfig {
            level: self.log.level.clone(),
            json: self.log.formatter.as_deref() == Some("json"),
            access_log: !self.log.accesslog.and_then(|a| a.disabled).unwrap_or(false),
        };
        let debug = match self.http.debug {
            Some(d) => d.into_config(origin)?,
            None => None,
        };
        config.http = HttpConfig {
            debug,
            host: self.http.host.clone(),
            relative_urls: self.http.relativeurls.unwrap_or(false),
            drain_timeout: self.http.draintimeout,
            secret: self.http.secret.clone(),
            headers: self
                .http
                .headers
                .unwrap_or_default()
                .into_iter()
                .flat_map(|(k, v)| match v {
                    HeaderValues::Many(vs) => {
                        vs.into_iter().map(|v| (k.clone(), v)).collect::<Vec<_>>()
                    }
                    HeaderValues::One(v) => vec![(k, v)],
                })
                .collect(),
            tls: match self.http.tls {
                Some(Tls {
                    certificate: Some(certificate),
                    key: Some(key),
                }) => Some(TlsConfig { certificate, key }),
                Some(Tls {
                    certificate: None,
                    key: None,
                })
                | None => None,
                Some(_) => return Err(bad("http.tls", "needs both certificate and key".into())),
            },
        };
        config.auth = match self.auth {
            None => None,
            Some(Auth {
                htpasswd: Some(_),
                token: Some(_),
            }) => {
                return Err(bad("auth", "choose one of htpasswd and token".into()));
            }
            Some(Auth {
                htpasswd: Some(h), ..
            }) => Some(AuthConfig::Htpasswd {
                realm: h.realm.unwrap_or_else(|| "Registry Realm".into()),
                path: h
                    .path
                    .ok_or_else(|| missing(origin, "auth.htpasswd.path", "the htpasswd file"))?,
                tokens: h.token.map(|t| builtin_tokens(t, origin)).transpose()?,
            }),
            Some(Auth { token: Some(t), .. }) => Some({
                if t.autoredirect == Some(true) {
                    warnings.push(format!("{origin}: `auth.token.autoredirect` is not supported; the realm is used as given"));
                }
                AuthConfig::Token {
                    realm: t.realm.ok_or_else(|| {
                        missing(origin, "auth.token.realm", "the token server's URL")
                    })?,
                    service: t.service.ok_or_else(|| {
                        missing(
                            origin,
                            "auth.token.service",
                            "the audience tokens are issued for",
                        )
                    })?,
                    issuer: t.issuer.ok_or_else(|| {
                        missing(
                            origin,
                            "auth.token.issuer",
                            "the token server's issuer name",
                        )
                    })?,
                    rootcertbundle: t.rootcertbundle.ok_or_else(|| {
                        missing(
                            origin,
                            "auth.token.rootcertbundle",
                            "PEM certificates that sign tokens",
                        )
                    })?,
                }
            }),
            Some(Auth {
                htpasswd: None,
                token: None,
            }) => {
                return Err(bad(
                    "auth",
                    "names no supported method (htpasswd or token)".into(),
                ));
            }
        };
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
            config.notifications = n.endpoints(origin)?;
        }
        config.health = self.health.and_then(|h| h.storage());
        if let Some(ui) = self.ui {
            config.ui.enabled = ui.enabled.unwrap_or(true);
            config.ui.admins = match ui.admins {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => s
                    .split(',')
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect(),
                Some(Value::Sequence(list)) => list
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        other => Err(bad("ui.admins", format!("{other:?} is not a user name"))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(bad(
                        "ui.admins",
                        format!("{other:?} is not a list of user names"),
                    ))
                }
            };
        }
        if let Some(gc) = self.gc.filter(|g| g.enabled != Some(false)) {
            let defaults = super::GcSchedule::default();
            config.gc = Some(super::GcSchedule {
                interval: gc.interval.unwrap_or(defaults.interval),
                delete_untagged: gc.deleteuntagged.unwrap_or(false),
                grace: gc.grace.unwrap_or(defaults.grace),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use wharf_oci::units::parse_duration;

    use super::*;

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
        let s3 = c.s3.expect("storage.s3");
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
        assert_eq!(c.root, PathBuf::from("/var/lib/registry"));
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
        assert_eq!(c.root, PathBuf::from("/data"));
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
        let (_, warnings) = load_str(
            "version: 0.1\nstorage:\n  delete:\n    enabeld: true\n",
            &[],
        )
        .unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("storage.delete.enabeld")),
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

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_duration("168h").unwrap(),
            Duration::from_secs(168 * 3600)
        );
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("10 parsecs").is_err());
    }
}
