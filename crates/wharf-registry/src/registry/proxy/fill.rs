//! Blobs through the cache. A miss starts one fill: a task that streams the upstream's
//! bytes into an upload of the BlobStore and commits it against the digest, so the blob
//! becomes visible only verified. Every client that asks meanwhile follows the fill,
//! reading the upload's bytes as they are appended. The last byte is held back until the
//! upload's running hash matches the digest, so a corrupt blob is never served whole;
//! clients need that check, not durability, so it goes out before the commit's fsync.
//! The fill runs on its own task: a client that disconnects does not stop it. Across
//! processes, a lease (`lease.rs`) makes one of them fill and the others wait for it.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;
use wharf_oci::{Digest, RepoName};

use super::{lease, Landing, Proxy, ProxyLayer, ProxyStats, Route, UpstreamFailure};
use crate::registry::{BlobSource, Core, Error, Result};
use crate::store::{ByteStream, StoreError};

/// Appends are batched up to this much of what has already arrived: each append records
/// a hash state, and a client following the fill waits at most one batch.
const BATCH: usize = 4 << 20;

#[derive(Clone, Debug)]
enum State {
    Connecting,
    Writing {
        id: Uuid,
        size: u64,
        written: u64,
        /// The batch just appended, from offset `written - its length`: a follower that
        /// has everything before it takes it from here, without reading the file back.
        recent: Option<Arc<Vec<Bytes>>>,
        /// Everything is written and hashes to the digest: the last byte may go out.
        verified: bool,
    },
    Done {
        size: u64,
    },
    Failed(UpstreamFailure),
}

/// A fill in progress; clients follow it through `state`.
pub struct Fill {
    state: watch::Receiver<State>,
}

impl ProxyLayer {
    /// The blob `digest` of the proxied `repo`: from the store, or fetched once.
    /// None when the upstream does not have it. `want_body` false (a HEAD) still starts
    /// the fill, so the GET that follows finds it under way.
    pub async fn proxied_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        route: &Route,
        want_body: bool,
    ) -> Result<Option<BlobSource>> {
        let proxy = &self.proxy;
        if let Some(size) = self.core.blob_in_repo(repo, digest).await? {
            ProxyStats::count(&proxy.stats.hits, 1);
            return Ok(Some(BlobSource::Stored(size)));
        }
        let fill = match proxy.fills.get(digest) {
            Some(f) => f,
            // Fetched for another repository already: never fetched twice. It is linked
            // here only if the upstream has it in this repository (a HEAD), so a digest
            // known from a private repository opens nothing.
            None if self.core.store.blobs.stat(digest).await?.is_some() => {
                return self.link_cached(repo, digest, route).await;
            }
            None => proxy.fills.join_or_start(digest.clone(), |landing| {
                start(proxy, self.core.clone(), repo, digest, route, landing)
            }),
        };
        let mut state = fill.state.clone();
        let size = loop {
            let now = state.borrow_and_update().clone();
            match now {
                State::Writing { size, .. } | State::Done { size } => break size,
                State::Failed(UpstreamFailure::NotFound) => return Ok(None),
                State::Failed(f) => return Err(f.into_error(&route.remote)),
                State::Connecting => {
                    if state.changed().await.is_err() {
                        return Err(Error::Store(StoreError::Io(io::Error::other(
                            "the fill ended without a result",
                        ))));
                    }
                }
            }
        };
        if !want_body {
            return Ok(Some(BlobSource::Filling(
                size,
                futures::stream::empty().boxed(),
            )));
        }
        Ok(Some(BlobSource::Filling(
            size,
            follow(state, self.core.clone(), repo.clone(), digest.clone()),
        )))
    }
}

/// Whether the upstream has `digest` in `upstream_repo` (a HEAD), within the timeout.
async fn upstream_has(
    remote: &super::Remote,
    upstream_repo: &RepoName,
    digest: &Digest,
) -> Result<bool, UpstreamFailure> {
    let timeout = super::upstream::MANIFEST_TIMEOUT;
    remote
        .ask(
            Some(timeout),
            remote.client.blob_exists(upstream_repo, digest),
        )
        .await
}

