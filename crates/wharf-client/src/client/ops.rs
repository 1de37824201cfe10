//! Registry operations on top of the auth flow: tags and catalog (following `Link`
//! pagination), manifests by tag or digest, deletes by digest, and small blobs.

use reqwest::header::{HeaderName, ACCEPT, CONTENT_TYPE, LINK};
use reqwest::{Method, Response, Url};
use serde::Deserialize;
use wharf_oci::media_type as mt;
use wharf_oci::{Digest, Reference, RepoName};

use super::{ClientError, RegistryClient};

/// Every manifest type we read, so a registry never converts (or refuses) for lack of one.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Config blobs and manifests are small; anything bigger is not what the caller meant.
const MAX_SMALL_BLOB: usize = 16 << 20;
/// Guards against a registry whose `Link` header points back at itself.
const MAX_PAGES: usize = 10_000;

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Vec<String>,
}

fn pull(repo: &RepoName) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

impl RegistryClient {
    /// Every tag of `repo`, all pages.
    pub async fn list_tags(&self, repo: &RepoName) -> Result<Vec<String>, ClientError> {
        let what = format!("the tags of {repo}");
        let mut tags = Vec::new();
        for page in self
            .paginate(&format!("/v2/{repo}/tags/list"), &pull(repo), &what)
            .await?
        {
            let list: TagList = self.json(&page, &what)?;
            tags.extend(list.tags.unwrap_or_default());
        }
        Ok(tags)
    }

    /// Every repository the caller may see, all pages. The catalog scope is what
    /// registry:2's token servers expect.
    pub async fn catalog(&self) -> Result<Vec<String>, ClientError> {
        let what = "the catalog";
        let scopes = vec!["registry:catalog:*".to_owned()];
        // As crane does: the credentials held are sent, so the listing is what they see.
        self.authenticate_up_front().await?;
        let mut repos = Vec::new();
        for page in self.paginate("/v2/_catalog", &scopes, what).await? {
            let list: Catalog = self.json(&page, what)?;
            repos.extend(list.repositories);
        }
        Ok(repos)
    }

    /// `GET /v2/_events`: a wharf registry's event stream (server-sent events, one
    /// registry:2 envelope per message), resumed after `last_event_id` when given. Same
    /// auth as the catalog. The response is returned as soon as its headers arrive; its
    /// body runs for as long as the registry keeps it open.
    pub async fn event_stream(&self, last_event_id: Option<&str>) -> Result<Response, ClientError> {
        let what = "the event stream /v2/_events";
        let scopes = vec!["registry:catalog:*".to_owned()];
        let mut headers: Vec<(HeaderName, &str)> = vec![(ACCEPT, "text/event-stream")];
        if let Some(id) = last_event_id {
            headers.push((HeaderName::from_static("last-event-id"), id));
        }
        let response = self
            .send(Method::GET, "/v2/_events", &scopes, &headers, what)
            .await?;
        self.expect_success(response, what).await
    }

