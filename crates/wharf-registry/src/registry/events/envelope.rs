//! registry:2's event envelope (`application/vnd.docker.distribution.events.v1+json`),
//! field for field as Distribution 2.8.2 writes it (notifications/event.go), so receivers
//! written for Distribution read wharf's events unchanged.

use serde::{Deserialize, Serialize};
use wharf_oci::{Digest, RepoName};

pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// What Distribution calls every blob in an event: it does not know layers' real types.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

pub const PUSH: &str = "push";
pub const PULL: &str = "pull";
pub const MOUNT: &str = "mount";
pub const DELETE: &str = "delete";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: String,
    /// RFC 3339 with nanoseconds, as Go's `time.Time` marshals.
    pub timestamp: String,
    pub action: String,
    pub target: Target,
    pub request: RequestRecord,
    pub actor: Actor,
    pub source: Source,
}

fn zero(n: &u64) -> bool {
    *n == 0
}

/// Go's `omitempty`: Distribution leaves out empty strings and zero sizes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Target {
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "zero")]
    pub length: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository: String,
    #[serde(
        rename = "fromRepository",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub from_repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// What a manifest references (`notifications.events.includereferences`), as
    /// Distribution's `Manifest.References()`: config and layers, or child manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<wharf_oci::Descriptor>,
}

/// A manifest's references as Distribution lists them in events.
pub fn references(m: &wharf_oci::Manifest) -> Vec<wharf_oci::Descriptor> {
    m.config
        .iter()
        .chain(&m.layers)
        .chain(&m.manifests)
        .cloned()
        .collect()
}

/// The request that caused the event. `id`, `method` and `useragent` are always present.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub method: String,
    pub useragent: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The registry node: `hostname:port` and an id that changes at each start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Source {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(
        rename = "instanceID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub instance_id: String,
}

/// Who asked and how, for every event one request causes; `base_url` builds the `url`s.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request: RequestRecord,
    pub actor: Actor,
    pub base_url: String,
}

impl Origin {
    /// An origin that records only the request's method: what a read carries when no
    /// endpoint wants its event (layers still tell a GET from a HEAD).
    pub fn method(method: &str) -> Origin {
        Origin {
            request: RequestRecord {
                method: method.to_owned(),
                ..RequestRecord::default()
            },
            ..Origin::default()
        }
    }

    fn event(&self, action: &str, repo: &RepoName) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            action: action.to_owned(),
            target: Target {
                repository: repo.to_string(),
                ..Target::default()
            },
            request: self.request.clone(),
            actor: self.actor.clone(),
            source: Source::default(),
        }
    }

    /// A manifest pushed or pulled: its media type, size and digest; `tag` when the
    /// request named one.
    pub fn manifest(
        &self,
        action: &str,
        repo: &RepoName,
        media_type: &str,
        digest: &Digest,
        size: u64,
        tag: Option<&str>,
    ) -> Event {
        let mut e = self.event(action, repo);
        e.target.media_type = media_type.to_owned();
        e.target.size = size;
        e.target.length = size;
        e.target.digest = digest.to_string();
        e.target.url = format!("{}/v2/{repo}/manifests/{digest}", self.base_url);
        e.target.tag = tag.unwrap_or_default().to_owned();
        e
    }

    /// A blob pushed, pulled or (with `from`) mounted.
    pub fn blob(
        &self,
        action: &str,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        from: Option<&RepoName>,
    ) -> Event {
        let mut e = self.event(action, repo);
        e.target.media_type = BLOB_MEDIA_TYPE.to_owned();
        e.target.size = size;
        e.target.length = size;
        e.target.digest = digest.to_string();
        e.target.url = format!("{}/v2/{repo}/blobs/{digest}", self.base_url);
        e.target.from_repository = from.map(ToString::to_string).unwrap_or_default();
        e
    }

    /// A manifest or blob deleted: Distribution names only the repository and digest.
    pub fn deleted(&self, repo: &RepoName, digest: &Digest) -> Event {
        let mut e = self.event(DELETE, repo);
        e.target.digest = digest.to_string();
        e
    }

    /// A tag deleted: the repository and the tag.
    pub fn tag_deleted(&self, repo: &RepoName, tag: &str) -> Event {
        let mut e = self.event(DELETE, repo);
        e.target.tag = tag.to_owned();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_left_out_as_go_omitempty_does() {
        let repo: RepoName = "a/b".parse().unwrap();
        let d = Digest::sha256_of(b"x");
        let origin = Origin {
            base_url: "http://r:5000".into(),
            ..Origin::default()
        };
        let v = serde_json::to_value(origin.deleted(&repo, &d)).unwrap();
        let target = v["target"].as_object().unwrap();
        assert_eq!(target.len(), 2, "{target:?}");
        assert_eq!(v["actor"], serde_json::json!({}));
        let req = v["request"].as_object().unwrap();
        let mut keys: Vec<_> = req.keys().collect();
        keys.sort();
        assert_eq!(keys, ["id", "method", "useragent"]);
        let v = serde_json::to_value(origin.blob(PUSH, &repo, &d, 7, None)).unwrap();
        assert_eq!(v["target"]["mediaType"], BLOB_MEDIA_TYPE);
        assert_eq!(v["target"]["length"], 7);
        assert_eq!(
            v["target"]["url"],
            format!("http://r:5000/v2/a/b/blobs/{d}")
        );
    }
}
