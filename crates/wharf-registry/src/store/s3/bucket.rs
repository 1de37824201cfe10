//! The few object operations the S3 stores need, with S3's failures sorted into what the
//! registry answers: absent (None), unavailable (a 503 the client may retry), or broken.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};

use super::{unavailable, S3Config, MAX_COPY};
use crate::store::layout::Layout;
use crate::store::{ByteStream, StoreError, StoreResult};

/// An object as a listing shows it.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

pub struct Bucket {
    pub client: Client,
    pub name: String,
    /// registry:2's layout under the configured root.
    pub layout: Layout<String>,
    describe: String,
    copy_chunk: u64,
    copy_threshold: u64,
    copy_concurrency: usize,
}

impl Bucket {
    pub async fn connect(config: &S3Config) -> StoreResult<Bucket> {
        let client = client(config).await;
        Ok(Bucket {
            client,
            name: config.bucket.clone(),
            layout: Layout::keys(config.prefix()),
            describe: config.describe(),
            copy_chunk: config.multipartcopychunksize.max(super::MIN_PART),
            copy_threshold: config.multipartcopythresholdsize.min(MAX_COPY),
            copy_concurrency: config.multipartcopymaxconcurrency.max(1),
        })
    }

    /// Fail at start, naming the bucket, rather than on the first push.
    pub async fn check(&self) -> StoreResult<()> {
        self.client
            .list_objects_v2()
            .bucket(&self.name)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.error("listing the bucket", e))?;
        Ok(())
    }

    /// Sort an SDK failure: network trouble and throttling that outlasted the retries are
    /// the store being unavailable; anything else names the operation and S3's answer.
    pub fn error<E>(&self, what: &str, e: SdkError<E, HttpResponse>) -> StoreError
    where
        E: StdError + Send + Sync + 'static,
    {
        let status = match &e {
            SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
            _ => None,
        };
        let text = format!("{} {what}: {}", self.describe, DisplayErrorContext(&e));
        match (&e, status) {
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _) => unavailable(text),
            (_, Some(429 | 500..=599)) => unavailable(text),
            _ => StoreError::Io(std::io::Error::other(text)),
        }
    }

    pub async fn head(&self, key: &str) -> StoreResult<Option<(u64, SystemTime)>> {
        match self
            .client
            .head_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some((
                o.content_length.unwrap_or(0).max(0) as u64,
                modified(o.last_modified.as_ref()),
            ))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error(&format!("HEAD {key}"), e)),
        }
    }

    /// A small object whole, or None.
    pub async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let Some((_, body)) = self.get_stream(key, None).await? else {
            return Ok(None);
        };
        let data = body
            .collect()
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(format!("reading {key}: {e}"))))?;
        Ok(Some(data.into_bytes()))
    }

    /// An object (or a range `a-b` of it) as a stream, with the whole object's size.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> StoreResult<Option<(u64, SdkStream)>> {
        let mut req = self.client.get_object().bucket(&self.name).key(key);
        if let Some((a, b)) = range {
            req = req.range(format!("bytes={a}-{b}"));
        }
        match req.send().await {
            Ok(o) => {
                let size = match (&o.content_range, range) {
                    (Some(cr), Some(_)) => cr
                        .rsplit('/')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    _ => o.content_length.unwrap_or(0).max(0) as u64,
                };
                Ok(Some((size, o.body)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error(&format!("GET {key}"), e)),
        }
    }

    pub async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.error(&format!("PUT {key}"), e))?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(&format!("DELETE {key}"), e))?;
        Ok(())
    }

    /// Every object under `prefix` (a whole walk: for maintenance, not request paths).
    pub async fn list(&self, prefix: &str) -> StoreResult<Vec<Object>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(&format!("listing {prefix}"), e))?;
            for o in page.contents.unwrap_or_default() {
                if let Some(key) = o.key {
                    out.push(Object {
                        key,
                        size: o.size.unwrap_or(0).max(0) as u64,
                        modified: modified(o.last_modified.as_ref()),
                    });
                }
            }
        }
        Ok(out)
    }

    /// True if any object lies under `prefix`.
    pub async fn any_under(&self, prefix: &str) -> StoreResult<bool> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.error(&format!("listing {prefix}"), e))?;
        Ok(page.key_count.unwrap_or(0) > 0)
    }

    /// Delete keys in batches of S3's limit, 1000 per request.
    pub async fn delete_many(&self, keys: Vec<String>) -> StoreResult<usize> {
        let n = keys.len();
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.name)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error("deleting objects", e))?;
            if let Some(err) = out.errors.unwrap_or_default().into_iter().next() {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "{} deleting {}: {}",
                    self.describe,
                    err.key.unwrap_or_default(),
                    err.message.unwrap_or_default()
                ))));
            }
        }
        Ok(n)
    }

    pub async fn delete_prefix(&self, prefix: &str) -> StoreResult<usize> {
        let keys = self
            .list(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        self.delete_many(keys).await
    }

    /// A server-side copy: the bytes never pass through wharf. Above the threshold it goes
    /// part by part (UploadPartCopy), which is also how objects over S3's 5 GiB copy limit
    /// are copied at all.
    pub async fn copy(&self, from: &str, to: &str, size: u64) -> StoreResult<()> {
        if size <= self.copy_threshold {
            self.client
                .copy_object()
                .bucket(&self.name)
                .key(to)
                .copy_source(self.source(from))
                .send()
                .await
                .map_err(|e| self.error(&format!("copying {from} to {to}"), e))?;
            return Ok(());
        }
        let id = self.create_multipart(to).await?;
        let result = self.copy_parts(&id, from, to, size).await;
        match result {
            Ok(parts) => self.complete_multipart(to, &id, parts).await,
            Err(e) => {
                let _ = self.abort_multipart(to, &id).await;
                Err(e)
            }
        }
    }

    async fn copy_parts(
        &self,
        id: &str,
        from: &str,
        to: &str,
        size: u64,
    ) -> StoreResult<Vec<CompletedPart>> {
        // Parts grow so that even a 5 TiB object fits S3's 10,000 parts.
        let chunk = self.copy_chunk.max(size.div_ceil(10_000));
        let ranges: Vec<(i32, u64, u64)> = (0..size.div_ceil(chunk))
            .map(|i| {
                let start = i * chunk;
                (i as i32 + 1, start, (start + chunk).min(size) - 1)
            })
            .collect();
        let mut parts: Vec<CompletedPart> = stream::iter(ranges)
            .map(|(n, a, b)| async move {
                let etag = self.copy_part(to, id, n, from, Some((a, b))).await?;
                Ok::<_, StoreError>(CompletedPart::builder().part_number(n).e_tag(etag).build())
            })
            .buffer_unordered(self.copy_concurrency)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number);
        Ok(parts)
    }

    /// CopySource: `bucket/key`, URL-encoded (a `rootdirectory` may hold any character).
    fn source(&self, key: &str) -> String {
        let mut out = format!("{}/", self.name);
        for b in key.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    pub async fn create_multipart(&self, key: &str) -> StoreResult<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(&format!("starting a multipart upload of {key}"), e))?;
        out.upload_id.ok_or_else(|| {
            StoreError::Io(std::io::Error::other(
                "CreateMultipartUpload gave no upload id",
            ))
        })
    }

    /// Upload one part; returns its ETag.
    pub async fn put_part(&self, key: &str, id: &str, n: i32, body: Bytes) -> StoreResult<String> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.error(&format!("uploading part {n} of {key}"), e))?;
        Ok(out.e_tag.unwrap_or_default())
    }

    /// A part made of an existing object's bytes (all, or the range `a-b`), copied
    /// server-side; returns its ETag.
    pub async fn copy_part(
        &self,
        key: &str,
        id: &str,
        n: i32,
        from: &str,
        range: Option<(u64, u64)>,
    ) -> StoreResult<String> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .copy_source(self.source(from))
            .set_copy_source_range(range.map(|(a, b)| format!("bytes={a}-{b}")))
            .send()
            .await
            .map_err(|e| self.error(&format!("copying {from} into part {n} of {key}"), e))?;
        Ok(out
            .copy_part_result
            .and_then(|r| r.e_tag)
            .unwrap_or_default())
    }

    pub async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        parts: Vec<CompletedPart>,
    ) -> StoreResult<()> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error(&format!("completing the multipart upload of {key}"), e))?;
        Ok(())
    }

    /// Multipart uploads in progress under `prefix`: (key, upload id, when it began).
    pub async fn list_multipart(
        &self,
        prefix: &str,
    ) -> StoreResult<Vec<(String, String, SystemTime)>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.name)
                .prefix(prefix)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| self.error("listing multipart uploads", e))?;
            for u in page.uploads.unwrap_or_default() {
                if let (Some(k), Some(id)) = (u.key, u.upload_id) {
                    out.push((k, id, modified(u.initiated.as_ref())));
                }
            }
            if page.is_truncated != Some(true) {
                return Ok(out);
            }
            (key_marker, id_marker) = (page.next_key_marker, page.next_upload_id_marker);
        }
    }

    pub async fn abort_multipart(&self, key: &str, id: &str) -> StoreResult<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .upload_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.error(&format!("aborting the multipart upload of {key}"), e)),
        }
    }

    pub async fn presign_get(&self, key: &str) -> StoreResult<String> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(super::PRESIGN_FOR)
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| self.error(&format!("presigning {key}"), e))?;
        Ok(req.uri().to_string())
    }
}

