//! The S3 store itself on a real Garage: the contract suite, multipart uploads continued
//! by another process, racing appends, and the purge of abandoned multipart uploads.

use bytes::Bytes;
use futures::stream;
use futures::StreamExt;
use wharf_oci::{Digest, RepoName};
use wharf_registry::store::s3::{self, S3Config};
use wharf_registry::store::{suite, BlobStore, Store};

use crate::harness::garage::{Garage, BUCKET};
use crate::pushes::noise;

const MIB: usize = 1024 * 1024;

fn config(g: &Garage, root: &str) -> S3Config {
    let mut c = S3Config::new(BUCKET.into(), "garage".into());
    c.accesskey = Some(g.access_key.clone());
    c.secretkey = Some(g.secret_key.clone());
    c.regionendpoint = Some(g.endpoint.clone());
    c.rootdirectory = root.into();
    c.chunksize = 5 * MIB as u64;
    // Small enough that the 13 MiB commit below is copied part by part (UploadPartCopy),
    // as blobs over S3's 5 GiB CopyObject limit must be.
    c.multipartcopythresholdsize = 6 * MIB as u64;
    c.multipartcopychunksize = 5 * MIB as u64;
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn open(g: &Garage, root: &str) -> Store {
    s3::open(&config(g, root), None).await.unwrap()
}

fn body(data: Vec<u8>, frames: usize) -> wharf_registry::store::ByteStream {
    let size = data.len().div_ceil(frames).max(1);
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks).boxed()
}

async fn read_all(blobs: &dyn BlobStore, d: &Digest) -> Vec<u8> {
    let mut body = blobs.read(d, None).await.unwrap().body;
    let mut out = Vec::new();
    while let Some(c) = body.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[test]
fn s3_store_keeps_the_contract_on_garage() {
    let g = Garage::start();
    runtime().block_on(async {
        let store = open(&g, "/contract").await;
        suite::blob_store_contract(store.blobs.clone()).await;
        suite::meta_store_contract(store.meta.clone(), store.blobs.clone()).await;
    });
}

/// Chunks smaller and larger than a part, sent to two stores (two processes, two
/// replicas): whole parts, a tail carried between requests, and a commit that copies
/// server-side. Then a monolithic body of several parts, and a wrong digest refused.
#[test]
fn s3_multipart_uploads_continue_across_processes() {
    let g = Garage::start();
    runtime().block_on(async {
        let (a, b) = (open(&g, "/").await, open(&g, "/").await);
        let repo: RepoName = "multi/part".parse().unwrap();
        let data = noise(7, 13 * MIB + 12345);
        let digest = Digest::sha256_of(&data);
        let id = a.blobs.start_upload(&repo).await.unwrap();
        let cuts = [0, 3 * MIB, 4 * MIB, 11 * MIB, data.len()];
        for (i, w) in cuts.windows(2).enumerate() {
            let store = if i % 2 == 0 { &a } else { &b };
            let size = store
                .blobs
                .append(
                    &repo,
                    id,
                    Some(w[0] as u64),
                    body(data[w[0]..w[1]].to_vec(), 3),
                )
                .await
                .unwrap();
            assert_eq!(size, w[1] as u64);
        }
        assert_eq!(
            b.blobs.upload_size(&repo, id).await.unwrap(),
            data.len() as u64
        );
        assert!(
            a.blobs.stat(&digest).await.unwrap().is_none(),
            "not before commit"
        );
        let wrong = Digest::sha256_of(b"not it");
        assert!(b.blobs.commit(&repo, id, &wrong).await.is_err());
        assert_eq!(
            b.blobs.commit(&repo, id, &digest).await.unwrap(),
            data.len() as u64
        );
        assert_eq!(read_all(&*a.blobs, &digest).await, data);
        assert!(
            a.blobs.list_uploads().await.unwrap().is_empty(),
            "upload cleaned up"
        );

        let mono = noise(9, 12 * MIB);
        let md = Digest::sha256_of(&mono);
        assert!(a
            .blobs
            .put_stream(&wrong, body(mono.clone(), 40))
            .await
            .is_err());
        assert!(a.blobs.stat(&wrong).await.unwrap().is_none());
        assert_eq!(
            a.blobs
                .put_stream(&md, body(mono.clone(), 40))
                .await
                .unwrap(),
            mono.len() as u64
        );
        assert_eq!(read_all(&*b.blobs, &md).await, mono);
        let range = b
            .blobs
            .read(&md, Some(5 * MIB as u64..=5 * MIB as u64 + 9))
            .await
            .unwrap();
        assert_eq!(range.size, mono.len() as u64);
    });
}

/// Two appends racing at the same offset of one upload (as two replicas could be sent):
/// whichever state wins, a commit publishes only bytes that hash to the digest it names.
#[test]
fn racing_appends_never_publish_bytes_under_another_digest() {
    let g = Garage::start();
    runtime().block_on(async {
        let store = open(&g, "/race").await;
        let repo: RepoName = "race/app".parse().unwrap();
        for round in 0..6u64 {
            let id = store.blobs.start_upload(&repo).await.unwrap();
            let (x, y) = (noise(2 * round + 1, 4096), noise(2 * round + 2, 4096));
            let (a, b) = tokio::join!(
                store.blobs.append(&repo, id, Some(0), body(x.clone(), 2)),
                store.blobs.append(&repo, id, Some(0), body(y.clone(), 2)),
            );
            assert!(a.is_ok() || b.is_ok());
            for data in [x, y] {
                let d = Digest::sha256_of(&data);
                if store.blobs.commit(&repo, id, &d).await.is_ok() {
                    let got = Digest::sha256_of(&read_all(&*store.blobs, &d).await);
                    assert_eq!(
                        got, d,
                        "round {round}: bytes published under another digest"
                    );
                }
            }
        }
    });
}

/// A multipart upload nothing names any more (a push that died midway) is aborted by the
/// upload purge once old enough; the multipart upload of an upload in progress is kept.
#[test]
fn upload_purging_aborts_orphaned_multipart_uploads_and_keeps_live_ones() {
    let g = Garage::start();
    runtime().block_on(async {
        let cfg = config(&g, "/purge");
        let store = s3::open(&cfg, None).await.unwrap();
        let bucket = s3::Bucket::connect(&cfg).await.unwrap();
        let orphan_key = "purge/docker/registry/v2/blobs/sha256/00/00aa/data";
        let orphan = bucket.create_multipart(orphan_key).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let repo: RepoName = "purge/app".parse().unwrap();
        let data = noise(11, 6 * MIB);
        let id = store.blobs.start_upload(&repo).await.unwrap();
        store
            .blobs
            .append(&repo, id, None, body(data.clone(), 4))
            .await
            .unwrap();
        let open = || async {
            bucket
                .list_multipart("purge/")
                .await
                .unwrap()
                .into_iter()
                .map(|(_, mp, _)| mp)
                .collect::<Vec<_>>()
        };
        assert_eq!(open().await.len(), 2);
        let purged = store
            .blobs
            .purge_uploads(std::time::Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(purged, 1, "the orphan, not the live upload");
        let left = open().await;
        assert_eq!(left.len(), 1);
        assert!(!left.contains(&orphan));
        let d = Digest::sha256_of(&data);
        store.blobs.commit(&repo, id, &d).await.unwrap();
        assert_eq!(Digest::sha256_of(&read_all(&*store.blobs, &d).await), d);
    });
}
