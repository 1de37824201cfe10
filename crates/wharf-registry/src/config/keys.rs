//! Which config keys exist. A key wharf does not read is one of three kinds: one registry:2
//! defines (real configs carry them, so a warning), one under wharf's own sections (strict:
//! nobody else's config has them, so it is a typo), or one nobody defines (a typo too, as
//! `http.adr`). A typo must stop the start: otherwise the server runs on defaults the
//! operator never chose.

/// Every key registry:2 reads (Distribution 2.8 and 3.0, `configuration/configuration.go`
/// and the drivers' parameters). `*` is one segment (a list index or a map key); a trailing
/// `**` is anything below.
const REGISTRY2: &[&str] = &[
    "version",
    "loglevel",
    "log.level",
    "log.formatter",
    "log.fields.**",
    "log.hooks.**",
    "log.reportcaller",
    "log.accesslog.disabled",
    "storage.filesystem.rootdirectory",
    "storage.filesystem.maxthreads",
    "storage.inmemory.**",
    "storage.s3.**",
    "storage.azure.**",
    "storage.gcs.**",
    "storage.swift.**",
    "storage.oss.**",
    "storage.delete.enabled",
    "storage.cache.blobdescriptor",
    "storage.cache.blobdescriptorsize",
    "storage.redirect.disable",
    "storage.tag.concurrencylimit",
    "storage.maintenance.uploadpurging.enabled",
    "storage.maintenance.uploadpurging.age",
    "storage.maintenance.uploadpurging.interval",
    "storage.maintenance.uploadpurging.dryrun",
    "storage.maintenance.readonly.enabled",
    "auth.silly.realm",
    "auth.silly.service",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
    "auth.token.realm",
    "auth.token.service",
    "auth.token.issuer",
    "auth.token.rootcertbundle",
    "auth.token.autoredirect",
    "auth.token.autoredirectpath",
    "auth.token.jwks",
    "auth.token.signingalgorithms",
    "middleware.**",
    "reporting.bugsnag.apikey",
    "reporting.bugsnag.releasestage",
    "reporting.bugsnag.endpoint",
    "reporting.newrelic.licensekey",
    "reporting.newrelic.name",
    "reporting.newrelic.verbose",
    "http.addr",
    "http.net",
    "http.host",
    "http.prefix",
    "http.secret",
    "http.relativeurls",
    "http.draintimeout",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.clientcas",
    "http.tls.clientcas.*",
    "http.tls.clientauth",
    "http.tls.minimumtls",
    "http.tls.ciphersuites",
    "http.tls.ciphersuites.*",
    "http.tls.letsencrypt.cachefile",
    "http.tls.letsencrypt.email",
    "http.tls.letsencrypt.hosts",
    "http.tls.letsencrypt.hosts.*",
    "http.tls.letsencrypt.directoryurl",
    "http.headers.**",
    "http.debug.addr",
    "http.debug.prometheus.enabled",
    "http.debug.prometheus.path",
    "http.http2.disabled",
    "http.h2c.enabled",
    "notifications.events.includereferences",
    "notifications.endpoints.*.name",
    "notifications.endpoints.*.disabled",
    "notifications.endpoints.*.url",
    "notifications.endpoints.*.headers.**",
    "notifications.endpoints.*.timeout",
    "notifications.endpoints.*.threshold",
    "notifications.endpoints.*.backoff",
    "notifications.endpoints.*.ignoredmediatypes.**",
    "notifications.endpoints.*.ignore.mediatypes.**",
    "notifications.endpoints.*.ignore.actions.**",
    "redis.**",
    "health.storagedriver.enabled",
    "health.storagedriver.interval",
    "health.storagedriver.threshold",
    "health.file.*.file",
    "health.file.*.interval",
    "health.file.*.threshold",
    "health.http.*.uri",
    "health.http.*.headers.**",
    "health.http.*.statuscode",
    "health.http.*.timeout",
    "health.http.*.interval",
    "health.http.*.threshold",
    "health.tcp.*.addr",
    "health.tcp.*.timeout",
    "health.tcp.*.interval",
    "health.tcp.*.threshold",
    "catalog.maxentries",
    "proxy.remoteurl",
    "proxy.username",
    "proxy.password",
    "proxy.ttl",
    "compatibility.schema1.signingkeyfile",
    "compatibility.schema1.enabled",
    "validation.enabled",
    "validation.disabled",
    "validation.manifests.urls.allow.**",
    "validation.manifests.urls.deny.**",
    "policy.repository.classes.**",
];

/// Keys wharf adds inside registry:2's sections; only for suggesting the right spelling.
const WHARF_EXTENSIONS: &[&str] = &[
    "auth.htpasswd.token.service",
    "auth.htpasswd.token.issuer",
    "auth.htpasswd.token.expiration",
    "auth.htpasswd.token.certificate",
    "auth.htpasswd.token.key",
    "notifications.eventlog",
    "proxy.upstreams.*.prefix",
    "proxy.upstreams.*.host",
    "proxy.upstreams.*.default",
    "proxy.upstreams.*.remoteurl",
    "proxy.upstreams.*.username",
    "proxy.upstreams.*.password",
    "proxy.upstreams.*.ttl",
    "proxy.retention",
    "proxy.maxsize",
    "ui.enabled",
    "ui.admins",
    "ui.title",
    "gc.enabled",
    "gc.interval",
    "gc.deleteuntagged",
    "gc.grace",
    "gc.workers",
    "gc.reviewafter",
    "gc.reviewinterval",
    "audit.enabled",
    "audit.pulls",
    "audit.file",
];

