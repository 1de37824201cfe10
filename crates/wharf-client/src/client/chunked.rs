//! Chunked uploads: PATCH with Content-Range, each chunk streamed straight from the source
//! to the registry (no copy into a buffer), and on a failed PATCH the registry's own
//! `Range` (from a status GET) says where to resume, so a dropped connection costs at most
//! one chunk. To resend, the chunk's pieces are kept as they pass: reference-counted
//! handles on the buffers they arrived in, at most one chunk's worth, never copied.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode, Url};
use wharf_oci::sync::lock;
use wharf_oci::{Digest, RepoName};

use super::transfer::BlobStream;
use super::{ClientError, RegistryClient};

/// Tries per chunk: the first send and two resumes.
const ATTEMPTS: usize = 3;

fn push(repo: &RepoName) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

/// The source and the current chunk, shared by the PATCH bodies that take turns at it.
struct Source {
    body: BlobStream,
    /// Bytes of the last piece read that belong to the next chunk.
    leftover: Option<Bytes>,
    /// The current chunk's pieces taken from the source so far (handles, not copies).
    kept: Vec<Bytes>,
    kept_len: usize,
    /// The current chunk's length.
    need: usize,
    /// Which PATCH may read: a body left behind by an earlier, failed one (hyper may
    /// still hold it) must not take bytes meant for its successor.
    attempt: u64,
    /// Why the source stopped (a read error, a digest mismatch, too few bytes): final,
    /// never retried, and reported instead of the aborted PATCH's error.
    failed: Option<ClientError>,
}

/// One PATCH's body: the kept pieces from where the registry got to, then the rest of
/// the chunk as it arrives from the source.
struct ChunkBody {
    source: Arc<Mutex<Source>>,
    replay: VecDeque<Bytes>,
    attempt: u64,
    /// For the error when the source ends short.
    what: String,
    registry: String,
}

impl Stream for ChunkBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(piece) = self.replay.pop_front() {
            return Poll::Ready(Some(Ok(piece)));
        }
        let this = &mut *self;
        let mut s = lock(&this.source);
        if s.attempt != this.attempt {
            return Poll::Ready(Some(Err(std::io::Error::other("a newer PATCH took over"))));
        }
        if s.kept_len >= s.need {
            return Poll::Ready(None);
        }
        let piece = match s.leftover.take() {
            Some(piece) => piece,
            None => match s.body.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(piece))) => piece,
                Poll::Ready(Some(Err(e))) => {
                    s.failed = Some(e);
                    return Poll::Ready(Some(Err(std::io::Error::other("the source failed"))));
                }
                Poll::Ready(None) => {
                    s.failed = Some(ClientError::BadResponse {
                        registry: this.registry.clone(),
                        what: this.what.clone(),
                        detail: "the source blob ended before the size its descriptor gives".into(),
                    });
                    return Poll::Ready(Some(Err(std::io::Error::other("the source ended early"))));
                }
            },
        };
        let want = s.need - s.kept_len;
        let piece = if piece.len() > want {
            s.leftover = Some(piece.slice(want..));
            piece.slice(..want)
        } else {
            piece
        };
        s.kept.push(piece.clone());
        s.kept_len += piece.len();
        Poll::Ready(Some(Ok(piece)))
    }
}

/// What the registry lacks of the chunk's pieces already read, from `skip` bytes in (the
/// body reads the rest from the source), and a new attempt number, which retires any
/// earlier body.
fn replay_from(source: &Mutex<Source>, mut skip: usize) -> (VecDeque<Bytes>, u64) {
    let mut s = lock(source);
    s.attempt += 1;
    let mut replay = VecDeque::new();
    for piece in &s.kept {
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        replay.push_back(piece.slice(skip..));
        skip = 0;
    }
    (replay, s.attempt)
}

