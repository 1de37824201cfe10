//! `wharf key generate`, `wharf sign` and `wharf verify`: cosign's key pair files, key-based
//! signatures pushed next to an image, and their verification (cosign keys, Notation
//! certificates). The formats and checks are `wharf_client::trust`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use wharf_client::trust::{self, PrivateKey, RegistrySource, TrustRoots, Verdict};
use wharf_client::{ImageRef, RegistryClient};
use wharf_oci::Digest;

use crate::client_args::{block_on, ClientFlags};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Write an encrypted ECDSA P-256 key pair, cosign.key and cosign.pub, in the current
    /// directory, as `cosign generate-key-pair` does (password from COSIGN_PASSWORD, or
    /// asked twice).
    Generate(GenerateArgs),
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Name the files PREFIX.key and PREFIX.pub (cosign's flag).
    #[arg(long, value_name = "PREFIX", default_value = "cosign")]
    output_key_prefix: String,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct SignArgs {
    /// The private key: cosign.key (encrypted; COSIGN_PASSWORD or a prompt), or an
    /// unencrypted PKCS#8, SEC1 or PKCS#1 PEM key.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Store the signature as an OCI 1.1 referrer (cosign's
    /// `--registry-referrers-mode=oci-1-1` form) instead of under the `sha256-<hex>.sig` tag.
    #[arg(long)]
    referrers: bool,
    /// The image: [host[:port]/]repo[:tag][@digest]; a tag is resolved to its digest.
    #[arg(value_name = "IMAGE")]
    image: String,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// A trusted cosign public key (PEM); repeatable.
    #[arg(long = "key", value_name = "PUB")]
    keys: Vec<PathBuf>,
    /// A trusted X.509 root certificate (PEM) for Notation signatures; repeatable.
    #[arg(long = "cert-root", value_name = "CA_PEM")]
    roots: Vec<PathBuf>,
    /// The image: [host[:port]/]repo[:tag][@digest]; a tag is resolved to its digest.
    #[arg(value_name = "IMAGE")]
    image: String,
}

pub fn key(command: KeyCommand) -> anyhow::Result<()> {
    let KeyCommand::Generate(args) = command;
    let key_path = PathBuf::from(format!("{}.key", args.output_key_prefix));
    let pub_path = PathBuf::from(format!("{}.pub", args.output_key_prefix));
    for path in [&key_path, &pub_path] {
        if path.exists() && !args.force {
            bail!(
                "{} already exists; move it away or pass --force to replace it",
                path.display()
            );
        }
    }
    let password = new_password()?;
    let key = PrivateKey::generate_p256();
    let encrypted = key.to_encrypted_pem(password.as_bytes())?;
    write_atomically(&key_path, encrypted.as_bytes(), 0o600)?;
    write_atomically(&pub_path, key.public().to_pem().as_bytes(), 0o644)?;
    eprintln!("Private key written to {}", key_path.display());
    eprintln!("Public key written to {}", pub_path.display());
    Ok(())
}

pub fn sign(args: SignArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    let text = std::fs::read(&args.key)
        .with_context(|| format!("cannot read the key {}", args.key.display()))?;
    let password = key_password(&text)?;
    let key = PrivateKey::from_pem(&text, password.as_bytes())
        .with_context(|| format!("cannot use the key {}", args.key.display()))?;
    let (image, client) = parse(&args.image, flags)?;
    let digest = resolve(&client, &image)?;
    let signed = block_on(trust::sign(&client, &image, &digest, &key, args.referrers))??;
    let fingerprint = key.public().fingerprint();
    let at = match &signed.tag {
        Some(tag) => format!("{}:{tag}", repo_name(&image)),
        None => format!("{}@{} (referrer)", repo_name(&image), signed.signature),
    };
    println!(
        "Signed {}@{digest} with {} key {fingerprint}; signature at {at}",
        repo_name(&image),
        key.public().algorithm()
    );
    Ok(())
}

pub fn verify(args: VerifyArgs, flags: &ClientFlags) -> anyhow::Result<()> {
    if args.keys.is_empty() && args.roots.is_empty() {
        bail!("nothing to verify against: pass --key cosign.pub and/or --cert-root ca.pem");
    }
    let roots = TrustRoots::load(&args.keys, &args.roots)?;
    let (image, client) = parse(&args.image, flags)?;
    let digest = resolve(&client, &image)?;
    let source = RegistrySource { client: &client };
    let repo = image.repository().as_str();
    let found = block_on(trust::list_signatures(&source, repo, &digest, &roots))??;
    let name = format!("{}@{digest}", repo_name(&image));
    let mut verified = 0;
    for signature in &found {
        if let Verdict::Verified { by, form } = &signature.verdict {
            verified += 1;
            println!("Verified {name}: {form} by {by}");
        }
    }
    if verified > 0 {
        return Ok(());
    }
    match trust::verdict_of(&found) {
        Verdict::Refused(refusal) => bail!(
            "{name} does not verify: {refusal} ({} signature{} found)",
            found.len(),
            if found.len() == 1 { "" } else { "s" }
        ),
        Verdict::Verified { .. } => Ok(()),
    }
}

fn parse(text: &str, flags: &ClientFlags) -> anyhow::Result<(ImageRef, RegistryClient)> {
    let image: ImageRef = text.parse()?;
    let client = flags.client(image.registry())?;
    Ok((image, client))
}

fn repo_name(image: &ImageRef) -> String {
    format!("{}/{}", image.registry(), image.repository())
}

/// The digest to sign or verify: the one given, else the tag's, as cosign resolves it.
fn resolve(client: &RegistryClient, image: &ImageRef) -> anyhow::Result<Digest> {
    if let Some(digest) = image.digest() {
        return Ok(digest.clone());
    }
    Ok(block_on(client.head_digest(
        image.repository(),
        &image.manifest_reference(),
    ))??)
}

/// The password for a key file: none for an unencrypted one, else COSIGN_PASSWORD, else a
/// prompt on a terminal.
fn key_password(text: &[u8]) -> anyhow::Result<String> {
    let encrypted = pem::parse(text).is_ok_and(|p| p.tag().starts_with("ENCRYPTED"));
    if !encrypted {
        return Ok(String::new());
    }
    if let Ok(password) = std::env::var("COSIGN_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("the key is encrypted: set COSIGN_PASSWORD (stdin is not a terminal to ask on)");
    }
    rpassword::prompt_password("Enter password for private key: ")
        .context("cannot read the password")
}

/// A new key's password: COSIGN_PASSWORD (empty allowed, as cosign), else asked twice.
fn new_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("COSIGN_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("set COSIGN_PASSWORD to the password for the new key (stdin is not a terminal to ask on)");
    }
    let first = rpassword::prompt_password("Enter password for private key: ")?;
    let again = rpassword::prompt_password("Enter password for private key again: ")?;
    if first != again {
        bail!("the passwords do not match; nothing was written");
    }
    Ok(first)
}

/// Write aside with `mode`, fsync, rename: a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    Ok(())
}