/// wharf's own top-level sections: any key there wharf does not read is a mistake.
/// (`database:` is GitLab's, whose configs carry keys wharf does not act on.)
const WHARF_SECTIONS: &[&str] = &[
    "access",
    "audit",
    "gc",
    "ui",
    "retention",
    "immutable",
    "quotas",
    "replication",
    "trust",
];

/// What to do about a key wharf did not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// registry:2 (or GitLab's `database:`) defines it; wharf does not act on it.
    Foreign,
    /// Nobody defines it: the message names it and the closest key that exists.
    Unknown(String),
}

/// Classify `key` (dotted, as serde_ignored reports it; list indexes are numbers).
pub fn classify(key: &str) -> Unread {
    let segments: Vec<&str> = key.split('.').collect();
    let top = segments[0];
    let own = WHARF_SECTIONS.contains(&top);
    if !own && (top == "database" || REGISTRY2.iter().any(|p| matches(p, &segments))) {
        return Unread::Foreign;
    }
    let (leaf, parent) = segments.split_last().expect("split never yields nothing");
    let hint = closest(leaf, parent)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_else(|| {
            if own {
                format!("; see the README for the keys of `{top}:`")
            } else {
                "; neither registry:2 nor wharf reads it: check its spelling, or remove it"
                    .to_owned()
            }
        });
    Unread::Unknown(format!("unknown key `{key}`{hint}"))
}

/// Whether `pattern` covers the key, or the key is a section above it: serde_ignored
/// reports a section wharf does not read at all (`redis`) as one key.
fn matches(pattern: &str, key: &[&str]) -> bool {
    let mut p = pattern.split('.');
    for seg in key {
        match p.next() {
            Some("**") => return true,
            Some(want) if want == "*" || want == *seg => {}
            _ => return false,
        }
    }
    true
}

/// The known key under the same parent nearest to `leaf`, if near enough to be a typo.
fn closest(leaf: &str, parent: &[&str]) -> Option<&'static str> {
    REGISTRY2
        .iter()
        .chain(WHARF_EXTENSIONS)
        .filter_map(|p| {
            let (prefix, name) = p.rsplit_once('.').unwrap_or(("", p));
            let prefix: Vec<&str> = if prefix.is_empty() {
                Vec::new()
            } else {
                prefix.split('.').collect()
            };
            let same_parent = prefix.len() == parent.len()
                && prefix.iter().zip(parent).all(|(a, b)| *a == "*" || a == b);
            (same_parent && name != "**" && name != "*").then_some(name)
        })
        .map(|name| (strsim::damerau_levenshtein(leaf, name), name))
        .filter(|(d, name)| *d <= 2.max(name.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::{classify, Unread};

    fn unknown(key: &str) -> String {
        match classify(key) {
            Unread::Unknown(m) => m,
            Unread::Foreign => panic!("{key} was taken for a registry:2 key"),
        }
    }

    #[test]
    fn typos_name_the_key_that_exists() {
        assert_eq!(
            unknown("http.adr"),
            "unknown key `http.adr`; did you mean `addr`?"
        );
        assert!(unknown("storage.filesystem.rootdirectroy").ends_with("`rootdirectory`?"));
        assert!(unknown("storage.delete.enabeld").ends_with("`enabled`?"));
        assert!(unknown("ui.admin").ends_with("`admins`?"));
        assert!(unknown("proxy.upstreams.0.remoteURL").ends_with("`remoteurl`?"));
        assert!(unknown("frobnicate").contains("neither registry:2 nor wharf"));
    }

    #[test]
    fn registry2_keys_wharf_does_not_read_are_foreign() {
        for key in [
            "redis.addr",
            "middleware.registry.0.name",
            "http.http2.disabled",
            "notifications.endpoints.0.ignore.actions.1",
            "health.tcp.0.addr",
            "validation.manifests.urls.allow.0",
            "loglevel",
            "database.pool.maxidle",
            "redis",
            "notifications.events",
        ] {
            assert_eq!(classify(key), Unread::Foreign, "{key}");
        }
    }

    #[test]
    fn a_client_certificate_check_stops_the_start_rather_than_leave_the_registry_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        let yaml = "version: 0.1\nhttp:\n  tls:\n    clientcas: [/etc/ca.pem]\n";
        std::fs::write(&path, yaml).unwrap();
        let Err(err) = crate::config::file::load(Some(&path), Vec::new()) else {
            panic!("clientcas must stop the start");
        };
        let err = err.to_string();
        assert!(err.contains("http.tls.clientcas"), "{err}");
        assert!(err.contains("client certificates"), "{err}");
    }
}