impl RegistryClient {
    /// Upload `body` (`size` bytes) to an upload session in PATCHes of `chunk_size` bytes,
    /// each streamed as it arrives, then close the session with the digest (the registry
    /// verifies it; a `body` that is verified too, as files' and `blob_stream`'s are, stops
    /// the upload before that).
    pub async fn upload_blob_chunked(
        &self,
        repo: &RepoName,
        session: Url,
        digest: &Digest,
        size: u64,
        body: BlobStream,
        chunk_size: usize,
    ) -> Result<(), ClientError> {
        let what = format!("uploading blob {digest} to {repo} in chunks");
        // An empty chunk would never advance the offset.
        let chunk_size = chunk_size.max(1);
        let source = Arc::new(Mutex::new(Source {
            body,
            leftover: None,
            kept: Vec::new(),
            kept_len: 0,
            need: 0,
            attempt: 0,
            failed: None,
        }));
        let mut url = session;
        let mut offset = 0u64;
        while offset < size {
            {
                let mut s = lock(&source);
                s.kept.clear();
                s.kept_len = 0;
                s.need =
                    usize::try_from(size - offset).map_or(chunk_size, |left| left.min(chunk_size));
            }
            url = self
                .patch_chunk(repo, url, &mut offset, &source, &what)
                .await?;
        }
        // The source must end here, and end well: a verified stream reports a digest
        // mismatch in place of its last bytes, so that is found here at the latest
        // (an unverified one is left to the registry's check at the PUT).
        let longer = || ClientError::BadResponse {
            registry: self.registry().to_string(),
            what: what.clone(),
            detail: format!("the source blob is longer than the {size} bytes its descriptor gives"),
        };
        if lock(&source).leftover.take().is_some_and(|b| !b.is_empty()) {
            return Err(longer());
        }
        loop {
            let next = futures::future::poll_fn(|cx| lock(&source).body.poll_next_unpin(cx)).await;
            match next {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) if b.is_empty() => {}
                Some(Ok(_)) => return Err(longer()),
            }
        }
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let headers: [(HeaderName, &str); 1] = [(CONTENT_LENGTH, "0")];
        let response = self
            .send_url(Method::PUT, url, &push(repo), &headers, &what)
            .await?;
        self.expect_success(response, &what).await.map(drop)
    }

    /// Send the current chunk (which starts at `offset`), resuming from what the registry
    /// reports it has after a failure. Returns the session URL for the next request.
    async fn patch_chunk(
        &self,
        repo: &RepoName,
        mut url: Url,
        offset: &mut u64,
        source: &Arc<Mutex<Source>>,
        what: &str,
    ) -> Result<Url, ClientError> {
        let start = *offset;
        let end = start + lock(source).need as u64;
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            if *offset >= end {
                return Ok(url);
            }
            let (replay, attempt) = replay_from(source, (*offset - start) as usize);
            let body = ChunkBody {
                source: Arc::clone(source),
                replay,
                attempt,
                what: what.to_owned(),
                registry: self.registry().to_string(),
            };
            let range = format!("{}-{}", *offset, end - 1);
            let length = (end - *offset).to_string();
            let headers: [(HeaderName, &str); 3] = [
                (CONTENT_TYPE, "application/octet-stream"),
                (HeaderName::from_static("content-range"), &range),
                (CONTENT_LENGTH, &length),
            ];
            let sent = self
                .send_body(
                    Method::PATCH,
                    url.clone(),
                    &push(repo),
                    &headers,
                    Some(reqwest::Body::wrap_stream(body)),
                    what,
                )
                .await;
            if let Some(e) = lock(source).failed.take() {
                return Err(e);
            }
            let failure = match sent {
                Ok(response) if response.status().is_success() => {
                    *offset = end;
                    return self.location(&response, what);
                }
                Ok(response) => self.expect_success(response, what).await.err(),
                Err(e) => Some(e),
            };
            match failure {
                // 416: the registry holds a different amount than this PATCH assumed;
                // its status below says how much.
                Some(e) if e.is_transient() || is_range_refused(&e) => last_error = Some(e),
                Some(e) => return Err(e),
                None => {}
            }
            // Ask the registry how far it got, and go on from there.
            let (resume_url, have) = self.upload_status(repo, &url, what).await?;
            // It cannot hold more than was read from the source for this chunk.
            if have < start || have > start + lock(source).kept_len as u64 {
                break;
            }
            url = resume_url;
            *offset = have;
        }
        Err(last_error.unwrap_or_else(|| ClientError::BadResponse {
            registry: self.registry().to_string(),
            what: what.to_owned(),
            detail: "the upload session lost data it had acknowledged; retry the copy".into(),
        }))
    }

    /// The session's URL and how many bytes the registry holds (`Range: 0-N` means N+1).
    async fn upload_status(
        &self,
        repo: &RepoName,
        url: &Url,
        what: &str,
    ) -> Result<(Url, u64), ClientError> {
        let response = self
            .send_url(Method::GET, url.clone(), &push(repo), &[], what)
            .await?;
        if response.status() != StatusCode::NO_CONTENT {
            let response = self.expect_success(response, what).await?;
            return Ok((self.location(&response, what)?, 0));
        }
        // Distribution and wharf answer `0-0` for an empty session as well as for one
        // byte held. Taking it as empty costs at most a refused PATCH; taking it as one
        // byte would make a first chunk that failed before any byte landed unresumable.
        let have = response
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, end)| end.trim().parse::<u64>().ok())
            .map_or(0, |end| if end == 0 { 0 } else { end + 1 });
        let url = self
            .location(&response, what)
            .unwrap_or_else(|_| url.clone());
        Ok((url, have))
    }
}

