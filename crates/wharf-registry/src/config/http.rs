//! `http:`: where to listen, TLS, the headers added to every response, and the debug
//! listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{lenient, ConfigError, HttpConfig, TlsConfig};

#[derive(Deserialize, Default)]
pub(super) struct Http {
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

impl Http {
    /// `http.addr` when it is set, and the rest of the section.
    pub(super) fn into_config(
        self,
        origin: &str,
    ) -> Result<(Option<SocketAddr>, HttpConfig), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::value(origin, key, message);
        let addr = match &self.addr {
            Some(addr) => Some(
                super::parse_addr(addr).map_err(|e| ConfigError::value(origin, "http.addr", e))?,
            ),
            None => None,
        };
        if self.net.as_deref().is_some_and(|n| n != "tcp") {
            return Err(bad("http.net", "only tcp is supported"));
        }
        let debug = match self.debug {
            Some(d) => d.into_config(origin)?,
            None => None,
        };
        let tls = match self.tls {
            Some(Tls {
                certificate: Some(certificate),
                key: Some(key),
            }) => Some(TlsConfig { certificate, key }),
            Some(Tls {
                certificate: None,
                key: None,
            })
            | None => None,
            Some(_) => return Err(bad("http.tls", "needs both certificate and key")),
        };
        let headers = self
            .headers
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(k, v)| match v {
                HeaderValues::Many(vs) => {
                    vs.into_iter().map(|v| (k.clone(), v)).collect::<Vec<_>>()
                }
                HeaderValues::One(v) => vec![(k, v)],
            })
            .collect();
        let http = HttpConfig {
            debug,
            host: self.host,
            relative_urls: self.relativeurls.unwrap_or(false),
            drain_timeout: self.draintimeout,
            secret: self.secret,
            headers,
            tls,
        };
        Ok((addr, http))
    }
}
