//! The contract every backend must keep, as functions that take any implementation.
//! Each backend's tests call these (see the bottom of this file for the filesystem one);
//! public so that tests which start a real object store or database can run them too.

use std::sync::Arc;

use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use wharf_oci::{Digest, RepoName, Tag};

use super::{BlobStore, ByteStream, ManifestRecord, MetaStore, StoreError};

fn body(chunks: &[&'static [u8]]) -> ByteStream {
    stream::iter(
        chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c)))
            .collect::<Vec<_>>(),
    )
    .boxed()
}

async fn concat(body: ByteStream) -> Vec<u8> {
    body.try_fold(Vec::new(), |mut acc, chunk| async move {
        acc.extend_from_slice(&chunk);
        Ok(acc)
    })
    .await
    .unwrap()
}

async fn read_all(blobs: &dyn BlobStore, d: &Digest) -> Vec<u8> {
    concat(blobs.read(d, None).await.unwrap().body).await
}

pub async fn blob_store_contract(blobs: Arc<dyn BlobStore>) {
    let repo: RepoName = "suite/repo".parse().unwrap();
    let digest = Digest::sha256_of(b"hello world");
    chunked_upload(&blobs, &repo, &digest).await;
    ranges(&blobs, &digest).await;
    failed_body(&blobs, &repo).await;
    concurrent_uploads(&blobs, &repo).await;
    monolithic(&blobs).await;
    small_content(&blobs, &digest).await;
    purging(&blobs, &repo).await;
}

/// A chunked upload: offsets checked, invisible until a verified commit.
async fn chunked_upload(blobs: &Arc<dyn BlobStore>, repo: &RepoName, digest: &Digest) {
    let id = blobs.start_upload(repo).await.unwrap();
    assert_eq!(
        blobs
            .append(repo, id, Some(0), body(&[b"hello"]))
            .await
            .unwrap(),
        5
    );
    let wrong = blobs
        .append(repo, id, Some(3), body(&[b"xx"]))
        .await
        .unwrap_err();
    assert!(matches!(
        wrong,
        StoreError::UploadOffset {
            expected: 3,
            actual: 5
        }
    ));
    assert_eq!(
        blobs
            .append(repo, id, None, body(&[b" wor", b"ld"]))
            .await
            .unwrap(),
        11
    );
    assert_eq!(blobs.upload_size(repo, id).await.unwrap(), 11);
    assert!(
        blobs.stat(digest).await.unwrap().is_none(),
        "not visible before commit"
    );
    // What is appended can be read back while the upload grows (a proxy fill's followers).
    let part = blobs.read_upload(repo, id, 3, 8).await.unwrap();
    assert_eq!(concat(part).await, b"lo wo");

    // A wrong digest is refused and the upload survives; the right one commits.
    let bad = blobs
        .commit(repo, id, &Digest::sha256_of(b"other"))
        .await
        .unwrap_err();
    assert!(matches!(bad, StoreError::DigestMismatch { .. }));
    assert_eq!(blobs.commit(repo, id, digest).await.unwrap(), 11);
    assert_eq!(blobs.stat(digest).await.unwrap(), Some(11));
    assert!(matches!(
        blobs.read_upload(repo, id, 0, 1).await.err(),
        Some(StoreError::UploadUnknown(_))
    ));
    assert_eq!(read_all(&**blobs, digest).await, b"hello world");
    assert!(matches!(
        blobs.upload_size(repo, id).await,
        Err(StoreError::UploadUnknown(_))
    ));
}

/// Byte ranges of a committed blob.
async fn ranges(blobs: &Arc<dyn BlobStore>, digest: &Digest) {
    let part = blobs.read(digest, Some(6..=10)).await.unwrap();
    assert_eq!(concat(part.body).await, b"world");
    assert!(matches!(
        blobs.read(digest, Some(5..=11)).await,
        Err(StoreError::RangeInvalid { .. })
    ));
}