impl ProxyLayer {
    /// A blob the store holds for another repository, linked into the proxied `repo`
    /// once its upstream confirms it has it there.
    async fn link_cached(
        &self,
        repo: &RepoName,
        digest: &Digest,
        route: &Route,
    ) -> Result<Option<BlobSource>> {
        let proxy = &self.proxy;
        let remote = &route.remote;
        match upstream_has(remote, &route.upstream_repo, digest).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(failure) => return Err(failure.into_error(remote)),
        }
        ProxyStats::count(&proxy.stats.hits, 1);
        if !self.core.publish_link(repo, digest).await? {
            return Ok(None);
        }
        Ok(self
            .core
            .blob_in_repo(repo, digest)
            .await?
            .map(BlobSource::Stored))
    }
}

fn start(
    proxy: &Proxy,
    core: Arc<Core>,
    repo: &RepoName,
    digest: &Digest,
    route: &Route,
    landing: Landing,
) -> Arc<Fill> {
    let (tx, rx) = watch::channel(State::Connecting);
    let job = FillJob {
        core,
        stats: proxy.stats.clone(),
        remote: route.remote.clone(),
        repo: repo.clone(),
        upstream_repo: route.upstream_repo.clone(),
        digest: digest.clone(),
        leases: proxy.leases.clone(),
    };
    tokio::spawn(async move {
        let outcome = job.run(&tx).await;
        // Out of the table before the last state is sent: whoever asks next finds the
        // blob stored (or, after a failure, starts afresh).
        drop(landing);
        let _ = tx.send(outcome);
    });
    Arc::new(Fill { state: rx })
}

struct FillJob {
    core: Arc<Core>,
    stats: Arc<ProxyStats>,
    remote: Arc<super::Remote>,
    repo: RepoName,
    upstream_repo: RepoName,
    digest: Digest,
    leases: Arc<tokio::sync::Semaphore>,
}

impl FillJob {
    async fn run(self, tx: &watch::Sender<State>) -> State {
        ProxyStats::count(&self.stats.misses, 1);
        let started = std::time::Instant::now();
        let state = match self.fetch(tx).await {
            Ok(size) => {
                tracing::info!(repository = %self.repo, digest = %self.digest, upstream = %self.remote.url, bytes = size, millis = started.elapsed().as_millis() as u64, "cached a blob from upstream");
                State::Done { size }
            }
            Err(failure) => {
                ProxyStats::count(&self.stats.errors, 1);
                tracing::warn!(repository = %self.repo, digest = %self.digest, upstream = %self.remote.url, error = %failure.describe(), "upstream blob fetch failed; nothing was cached");
                State::Failed(failure)
            }
        };
        state
    }

    async fn fetch(&self, tx: &watch::Sender<State>) -> Result<u64, UpstreamFailure> {
        let _lease = match self.lease().await? {
            Ok(held) => held,
            Err(size) => return Ok(size),
        };
        let blobs = &self.core.store.blobs;
        // Unverified here: the store's commit hashes what it wrote, once.
        let (mut body, length) = self
            .remote
            .ask(
                None,
                self.remote
                    .client
                    .blob_stream_unverified(&self.upstream_repo, &self.digest),
            )
            .await?;
        let size = length.ok_or_else(|| {
            UpstreamFailure::Failed("the upstream sent the blob without a Content-Length".into())
        })?;
        let id = blobs.start_upload(&self.repo).await.map_err(store_failed)?;
        let mut written = 0u64;
        let _ = tx.send(State::Writing {
            id,
            size,
            written,
            recent: None,
            verified: false,
        });
        let mut last = None;
        let result = async {
            while let Some(batch) = next_batch(&mut body).await {
                let batch = batch.map_err(|e| UpstreamFailure::Failed(e.to_string()))?;
                let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
                if written + len > size {
                    return Err(UpstreamFailure::Failed(format!(
                        "the upstream sent more than the {size} bytes it announced"
                    )));
                }
                let batch = Arc::new(batch);
                let chunks =
                    futures::stream::iter(batch.as_ref().clone().into_iter().map(Ok)).boxed();
                written = blobs
                    .append(&self.repo, id, Some(written), chunks)
                    .await
                    .map_err(store_failed)?;
                ProxyStats::count(&self.stats.upstream_bytes, len);
                last = Some(batch.clone());
                let _ = tx.send(State::Writing {
                    id,
                    size,
                    written,
                    recent: Some(batch),
                    verified: false,
                });
            }
            if written != size {
                return Err(UpstreamFailure::Failed(format!(
                    "the upstream sent {written} of the {size} bytes it announced"
                )));
            }
            let mismatch = |actual: &Digest| {
                UpstreamFailure::Failed(format!(
                    "the upstream served content that hashes to {actual}, not {}: not cached",
                    self.digest
                ))
            };
            // Checked by the running hash, before the commit's fsync: clients get their
            // last byte now, and the cache becomes durable behind them.
            match blobs
                .upload_digest(&self.repo, id)
                .await
                .map_err(store_failed)?
            {
                Some(actual) if actual != self.digest => return Err(mismatch(&actual)),
                Some(_) => {
                    let _ = tx.send(State::Writing {
                        id,
                        size,
                        written,
                        recent: last.take(),
                        verified: true,
                    });
                }
                None => {}
            }
            match blobs.commit(&self.repo, id, &self.digest).await {
                Ok(_) => Ok(()),
                Err(StoreError::DigestMismatch { actual, .. }) => Err(mismatch(&actual)),
                Err(e) => Err(store_failed(e)),
            }
        }
        .await;
        if let Err(e) = result {
            let _ = blobs.cancel(&self.repo, id).await;
            return Err(e);
        }
        self.link().await?;
        Ok(size)
    }

