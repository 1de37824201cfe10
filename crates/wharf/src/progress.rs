//! What `copy`, `pull` and `push` tell the user while they move blobs: bars when stderr is
//! a terminal, one line a blob when it is a log, nothing with `--quiet`. stdout carries only
//! the result (the digest, or one JSON object with `--json`) so scripts can read it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{ArgAction, Args};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use wharf_client::client::BlobStream;
use wharf_client::image;
use wharf_oci::Digest;

use crate::client_args::flag_bool;

#[derive(Args, Clone, Copy, Debug)]
pub struct OutputArgs {
    /// No progress on stderr; only errors.
    #[arg(long, short, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub quiet: bool,
    /// Print one JSON object on stdout at the end instead of the bare digest:
    /// {"digest","reference","blobs":{"copied","skipped","mounted"},"bytes"}.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub json: bool,
}

enum Style {
    Quiet,
    Lines,
    Bars(MultiProgress),
}

/// Shared with the streams that count bytes as they pass, hence atomics behind an `Arc`.
#[derive(Default)]
struct Counts {
    copied: AtomicUsize,
    skipped: AtomicUsize,
    mounted: AtomicUsize,
    bytes: AtomicU64,
}

pub struct Progress {
    style: Style,
    json: bool,
    counts: Arc<Counts>,
}

impl Progress {
    pub fn new(output: OutputArgs) -> Progress {
        let style = if output.quiet {
            Style::Quiet
        } else if std::io::stderr().is_terminal() {
            Style::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Style::Lines
        };
        Progress {
            style,
            json: output.json,
            counts: Arc::default(),
        }
    }

    /// Blobs moved, mounted and skipped, for the closing line.
    pub fn tally(&self) -> (usize, usize, usize) {
        let c = &self.counts;
        (
            c.copied.load(Ordering::Relaxed),
            c.mounted.load(Ordering::Relaxed),
            c.skipped.load(Ordering::Relaxed),
        )
    }

    /// A closing line on stderr unless quiet.
    pub fn summary(&self, text: &str) {
        if !matches!(self.style, Style::Quiet) {
            eprintln!("{text}");
        }
    }

    /// The command's result on stdout: the digest alone, or the JSON object.
    pub fn print_result(&self, digest: &Digest, reference: &str) {
        if !self.json {
            println!("{digest}");
            return;
        }
        let (copied, mounted, skipped) = self.tally();
        let result = json!({
            "digest": digest.to_string(),
            "reference": reference,
            "blobs": { "copied": copied, "skipped": skipped, "mounted": mounted },
            "bytes": self.counts.bytes.load(Ordering::Relaxed),
        });
        println!("{result}");
    }

    fn line(&self, text: &str) {
        match &self.style {
            Style::Quiet => {}
            Style::Lines => eprintln!("{text}"),
            Style::Bars(multi) => {
                let _ = multi.println(text);
            }
        }
    }
}

impl image::Progress for Progress {
    /// The destination already had the blob.
    fn skipped(&self, digest: &Digest) {
        self.counts.skipped.fetch_add(1, Ordering::Relaxed);
        self.line(&format!("{digest}: already present"));
    }

    /// The registry linked the blob from another repository.
    fn mounted(&self, digest: &Digest) {
        self.counts.mounted.fetch_add(1, Ordering::Relaxed);
        self.line(&format!("{digest}: mounted"));
    }

    /// A blob of `size` bytes starts to move.
    fn start(&self, digest: &Digest, size: u64) -> Box<dyn image::Transfer + Send + '_> {
        let bar = match &self.style {
            Style::Bars(multi) => {
                let bar = multi.add(ProgressBar::new(size));
                bar.set_style(bar_style());
                bar.set_message(short(digest));
                Some(bar)
            }
            _ => None,
        };
        Box::new(Transfer {
            progress: self,
            bar,
            digest: digest.clone(),
        })
    }
}

/// One blob on the move; `done` counts it, dropping it without `done` (an error) does not.
pub struct Transfer<'a> {
    progress: &'a Progress,
    bar: Option<ProgressBar>,
    digest: Digest,
}

impl image::Transfer for Transfer<'_> {
    /// `stream`, counting its bytes (and moving the bar) as the consumer takes them.
    fn track(&self, stream: BlobStream) -> BlobStream {
        let counts = Arc::clone(&self.progress.counts);
        let bar = self.bar.clone();
        Box::pin(stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counts
                    .bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if let Some(bar) = &bar {
                    bar.inc(chunk.len() as u64);
                }
            }
        }))
    }

    /// The blob arrived; `what` says how ("uploaded", "downloaded").
    fn done(self: Box<Self>, what: &str) {
        self.progress.counts.copied.fetch_add(1, Ordering::Relaxed);
        match &self.bar {
            Some(bar) => bar.finish_with_message(format!("{} {what}", short(&self.digest))),
            None => self.progress.line(&format!("{}: {what}", self.digest)),
        }
    }
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        // A failed transfer's bar would otherwise stay half-drawn above the error.
        if let Some(bar) = self.bar.as_ref().filter(|b| !b.is_finished()) {
            bar.abandon();
        }
    }
}

/// Enough of the digest to tell layers apart, as docker shows them.
fn short(digest: &Digest) -> String {
    digest.hex().chars().take(12).collect()
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
    )
    .expect("the template is valid")
    .progress_chars("=> ")
}