/// A failing body leaves the upload where it was; a cancel ends it once.
async fn failed_body(blobs: &Arc<dyn BlobStore>, repo: &RepoName) {
    let id = blobs.start_upload(repo).await.unwrap();
    blobs.append(repo, id, None, body(&[b"abc"])).await.unwrap();
    let failing: ByteStream = stream::iter(vec![
        Ok(Bytes::from_static(b"def")),
        Err(std::io::Error::other("cut")),
    ])
    .boxed();
    assert!(matches!(
        blobs.append(repo, id, None, failing).await,
        Err(StoreError::Body(_))
    ));
    assert_eq!(blobs.upload_size(repo, id).await.unwrap(), 3);
    blobs.cancel(repo, id).await.unwrap();
    assert!(matches!(
        blobs.cancel(repo, id).await,
        Err(StoreError::UploadUnknown(_))
    ));
}

/// Concurrent uploads of the same content all succeed.
async fn concurrent_uploads(blobs: &Arc<dyn BlobStore>, repo: &RepoName) {
    let same = Digest::sha256_of(b"same");
    let uploads = (0..4).map(|_| {
        let (blobs, repo, same) = (blobs.clone(), repo.clone(), same.clone());
        tokio::spawn(async move {
            let id = blobs.start_upload(&repo).await.unwrap();
            blobs
                .append(&repo, id, Some(0), body(&[b"sa", b"me"]))
                .await
                .unwrap();
            blobs.commit(&repo, id, &same).await.unwrap()
        })
    });
    for u in futures::future::join_all(uploads).await {
        assert_eq!(u.unwrap(), 4);
    }
}

