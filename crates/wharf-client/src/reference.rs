//! Image references as docker parses them: `[registry[:port]/]repo[:tag][@digest]`.
//!
//! The rules follow distribution/reference's `ParseNormalizedNamed`, so that a name a user
//! gives wharf means the same image it means to `docker pull`:
//! - the first path component is a registry when it contains `.` or `:`, is `localhost`, or
//!   has an uppercase letter (a repository never can); otherwise the registry is Docker Hub;
//! - `index.docker.io` is the legacy name of `docker.io`;
//! - on Docker Hub a single-component repository lives under `library/`;
//! - without a tag or digest, the tag is `latest`.

use std::fmt;
use std::str::FromStr;

use wharf_oci::{Digest, Reference, RepoName, Tag};

/// The registry name used when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";
/// What docker itself calls Docker Hub in old references and config files.
pub const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key `docker login` uses for Docker Hub in config.json and credential helpers.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference is empty: give one like `busybox`, `alpine:3.20` or `localhost:5000/app@sha256:...`")]
    Empty,
    #[error("image reference {0:?} has no repository name: give one like `busybox:{1}`")]
    MissingRepository(String, String),
    #[error("image reference {reference:?}: {source} (repository names must be lowercase)")]
    Repository {
        reference: String,
        source: wharf_oci::name::NameError,
    },
    #[error("image reference {reference:?}: {source}")]
    Tag {
        reference: String,
        source: wharf_oci::name::NameError,
    },
    #[error("image reference {reference:?}: {source}")]
    Digest {
        reference: String,
        source: wharf_oci::digest::DigestError,
    },
    #[error("registry {0:?} is not a valid host[:port]: use a host name, an IPv4 address or [IPv6], optionally with a port from 1 to 65535")]
    Registry(String),
}

/// A registry host, `host[:port]`, normalised so that Docker Hub is always `docker.io`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registry(Box<str>);

impl Registry {
    pub fn docker_hub() -> Registry {
        Registry(DOCKER_HUB.into())
    }

    /// The registry of a config.json key or `docker login` argument: docker accepts
    /// `https://host/v1/`, `http://host` and plain `host`, and means the host in each.
    pub fn from_server_address(address: &str) -> Result<Registry, ReferenceError> {
        address.parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_docker_hub(&self) -> bool {
        &*self.0 == DOCKER_HUB
    }

    /// Where to send `/v2/` requests: Docker Hub's API is not served at `docker.io`.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API_HOST
        } else {
            &self.0
        }
    }

    /// The key `docker login` writes for this registry in config.json, and the server URL
    /// it hands to credential helpers.
    pub fn config_key(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_CONFIG_KEY
        } else {
            &self.0
        }
    }
}

/// The host part of a config.json key: docker's `ConvertToHostname` (drop the scheme and
/// anything after the first `/`).
pub(crate) fn strip_scheme_and_path(address: &str) -> &str {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    rest.split('/').next().unwrap_or(rest)
}

