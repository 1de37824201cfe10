//! Which certificate authorities the client trusts: the built-in web roots, an optional
//! PEM bundle (`--registry-ca`), and docker's `/etc/docker/certs.d/<host:port>/*.crt`, so a
//! registry that works with `docker pull` works with wharf without extra flags.

use std::path::{Path, PathBuf};

/// Where docker keeps per-registry CA certificates.
pub const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read CA bundle {path}: {source}; pass a readable PEM file to --registry-ca")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA bundle {path} is empty; pass a PEM file holding the registry's CA certificate (-----BEGIN CERTIFICATE-----)")]
    Empty { path: PathBuf },
    #[error("CA bundle {path} holds no PEM certificate (no valid -----BEGIN CERTIFICATE----- block); convert it with `openssl x509 -in FILE -out ca.pem`")]
    NoCertificate { path: PathBuf },
}

/// The certificates of a PEM bundle, refusing files that would silently trust nothing.
pub fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, CaError> {
    let bytes = std::fs::read(path).map_err(|source| CaError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CaError::Empty {
            path: path.to_owned(),
        });
    }
    // reqwest accepts a bundle with no certificate in it; a CA flag that trusts nothing is
    // a mistake the user should hear about now, not as an "unknown authority" later.
    if !bytes
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(CaError::NoCertificate {
            path: path.to_owned(),
        });
    }
    match reqwest::Certificate::from_pem_bundle(&bytes) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(CaError::NoCertificate {
            path: path.to_owned(),
        }),
    }
}

/// `--registry-ca-validate`: check the bundle before any network traffic.
pub fn validate_ca(path: &Path) -> Result<usize, CaError> {
    load_ca(path).map(|certs| certs.len())
}

/// docker's per-registry CAs: every `*.crt` in `<certs_dir>/<host:port>/` (docker reads
/// `ca.crt` and any other `.crt` there as roots). A missing directory is the usual case.
pub fn docker_certs(certs_dir: &Path, host: &str) -> Vec<reqwest::Certificate> {
    let dir = certs_dir.join(host);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut certs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt") {
            match load_ca(&path) {
                Ok(mut c) => certs.append(&mut c),
                // Docker ignores unusable files there too; say so rather than fail.
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
    certs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_non_pem_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "\n").unwrap();
        let e = validate_ca(&empty).unwrap_err();
        assert!(matches!(e, CaError::Empty { .. }));
        assert!(e.to_string().contains("empty.pem"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        assert!(matches!(
            validate_ca(&junk).unwrap_err(),
            CaError::NoCertificate { .. }
        ));
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            validate_ca(&missing).unwrap_err(),
            CaError::Unreadable { .. }
        ));
    }

    #[test]
    fn a_missing_certs_dir_trusts_nothing_extra() {
        let dir = tempfile::tempdir().unwrap();
        assert!(docker_certs(dir.path(), "example.com:5000").is_empty());
    }
}