    /// The manifest `reference` names, with its media type and digest.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Manifest, ClientError> {
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .manifest_request(Method::GET, repo, reference, &what)
            .await?;
        let media_type = content_type(&response);
        let header_digest = digest_header(&response);
        let bytes = self.small_body(response, &what).await?;
        let computed = Digest::sha256_of(&bytes);
        // A registry's header is trusted only for its own algorithm; sha256 is checked.
        let digest = match header_digest {
            Some(d) if d.algorithm() != computed.algorithm() => d,
            _ => computed,
        };
        if let Reference::Digest(asked) = reference {
            if asked.algorithm() == digest.algorithm() && asked != &digest {
                return Err(ClientError::BadResponse {
                    registry: self.registry().to_string(),
                    what,
                    detail: format!("its content hashes to {digest}, not the {asked} asked for"),
                });
            }
        }
        let media_type = media_type
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()?
                    .get("mediaType")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| mt::OCI_MANIFEST.to_owned());
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// The digest a tag points at, from a HEAD (no body moves, as docker does it).
    pub async fn head_digest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Digest, ClientError> {
        let what = format!("manifest {repo}:{reference}");
        let response = self
            .manifest_request(Method::HEAD, repo, reference, &what)
            .await?;
        match digest_header(&response) {
            Some(d) => Ok(d),
            // Some registries omit the header on HEAD: fetch and hash instead.
            None => Ok(self.get_manifest(repo, reference).await?.digest),
        }
    }

    /// Delete a manifest by digest (registries refuse deletes by tag).
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), ClientError> {
        let what = format!("deleting manifest {repo}@{digest}");
        let scopes = vec![format!("repository:{repo}:delete")];
        let response = self
            .send(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{digest}"),
                &scopes,
                &[],
                &what,
            )
            .await?;
        if response.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Err(ClientError::Status {
                registry: self.registry().to_string(),
                what,
                status: 405,
                detail: "deletes are disabled on this registry (storage.delete.enabled: true enables them)".into(),
            });
        }
        self.expect_success(response, &what).await.map(drop)
    }

    /// Delete a whole repository through wharf's own route (`DELETE
    /// /wharf/v1/repositories/<name>`; the OCI spec has none). Returns the registry's
    /// account of what went (JSON).
    pub async fn delete_repository(&self, repo: &RepoName) -> Result<String, ClientError> {
        let what = format!("deleting repository {repo}");
        let scopes = vec![format!("repository:{repo}:delete")];
        let response = self
            .send(
                Method::DELETE,
                &format!("/wharf/v1/repositories/{repo}"),
                &scopes,
                &[],
                &what,
            )
            .await?;
        // A refusal by a rule (an immutable tag) carries its reason in the 403.
        let response = self.expect_success(response, &what).await?;
        let bytes = self.small_body(response, &what).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A small blob (an image config), verified against its digest.
    pub async fn get_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<u8>, ClientError> {
        let what = format!("blob {repo}@{digest}");
        let response = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &pull(repo),
                &[],
                &what,
            )
            .await?;
        let response = self.expect_success(response, &what).await?;
        let bytes = self.small_body(response, &what).await?;
        if Digest::of(digest.algorithm(), &bytes) != *digest {
            return Err(ClientError::BadResponse {
                registry: self.registry().to_string(),
                what,
                detail: "its content does not match its digest".into(),
            });
        }
        Ok(bytes)
    }

    async fn manifest_request(
        &self,
        method: Method,
        repo: &RepoName,
        reference: &Reference,
        what: &str,
    ) -> Result<Response, ClientError> {
        let headers: [(HeaderName, &str); 1] = [(ACCEPT, MANIFEST_ACCEPT)];
        let response = self
            .send(
                method,
                &format!("/v2/{repo}/manifests/{reference}"),
                &pull(repo),
                &headers,
                what,
            )
            .await?;
        self.expect_success(response, what).await
    }

    /// Bodies of every page, following `Link: <...>; rel="next"`.
    pub(super) async fn paginate(
        &self,
        first: &str,
        scopes: &[String],
        what: &str,
    ) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut url = self.url(first).await?;
        let mut pages = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = self
                .send_url(Method::GET, url.clone(), scopes, &[], what)
                .await?;
            let response = self.expect_success(response, what).await?;
            let next = next_link(&response, &url);
            pages.push(self.small_body(response, what).await?);
            match next {
                Some(n) if n != url => url = n,
                _ => return Ok(pages),
            }
        }
        Ok(pages)
    }

    async fn small_body(&self, response: Response, what: &str) -> Result<Vec<u8>, ClientError> {
        let url = super::strip_query(response.url());
        let bytes = response.bytes().await.map_err(|e| ClientError::Request {
            url,
            detail: e.to_string(),
        })?;
        if bytes.len() > MAX_SMALL_BLOB {
            return Err(ClientError::BadResponse {
                registry: self.registry().to_string(),
                what: what.to_owned(),
                detail: format!(
                    "{} bytes is more than the {MAX_SMALL_BLOB} expected",
                    bytes.len()
                ),
            });
        }
        Ok(bytes.to_vec())
    }

    pub(super) fn json<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::BadResponse {
            registry: self.registry().to_string(),
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }
}

fn content_type(response: &Response) -> Option<String> {
    response
        .headers()
        .get(CONTENT_TYPE)?
        .to_str()
        .ok()
        .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|c| !c.is_empty() && c != mt::JSON && c != mt::OCTET_STREAM)
}

fn digest_header(response: &Response) -> Option<Digest> {
    response
        .headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The `rel="next"` target of a `Link` header, relative to the page it came with.
fn next_link(response: &Response, current: &Url) -> Option<Url> {
    let link = response.headers().get(LINK)?.to_str().ok()?;
    parse_next(link, current)
}

fn parse_next(link: &str, current: &Url) -> Option<Url> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next");
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| current.join(target).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_resolve_against_the_page() {
        let page = Url::parse("https://r:5000/v2/a/tags/list?n=2").unwrap();
        let next = parse_next("</v2/a/tags/list?n=2&last=b>; rel=\"next\"", &page).unwrap();
        assert_eq!(next.as_str(), "https://r:5000/v2/a/tags/list?n=2&last=b");
        assert!(parse_next("</x>; rel=\"prev\"", &page).is_none());
    }
}