impl FromStr for Registry {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let host = strip_scheme_and_path(s.trim());
        if !valid_domain(host) {
            return Err(ReferenceError::Registry(s.to_owned()));
        }
        if host == DOCKER_HUB_LEGACY {
            return Ok(Registry::docker_hub());
        }
        Ok(Registry(host.into()))
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `host[:port]` where host is dot-separated labels of `[A-Za-z0-9-]` (not starting or
/// ending with `-`), or a bracketed IPv6 address — distribution's domain grammar.
fn valid_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(port) = port {
        let ok = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !ok {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// A fully normalised image reference. At least one of tag and digest is present.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: Registry,
    repository: RepoName,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

impl ImageRef {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn repository(&self) -> &RepoName {
        &self.repository
    }

    pub fn tag(&self) -> Option<&Tag> {
        self.tag.as_ref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to put in `/v2/<repo>/manifests/<reference>`. A digest wins over a tag, as in
    /// docker: `name:tag@digest` pins the digest and the tag is only a label.
    pub fn manifest_reference(&self) -> Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Reference::Digest(d.clone()),
            (None, Some(t)) => Reference::Tag(t.clone()),
            // Parsing guarantees one of them; `latest` keeps this total without a panic.
            (None, None) => Reference::Tag(latest()),
        }
    }

    /// The token scope for `actions` on this repository: `repository:<repo>:pull,push`.
    pub fn scope(&self, actions: &[&str]) -> String {
        format!("repository:{}:{}", self.repository, actions.join(","))
    }

    /// The short form docker shows: no `docker.io/`, no `library/`.
    pub fn familiar(&self) -> String {
        let mut out = String::new();
        if self.registry.is_docker_hub() {
            let repo = self.repository.as_str();
            out.push_str(repo.strip_prefix("library/").unwrap_or(repo));
        } else {
            out.push_str(self.registry.as_str());
            out.push('/');
            out.push_str(self.repository.as_str());
        }
        self.push_suffix(&mut out);
        out
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t.as_str());
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(&d.to_string());
        }
    }
}

fn latest() -> Tag {
    Tag::from_str("latest").unwrap_or_else(|_| unreachable!("`latest` is a valid tag"))
}

/// Split off the registry as distribution's `splitDockerDomain` does.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|source| ReferenceError::Digest {
                        reference: s.to_owned(),
                        source,
                    })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // A tag is a `:` after the last `/`; an earlier `:` belongs to the registry's port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &name_and_tag[at + 1..];
                let tag = tag.parse::<Tag>().map_err(|source| ReferenceError::Tag {
                    reference: s.to_owned(),
                    source,
                })?;
                (&name_and_tag[..at], Some(tag))
            }
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            let example = tag.as_ref().map_or("latest", |t| t.as_str()).to_owned();
            return Err(ReferenceError::MissingRepository(s.to_owned(), example));
        }
        let (registry, path) = split_registry(name);
        let registry = match registry {
            Some(r) => {
                // Only a bare host is allowed here: no scheme, no path.
                if !valid_domain(r) {
                    return Err(ReferenceError::Registry(r.to_owned()));
                }
                r.parse::<Registry>()?
            }
            None => Registry::docker_hub(),
        };
        let path = if registry.is_docker_hub() && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let repository = path
            .parse::<RepoName>()
            .map_err(|source| ReferenceError::Repository {
                reference: s.to_owned(),
                source,
            })?;
        let tag = match (tag, &digest) {
            (None, None) => Some(latest()),
            (tag, _) => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// The full, normalised form (`docker.io/library/busybox:latest`), which parses back to
/// the same reference.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("{}/{}", self.registry, self.repository);
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(s: &str) -> ImageRef {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = parse(s);
        (
            r.registry().to_string(),
            r.repository().to_string(),
            r.tag().map(|t| t.to_string()),
            r.digest().map(|d| d.to_string()),
        )
    }

    fn p(
        reg: &str,
        repo: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> (String, String, Option<String>, Option<String>) {
        (
            reg.into(),
            repo.into(),
            tag.map(Into::into),
            digest.map(Into::into),
        )
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(
            parts("busybox"),
            p("docker.io", "library/busybox", Some("latest"), None)
        );
        assert_eq!(
            parts("library/busybox:1.36"),
            p("docker.io", "library/busybox", Some("1.36"), None)
        );
        assert_eq!(
            parts("index.docker.io/busybox"),
            p("docker.io", "library/busybox", Some("latest"), None)
        );
        assert_eq!(
            parts("docker.io/containrrr/watchtower"),
            p("docker.io", "containrrr/watchtower", Some("latest"), None)
        );
        let hub = parse("busybox");
        assert_eq!(hub.registry().api_host(), "registry-1.docker.io");
        assert_eq!(hub.registry().config_key(), "https://index.docker.io/v1/");
        assert_eq!(hub.familiar(), "busybox:latest");
    }

    #[test]
    fn private_registry_hosts_from_the_seed() {
        assert_eq!(
            parts("localhost/myimage"),
            p("localhost", "myimage", Some("latest"), None)
        );
        assert_eq!(
            parts("127.0.0.1/myimage:mytag"),
            p("127.0.0.1", "myimage", Some("mytag"), None)
        );
        assert_eq!(
            parts("host.domain/myorganization/myimage"),
            p(
                "host.domain",
                "myorganization/myimage",
                Some("latest"),
                None
            )
        );
        assert_eq!(
            parts("other-lan-host:80/imagename:latest"),
            p("other-lan-host:80", "imagename", Some("latest"), None)
        );
        let r = parse("other-lan-host:80/imagename:latest");
        assert_eq!(r.registry().api_host(), "other-lan-host:80");
        assert_eq!(r.registry().config_key(), "other-lan-host:80");
        assert_eq!(r.familiar(), "other-lan-host:80/imagename:latest");
        // A lowercase first component without '.' or ':' is a Docker Hub namespace.
        assert_eq!(
            parts("other-lan-host/imagename"),
            p(
                "docker.io",
                "other-lan-host/imagename",
                Some("latest"),
                None
            )
        );
    }

    #[test]
    fn digests_with_and_without_tags() {
        let d = format!("sha256:{HEX}");
        let r = parse(&format!("localhost:5000/a/b@{d}"));
        assert_eq!(r.registry().as_str(), "localhost:5000");
        assert_eq!(r.repository().as_str(), "a/b");
        assert_eq!(r.tag(), None, "a digest alone does not imply latest");
        assert_eq!(r.manifest_reference().to_string(), d);

        let r = parse(&format!("docker.io/pliutau/hello-world:v0@{d}"));
        assert_eq!(r.repository().as_str(), "pliutau/hello-world");
        assert_eq!(r.tag().map(|t| t.as_str()), Some("v0"));
        assert_eq!(r.manifest_reference().to_string(), d, "the digest wins");
        assert_eq!(r.familiar(), format!("pliutau/hello-world:v0@{d}"));
        assert_eq!(
            r.scope(&["pull", "push"]),
            "repository:pliutau/hello-world:pull,push"
        );
    }

    #[test]
    fn display_round_trips() {
        let d = format!("sha256:{HEX}");
        for s in [
            "busybox".to_owned(),
            "library/busybox:1.36".to_owned(),
            "localhost/myimage".to_owned(),
            "127.0.0.1/myimage:mytag".to_owned(),
            "host.domain/myorganization/myimage".to_owned(),
            "other-lan-host:80/imagename:latest".to_owned(),
            format!("localhost:5000/a/b@{d}"),
            format!("docker.io/pliutau/hello-world:v0@{d}"),
            "[::1]:5000/x/y:z".to_owned(),
        ] {
            let r = parse(&s);
            let shown = r.to_string();
            assert_eq!(parse(&shown), r, "{s} -> {shown}");
            assert_eq!(parse(&r.familiar()), r, "{s} -> {}", r.familiar());
        }
        assert_eq!(
            parse("busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn invalid_references_say_why() {
        let err = |s: &str| {
            s.parse::<ImageRef>()
                .expect_err(&format!("{s:?} should be rejected"))
        };
        assert_eq!(err(""), ReferenceError::Empty);
        assert!(matches!(
            err(":tag"),
            ReferenceError::MissingRepository(_, t) if t == "tag"
        ));
        let upper = err("Busybox").to_string();
        assert!(upper.contains("lowercase"), "{upper}");
        // An uppercase first component is a registry, as in docker, so the error is about
        // the remaining repository only when that is invalid too.
        assert!(parse("MyHost/app").registry().as_str() == "MyHost");
        assert!(matches!(
            err("localhost/My/App"),
            ReferenceError::Repository { .. }
        ));
        let bad = err("busybox@sha256:abc").to_string();
        assert!(bad.contains("64 lowercase hex"), "{bad}");
        assert!(matches!(
            err("busybox@md5:00"),
            ReferenceError::Digest { .. }
        ));
        assert!(matches!(err("busybox:a+b"), ReferenceError::Tag { .. }));
        assert!(matches!(err("busybox:-x"), ReferenceError::Tag { .. }));
        assert!(matches!(err("host:99999/app"), ReferenceError::Registry(_)));
        assert!(matches!(err("-bad.host/app"), ReferenceError::Registry(_)));
        assert!(matches!(
            err("localhost/"),
            ReferenceError::Repository { .. }
        ));
    }

    #[test]
    fn registries_from_config_keys() {
        for (key, host) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("http://localhost:5000", "localhost:5000"),
            ("https://registry.example.com/v2/", "registry.example.com"),
            ("registry.example.com", "registry.example.com"),
        ] {
            assert_eq!(
                Registry::from_server_address(key).map(|r| r.to_string()),
                Ok(host.to_owned()),
                "{key}"
            );
        }
        assert!(Registry::from_server_address("bad host").is_err());
    }
}
