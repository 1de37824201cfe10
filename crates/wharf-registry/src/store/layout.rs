//! registry:2's storage layout, which Distribution 2.8.2 reads and writes, in one place for
//! every backend: a filesystem keeps it as paths under `rootdirectory`, a bucket as keys
//! under its `rootdirectory` prefix. Both hold everything under `docker/registry/v2/`:
//!
//! - `blobs/<alg>/<xx>/<hex>/data`: the bytes;
//! - `repositories/<name>/_layers/<alg>/<hex>/link`: the blobs a repository may serve;
//! - `repositories/<name>/_manifests/revisions/<alg>/<hex>/link` and
//!   `.../tags/<tag>/{current/link, index/<alg>/<hex>/link}`: manifests and tags;
//! - `repositories/<name>/_uploads/<id>/`: uploads in progress;
//! - `_wharf/` and `_wharf_staging/`: wharf's own records, which Distribution never reads
//!   (it walks only `blobs/` and `repositories/`).
//!
//! Names, tags and digests are validated types, so no location built here leaves the root.

use std::path::{Path, PathBuf};

use uuid::Uuid;
use wharf_oci::{Digest, RepoName, Tag};

/// Where registry:2's tree starts, under a `rootdirectory`.
const V2: &str = "docker/registry/v2";

/// What a backend calls a place in the layout: a path, or an object key.
pub trait Location: Clone + Send + Sync + 'static {
    /// `self/part/part/...`, built in one allocation (this runs on every request).
    fn join_parts(&self, parts: &[&str]) -> Self;
}

impl Location for PathBuf {
    fn join_parts(&self, parts: &[&str]) -> PathBuf {
        let len = self.as_os_str().len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut path = PathBuf::with_capacity(len);
        path.push(self);
        for p in parts {
            path.push(p);
        }
        path
    }
}

impl Location for String {
    fn join_parts(&self, parts: &[&str]) -> String {
        let len = self.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(self);
        for p in parts {
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(p);
        }
        key
    }
}

/// Every location of the layout, as paths (`Layout<PathBuf>`) or keys (`Layout<String>`).
#[derive(Debug, Clone)]
pub struct Layout<L> {
    v2: L,
}

impl Layout<PathBuf> {
    /// `rootdirectory` as registry:2 means it: the directory that holds `docker/registry/v2`.
    pub fn new(rootdirectory: &Path) -> Layout<PathBuf> {
        Layout {
            v2: rootdirectory.join(V2),
        }
    }
}

impl Layout<String> {
    /// Keys under `prefix` (a bucket's `rootdirectory`, without leading or trailing
    /// slashes; empty for the bucket's top).
    pub fn keys(prefix: &str) -> Layout<String> {
        let v2 = if prefix.is_empty() {
            V2.to_owned()
        } else {
            format!("{prefix}/{V2}")
        };
        Layout { v2 }
    }
}

impl<L: Location> Layout<L> {
    fn at(&self, parts: &[&str]) -> L {
        self.v2.join_parts(parts)
    }

    /// `docker/registry/v2` itself.
    pub fn v2(&self) -> &L {
        &self.v2
    }

    pub fn blobs_root(&self) -> L {
        self.at(&["blobs"])
    }

    pub fn blob_dir(&self, d: &Digest) -> L {
        let hex = d.hex();
        self.at(&["blobs", d.algorithm().as_str(), &hex[..2], hex])
    }

    pub fn blob_data(&self, d: &Digest) -> L {
        let hex = d.hex();
        self.at(&["blobs", d.algorithm().as_str(), &hex[..2], hex, "data"])
    }

    /// wharf's own records beside registry:2's: locks, the event log, job reports,
    /// sign-out stamps, the clock probe, retain markers, and blobs scrub moved aside.
    pub fn wharf_dir(&self) -> L {
        self.at(&["_wharf"])
    }

    /// Every retain marker is under here.
    pub fn retained_markers(&self) -> L {
        self.at(&["_wharf", "retained"])
    }

    /// A blob's retain marker, where retaining cannot rewrite the blob (objects in a bucket).
    pub fn retained_marker(&self, d: &Digest) -> L {
        self.at(&["_wharf", "retained", d.algorithm().as_str(), d.hex()])
    }

    /// Written and read back to learn the store's clock.
    pub fn clock(&self) -> L {
        self.at(&["_wharf", "clock"])
    }

    /// Where scrub moves corrupt blobs. Stores already hold them named as their backend
    /// named them (`<alg>-<hex>` files on a filesystem, `<alg>/<hex>` keys in a bucket).
    pub fn quarantine(&self) -> L {
        self.at(&["_wharf", "quarantine"])
    }

