//! Blob and manifest transfers: existence checks, cross-repository mounts, streamed
//! monolithic uploads, streamed downloads verified while they stream, manifest PUTs.
//!
//! Layers are never held whole in memory: a download is a stream of chunks hashed as they
//! pass, and an upload sends a stream as the request body.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};
use wharf_oci::{Digest, DigestHasher, Reference, RepoName};

use super::{ClientError, RegistryClient};

/// A blob's bytes as they arrive. Verified streams (`verified_stream`) end in an error,
/// in place of their last bytes, if the content does not hash to the digest asked for,
/// so a consumer never finishes on corrupt data.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;

/// What a cross-repository mount did.
#[derive(Debug)]
pub enum Mount {
    /// 201: the blob is now in the target repository.
    Mounted,
    /// 202: the registry could not mount (no access to the source, or it does not
    /// support mounts) and opened an upload session instead.
    Session(Url),
}

fn push(repo: &RepoName) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

impl RegistryClient {
    /// Whether `repo` already has the blob (HEAD; 404 means no).
    pub async fn blob_exists(&self, repo: &RepoName, digest: &Digest) -> Result<bool, ClientError> {
        let what = format!("blob {repo}@{digest}");
        let response = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &push(repo),
                &[],
                &what,
            )
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.expect_success(response, &what).await.map(|_| true)
    }

    /// Ask the registry to link a blob `from` another repository it holds into `repo`.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<Mount, ClientError> {
        let what = format!("mounting blob {digest} from {from} into {repo}");
        // The token must also cover pulling from the source repository.
        let scopes = vec![
            format!("repository:{repo}:pull,push"),
            format!("repository:{from}:pull"),
        ];
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let response = self.send(Method::POST, &path, &scopes, &[], &what).await?;
        let response = self.expect_success(response, &what).await?;
        if response.status() == StatusCode::CREATED {
            return Ok(Mount::Mounted);
        }
        Ok(Mount::Session(self.location(&response, &what)?))
    }

    /// Open an upload session in `repo`; the returned URL takes the PUT.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<Url, ClientError> {
        let what = format!("starting an upload to {repo}");
        let response = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &push(repo),
                &[],
                &what,
            )
            .await?;
        let response = self.expect_success(response, &what).await?;
        self.location(&response, &what)
    }

    /// Upload a blob in one streamed PUT to a session from `start_upload` or a `Mount::Session`.
    /// The registry checks the digest; `size` lets it refuse an oversized body up front.
    pub async fn upload_blob(
        &self,
        repo: &RepoName,
        session: Url,
        digest: &Digest,
        size: u64,
        body: BlobStream,
    ) -> Result<(), ClientError> {
        let what = format!("uploading blob {digest} to {repo}");
        let mut url = session;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let size = size.to_string();
        let headers: [(HeaderName, &str); 2] = [
            (CONTENT_TYPE, "application/octet-stream"),
            (CONTENT_LENGTH, &size),
        ];
        let response = self
            .send_body(
                Method::PUT,
                url,
                &push(repo),
                &headers,
                Some(reqwest::Body::wrap_stream(body)),
                &what,
            )
            .await?;
        self.expect_success(response, &what).await.map(drop)
    }

    /// A blob as a stream, verified against `digest` while it streams.
    pub async fn blob_stream(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(BlobStream, Option<u64>), ClientError> {
        let (chunks, length) = self.blob_stream_unverified(repo, digest).await?;
        let what = format!("blob {repo}@{digest}");
        let verified = verified(chunks, digest.clone(), self.registry().to_string(), what);
        Ok((verified, length))
    }

    /// A blob as the registry sends it, not hashed here: only for bytes that go straight
    /// to a registry, which verifies the digest as it writes them (a copy). A second hash
    /// on the way would repeat that check; it was half of `wharf copy`'s CPU (0.7 s a
    /// GiB, bench/README.md).
    pub async fn blob_stream_unverified(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(BlobStream, Option<u64>), ClientError> {
        let what = format!("blob {repo}@{digest}");
        let response = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[format!("repository:{repo}:pull")],
                &[],
                &what,
            )
            .await?;
        let response = self.expect_success(response, &what).await?;
        let length = response.content_length();
        // After a redirect this can be a presigned storage URL whose query is a credential.
        let url = super::strip_query(response.url());
        let chunks = response.bytes_stream().map(move |r| {
            r.map_err(|e| ClientError::Request {
                url: url.clone(),
                detail: e.to_string(),
            })
        });
        Ok((Box::pin(chunks), length))
    }

    /// Store a manifest under a tag or digest with its own media type as Content-Type
    /// (registries index it by that); returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Digest, ClientError> {
        let what = format!("pushing manifest {repo}:{reference}");
        let computed = Digest::sha256_of(&bytes);
        // A bodiless request first, so the token is cached before the single-shot PUT.
        self.blob_exists(repo, &computed).await?;
        let url = self
            .url(&format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let headers: [(HeaderName, &str); 1] = [(CONTENT_TYPE, media_type)];
        let response = self
            .send_body(
                Method::PUT,
                url,
                &push(repo),
                &headers,
                Some(reqwest::Body::from(bytes)),
                &what,
            )
            .await?;
        self.expect_success(response, &what).await?;
        Ok(computed)
    }

    /// The upload URL of a 202, resolved against the request (it is often relative).
    pub(super) fn location(&self, response: &Response, what: &str) -> Result<Url, ClientError> {
        response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| response.url().join(l).ok())
            .ok_or_else(|| ClientError::BadResponse {
                registry: self.registry().to_string(),
                what: what.to_owned(),
                detail: "no usable Location header for the upload session".into(),
            })
    }
}

