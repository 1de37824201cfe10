//! `wharf pull REF DIR` into an OCI image layout and `wharf push DIR REF` back out; a
//! `.tar` (or any existing regular file) is a `docker save` archive instead. The transfers
//! themselves are `wharf_client::image`; this parses the arguments and reports.

use std::path::PathBuf;

use clap::Args;
use wharf_client::image::{archive, layout};
use wharf_client::ImageRef;

use crate::client_args::{block_on, ClientFlags};
use crate::progress::{OutputArgs, Progress};

#[derive(Args)]
pub struct PullArgs {
    /// The image to pull: [host[:port]/]repo[:tag][@digest].
    #[arg(value_name = "IMAGE_REF")]
    image: String,
    /// The OCI image layout directory to write (created if missing), or FILE.tar to write
    /// a `docker save` archive that `docker load` and skopeo read.
    #[arg(value_name = "DIR|FILE.tar")]
    dir: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
pub struct PushArgs {
    /// An OCI image layout directory holding one image (or one named by REF's tag), or a
    /// tar written by `docker save` (or `wharf pull REF FILE.tar`).
    #[arg(value_name = "DIR|FILE.tar")]
    dir: PathBuf,
    /// Where to push it: [host[:port]/]repo[:tag].
    #[arg(value_name = "IMAGE_REF")]
    image: String,
    #[command(flatten)]
    chunks: crate::client_args::ChunkArgs,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn pull(args: PullArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let image: ImageRef = args.image.parse()?;
    let client = flags.client(image.registry())?;
    let progress = Progress::new(args.output);
    let digest = if archive::is_archive(&args.dir) {
        block_on(archive::pull(&client, &image, &args.dir, &progress))??
    } else {
        block_on(layout::pull_to_dir(&client, &image, &args.dir, &progress))??
    };
    let (copied, _, skipped) = progress.tally();
    progress.summary(&format!(
        "Pulled {} to {}: {copied} blobs downloaded, {skipped} already present",
        image.familiar(),
        args.dir.display()
    ));
    progress.print_result(&digest, &image.to_string());
    Ok(())
}

pub fn push(args: PushArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let image: ImageRef = args.image.parse()?;
    let client = flags.client(image.registry())?;
    let progress = Progress::new(args.output);
    let digest = if archive::is_archive(&args.dir) {
        block_on(archive::push(
            &client,
            &image,
            &args.dir,
            args.chunks.chunk_size,
            &progress,
        ))??
    } else {
        let layout = layout::Layout::open(&args.dir, &image)?;
        block_on(wharf_client::image::push_image(
            &client,
            &image,
            &layout,
            &layout.chosen,
            args.chunks.chunk_size,
            &progress,
        ))??
    };
    let (copied, mounted, skipped) = progress.tally();
    progress.summary(&format!(
        "Pushed {} to {}: {copied} blobs uploaded, {mounted} mounted, {skipped} already present",
        args.dir.display(),
        image.familiar(),
    ));
    progress.print_result(&digest, &image.to_string());
    Ok(())
}