/// A whole blob in one request: verified, and nothing visible when it does not match.
async fn monolithic(blobs: &Arc<dyn BlobStore>) {
    let whole = Digest::sha256_of(b"in one go");
    assert_eq!(
        blobs
            .put_stream(&whole, body(&[b"in one", b" go"]))
            .await
            .unwrap(),
        9
    );
    assert_eq!(read_all(&**blobs, &whole).await, b"in one go");
    let liar = Digest::sha256_of(b"claimed");
    assert!(matches!(
        blobs.put_stream(&liar, body(&[b"sent"])).await,
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(blobs.stat(&liar).await.unwrap().is_none());
    let failing: ByteStream = stream::iter(vec![
        Ok(Bytes::from_static(b"cl")),
        Err(std::io::Error::other("cut")),
    ])
    .boxed();
    assert!(matches!(
        blobs.put_stream(&liar, failing).await,
        Err(StoreError::Body(_))
    ));
    assert!(blobs.stat(&liar).await.unwrap().is_none());
}

/// Small content, verified; then a delete.
async fn small_content(blobs: &Arc<dyn BlobStore>, digest: &Digest) {
    let m = Bytes::from_static(b"{}");
    assert!(blobs
        .put(&Digest::sha256_of(b"x"), m.clone())
        .await
        .is_err());
    blobs
        .put(&Digest::sha256_of(b"{}"), m.clone())
        .await
        .unwrap();
    assert_eq!(
        blobs.get(&Digest::sha256_of(b"{}"), 10).await.unwrap(),
        Some(m)
    );
    assert_eq!(blobs.get(&Digest::sha256_of(b"{}"), 1).await.unwrap(), None);

    blobs.delete(digest).await.unwrap();
    assert!(blobs.stat(digest).await.unwrap().is_none());
}

/// Purging: fresh uploads stay, and everything goes once it is older than the limit.
async fn purging(blobs: &Arc<dyn BlobStore>, repo: &RepoName) {
    let id = blobs.start_upload(repo).await.unwrap();
    assert_eq!(
        blobs
            .purge_uploads(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(blobs.upload_size(repo, id).await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        blobs
            .purge_uploads(std::time::Duration::from_millis(1))
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        blobs.upload_size(repo, id).await,
        Err(StoreError::UploadUnknown(_))
    ));
}

/// Links are to stored blobs: a store with review queues refuses a link to nothing.
pub async fn meta_store_contract(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>) {
    let repo: RepoName = "suite/meta".parse().unwrap();
    let other: RepoName = "suite/other".parse().unwrap();
    let layer = Digest::sha256_of(b"layer");
    assert!(!meta.repo_exists(&repo).await.unwrap());
    assert!(meta.list_tags(&repo, None, None).await.unwrap().is_none());
    let stored = Bytes::from_static(b"layer");
    blobs.put(&layer, stored).await.unwrap();
    meta.link_blob(&repo, &layer).await.unwrap();
    meta.link_blob(&repo, &layer).await.unwrap();
    assert!(meta.blob_linked(&repo, &layer).await.unwrap());
    assert!(!meta.blob_linked(&other, &layer).await.unwrap());

    let subject_bytes = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
    let subject = Digest::sha256_of(subject_bytes);
    blobs
        .put(&subject, Bytes::from_static(subject_bytes))
        .await
        .unwrap();
    let record = |d: &Digest| ManifestRecord {
        digest: d.clone(),
        blobs: vec![],
        foreign: vec![],
        children: vec![],
        referrer: None,
    };
    for t in ["b", "a", "c"] {
        let tag = t.parse::<Tag>().unwrap();
        let now = blobs.now().await.unwrap();
        meta.put_manifest(&repo, &record(&subject), Some(&tag), now)
            .await
            .unwrap();
    }
    let tags = meta.list_tags(&repo, None, None).await.unwrap().unwrap();
    assert_eq!(tags.items, ["a", "b", "c"]);
    let page = meta
        .list_tags(&repo, Some("a"), Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (page.items.as_slice(), page.more),
        (&["b".to_owned()][..], true)
    );
    assert_eq!(
        meta.resolve_tag(&repo, &"a".parse().unwrap())
            .await
            .unwrap(),
        Some(subject.clone())
    );
    assert!(meta
        .list_repos(None, None)
        .await
        .unwrap()
        .items
        .contains(&"suite/meta".to_owned()));

    // Referrers: a manifest with a subject, found both from a fresh index and a loaded one.
    let referrer_bytes = format!(
        r#"{{"schemaVersion":2,"artifactType":"x/sig","config":{{"mediaType":"a","digest":"{layer}","size":0}},"layers":[],"subject":{{"mediaType":"a","digest":"{subject}","size":1}}}}"#
    );
    let referrer = Digest::sha256_of(referrer_bytes.as_bytes());
    assert!(meta.referrers(&repo, &subject).await.unwrap().is_empty());
    blobs
        .put(&referrer, Bytes::from(referrer_bytes.clone()))
        .await
        .unwrap();
    let parsed = wharf_oci::Manifest::parse(referrer_bytes.as_bytes(), None).unwrap();
    let descriptor = parsed.referrer_descriptor(referrer.clone(), referrer_bytes.len() as u64);
    let mut rec = record(&referrer);
    rec.referrer = Some((subject.clone(), descriptor));
    let now = blobs.now().await.unwrap();
    meta.put_manifest(&repo, &rec, None, now).await.unwrap();
    let found = meta.referrers(&repo, &subject).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].artifact_type.as_deref(), Some("x/sig"));

    // Deleting a manifest takes its tags; deleting a tag leaves the manifest.
    assert!(meta.delete_tag(&repo, &"c".parse().unwrap()).await.unwrap());
    assert!(meta.manifest_linked(&repo, &subject).await.unwrap());
    assert!(meta.delete_manifest(&repo, &subject).await.unwrap());
    assert!(!meta.delete_manifest(&repo, &subject).await.unwrap());
    assert_eq!(
        meta.resolve_tag(&repo, &"a".parse().unwrap())
            .await
            .unwrap(),
        None
    );
    assert!(meta
        .list_tags(&repo, None, None)
        .await
        .unwrap()
        .unwrap()
        .items
        .is_empty());
    assert!(meta.delete_manifest(&repo, &referrer).await.unwrap());
    assert!(meta.referrers(&repo, &subject).await.unwrap().is_empty());
    assert!(meta.unlink_blob(&repo, &layer).await.unwrap());
    assert!(!meta.blob_linked(&repo, &layer).await.unwrap());
}

#[cfg(test)]
mod fs_backend {
    use super::*;

    fn stores(root: &std::path::Path) -> (Arc<dyn BlobStore>, Arc<dyn MetaStore>) {
        let store = crate::store::fs::open(root, true).unwrap();
        (store.blobs, store.meta)
    }

    #[tokio::test]
    async fn fs_blob_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        blob_store_contract(stores(dir.path()).0).await;
    }

    #[tokio::test]
    async fn fs_meta_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, meta) = stores(dir.path());
        meta_store_contract(meta, blobs).await;
    }

    #[tokio::test]
    async fn fs_upload_resumes_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let id = {
            let (blobs, _) = stores(dir.path());
            let id = blobs.start_upload(&repo).await.unwrap();
            blobs
                .append(&repo, id, None, body(&[b"resum"]))
                .await
                .unwrap();
            id
        };
        let (blobs, _) = stores(dir.path());
        assert_eq!(blobs.upload_size(&repo, id).await.unwrap(), 5);
        blobs
            .append(&repo, id, Some(5), body(&[b"able"]))
            .await
            .unwrap();
        blobs
            .commit(&repo, id, &Digest::sha256_of(b"resumable"))
            .await
            .unwrap();
        assert_eq!(
            read_all(&*blobs, &Digest::sha256_of(b"resumable")).await,
            b"resumable"
        );
    }
}