    /// Where whole blobs pushed in one request are written before they are verified and
    /// renamed into `blobs/`.
    pub fn staging(&self) -> L {
        self.at(&["_wharf_staging"])
    }

    pub fn repositories(&self) -> L {
        self.at(&["repositories"])
    }

    pub fn repo(&self, r: &RepoName) -> L {
        self.at(&["repositories", r.as_str()])
    }

    /// Every `_layers` link of a repository is under here.
    pub fn layers(&self, r: &RepoName) -> L {
        self.at(&["repositories", r.as_str(), "_layers"])
    }

    pub fn upload_dir(&self, r: &RepoName, id: Uuid) -> L {
        let mut buf = Uuid::encode_buffer();
        let id = id.hyphenated().encode_lower(&mut buf);
        self.at(&["repositories", r.as_str(), "_uploads", id])
    }

    pub fn layer_link(&self, r: &RepoName, d: &Digest) -> L {
        let (repo, alg) = (r.as_str(), d.algorithm().as_str());
        self.at(&["repositories", repo, "_layers", alg, d.hex(), "link"])
    }

    pub fn revisions(&self, r: &RepoName) -> L {
        self.at(&["repositories", r.as_str(), "_manifests", "revisions"])
    }

    pub fn revision_link(&self, r: &RepoName, d: &Digest) -> L {
        let (repo, alg) = (r.as_str(), d.algorithm().as_str());
        self.at(&[
            "repositories",
            repo,
            "_manifests",
            "revisions",
            alg,
            d.hex(),
            "link",
        ])
    }

    pub fn tags(&self, r: &RepoName) -> L {
        self.at(&["repositories", r.as_str(), "_manifests", "tags"])
    }

    pub fn tag_dir(&self, r: &RepoName, t: &Tag) -> L {
        self.at(&["repositories", r.as_str(), "_manifests", "tags", t.as_str()])
    }

    pub fn tag_current(&self, r: &RepoName, t: &Tag) -> L {
        let (repo, tag) = (r.as_str(), t.as_str());
        self.at(&[
            "repositories",
            repo,
            "_manifests",
            "tags",
            tag,
            "current",
            "link",
        ])
    }

    pub fn tag_index(&self, r: &RepoName, t: &Tag, d: &Digest) -> L {
        let (repo, tag, alg) = (r.as_str(), t.as_str(), d.algorithm().as_str());
        self.at(&[
            "repositories",
            repo,
            "_manifests",
            "tags",
            tag,
            "index",
            alg,
            d.hex(),
            "link",
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_keys_name_the_same_places() {
        let d = Digest::sha256_of(b"x");
        let (hex, repo, tag) = (d.hex(), "a/b".parse().unwrap(), "v1".parse().unwrap());
        let fs = Layout::new(Path::new("/srv"));
        let s3 = Layout::keys("");
        let under = Layout::keys("pre/fix");
        let pairs = [
            (
                fs.blob_data(&d),
                s3.blob_data(&d),
                format!("blobs/sha256/{}/{hex}/data", &hex[..2]),
            ),
            (
                fs.layer_link(&repo, &d),
                s3.layer_link(&repo, &d),
                format!("repositories/a/b/_layers/sha256/{hex}/link"),
            ),
            (
                fs.revision_link(&repo, &d),
                s3.revision_link(&repo, &d),
                format!("repositories/a/b/_manifests/revisions/sha256/{hex}/link"),
            ),
            (
                fs.tag_current(&repo, &tag),
                s3.tag_current(&repo, &tag),
                "repositories/a/b/_manifests/tags/v1/current/link".into(),
            ),
            (
                fs.tag_index(&repo, &tag, &d),
                s3.tag_index(&repo, &tag, &d),
                format!("repositories/a/b/_manifests/tags/v1/index/sha256/{hex}/link"),
            ),
            (
                fs.retained_marker(&d),
                s3.retained_marker(&d),
                format!("_wharf/retained/sha256/{hex}"),
            ),
        ];
        for (path, key, want) in pairs {
            assert_eq!(path, Path::new("/srv/docker/registry/v2").join(&want));
            assert_eq!(key, format!("docker/registry/v2/{want}"));
        }
        let id = Uuid::new_v4();
        assert_eq!(
            under.upload_dir(&repo, id),
            format!("pre/fix/docker/registry/v2/repositories/a/b/_uploads/{id}")
        );
    }
}