/// An SDK body as the store's byte stream.
pub fn byte_stream(body: SdkStream) -> ByteStream {
    stream::unfold(body, |mut body| async move {
        body.next()
            .await
            .map(|r| (r.map_err(std::io::Error::other), body))
    })
    .boxed()
}

fn is_not_found<E>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 404)
}

fn modified(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

async fn client(config: &S3Config) -> Client {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    use aws_config::{BehaviorVersion, Region};
    use aws_smithy_http_client::tls;

    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(config.region.clone()));
    if let (Some(ak), Some(sk)) = (&config.accesskey, &config.secretkey) {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            ak,
            sk,
            None,
            None,
            "storage.s3",
        ));
    }
    let shared = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&shared)
        // Throttling (SlowDown, 503) and transient errors back off and retry.
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(120))
                .build(),
        )
        // S3-compatible stores differ on the newer checksum headers; ask only when required.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .force_path_style(config.forcepathstyle);
    if let Some(endpoint) = &config.regionendpoint {
        let url = if endpoint.contains("://") {
            endpoint.clone()
        } else {
            let scheme = if config.secure { "https" } else { "http" };
            format!("{scheme}://{endpoint}")
        };
        // As Distribution 2.8.2: a custom endpoint is addressed path-style.
        b = b.endpoint_url(url).force_path_style(true);
    }
    Client::from_conf(b.build())
}
