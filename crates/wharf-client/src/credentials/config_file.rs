//! Docker's `config.json`: reading the parts that hold credentials, finding a registry's
//! entry the way docker does, and rewriting the file the way `docker login` does.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Credential, CredentialError, Secret};
use crate::reference::{
    strip_scheme_and_path, Registry, DOCKER_HUB, DOCKER_HUB_API_HOST, DOCKER_HUB_LEGACY,
};

/// The credential-related keys of config.json. Go's decoder accepts `null` for a map, so
/// every field is optional rather than defaulted.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DockerConfig {
    pub auths: Option<BTreeMap<String, AuthEntry>>,
    #[serde(rename = "credsStore")]
    pub creds_store: Option<String>,
    #[serde(rename = "credHelpers")]
    pub cred_helpers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthEntry {
    pub auth: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub identitytoken: Option<String>,
}

/// Which helper config.json assigns to a registry, and which key made the choice.
pub(crate) struct HelperChoice {
    pub name: String,
    pub configured_by: &'static str,
}

/// The hosts a config.json key may name for `registry`. Docker Hub goes by several names;
/// docker itself only knows `https://index.docker.io/v1/`, watchtower also accepts the
/// bare host names, and so do we.
fn hosts_of(registry: &Registry) -> Vec<&str> {
    if registry.is_docker_hub() {
        vec![DOCKER_HUB, DOCKER_HUB_LEGACY, DOCKER_HUB_API_HOST]
    } else {
        vec![registry.as_str()]
    }
}

/// The key of `keys` that names `registry`: the exact key docker login writes first, then
/// (docker's fallback for legacy files) any key whose host, once scheme and path are
/// dropped, is the registry's. Keys are visited in sorted order so the choice is stable.
pub(crate) fn matching_key<'a>(
    keys: impl Iterator<Item = &'a String> + Clone,
    registry: &Registry,
) -> Option<&'a String> {
    let exact = registry.config_key();
    if let Some(k) = keys.clone().find(|k| k.as_str() == exact) {
        return Some(k);
    }
    let hosts = hosts_of(registry);
    keys.into_iter().find(|k| {
        let host = strip_scheme_and_path(k);
        hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    })
}

impl DockerConfig {
    /// The file's content, `None` when there is no file (no credentials, not an error).
    pub fn read(path: &Path) -> Result<Option<DockerConfig>, CredentialError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialError::ConfigUnreadable {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        if text.trim().is_empty() {
            return Ok(Some(DockerConfig::default()));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| CredentialError::ConfigInvalid {
                path: path.to_owned(),
                source,
            })
    }

    /// `credHelpers[<registry>]`, else `credsStore`: docker's `getConfiguredCredentialStore`.
    pub fn helper_for(&self, registry: &Registry) -> Option<HelperChoice> {
        if let Some(helpers) = &self.cred_helpers {
            if let Some(key) = matching_key(helpers.keys(), registry) {
                let name = &helpers[key];
                if !name.is_empty() {
                    return Some(HelperChoice {
                        name: name.clone(),
                        configured_by: "credHelpers",
                    });
                }
            }
        }
        match &self.creds_store {
            Some(name) if !name.is_empty() => Some(HelperChoice {
                name: name.clone(),
                configured_by: "credsStore",
            }),
            _ => None,
        }
    }