/// Two stores on one directory, as two processes would be: what one writes, the other
/// reads at once, though it cached the listing before.
#[cfg(test)]
mod two_processes {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn a_cached_tag_list_follows_the_other_process() {
        let dir = tempfile::tempdir().unwrap();
        let a = crate::store::fs::open(dir.path(), true).unwrap();
        let b = crate::store::fs::open(dir.path(), true).unwrap();
        let repo: RepoName = "two/procs".parse().unwrap();
        let bytes = Bytes::from_static(br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#);
        let d = Digest::sha256_of(&bytes);
        a.blobs.put(&d, bytes).await.unwrap();
        let record = ManifestRecord {
            digest: d.clone(),
            blobs: vec![],
            foreign: vec![],
            children: vec![],
            referrer: None,
        };
        a.meta
            .put_manifest(
                &repo,
                &record,
                Some(&"one".parse().unwrap()),
                SystemTime::now(),
            )
            .await
            .unwrap();
        // Settle the tags directory, so B caches its listing.
        let tags = dir
            .path()
            .join("docker/registry/v2/repositories/two/procs/_manifests/tags");
        std::fs::File::open(&tags)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        let list = |m: Arc<dyn MetaStore>| {
            let repo = repo.clone();
            async move { m.list_tags(&repo, None, None).await.unwrap().unwrap().items }
        };
        assert_eq!(list(b.meta.clone()).await, ["one"]);
        assert_eq!(list(b.meta.clone()).await, ["one"]);
        a.meta
            .put_manifest(
                &repo,
                &record,
                Some(&"two".parse().unwrap()),
                SystemTime::now(),
            )
            .await
            .unwrap();
        assert_eq!(list(b.meta.clone()).await, ["one", "two"]);
        assert!(a
            .meta
            .delete_tag(&repo, &"one".parse().unwrap())
            .await
            .unwrap());
        assert_eq!(list(b.meta.clone()).await, ["two"]);
        assert_eq!(
            b.meta
                .resolve_tag(&repo, &"two".parse().unwrap())
                .await
                .unwrap(),
            Some(d)
        );
    }
}