/// Hash chunks as they pass, holding the last one back until the source has ended and
/// its digest is checked: a mismatch (`mismatch(actual, expected)`) then comes *before*
/// the final bytes. A request body with a Content-Length is complete once its last byte
/// is out and is never polled again, so an error after it would go unseen and the
/// receiver would judge the blob alone. Every reader of a blob (a registry response, a
/// file, an archive member) checks it this way.
pub fn verified_stream(
    inner: BlobStream,
    expected: Digest,
    mismatch: impl Fn(&Digest, &Digest) -> ClientError + Send + Sync + 'static,
) -> BlobStream {
    let hasher = DigestHasher::new(expected.algorithm());
    let mismatch = std::sync::Arc::new(mismatch);
    Box::pin(futures::stream::unfold(
        Some((inner, hasher, None::<Bytes>)),
        move |state| {
            let (expected, mismatch) = (expected.clone(), mismatch.clone());
            async move {
                let (mut inner, mut hasher, mut held) = state?;
                loop {
                    match inner.next().await {
                        Some(Ok(chunk)) => {
                            hasher.update(&chunk);
                            if let Some(previous) = held.replace(chunk) {
                                return Some((Ok(previous), Some((inner, hasher, held))));
                            }
                        }
                        Some(Err(e)) => return Some((Err(e), None)),
                        None => {
                            let got = hasher.finish();
                            if got != expected {
                                return Some((Err(mismatch(&got, &expected)), None));
                            }
                            return held.map(|last| (Ok(last), None));
                        }
                    }
                }
            }
        },
    ))
}

/// A registry's blob, checked against the digest it was asked for.
fn verified(inner: BlobStream, expected: Digest, registry: String, what: String) -> BlobStream {
    verified_stream(inner, expected, move |got, expected| {
        ClientError::BadResponse {
            registry: registry.clone(),
            what: what.clone(),
            detail: format!("its content hashes to {got}, not {expected}; the registry's storage may be corrupt"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> BlobStream {
        let items: Vec<Result<Bytes, ClientError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn streams_that_match_pass_through_whole() {
        let digest = Digest::sha256_of(b"hello world");
        let out: Vec<_> = verified(
            chunks(&[b"hello ", b"world"]),
            digest,
            "r".into(),
            "b".into(),
        )
        .collect()
        .await;
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn streams_that_differ_end_in_an_error() {
        let digest = Digest::sha256_of(b"hello world");
        let out: Vec<_> = verified(
            chunks(&[b"hello ", b"there"]),
            digest,
            "r".into(),
            "b".into(),
        )
        .collect()
        .await;
        assert!(matches!(
            out.last(),
            Some(Err(ClientError::BadResponse { .. }))
        ));
        let passed: usize = out.iter().flatten().map(Bytes::len).sum();
        assert!(
            passed < b"hello there".len(),
            "all the bytes passed before the error: a body sent from it would complete"
        );
    }

    #[tokio::test]
    async fn the_last_chunk_waits_for_the_check() {
        let digest = Digest::sha256_of(b"ab");
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, ClientError>>();
        let mut stream = verified(Box::pin(rx), digest, "r".into(), "b".into());
        tx.unbounded_send(Ok(Bytes::from_static(b"a"))).unwrap();
        tx.unbounded_send(Ok(Bytes::from_static(b"b"))).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "a");
        let pending = futures::poll!(stream.next());
        assert!(
            pending.is_pending(),
            "the last chunk left before the source ended"
        );
        drop(tx);
        assert_eq!(stream.next().await.unwrap().unwrap(), "b");
        assert!(stream.next().await.is_none());
    }
}
