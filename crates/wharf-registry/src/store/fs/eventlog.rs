//! The event log on a filesystem (`_wharf/events/log/`): batch files of events, one event
//! a line, each file named by the sequence number of its first event. Every process
//! sharing the store agrees on the numbers, so webhook deliveries and `/v2/_events`
//! subscribers in any process read the same ordered history. A file written by an older
//! wharf (one event, one file) is a batch of one.
//!
//! Group commit: appends go to one committer thread, which writes every event waiting
//! into one file, fsyncs it once, links it to its number and fsyncs the directory once;
//! then each caller hears its numbers. A push therefore waits for one batch's two fsyncs,
//! shared with every push that arrived meanwhile, instead of paying for its own.
//!
//! Appending takes no lock: a batch is written to an unnamed (`O_TMPFILE`) or temporary
//! file and fsynced, then hard-linked to the first free number. `link(2)` fails if the
//! name exists; the loser reads how many events the winner's file holds and tries the
//! number after them. Batches are contiguous, so a file's count is the distance to the
//! next file's name; only the newest file is read to learn where the log ends.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::durable::{self, AtomicWrite, Fsync};

/// The fallback's temporary file: fsynced before it is linked; the directory is fsynced
/// once per batch, after the link.
const ASIDE: AtomicWrite = AtomicWrite {
    sync: Fsync::Data,
    sync_dir: false,
    create_dirs: false,
    stamp: false,
    keep_mode: false,
};

/// At most this many events go in one batch, so readers of one event read a small file.
const BATCH_MAX: usize = 512;

const SUFFIX: &str = ".json";

type Reply = tokio::sync::oneshot::Sender<io::Result<Vec<u64>>>;
/// The committer's queue: batches of events, and where to answer each.
type Queue = mpsc::Sender<(Vec<Vec<u8>>, Reply)>;

pub struct FsLog {
    inner: Arc<Inner>,
    /// The committer's queue, started on the first grouped append.
    committer: Mutex<Option<Queue>>,
}

struct Inner {
    dir: PathBuf,
    /// The number after the newest batch seen; only ever grows.
    next: AtomicU64,
    /// The first numbers of the batch files known, sorted: a cache of the directory.
    firsts: Mutex<Vec<u64>>,
}

impl FsLog {
    pub fn open(dir: PathBuf) -> io::Result<FsLog> {
        fs::create_dir_all(&dir).map_err(durable::at(&dir))?;
        let firsts = list(&dir)?;
        let next = match firsts.last() {
            Some(&last) => last + count_of(&path_in(&dir, last))?.unwrap_or(1),
            None => 1,
        };
        Ok(FsLog {
            inner: Arc::new(Inner {
                dir,
                next: AtomicU64::new(next),
                firsts: Mutex::new(firsts),
            }),
            committer: Mutex::new(None),
        })
    }

    /// Store `events` durably as one batch; their numbers. Blocks.
    #[cfg(test)]
    pub fn append_all(&self, events: &[Vec<u8>]) -> io::Result<Vec<u64>> {
        self.inner.append_all(events)
    }

