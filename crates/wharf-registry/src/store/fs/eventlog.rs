//! The event log on a filesystem (`_wharf/events/log/`): one file per event, named by a
//! sequence number that every process sharing the store agrees on, so webhook deliveries
//! and `/v2/_events` subscribers in any process read the same ordered history.
//!
//! Appending takes no lock: the event is written to an unnamed (`O_TMPFILE`) or temporary
//! file and fsynced, then hard-linked to the next free number. `link(2)` fails if the name exists, so two
//! processes racing for a number cannot both get it; the loser tries the next one. A
//! number is tried only once the one below it exists, so the log has no holes except at
//! its trimmed start.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::durable::{self, AtomicWrite, Fsync};

/// The fallback's temporary file: fsynced before it is linked; the directory is fsynced
/// once per append, after the link, by [`FsLog::append`].
const ASIDE: AtomicWrite = AtomicWrite {
    sync: Fsync::Data,
    sync_dir: false,
    create_dirs: false,
    stamp: false,
    keep_mode: false,
};

pub struct FsLog {
    dir: PathBuf,
    /// The lowest number that may still be free; only ever grows.
    next: AtomicU64,
}

const SUFFIX: &str = ".json";

impl FsLog {
    pub fn open(dir: PathBuf) -> io::Result<FsLog> {
        fs::create_dir_all(&dir).map_err(durable::at(&dir))?;
        let newest = list(&dir)?.last().copied().unwrap_or(0);
        Ok(FsLog {
            dir,
            next: AtomicU64::new(newest + 1),
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// Store one event durably; its sequence number.
    pub fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let seq = match self.append_unnamed(bytes) {
            Some(done) => done?,
            None => self.append_via_temp(bytes)?,
        };
        durable::sync_dir(&self.dir).map_err(durable::at(&self.dir))?;
        Ok(seq)
    }

    /// With `O_TMPFILE`: the file has no name until it is complete and linked to its
    /// number, so there is no temporary name to create and remove. None where the
    /// filesystem does not offer it.
    fn append_unnamed(&self, bytes: &[u8]) -> Option<io::Result<u64>> {
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
        Some(self.claim(|to| {
            rustix::fs::linkat(CWD, &me, CWD, to, AtFlags::SYMLINK_FOLLOW).map_err(io::Error::from)
        }))
    }

    fn append_via_temp(&self, bytes: &[u8]) -> io::Result<u64> {
        ASIDE.link_into(&self.dir, bytes, |tmp| {
            self.claim(|to| fs::hard_link(tmp, to))
        })
    }

    /// Link the complete file to the lowest free number: `link` fails on a taken one.
    fn claim(&self, link: impl Fn(&Path) -> io::Result<()>) -> io::Result<u64> {
        let mut seq = self.next.load(Ordering::Acquire);
        loop {
            match link(&self.path(seq)) {
                Ok(()) => {
                    self.next.fetch_max(seq + 1, Ordering::AcqRel);
                    return Ok(seq);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => seq += 1,
                Err(e) => return Err(durable::at(&self.path(seq))(e)),
            }
        }
    }

    /// The event numbered `seq`, if it is (still) in the log.
    pub fn read(&self, seq: u64) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(seq)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(durable::at(&self.path(seq))(e)),
        }
    }

    /// The highest number in the log (0 when empty), including other processes' appends:
    /// a stat per event appended since the last call.
    pub fn newest(&self) -> u64 {
        let mut n = self.next.load(Ordering::Acquire);
        while self.path(n).exists() {
            n += 1;
        }
        self.next.fetch_max(n, Ordering::AcqRel);
        n - 1
    }

    /// The first number at or above `seq` that is in the log: where a reader goes on when
    /// `seq` is missing below the newest (trimmed, or lost to a crash before its fsync).
    pub fn first_from(&self, seq: u64) -> io::Result<Option<u64>> {
        Ok(list(&self.dir)?.into_iter().find(|&s| s >= seq))
    }

    /// Remove events beyond the newest `keep` that are older than `age`, never one above
    /// `delivered` (an endpoint still needs it) and never the newest (it carries the count).
    pub fn trim(&self, keep: usize, age: Duration, delivered: u64) -> io::Result<usize> {
        let all = list(&self.dir)?;
        let cut = all.len().saturating_sub(keep.max(1));
        let now = SystemTime::now();
        let mut removed = 0;
        for &seq in &all[..cut] {
            if seq > delivered {
                break;
            }
            let path = self.path(seq);
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
        remove_stale_temps(&self.dir, now);
        Ok(removed)
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

/// Every sequence number in the log, sorted.
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
                        .map(|n| log.append(format!("{i}-{n}").as_bytes()).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=100).collect::<Vec<_>>());
        assert_eq!((a.newest(), b.newest()), (100, 100));
        // Reopened, numbering goes on; trimming keeps what is undelivered and the newest.
        // The fallback for filesystems without O_TMPFILE numbers alike.
        let c = FsLog::open(dir.path().to_owned()).unwrap();
        assert_eq!(c.append_via_temp(b"w").unwrap(), 101);
        assert_eq!(c.append(b"x").unwrap(), 102);
        assert_eq!(c.read(101).unwrap().as_deref(), Some(&b"w"[..]));
        assert_eq!(c.trim(10, Duration::ZERO, 50).unwrap(), 50);
        assert_eq!(c.first_from(0).unwrap(), Some(51));
        assert_eq!(c.trim(0, Duration::ZERO, 1000).unwrap(), 51);
        assert_eq!(c.first_from(0).unwrap(), Some(102));
        assert_eq!(c.read(102).unwrap().as_deref(), Some(&b"x"[..]));
        // A hole (a crash lost an event before its fsync): readers find the next one.
        c.append(b"y").unwrap();
        c.append(b"z").unwrap();
        std::fs::remove_file(c.path(103)).unwrap();
        assert_eq!(c.first_from(103).unwrap(), Some(104));
        assert_eq!(c.first_from(105).unwrap(), None);
        // Nothing but events in the directory: no temporary files left behind.
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2);
    }
}
