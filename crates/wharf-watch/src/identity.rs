//! Which registry a host names. Events, containers and flags spell one registry in
//! different ways: `localhost:5000`, `127.0.0.1:5000` and `[::1]:5000` are the same
//! loopback registry, so an event announced under one spelling must reach a container
//! created under another. Host names compare without regard to case, as DNS does.

use std::net::IpAddr;

use wharf_client::{ImageRef, Registry};

/// One spelling per registry: loopback hosts become `localhost`, the port kept.
pub fn canonical(registry: &Registry) -> String {
    let (host, port) = split_host_port(registry.as_str());
    let host = if is_loopback(host) {
        "localhost".to_owned()
    } else {
        host.to_ascii_lowercase()
    };
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

pub fn same_registry(a: &Registry, b: &Registry) -> bool {
    canonical(a) == canonical(b)
}

/// An image reference keyed by its registry's identity: `localhost:5000/app:1` and
/// `127.0.0.1:5000/app:1` give one key.
pub fn image_key(image: &ImageRef) -> String {
    let mut key = format!("{}/{}", canonical(image.registry()), image.repository());
    if let Some(tag) = image.tag() {
        key.push(':');
        key.push_str(tag.as_str());
    }
    if let Some(digest) = image.digest() {
        key.push('@');
        key.push_str(&digest.to_string());
    }
    key
}

/// `host` and `port` of `host[:port]`, `[v6][:port]` or a bare IPv6 address.
fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((v6, after)) = rest.split_once(']') {
            return (v6, after.strip_prefix(':'));
        }
    }
    if text.matches(':').count() > 1 {
        return (text, None);
    }
    match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
}

/// By name or address only: resolving names here would make matching depend on DNS.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Registry {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_aliases_of_one_port_are_one_registry() {
        for alias in [
            "127.0.0.1:6101",
            "[::1]:6101",
            "LOCALHOST:6101",
            "127.0.0.2:6101",
        ] {
            assert!(same_registry(&r("localhost:6101"), &r(alias)), "{alias}");
        }
        assert!(!same_registry(&r("localhost:6101"), &r("localhost:6102")));
        assert!(!same_registry(&r("localhost:6101"), &r("10.0.0.1:6101")));
        assert!(!same_registry(&r("localhost"), &r("localhost:443")));
        assert!(same_registry(&r("Reg.Example.com"), &r("reg.example.com")));
        let a: ImageRef = "127.0.0.1:6101/nc/app:1".parse().unwrap();
        let b: ImageRef = "localhost:6101/nc/app:1".parse().unwrap();
        assert_eq!(image_key(&a), image_key(&b));
        assert_eq!(image_key(&a), "localhost:6101/nc/app:1");
    }
}