    /// The cluster's lease on this fetch, or (Err) the size of the blob that another
    /// fill stored meanwhile: one that landed between this one's asker looking and
    /// starting it, or another process's, waited for while it held the lease. That one is
    /// linked here once the upstream confirms it has it here, never fetched twice.
    async fn lease(&self) -> Result<Result<lease::Held, u64>, UpstreamFailure> {
        let blobs = &self.core.store.blobs;
        let name = lease::name("blob", &self.digest.to_string());
        let ready = || blobs.stat(&self.digest);
        let leased = lease::lease_or_wait(&*self.core.store.locks, &self.leases, &name, ready)
            .await
            .map_err(store_failed)?;
        match leased {
            lease::Leased::Mine(held) => Ok(Ok(held)),
            lease::Leased::Done(size) => {
                if !upstream_has(&self.remote, &self.upstream_repo, &self.digest).await? {
                    return Err(UpstreamFailure::NotFound);
                }
                self.link().await?;
                Ok(Err(size))
            }
        }
    }

    /// Link the stored blob into the proxied repository, as any commit is linked.
    async fn link(&self) -> Result<(), UpstreamFailure> {
        let linked = self.core.publish_link(&self.repo, &self.digest).await;
        match linked {
            Ok(true) => Ok(()),
            Ok(false) => Err(UpstreamFailure::Failed(
                "garbage collection took it as it was cached (is gc.grace shorter than a fetch?)"
                    .into(),
            )),
            Err(e) => {
                let why = format!("the cache could not link it: {e}");
                Err(UpstreamFailure::Failed(why))
            }
        }
    }
}

fn store_failed(e: StoreError) -> UpstreamFailure {
    UpstreamFailure::Failed(format!("the cache could not store it: {e}"))
}

/// How long an upstream may send nothing in the middle of a blob before the fill gives
/// up (and its clients get an error rather than a hung download).
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

fn stalled() -> wharf_client::ClientError {
    wharf_client::ClientError::Request {
        url: "the upstream".into(),
        detail: format!(
            "sent nothing for {} s in the middle of a blob",
            IDLE.as_secs()
        ),
    }
}

/// The next chunk, and whatever else has already arrived, up to `BATCH` bytes.
async fn next_batch(
    body: &mut wharf_client::client::BlobStream,
) -> Option<Result<Vec<Bytes>, wharf_client::ClientError>> {
    let first = match tokio::time::timeout(IDLE, body.next()).await {
        Err(_) => return Some(Err(stalled())),
        Ok(next) => match next? {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        },
    };
    let mut len = first.len();
    let mut batch = vec![first];
    while len < BATCH {
        match body.next().now_or_never() {
            Some(Some(Ok(b))) => {
                len += b.len();
                batch.push(b);
            }
            Some(Some(Err(e))) => return Some(Err(e)),
            Some(None) | None => break,
        }
    }
    if batch.len() > 1 {
        // One buffer instead of many socket-sized pieces: one write to the upload, one
        // frame to each client. The copy costs less than the calls it saves.
        let mut whole = bytes::BytesMut::with_capacity(len);
        for b in &batch {
            whole.extend_from_slice(b);
        }
        batch = vec![whole.freeze()];
    }
    Some(Ok(batch))
}

