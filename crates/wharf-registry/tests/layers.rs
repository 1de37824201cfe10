//! Cross-cutting behaviour is one layer around the service, and no handler changes: a
//! layer that counts what clients ask, and one that enforces a policy, each added with
//! `RegistryBuilder::layer` and exercised through the HTTP API's own entry point.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use wharf_oci::{Digest, ErrorCode, Reference, RepoName};
use wharf_registry::auth::Auth;
use wharf_registry::http::{handle, AppState};
use wharf_registry::registry::events::Origin;
use wharf_registry::registry::{
    ByteStream, Error, Layer, PutManifest, Registry, Result, Served, Service,
};

/// Counts manifest reads and blob pushes, as a metric would.
struct Counting {
    inner: Arc<dyn Service>,
    manifest_reads: Arc<AtomicUsize>,
    blob_pushes: Arc<AtomicUsize>,
}

#[async_trait]
impl Layer for Counting {
    fn inner(&self) -> &dyn Service {
        &*self.inner
    }

    async fn manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Served>> {
        self.manifest_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.manifest(o, repo, reference).await
    }

    async fn put_blob(
        &self,
        o: &Origin,
        repo: &RepoName,
        digest: &Digest,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        self.blob_pushes.fetch_add(1, Ordering::Relaxed);
        self.inner.put_blob(o, repo, digest, length, body).await
    }
}

/// A policy: no repository may move its `latest` tag.
struct NoLatest(Arc<dyn Service>);

#[async_trait]
impl Layer for NoLatest {
    fn inner(&self) -> &dyn Service {
        &*self.0
    }

    async fn put_manifest(
        &self,
        o: &Origin,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        if reference.to_string() == "latest" {
            return Err(Error::refused(
                ErrorCode::Denied,
                format!("{repo}:latest is refused by policy: push a version tag"),
            ));
        }
        self.0
            .put_manifest(o, repo, reference, content_type, bytes)
            .await
    }
}

async fn send(state: &Arc<AppState>, method: &str, uri: &str, body: Bytes) -> (StatusCode, String) {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut req = Request::builder().method(method).uri(uri);
    if uri.contains("/manifests/") && method == "PUT" {
        req = req.header("content-type", "application/vnd.oci.image.manifest.v1+json");
    }
    let req = req.body(axum::body::Body::from(body)).unwrap();
    let resp = match handle(state.clone(), peer, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_layer_counts_and_a_layer_decides_without_touching_a_handler() {
    let dir = tempfile::tempdir().unwrap();
    let store = wharf_registry::store::fs::open(dir.path(), true).unwrap();
    let (reads, pushes) = (Arc::default(), Arc::default());
    let (r, p) = (Arc::clone(&reads), Arc::clone(&pushes));
    let registry = Registry::builder(store)
        .layer(|inner| Arc::new(NoLatest(inner)))
        .layer(move |inner| {
            Arc::new(Counting {
                inner,
                manifest_reads: r,
                blob_pushes: p,
            })
        })
        .build();
    let state = Arc::new(AppState {
        registry: Arc::new(registry),
        metrics: Arc::default(),
        auth: Auth::open(),
        upload_secret: b"secret".to_vec(),
        base_url: None,
        tls: false,
        extra_headers: Vec::new(),
        access_log: false,
        health: Arc::default(),
    });

    let config_blob = Bytes::from_static(b"{}");
    let digest = Digest::sha256_of(&config_blob);
    let (status, _) = send(
        &state,
        "POST",
        &format!("/v2/t/app/blobs/uploads/?digest={digest}"),
        config_blob.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest.to_string(),
            "size": config_blob.len(),
        },
        "layers": [],
    });
    let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    let (status, body) = send(&state, "PUT", "/v2/t/app/manifests/v1", manifest.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = send(&state, "GET", "/v2/t/app/manifests/v1", Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&state, "HEAD", "/v2/t/app/manifests/v2", Bytes::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(reads.load(Ordering::Relaxed), 2);
    assert_eq!(pushes.load(Ordering::Relaxed), 1);

    // The policy answers in its own words, with the spec's code, through the unchanged
    // handler; nothing was stored under the refused tag.
    let (status, body) = send(&state, "PUT", "/v2/t/app/manifests/latest", manifest).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("DENIED"), "{body}");
    assert!(body.contains("t/app:latest is refused by policy"), "{body}");
    let (status, _) = send(&state, "GET", "/v2/t/app/manifests/latest", Bytes::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