    /// Store one event durably; its number. Blocks.
    #[cfg(test)]
    pub fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        Ok(self.append_all(&[bytes.to_vec()])?[0])
    }

    /// Store `events` durably in the next group commit, with whatever else is waiting.
    pub async fn append_grouped(&self, events: Vec<Vec<u8>>) -> io::Result<Vec<u64>> {
        self.enqueue(events)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the event log's committer stopped")))
    }

    /// Queue `events` for the next group commit now; the receiver hears their numbers once
    /// they are durable. The queue is first in, first out: whatever is queued after them
    /// is durable only once they are.
    pub fn enqueue(
        &self,
        events: Vec<Vec<u8>>,
    ) -> tokio::sync::oneshot::Receiver<io::Result<Vec<u64>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut committer = wharf_oci::sync::lock(&self.committer);
        let queue = committer.get_or_insert_with(|| start_committer(self.inner.clone()));
        if let Err(mpsc::SendError((events, tx))) = queue.send((events, tx)) {
            // The thread is gone (it cannot panic, but be sure): start another.
            let queue = start_committer(self.inner.clone());
            let _ = queue.send((events, tx));
            *committer = Some(queue);
        }
        rx
    }

    /// The event numbered `seq`, if it is (still) in the log.
    pub fn read(&self, seq: u64) -> io::Result<Option<Vec<u8>>> {
        if seq >= self.inner.next.load(Ordering::Acquire) {
            self.inner.newest();
        }
        let first = {
            let firsts = wharf_oci::sync::lock(&self.inner.firsts);
            match firsts.partition_point(|&f| f <= seq) {
                0 => return Ok(None),
                i => firsts[i - 1],
            }
        };
        let path = self.inner.path(first);
        match fs::read(&path) {
            Ok(b) => Ok(b
                .split(|&c| c == b'\n')
                .nth((seq - first) as usize)
                .filter(|line| !line.is_empty())
                .map(<[u8]>::to_vec)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(durable::at(&path)(e)),
        }
    }

    /// The highest number in the log (0 when empty), including other processes' appends:
    /// a stat per batch appended since the last call.
    pub fn newest(&self) -> u64 {
        self.inner.newest()
    }

    /// The first number at or above `seq` that is in the log: where a reader goes on when
    /// `seq` is missing below the newest (trimmed, or lost to a crash before its fsync).
    pub fn first_from(&self, seq: u64) -> io::Result<Option<u64>> {
        let firsts = list(&self.inner.dir)?;
        let i = firsts.partition_point(|&f| f <= seq);
        if i > 0 && self.read(seq)?.is_some() {
            return Ok(Some(seq));
        }
        Ok(firsts.get(i).copied())
    }

    /// Remove batches older than `age` holding none of the newest `keep` events, never one
    /// with an event above `delivered` (an endpoint still needs it) and never the newest
    /// (it carries the count).
    pub fn trim(&self, keep: usize, age: Duration, delivered: u64) -> io::Result<usize> {
        let dir = &self.inner.dir;
        let all = list(dir)?;
        let end = self.inner.newest() + 1;
        // A batch ends where the next begins; the newest `keep` events decide the cut.
        let keep_from = end.saturating_sub(keep.max(1) as u64);
        let now = SystemTime::now();
        let mut removed = 0;
        for (i, &first) in all.iter().enumerate() {
            let Some(&after) = all.get(i + 1) else {
                break; // the newest stays
            };
            if after > keep_from || after - 1 > delivered {
                break;
            }
            let path = self.inner.path(first);
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= age)
                .unwrap_or(false);
            if !old {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            let mut firsts = wharf_oci::sync::lock(&self.inner.firsts);
            let kept = list(dir)?;
            *firsts = kept;
        }
        remove_stale_temps(dir, now);
        Ok(removed)
    }
}

/// The committer: takes every append waiting, writes them as one batch, answers each.
fn start_committer(inner: Arc<Inner>) -> Queue {
    let (tx, rx) = mpsc::channel::<(Vec<Vec<u8>>, Reply)>();
    let spawned = std::thread::Builder::new()
        .name("wharf-event-log".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                let mut n = waiting[0].0.len();
                while n < BATCH_MAX {
                    match rx.try_recv() {
                        Ok(more) => {
                            n += more.0.len();
                            waiting.push(more);
                        }
                        Err(_) => break,
                    }
                }
                let all: Vec<Vec<u8>> = waiting.iter().flat_map(|w| w.0.clone()).collect();
                let done = inner.append_all(&all);
                let mut at = 0;
                for (events, reply) in waiting {
                    let answer = match &done {
                        Ok(seqs) => Ok(seqs[at..at + events.len()].to_vec()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    at += events.len();
                    let _ = reply.send(answer);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the event log's committer");
    }
    tx
}

impl Inner {
    fn path(&self, seq: u64) -> PathBuf {
        path_in(&self.dir, seq)
    }

    fn append_all(&self, events: &[Vec<u8>]) -> io::Result<Vec<u64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if events.iter().any(|e| e.is_empty() || e.contains(&b'\n')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an event must be one non-empty line of JSON",
            ));
        }
        let bytes = events.join(&b'\n');
        let count = events.len() as u64;
        let first = match self.append_unnamed(&bytes, count) {
            Some(done) => done?,
            None => ASIDE.link_into(&self.dir, &bytes, |tmp| {
                self.claim(count, |to| fs::hard_link(tmp, to))
            })?,
        };
        durable::sync_dir(&self.dir).map_err(durable::at(&self.dir))?;
        Ok((first..first + count).collect())
    }

    /// With `O_TMPFILE`: the file has no name until it is complete and linked to its
    /// number, so there is no temporary name to create and remove. None where the
    /// filesystem does not offer it.
    fn append_unnamed(&self, bytes: &[u8], count: u64) -> Option<io::Result<u64>> {
        use rustix::fs::{AtFlags, Mode, OFlags, CWD};
        use std::os::fd::AsRawFd;
        let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(&self.dir, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR) => return None,
            Err(e) => return Some(Err(durable::at(&self.dir)(e.into()))),
        };
        let mut file = fs::File::from(fd);
        let written = (|| {
            use std::io::Write;
            file.write_all(bytes)?;
            file.sync_data()
        })();
        if let Err(e) = written {
            return Some(Err(durable::at(&self.dir)(e)));
        }
        // linkat of /proc/self/fd/N with SYMLINK_FOLLOW needs no privilege (AT_EMPTY_PATH does).
        let me = format!("/proc/self/fd/{}", file.as_raw_fd());
        Some(self.claim(count, |to| {
            rustix::fs::linkat(CWD, &me, CWD, to, AtFlags::SYMLINK_FOLLOW).map_err(io::Error::from)
        }))
    }

    /// Link the complete batch to the first free number: `link` fails on a taken one,
    /// whose batch is then skipped.
    fn claim(&self, count: u64, link: impl Fn(&Path) -> io::Result<()>) -> io::Result<u64> {
        let mut seq = self.next.load(Ordering::Acquire);
        loop {
            let path = self.path(seq);
            match link(&path) {
                Ok(()) => {
                    self.seen(seq, count);
                    return Ok(seq);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let theirs = count_of(&path)?.unwrap_or(1);
                    self.seen(seq, theirs);
                    seq += theirs;
                }
                Err(e) => return Err(durable::at(&path)(e)),
            }
        }
    }

    /// Note a batch file of `count` events at `first`.
    fn seen(&self, first: u64, count: u64) {
        let mut firsts = wharf_oci::sync::lock(&self.firsts);
        if let Err(i) = firsts.binary_search(&first) {
            firsts.insert(i, first);
        }
        self.next.fetch_max(first + count, Ordering::AcqRel);
    }

    fn newest(&self) -> u64 {
        let mut n = self.next.load(Ordering::Acquire);
        while let Ok(Some(c)) = count_of(&self.path(n)) {
            self.seen(n, c);
            n += c;
        }
        n - 1
    }
}

