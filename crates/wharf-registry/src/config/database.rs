//! `database:`, GitLab container registry's metadata database, with its key names
//! (`REGISTRY_DATABASE_HOST` and so on set the same keys; values arrive as strings).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{lenient, ConfigError};
use crate::store::built_without;
use crate::store::postgres::{DatabaseConfig, PoolConfig, DEFAULT_CONNECT_TIMEOUT};

/// libpq's names, as sqlx reads them (in any case).
const SSLMODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

#[derive(Deserialize, Default)]
pub(super) struct Database {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    host: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    port: Option<u64>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
    sslrootcert: Option<PathBuf>,
    #[serde(default, deserialize_with = "lenient::duration")]
    connecttimeout: Option<Duration>,
    pool: Option<Pool>,
}

#[derive(Deserialize, Default)]
struct Pool {
    #[serde(default, deserialize_with = "lenient::u64")]
    maxidle: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    maxopen: Option<u64>,
    #[serde(default, deserialize_with = "lenient::duration")]
    maxlifetime: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    maxidletime: Option<Duration>,
}

impl Database {
    /// The database to keep metadata in, or None when it is not enabled.
    pub(super) fn into_config(
        self,
        origin: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Option<DatabaseConfig>, ConfigError> {
        if self.enabled != Some(true) {
            return Ok(None);
        }
        if !cfg!(feature = "postgres") {
            return Err(ConfigError::value(
                origin,
                "database",
                built_without("postgres", "a metadata database"),
            ));
        }
        let bad = |key: &str, message: String| ConfigError::Value {
            origin: origin.to_owned(),
            key: format!("database.{key}"),
            message,
        };
        let required = |v: Option<String>, key: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| bad(key, "is required when database.enabled is true".into()))
        };
        let port = match self.port {
            None => 5432,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("port", format!("{p} is not a TCP port")))?,
        };
        let sslmode = self.sslmode.unwrap_or_else(|| "prefer".into());
        if !SSLMODES.contains(&sslmode.to_ascii_lowercase().as_str()) {
            return Err(bad(
                "sslmode",
                format!("{sslmode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"),
            ));
        }
        let pool = self.pool.unwrap_or_default();
        if pool.maxidle.is_some() {
            warnings.push(format!(
                "{origin}: `database.pool.maxidle` is not supported: idle connections are closed after database.pool.maxidletime instead"
            ));
        }
        let max_open = match pool.maxopen {
            None | Some(0) => None, // GitLab's 0: no limit of its own; the pool's default applies
            Some(n) => Some(
                u32::try_from(n)
                    .map_err(|_| bad("pool.maxopen", format!("{n} is too many connections")))?,
            ),
        };
        let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        Ok(Some(DatabaseConfig {
            host: self
                .host
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into()),
            port,
            user: required(self.user, "user")?,
            password: self.password.filter(|p| !p.is_empty()),
            dbname: required(self.dbname, "dbname")?,
            sslmode,
            sslcert: self.sslcert,
            sslkey: self.sslkey,
            sslrootcert: self.sslrootcert,
            connect_timeout: nonzero(self.connecttimeout).unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            pool: PoolConfig {
                max_open,
                max_lifetime: nonzero(pool.maxlifetime),
                max_idle_time: nonzero(pool.maxidletime),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<super::super::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, yaml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        super::super::load(Some(&path), env)
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn gitlab_keys_and_their_variables() {
        let yaml = "version: 0.1\ndatabase:\n  enabled: true\n  host: db.internal\n  user: registry\n  password: secret\n  dbname: registry\n  pool:\n    maxopen: 4\n    maxlifetime: 5m\n";
        let c = load(yaml, &[]).unwrap();
        let db = c.database.expect("enabled");
        assert_eq!((db.host.as_str(), db.port), ("db.internal", 5432));
        assert_eq!(db.pool.max_open, Some(4));
        assert_eq!(db.pool.max_lifetime, Some(Duration::from_secs(300)));
        assert!(
            !format!("{db:?}").contains("secret"),
            "no password in Debug"
        );

        let env = [
            ("REGISTRY_DATABASE_ENABLED", "true"),
            ("REGISTRY_DATABASE_HOST", "127.0.0.1"),
            ("REGISTRY_DATABASE_PORT", "15432"),
            ("REGISTRY_DATABASE_USER", "u"),
            ("REGISTRY_DATABASE_DBNAME", "d"),
            ("REGISTRY_DATABASE_SSLMODE", "disable"),
            ("REGISTRY_DATABASE_CONNECTTIMEOUT", "2s"),
            ("REGISTRY_DATABASE_POOL_MAXIDLETIME", "30s"),
        ];
        let db = load("version: 0.1\n", &env).unwrap().database.unwrap();
        assert_eq!(db.port, 15432);
        assert_eq!(db.sslmode, "disable");
        assert_eq!(db.connect_timeout, Duration::from_secs(2));
        assert_eq!(db.pool.max_idle_time, Some(Duration::from_secs(30)));
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = "version: 0.1\ndatabase:\n  enabled: true\n  user: u\n";
        let err = load(base, &[]).unwrap_err();
        assert!(err.contains("database.dbname"), "{err}");
        let err = load(&format!("{base}  dbname: d\n  sslmode: maybe\n"), &[]).unwrap_err();
        assert!(err.contains("database.sslmode"), "{err}");
        let err = load(&format!("{base}  dbname: d\n  port: 70000\n"), &[]).unwrap_err();
        assert!(err.contains("database.port"), "{err}");
        let off = "version: 0.1\ndatabase:\n  enabled: false\n  host: db\n";
        assert!(load(off, &[]).unwrap().database.is_none());
    }
}