fn is_range_refused(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status: 416, .. })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{ClientOptions, Registry};

    /// What the fake registry saw: the bytes it kept, PATCHes, and whether PUT matched.
    #[derive(Default)]
    struct Seen {
        kept: Vec<u8>,
        patches: usize,
        closed: bool,
    }

    /// A one-session upload endpoint that keeps only `kept(len)` bytes of the first PATCH
    /// and answers 500, as a registry whose connection dropped mid-chunk would.
    fn flaky_registry(expected: Vec<u8>, kept: fn(usize) -> usize) -> (u16, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let method = line.split(' ').next().unwrap_or("").to_owned();
                    let (mut length, mut range_start) = (0usize, 0usize);
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end().to_ascii_lowercase();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if let Some(v) = h.strip_prefix("content-range:") {
                            range_start = v.trim().split('-').next().unwrap().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let mut s = state.lock().unwrap();
                    let reply = match method.as_str() {
                        "PATCH" => {
                            s.patches += 1;
                            assert_eq!(range_start, s.kept.len(), "resumed at the wrong offset");
                            if s.patches == 1 {
                                let got = kept(body.len());
                                s.kept.extend_from_slice(&body[..got]);
                                "500 Internal Server Error".to_owned()
                            } else {
                                s.kept.extend_from_slice(&body);
                                "202 Accepted".to_owned()
                            }
                        }
                        "GET" => "204 No Content".to_owned(),
                        "PUT" => {
                            s.closed = s.kept == expected;
                            "201 Created".to_owned()
                        }
                        _ => "404 Not Found".to_owned(),
                    };
                    let end = s.kept.len().saturating_sub(1);
                    drop(s);
                    write!(
                        out,
                        "HTTP/1.1 {reply}\r\nLocation: /upload\r\nRange: 0-{end}\r\nContent-Length: 0\r\n\r\n"
                    )
                    .unwrap();
                }
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn a_failed_chunk_resumes_where_the_registry_got_to() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        // Source chunks that straddle the upload's chunk boundaries.
        let parts: Vec<Result<Bytes, ClientError>> = data
            .chunks(700)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (result, seen) = upload_to_flaky(&data, data.len() as u64, parts, |len| len / 2).await;
        result.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.patches, 4, "three chunks and one resume");
        assert!(
            seen.closed,
            "the registry did not end up with the blob's bytes"
        );
    }

    /// Upload `parts` (claimed to be `size` bytes) in 1000-byte chunks to a flaky registry
    /// that keeps `kept(len)` bytes of the first PATCH.
    async fn upload_to_flaky(
        data: &[u8],
        size: u64,
        parts: Vec<Result<Bytes, ClientError>>,
        kept: fn(usize) -> usize,
    ) -> (Result<(), ClientError>, Arc<Mutex<Seen>>) {
        let (port, seen) = flaky_registry(data.to_vec(), kept);
        let options = ClientOptions {
            insecure: true,
            ..ClientOptions::default()
        };
        let registry = Registry::from_server_address(&format!("127.0.0.1:{port}")).unwrap();
        let client = RegistryClient::with_credential(registry, &options, None).unwrap();
        let session = Url::parse(&format!("http://127.0.0.1:{port}/upload")).unwrap();
        let result = client
            .upload_blob_chunked(
                &"team/app".parse().unwrap(),
                session,
                &Digest::sha256_of(data),
                size,
                Box::pin(futures::stream::iter(parts)),
                1000,
            )
            .await;
        (result, seen)
    }

    #[tokio::test]
    async fn a_first_chunk_that_left_nothing_is_sent_again_from_byte_0() {
        // The registry then answers `Range: 0-0`, as for one byte held.
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 241) as u8).collect();
        let parts = vec![Ok(Bytes::from(data.clone()))];
        let (result, seen) = upload_to_flaky(&data, data.len() as u64, parts, |_| 0).await;
        result.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.patches, 4, "three chunks and one resend");
        assert!(
            seen.closed,
            "the registry did not end up with the blob's bytes"
        );
    }

    #[tokio::test]
    async fn a_source_that_fails_at_its_end_stops_the_upload_before_the_put() {
        // As a verified stream does when the bytes do not hash to the digest.
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 13) as u8).collect();
        let mut parts: Vec<Result<Bytes, ClientError>> = data
            .chunks(700)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        parts.push(Err(ClientError::BadResponse {
            registry: "source".into(),
            what: "blob".into(),
            detail: "its content hashes to something else".into(),
        }));
        let (result, seen) = upload_to_flaky(&data, data.len() as u64, parts, |len| len / 2).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("hashes to something else"), "{err}");
        assert!(!seen.lock().unwrap().closed, "the session was closed");
    }

    #[tokio::test]
    async fn a_source_longer_or_shorter_than_its_size_is_refused() {
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 7) as u8).collect();
        let parts = |d: &[u8]| -> Vec<Result<Bytes, ClientError>> {
            d.chunks(700)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect()
        };
        let (longer, seen) =
            upload_to_flaky(&data[..2000], 2000, parts(&data), |len| len / 2).await;
        let err = longer.unwrap_err().to_string();
        assert!(err.contains("longer than the 2000 bytes"), "{err}");
        assert!(!seen.lock().unwrap().closed);
        let (shorter, seen) =
            upload_to_flaky(&data, 2500, parts(&data[..2200]), |len| len / 2).await;
        let err = shorter.unwrap_err().to_string();
        assert!(err.contains("ended before"), "{err}");
        assert!(!seen.lock().unwrap().closed);
    }
}
