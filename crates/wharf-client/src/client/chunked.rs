//! Chunked uploads: PATCH with Content-Range, one bounded chunk in memory at a time, and
//! on a failed PATCH the registry's own `Range` (from a status GET) says where to resume,
//! so a dropped connection costs at most one chunk.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode, Url};
use wharf_oci::{Digest, RepoName};

use super::transfer::BlobStream;
use super::{ClientError, RegistryClient};

/// Tries per chunk: the first send and two resumes.
const ATTEMPTS: usize = 3;

fn push(repo: &RepoName) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

impl RegistryClient {
    /// Upload `body` to an upload session in PATCHes of `chunk_size` bytes, then close
    /// the session with the digest (the registry verifies it).
    pub async fn upload_blob_chunked(
        &self,
        repo: &RepoName,
        session: Url,
        digest: &Digest,
        mut body: BlobStream,
        chunk_size: usize,
    ) -> Result<(), ClientError> {
        let what = format!("uploading blob {digest} to {repo} in chunks");
        let mut url = session;
        let mut offset = 0u64;
        let mut buf = BytesMut::with_capacity(chunk_size);
        let mut ended = false;
        loop {
            while !ended && buf.len() < chunk_size {
                match body.next().await {
                    Some(chunk) => buf.extend_from_slice(&chunk?),
                    None => ended = true,
                }
            }
            if buf.is_empty() {
                break;
            }
            // A source chunk can overshoot: send exactly chunk_size, keep the rest.
            let chunk = buf.split_to(buf.len().min(chunk_size)).freeze();
            url = self
                .patch_chunk(repo, url, &mut offset, chunk, &what)
                .await?;
        }
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let headers: [(HeaderName, &str); 1] = [(CONTENT_LENGTH, "0")];
        let response = self
            .send_url(Method::PUT, url, &push(repo), &headers, &what)
            .await?;
        self.expect_success(response, &what).await.map(drop)
    }

    /// Send `chunk` (which starts at `offset`), resuming from what the registry reports
    /// it has after a failure. Returns the session URL for the next request.
    async fn patch_chunk(
        &self,
        repo: &RepoName,
        mut url: Url,
        offset: &mut u64,
        chunk: Bytes,
        what: &str,
    ) -> Result<Url, ClientError> {
        let start = *offset;
        let end = start + chunk.len() as u64;
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let rest = chunk.slice((*offset - start) as usize..);
            if rest.is_empty() {
                return Ok(url);
            }
            let range = format!("{}-{}", *offset, end - 1);
            let length = rest.len().to_string();
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
                    Some(reqwest::Body::from(rest)),
                    what,
                )
                .await;
            let failure = match sent {
                Ok(response) if response.status().is_success() => {
                    *offset = end;
                    return self.location(&response, what);
                }
                Ok(response) => self.expect_success(response, what).await.err(),
                Err(e) => Some(e),
            };
            match failure {
                Some(e @ (ClientError::Request { .. } | ClientError::Connect { .. }))
                | Some(e @ ClientError::Status { .. }) => last_error = Some(e),
                Some(e) => return Err(e),
                None => {}
            }
            // Ask the registry how far it got, and go on from there.
            let (resume_url, have) = self.upload_status(repo, &url, what).await?;
            if have < start || have > end {
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
        let have = response
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.rsplit_once('-'))
            .and_then(|(_, end)| end.trim().parse::<u64>().ok())
            .map_or(0, |end| end + 1);
        let url = self
            .location(&response, what)
            .unwrap_or_else(|_| url.clone());
        Ok((url, have))
    }
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

    /// A one-session upload endpoint that keeps only half of the first PATCH and answers
    /// 500, as a registry whose connection dropped mid-chunk would.
    fn flaky_registry(expected: Vec<u8>) -> (u16, Arc<Mutex<Seen>>) {
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
                                let half = body.len() / 2;
                                s.kept.extend_from_slice(&body[..half]);
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
        let (port, seen) = flaky_registry(data.clone());
        let options = ClientOptions {
            insecure: true,
            ..ClientOptions::default()
        };
        let registry = Registry::from_server_address(&format!("127.0.0.1:{port}")).unwrap();
        let client = RegistryClient::with_credential(registry, &options, None).unwrap();
        let digest = Digest::sha256_of(&data);
        // Source chunks that straddle the upload's chunk boundaries.
        let parts: Vec<Result<Bytes, ClientError>> = data
            .chunks(700)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let session = Url::parse(&format!("http://127.0.0.1:{port}/upload")).unwrap();
        client
            .upload_blob_chunked(
                &"team/app".parse().unwrap(),
                session,
                &digest,
                Box::pin(futures::stream::iter(parts)),
                1000,
            )
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.patches, 4, "three chunks and one resume");
        assert!(
            seen.closed,
            "the registry did not end up with the blob's bytes"
        );
    }
}