/// The bytes of a fill as they are written: from the upload while it grows, then from the
/// committed blob. A failed fill ends the stream with an error, before its last byte.
fn follow(
    state: watch::Receiver<State>,
    core: Arc<Core>,
    repo: RepoName,
    digest: Digest,
) -> ByteStream {
    let follower = Follower {
        state,
        core,
        repo,
        digest,
        offset: 0,
        inner: None,
        finished: false,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let item = f.next().await?;
        Some((item, f))
    })
    .boxed()
}

struct Follower {
    state: watch::Receiver<State>,
    core: Arc<Core>,
    repo: RepoName,
    digest: Digest,
    offset: u64,
    inner: Option<ByteStream>,
    finished: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if let Some(inner) = &mut self.inner {
                match inner.next().await {
                    Some(Ok(chunk)) => {
                        self.offset += chunk.len() as u64;
                        return Some(Ok(chunk));
                    }
                    Some(Err(e)) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                    None => self.inner = None,
                }
            }
            if self.finished {
                return None;
            }
            let now = self.state.borrow_and_update().clone();
            match now {
                State::Done { size } => {
                    self.finished = true;
                    if self.offset >= size {
                        return None;
                    }
                    let range = self.offset..=size - 1;
                    match self.core.store.blobs.read(&self.digest, Some(range)).await {
                        Ok(read) => self.inner = Some(read.body),
                        Err(e) => return Some(Err(io::Error::other(e))),
                    }
                }
                State::Failed(f) => {
                    self.finished = true;
                    return Some(Err(io::Error::other(f.describe())));
                }
                State::Writing {
                    id,
                    size,
                    written,
                    recent,
                    verified,
                } => {
                    // The last byte waits for the digest check: a client never has all
                    // of a blob whose digest has not been verified.
                    let limit = match verified {
                        true => written,
                        false => written.min(size.saturating_sub(1)),
                    };
                    if verified && self.offset >= size {
                        // All sent and verified: the response ends without waiting for
                        // the commit that makes the cache durable.
                        self.finished = true;
                        return None;
                    }
                    if let Some(live) = recent.and_then(|r| self.live(&r, written, limit)) {
                        self.inner = Some(live);
                        continue;
                    }
                    if limit > self.offset {
                        let read = self
                            .core
                            .store
                            .blobs
                            .read_upload(&self.repo, id, self.offset, limit)
                            .await;
                        match read {
                            Ok(s) => {
                                self.inner = Some(s);
                                continue;
                            }
                            // Committed meanwhile: the next state says so.
                            Err(StoreError::UploadUnknown(_)) => {}
                            // A store that cannot read an upload before it completes (S3's
                            // multipart parts): this follower waits for the blob.
                            Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::Unsupported => {}
                            Err(e) => return Some(Err(io::Error::other(e))),
                        }
                    }
                    if self.state.changed().await.is_err() && !self.settled() {
                        self.finished = true;
                        return Some(Err(io::Error::other("the fill ended without a result")));
                    }
                }
                State::Connecting => {
                    if self.state.changed().await.is_err() && !self.settled() {
                        self.finished = true;
                        return Some(Err(io::Error::other("the fill ended without a result")));
                    }
                }
            }
        }
    }

    /// The bytes from this follower's offset up to `limit`, out of the batch that ends at
    /// `written`, when the follower has everything before the batch.
    fn live(&self, batch: &[Bytes], written: u64, limit: u64) -> Option<ByteStream> {
        let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
        let start = written - len;
        // Within the batch (a follower that had all but its last byte takes that too).
        if self.offset < start || limit <= self.offset {
            return None;
        }
        let mut skip = self.offset - start;
        let mut left = limit - self.offset;
        let mut chunks = Vec::with_capacity(batch.len());
        for chunk in batch {
            if left == 0 {
                break;
            }
            let clen = chunk.len() as u64;
            if skip >= clen {
                skip -= clen;
                continue;
            }
            let take = (clen - skip).min(left);
            chunks.push(Ok(chunk.slice(skip as usize..(skip + take) as usize)));
            left -= take;
            skip = 0;
        }
        Some(futures::stream::iter(chunks).boxed())
    }

    /// The fill's sender is gone; whether it left a final state to act on.
    fn settled(&self) -> bool {
        matches!(*self.state.borrow(), State::Done { .. } | State::Failed(_))
    }
}
