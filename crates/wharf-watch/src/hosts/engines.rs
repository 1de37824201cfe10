//! Which engines a fleet reaches itself: `--host` given more than once (`URL`, or
//! `NAME=URL` to name it in reports), or a hosts file, one engine a line:
//!
//! ```text
//! # name   url                            options (docker's TLS flags, for tcp://)
//! local    unix:///var/run/docker.sock
//! web-1    tcp://10.0.0.5:2376            tlsverify cert-path=/etc/wharf/web-1
//! web-2    tcp://10.0.0.6:2376            tlscacert=/ca.pem tlscert=/c.pem tlskey=/k.pem
//! ```
//!
//! Also the TLS listener the agents' controller serves on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use tokio::net::TcpListener;

use crate::engine::{Engine, EngineError, TlsFiles};

/// One engine to manage.
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub name: String,
    pub url: String,
    /// How to reach a tcp:// engine over TLS (`docker --tlsverify`); `None`: plain.
    pub tls: Option<TlsFiles>,
}

/// A `--host` value: `URL` or `NAME=URL`. `tls` (from `--tlsverify`) applies to tcp://.
pub fn from_flag(value: &str, tls: Option<&TlsFiles>) -> HostSpec {
    let (name, url) = match value.split_once('=') {
        Some((name, url)) if !name.contains('/') && !name.contains(':') => {
            (name.to_owned(), url.to_owned())
        }
        _ => (default_name(value), value.to_owned()),
    };
    let tls = tls.filter(|_| is_tcp(&url)).cloned();
    HostSpec { name, url, tls }
}

fn is_tcp(url: &str) -> bool {
    url.starts_with("tcp://") || url.starts_with("https://")
}

/// What a host is called when nobody named it: the socket's path, or `host:port`.
fn default_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/').to_owned()
}

/// The hosts file's engines.
pub fn read_file(path: &Path) -> Result<Vec<HostSpec>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --hosts-file {}: {e}", path.display()))?;
    let mut specs: Vec<HostSpec> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        specs.push(parse_line(line).map_err(|e| format!("{at}: {e}"))?);
    }
    Ok(specs)
}

fn parse_line(line: &str) -> Result<HostSpec, String> {
    let mut words = line.split_whitespace();
    let (Some(name), Some(url)) = (words.next(), words.next()) else {
        return Err(
            "expected `NAME URL [tlsverify] [cert-path=DIR] [tlscacert=F tlscert=F tlskey=F]`"
                .into(),
        );
    };
    let (mut verify, mut dir, mut ca, mut cert, mut key) = (false, None, None, None, None);
    for option in words {
        match option.split_once('=') {
            None if option == "tlsverify" => verify = true,
            Some(("cert-path", v)) => dir = Some(PathBuf::from(v)),
            Some(("tlscacert", v)) => ca = Some(PathBuf::from(v)),
            Some(("tlscert", v)) => cert = Some(PathBuf::from(v)),
            Some(("tlskey", v)) => key = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown option {option:?}: use tlsverify, cert-path=, tlscacert=, tlscert= or tlskey=")),
        }
    }
    let tls = tls_files(verify, dir, ca, cert, key);
    if tls.is_some() && !is_tcp(url) {
        return Err(format!("TLS options need a tcp:// engine, not {url}"));
    }
    Ok(HostSpec {
        name: name.to_owned(),
        url: url.to_owned(),
        tls,
    })
}

/// docker's rules: `--tlsverify` (or any of the three files) turns TLS on; each file
/// defaults to its name in the cert directory (`DOCKER_CERT_PATH`, else `~/.docker`).
pub fn tls_files(
    verify: bool,
    dir: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Option<TlsFiles> {
    if !verify && ca.is_none() && cert.is_none() && key.is_none() {
        return None;
    }
    let dir = dir.unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker")
    });
    let defaults = TlsFiles::in_dir(&dir);
    Some(TlsFiles {
        ca: ca.unwrap_or(defaults.ca),
        cert: cert.unwrap_or(defaults.cert),
        key: key.unwrap_or(defaults.key),
    })
}

/// Names must tell hosts apart in reports and on the dashboard.
pub fn check_names(specs: &[HostSpec]) -> Result<(), String> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("two hosts are named {}: name them (`--host NAME=URL`, or the hosts file's first column)", s.name));
        }
    }
    Ok(())
}

/// Connect to every engine at once. In a fleet, an engine that does not answer now is
/// kept (and reported by each session until it does); a lone engine must answer.
pub async fn connect_all(
    specs: &[HostSpec],
    api_version: Option<&str>,
) -> Result<Vec<Engine>, EngineError> {
    let tries = specs
        .iter()
        .map(|s| Engine::connect_with(Some(&s.url), api_version, s.tls.as_ref()));
    let results = futures::future::join_all(tries).await;
    let mut engines = Vec::new();
    for (spec, result) in specs.iter().zip(results) {
        match result {
            Ok(engine) => engines.push(engine),
            Err(e) if specs.len() > 1 => {
                tracing::error!(host = %spec.name, error = %e, "this engine does not answer; the other hosts go on, and each check reports it until it is back");
                engines.push(Engine::offline(&spec.url, api_version, spec.tls.as_ref())?);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(engines)
}

/// Serve `router` over TLS on `listener`, WebSocket upgrades included, with each
/// request's peer address as axum's `ConnectInfo`.
pub async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, router: Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                    let mut router = router.clone();
                    async move {
                        use tower_service::Service;
                        router.call(req.map(axum::body::Body::new)).await
                    }
                },
            );
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_named_by_flag_or_by_file() {
        let a = from_flag("edge=unix:///run/edge.sock", None);
        assert_eq!(
            (a.name.as_str(), a.url.as_str()),
            ("edge", "unix:///run/edge.sock")
        );
        let b = from_flag(
            "tcp://10.0.0.5:2376",
            Some(&TlsFiles::in_dir(Path::new("/c"))),
        );
        assert_eq!(b.name, "10.0.0.5:2376");
        assert_eq!(b.tls.unwrap().key, PathBuf::from("/c/key.pem"));
        assert!(
            from_flag("unix:///x.sock", Some(&TlsFiles::in_dir(Path::new("/c"))))
                .tls
                .is_none()
        );
        let line = parse_line("web tcp://h:2376 tlsverify cert-path=/d tlskey=/k.pem").unwrap();
        let tls = line.tls.unwrap();
        assert_eq!(
            (tls.ca, tls.key),
            (PathBuf::from("/d/ca.pem"), PathBuf::from("/k.pem"))
        );
        assert!(parse_line("web unix:///s tlsverify").is_err());
        assert!(parse_line("web tcp://h:1 colour=blue").is_err());
        let twice = [
            from_flag("a=unix:///1", None),
            from_flag("a=unix:///2", None),
        ];
        assert!(check_names(&twice).is_err());
    }
}