fn path_in(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SUFFIX}"))
}

/// How many events a batch file holds; None if there is no such file.
fn count_of(path: &Path) -> io::Result<Option<u64>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(1 + b.iter().filter(|&&c| c == b'\n').count() as u64)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(durable::at(path)(e)),
    }
}

/// Temporary files a crash left behind.
fn remove_stale_temps(dir: &Path, now: SystemTime) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > Duration::from_secs(3600));
        if e.file_name().to_string_lossy().starts_with(".wharf-") && stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The first number of every batch in the log, sorted.
fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)
        .map_err(durable::at(dir))?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(SUFFIX)?.parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn two_logs_on_one_directory_never_share_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(FsLog::open(dir.path().to_owned()).unwrap());
        let b = Arc::new(FsLog::open(dir.path().to_owned()).unwrap());
        let threads: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .enumerate()
            .map(|(i, log)| {
                std::thread::spawn(move || {
                    (0..50)
                        .flat_map(|n| {
                            // Batches of one and of two, racing the other log's.
                            let events = vec![format!("{i}-{n}").into_bytes(); 1 + n % 2];
                            log.append_all(&events).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=150).collect::<Vec<_>>());
        assert_eq!((a.newest(), b.newest()), (150, 150));
        // Every number reads back as what its appender wrote.
        for seq in 1..=150 {
            let e = a.read(seq).unwrap().unwrap();
            assert_eq!(b.read(seq).unwrap().unwrap(), e);
        }
        // Reopened, numbering goes on; trimming keeps what is undelivered and the newest.
        let c = FsLog::open(dir.path().to_owned()).unwrap();
        assert_eq!(c.append(b"w").unwrap(), 151);
        assert_eq!(
            c.append_all(&[b"x".to_vec(), b"y".to_vec()]).unwrap(),
            [152, 153]
        );
        assert_eq!(c.read(152).unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(c.read(153).unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(c.read(154).unwrap(), None);
        let removed = c.trim(10, Duration::ZERO, 50).unwrap();
        assert!(removed > 0);
        let from = c.first_from(0).unwrap().unwrap();
        assert!(from <= 51 && from > 40, "{from}");
        c.trim(0, Duration::ZERO, 1000).unwrap();
        assert_eq!(c.first_from(0).unwrap(), Some(152));
        assert_eq!(c.read(153).unwrap().as_deref(), Some(&b"y"[..]));
        // A hole (a crash lost a batch before its fsync): readers find the next one.
        c.append(b"p").unwrap();
        c.append(b"q").unwrap();
        std::fs::remove_file(c.inner.path(154)).unwrap();
        assert_eq!(c.first_from(154).unwrap(), Some(155));
        assert_eq!(c.first_from(156).unwrap(), None);
        // Nothing but batches in the directory: no temporary files left behind.
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiting_appends_share_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(FsLog::open(dir.path().to_owned()).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(
                    async move { log.append_grouped(vec![format!("e{i}").into_bytes()]).await },
                )
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.extend(t.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=64).collect::<Vec<_>>());
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(files < 64, "64 appends took {files} files: no grouping");
    }
}