    /// The credential in `auths` for `registry`, with the key it was found under.
    pub fn auth_for(
        &self,
        registry: &Registry,
        path: &Path,
    ) -> Result<Option<(String, Credential)>, CredentialError> {
        let Some(auths) = &self.auths else {
            return Ok(None);
        };
        let Some(key) = matching_key(auths.keys(), registry) else {
            return Ok(None);
        };
        let entry = &auths[key];
        let decoded = match non_empty(&entry.auth) {
            Some(auth) => Some(
                decode_auth(auth).ok_or_else(|| CredentialError::BadAuthField {
                    path: path.to_owned(),
                    key: key.clone(),
                })?,
            ),
            None => None,
        };
        let username = decoded
            .as_ref()
            .map(|(u, _)| u.clone())
            .or_else(|| non_empty(&entry.username).map(str::to_owned))
            .unwrap_or_default();
        // An identity token outranks a password: it is what `docker login` keeps when the
        // registry's token server hands out refresh tokens.
        if let Some(token) = non_empty(&entry.identitytoken) {
            return Ok(Some((
                key.clone(),
                Credential::IdentityToken {
                    username,
                    token: Secret::new(token),
                },
            )));
        }
        let password = decoded
            .map(|(_, p)| p)
            .or_else(|| non_empty(&entry.password).map(str::to_owned));
        match password {
            Some(password) if !username.is_empty() || !password.is_empty() => Ok(Some((
                key.clone(),
                Credential::Basic {
                    username,
                    password: Secret::new(password),
                },
            ))),
            // An empty entry (`{}`) is what docker leaves when a helper holds the secret.
            _ => Ok(None),
        }
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// `base64(user:password)`, as docker's `decodeAuth`. Padding is optional because
/// hand-made files (`base64 -w0` of odd-length input piped through other tools) lose it.
fn decode_auth(auth: &str) -> Option<(String, String)> {
    let auth = auth.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

pub(crate) fn encode_auth(username: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
}

/// The whole file as a JSON object, so a rewrite keeps every key it does not touch.
pub(crate) fn read_object(path: &Path) -> Result<Map<String, Value>, CredentialError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(source) => {
            return Err(CredentialError::ConfigUnreadable {
                path: path.to_owned(),
                source,
            })
        }
    };
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CredentialError::ConfigNotObject {
            path: path.to_owned(),
        }),
        Err(source) => Err(CredentialError::ConfigInvalid {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `auths` as a mutable object, created when absent (or `null`, which Go writes for nil).
pub(crate) fn auths_mut<'a>(
    config: &'a mut Map<String, Value>,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, CredentialError> {
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if auths.is_null() {
        *auths = Value::Object(Map::new());
    }
    auths
        .as_object_mut()
        .ok_or_else(|| CredentialError::ConfigNotObject {
            path: path.to_owned(),
        })
}

/// Write `config` to `path` as docker does: tab-indented JSON into a 0600 temporary file in
/// the same directory (created 0700), then renamed over the old file, so a reader never
/// sees half a file. A symlinked config.json is followed, as docker follows it, so the
/// link survives.
pub(crate) fn write_atomic(
    path: &Path,
    config: &Map<String, Value>,
) -> Result<(), CredentialError> {
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::canonicalize(path).map_err(|source| write_error(path, source))?
        }
        _ => path.to_owned(),
    };
    let dir = target.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| write_error(dir, source))?;

    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    serde::Serialize::serialize(config, &mut ser).map_err(|e| write_error(&target, e.into()))?;

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(&target, source));
    }
    Ok(())
}

fn write_error(path: &Path, source: io::Error) -> CredentialError {
    CredentialError::ConfigWrite {
        path: PathBuf::from(path),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> Registry {
        s.parse().expect("registry")
    }

    fn keys(ks: &[&str]) -> Vec<String> {
        ks.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_match_with_and_without_scheme() {
        let r = reg("registry.example.com:5000");
        for key in [
            "registry.example.com:5000",
            "https://registry.example.com:5000",
            "http://registry.example.com:5000",
            "https://registry.example.com:5000/v1/",
        ] {
            let ks = keys(&["other.example.com", key]);
            assert_eq!(
                matching_key(ks.iter(), &r).map(String::as_str),
                Some(key),
                "{key}"
            );
        }
        let ks = keys(&["registry.example.com", "registry.example.com:5001"]);
        assert_eq!(
            matching_key(ks.iter(), &r),
            None,
            "the port is part of the host"
        );
        // The exact key wins over a legacy form.
        let ks = keys(&["https://localhost:5000", "localhost:5000"]);
        assert_eq!(
            matching_key(ks.iter(), &reg("localhost:5000")).map(String::as_str),
            Some("localhost:5000")
        );
    }

    #[test]
    fn docker_hub_keys() {
        let hub = Registry::docker_hub();
        for key in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
            "https://registry-1.docker.io/v2/",
        ] {
            let ks = keys(&["quay.io", key]);
            assert_eq!(
                matching_key(ks.iter(), &hub).map(String::as_str),
                Some(key),
                "{key}"
            );
        }
        let ks = keys(&["docker.io", "https://index.docker.io/v1/"]);
        assert_eq!(
            matching_key(ks.iter(), &hub).map(String::as_str),
            Some("https://index.docker.io/v1/"),
            "docker's own key first"
        );
    }

    #[test]
    fn auth_decoding() {
        assert_eq!(
            decode_auth(&encode_auth("_json_key", "{\"a\":\"b:c\"}")),
            Some(("_json_key".into(), "{\"a\":\"b:c\"}".into()))
        );
        assert_eq!(decode_auth("dTpw"), Some(("u".into(), "p".into())));
        assert_eq!(decode_auth("dTpwcQ"), Some(("u".into(), "pq".into())));
        assert_eq!(decode_auth("bm9jb2xvbg=="), None, "no colon");
        assert_eq!(decode_auth("!!!"), None);
    }
}
