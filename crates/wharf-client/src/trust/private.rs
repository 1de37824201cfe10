//! Private keys for `wharf sign` and the file `wharf key generate` writes: cosign's
//! encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`, or `ENCRYPTED COSIGN PRIVATE KEY` from
//! older cosign). Its body is JSON: the PKCS#8 DER key sealed with NaCl secretbox
//! (XSalsa20-Poly1305) under a key scrypt derives from the password, as sigstore's
//! `encrypted` package (after go-securesystemslib) writes it:
//! `{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":B64},
//!   "cipher":{"name":"nacl/secretbox","nonce":B64},"ciphertext":B64}`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use super::keys::PublicKey;

/// The PEM label current cosign writes.
pub const SIGSTORE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label cosign wrote before it moved the format to sigstore.
pub const COSIGN_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// cosign's scrypt cost (N = 2^15, r = 8, p = 1); 2^16 is accepted too, as sigstore
/// does. Other parameters are refused: a file could otherwise ask for gigabytes.
const SCRYPT_LOG_N: u8 = 15;
const ACCEPTED_N: [u64; 2] = [1 << 15, 1 << 16];

/// A signing key.
pub enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("wrong password: the key file could not be decrypted with it (set COSIGN_PASSWORD to the password the key was generated with)")]
    WrongPassword,
    #[error("{0}")]
    Format(String),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl PrivateKey {
    /// A new ECDSA P-256 key, what `cosign generate-key-pair` makes.
    pub fn generate_p256() -> PrivateKey {
        PrivateKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    /// A PKCS#8 DER private key: ECDSA P-256, Ed25519 or RSA.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, KeyFileError> {
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::P256(k.into()));
        }
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::Ed25519(k));
        }
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
            return Ok(PrivateKey::Rsa(Box::new(k)));
        }
        Err(KeyFileError::Format(
            "the key is not an ECDSA P-256, Ed25519 or RSA private key (PKCS#8)".into(),
        ))
    }

    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        let doc = match self {
            PrivateKey::P256(k) => k.to_pkcs8_der(),
            PrivateKey::Ed25519(k) => k.to_pkcs8_der(),
            PrivateKey::Rsa(k) => k.to_pkcs8_der(),
        };
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
        }
    }

    /// cosign's signature over a payload (what `dev.cosignproject.cosign/signature`
    /// carries, before base64): ECDSA SHA-256 in ASN.1 DER, Ed25519, or RSA PKCS#1 v1.5
    /// with SHA-256.
    pub fn sign_cosign(&self, payload: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::{SignatureEncoding, Signer};
        match self {
            PrivateKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(payload);
                s.to_der().as_bytes().to_vec()
            }
            PrivateKey::Ed25519(k) => k.sign(payload).to_bytes().to_vec(),
            PrivateKey::Rsa(k) => {
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone());
                signer.sign(payload).to_vec()
            }
        }
    }

    /// Read a private key file: cosign's encrypted PEM (with `password`), or an
    /// unencrypted PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`.
    pub fn from_pem(text: &[u8], password: &[u8]) -> Result<PrivateKey, KeyFileError> {
        use p256::elliptic_curve::SecretKey;
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let block = pem::parse(text)
            .map_err(|e| KeyFileError::Format(format!("not a PEM key file: {e}")))?;
        match block.tag() {
            SIGSTORE_LABEL | COSIGN_LABEL => {
                PrivateKey::from_pkcs8_der(&decrypt(block.contents(), password)?)
            }
            "PRIVATE KEY" => PrivateKey::from_pkcs8_der(block.contents()),
            "EC PRIVATE KEY" => SecretKey::<p256::NistP256>::from_sec1_der(block.contents())
                .map(|k| PrivateKey::P256(k.into()))
                .map_err(|e| KeyFileError::Format(format!("bad EC PRIVATE KEY (P-256 only): {e}"))),
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(block.contents())
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .map_err(|e| KeyFileError::Format(format!("bad RSA PRIVATE KEY: {e}"))),
            other => Err(KeyFileError::Format(format!(
                "PEM block {other:?} is not a private key; expected {SIGSTORE_LABEL} (cosign.key)"
            ))),
        }
    }

    /// This key as cosign.key: the encrypted PEM under `password`.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyFileError> {
        let body = encrypt(&self.to_pkcs8_der(), password)?;
        Ok(pem::encode(&pem::Pem::new(SIGSTORE_LABEL, body)))
    }
}

fn scrypt_key(password: &[u8], salt: &[u8], log_n: u8) -> Result<[u8; 32], KeyFileError> {
    let params = scrypt::Params::new(log_n, 8, 1, 32)
        .map_err(|e| KeyFileError::Format(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key)
        .map_err(|e| KeyFileError::Format(format!("scrypt: {e}")))?;
    Ok(key)
}

/// Seal PKCS#8 DER under `password`: the JSON body of cosign.key.
pub fn encrypt(plaintext: &[u8], password: &[u8]) -> Result<Vec<u8>, KeyFileError> {
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let key = scrypt_key(password, &salt, SCRYPT_LOG_N)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let sealed = cipher
        .encrypt(&nonce.into(), plaintext)
        .map_err(|_| KeyFileError::Format("secretbox refused to seal the key".into()))?;
    let envelope = Envelope {
        kdf: Kdf {
            name: "scrypt".into(),
            params: ScryptParams {
                n: 1 << SCRYPT_LOG_N,
                r: 8,
                p: 1,
            },
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(sealed),
    };
    serde_json::to_vec(&envelope).map_err(|e| KeyFileError::Format(e.to_string()))
}

/// Open the JSON body of an encrypted key file.
pub fn decrypt(body: &[u8], password: &[u8]) -> Result<Vec<u8>, KeyFileError> {
    let bad = |what: &str| KeyFileError::Format(format!("encrypted key file: {what}"));
    let env: Envelope =
        serde_json::from_slice(body).map_err(|e| bad(&format!("not cosign's JSON ({e})")))?;
    if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
        return Err(bad(&format!(
            "kdf {:?} and cipher {:?}; cosign uses scrypt and nacl/secretbox",
            env.kdf.name, env.cipher.name
        )));
    }
    let p = &env.kdf.params;
    if !ACCEPTED_N.contains(&p.n) || p.r != 8 || p.p != 1 {
        return Err(bad(&format!(
            "scrypt N={} r={} p={} is not cosign's (N=32768 or 65536, r=8, p=1)",
            p.n, p.r, p.p
        )));
    }
    let salt = B64
        .decode(&env.kdf.salt)
        .map_err(|_| bad("salt is not base64"))?;
    let nonce = B64
        .decode(&env.cipher.nonce)
        .map_err(|_| bad("nonce is not base64"))?;
    let sealed = B64
        .decode(&env.ciphertext)
        .map_err(|_| bad("ciphertext is not base64"))?;
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| bad("nonce is not 24 bytes"))?;
    let log_n = p.n.trailing_zeros() as u8;
    let key = scrypt_key(password, &salt, log_n)?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(&nonce.into(), sealed.as_slice())
        .map_err(|_| KeyFileError::WrongPassword)
}
