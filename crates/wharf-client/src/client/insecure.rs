//! Which registries may be reached over plain http, decided as the Docker Engine decides:
//! loopback always, and whatever `insecure-registries` lists, as `host[:port]` names or as
//! CIDRs that the registry's host resolves into.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use ipnet::IpNet;

/// Where dockerd reads its configuration, `insecure-registries` among it.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// Registries named by `--insecure-registry`, daemon.json or the engine, split into names
/// and networks.
#[derive(Debug, Clone, Default)]
pub struct InsecureList {
    names: Vec<String>,
    nets: Vec<IpNet>,
}

impl InsecureList {
    /// docker's entries: `host`, `host:port`, `http://host:port` (the scheme is ignored, as
    /// dockerd does) or a CIDR.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> InsecureList {
        let mut list = InsecureList::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let entry = entry
                .strip_prefix("http://")
                .or_else(|| entry.strip_prefix("https://"))
                .unwrap_or(entry)
                .trim_end_matches('/');
            if entry.is_empty() {
                continue;
            }
            match entry.parse::<IpNet>() {
                Ok(net) => list.nets.push(net),
                Err(_) => list.names.push(entry.to_owned()),
            }
        }
        list
    }

    /// Whether `host` (`host[:port]`, as in an image reference) is listed, by name or by an
    /// address it resolves to.
    pub fn contains(&self, host: &str) -> bool {
        if self.names.iter().any(|n| n == host) {
            return true;
        }
        if self.nets.is_empty() {
            return false;
        }
        // Resolved as dockerd resolves it; this blocks briefly, once per client.
        addresses(host_part(host))
            .iter()
            .any(|ip| self.nets.iter().any(|net| net.contains(ip)))
    }
}

/// The host of `host[:port]` or `[v6]:port`, without brackets.
pub fn host_part(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.split_once(':') {
        Some((h, port)) if !port.contains(':') => h,
        _ => host,
    }
}

fn addresses(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    (host, 0)
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default()
}

/// Whether `host` is loopback (`localhost`, 127.0.0.0/8, ::1) by name or address: docker
/// reaches such registries over plain http when they do not speak TLS.
pub fn is_loopback(host: &str) -> bool {
    let name = host_part(host);
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let ips = addresses(name);
    !ips.is_empty() && ips.iter().all(IpAddr::is_loopback)
}

/// `insecure-registries` from a daemon.json. A file that is absent lists nothing; one that
/// cannot be read or parsed is an error, since dockerd would refuse to start with it.
pub fn daemon_json_insecure_registries(path: &Path) -> Result<Vec<String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let Some(list) = value.get("insecure-registries") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or_else(|| {
        format!(
            "{}: insecure-registries must be a list of strings",
            path.display()
        )
    })?;
    list.iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                format!(
                    "{}: insecure-registries holds {v}, which is not a string",
                    path.display()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_networks() {
        let list = InsecureList::new(&[
            "reg.example:5000",
            "http://plain.example:80/",
            "10.20.0.0/16",
            "fd00::/8",
        ]);
        assert!(list.contains("reg.example:5000"));
        assert!(!list.contains("reg.example:5001"));
        assert!(list.contains("plain.example:80"));
        assert!(list.contains("10.20.3.4:5000"));
        assert!(list.contains("10.20.3.4"));
        assert!(!list.contains("10.21.0.1:5000"));
        assert!(list.contains("[fd00::1]:5000"));
        assert!(!InsecureList::new(&["127.0.0.0/8"]).contains("192.0.2.1:5000"));
    }

    #[test]
    fn loopback_as_docker_counts_it() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5261",
            "127.3.2.1",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["192.0.2.1:5000", "[2001:db8::1]:5000", "10.0.0.1"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn daemon_json_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        assert_eq!(
            daemon_json_insecure_registries(&path).unwrap(),
            Vec::<String>::new()
        );
        std::fs::write(
            &path,
            r#"{"insecure-registries": ["127.0.0.1:5000", "10.0.0.0/8"], "mtu": 1400}"#,
        )
        .unwrap();
        assert_eq!(
            daemon_json_insecure_registries(&path).unwrap(),
            ["127.0.0.1:5000", "10.0.0.0/8"]
        );
        std::fs::write(&path, r#"{"insecure-registries": "x"}"#).unwrap();
        assert!(daemon_json_insecure_registries(&path)
            .unwrap_err()
            .contains("must be a list"));
        std::fs::write(&path, "{").unwrap();
        assert!(daemon_json_insecure_registries(&path)
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
