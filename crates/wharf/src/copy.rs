//! `wharf copy SRC DST`: the arguments; the copy itself is `wharf_client::image::copy`.

use anyhow::Context;
use clap::Args;
use wharf_client::image::copy::{Copier, Side};
use wharf_client::ImageRef;

use crate::client_args::{block_on, ClientFlags};
use crate::progress::{OutputArgs, Progress};

#[derive(Args)]
pub struct CopyArgs {
    /// The image to copy: [host[:port]/]repo[:tag][@digest].
    #[arg(value_name = "SRC")]
    src: String,
    /// Where to copy it: [host[:port]/]repo[:tag].
    #[arg(value_name = "DST")]
    dst: String,
    /// From an index, copy only this platform (os/arch[/variant]) and store its manifest
    /// (not the index) at DST.
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    /// Copy what is attached to the image too: signatures, SBOMs and attestations (OCI
    /// 1.1 referrers and cosign's `sha256-<hex>.sig/.att/.sbom` tags), as `regctl image
    /// copy --referrers` does.
    #[arg(long)]
    referrers: bool,
    #[command(flatten)]
    chunks: crate::client_args::ChunkArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn copy(args: CopyArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let src: ImageRef = args.src.parse().context("SRC")?;
    let dst: ImageRef = args.dst.parse().context("DST")?;
    let progress = Progress::new(args.output);
    // Each side gets the credentials docker would use for its own registry.
    let copier = Copier {
        same_registry: src.registry() == dst.registry(),
        src: Side {
            client: flags.client(src.registry())?,
            repo: src.repository().clone(),
        },
        dst: Side {
            client: flags.client(dst.registry())?,
            repo: dst.repository().clone(),
        },
        chunk_size: args.chunks.chunk_size,
        progress: &progress,
    };
    let platform = args.platform.as_deref();
    let digest = block_on(copier.run(
        &src.manifest_reference(),
        &dst.manifest_reference(),
        platform,
    ))??;
    let attached = if args.referrers {
        block_on(copier.copy_referrers(&digest))??
    } else {
        0
    };
    let (uploaded, mounted, present) = progress.tally();
    progress.summary(&format!(
        "Copied {} to {}: {uploaded} blobs uploaded, {mounted} mounted, {present} already present{}",
        src.familiar(),
        dst.familiar(),
        if args.referrers {
            format!(", {attached} referrers and signatures")
        } else {
            String::new()
        },
    ));
    progress.print_result(&digest, &dst.to_string());
    Ok(())
}
