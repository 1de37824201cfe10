//! Public keys as cosign writes them (PEM `PUBLIC KEY`, SubjectPublicKeyInfo) and as X.509
//! certificates carry them, and the signature checks cosign and Notation make with them.
//!
//! cosign signs its payload with SHA-256 whatever the key (ECDSA over the digest in ASN.1
//! DER, RSA PKCS#1 v1.5, Ed25519 over the payload itself); Notation's JWS names its
//! algorithm (`ES256`, `ES384`, `PS256`…, with ECDSA signatures as raw `r‖s`).

use p256::pkcs8::DecodePublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// A verifying key of one of the kinds cosign and Notation use.
#[derive(Clone, Debug)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl PublicKey {
    /// A DER SubjectPublicKeyInfo: ECDSA P-256 or P-384, Ed25519, or RSA.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k.into()));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P384(k.into()));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::Ed25519(k));
        }
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            return Ok(PublicKey::Rsa(k));
        }
        Err("not an ECDSA P-256/P-384, Ed25519 or RSA public key (SubjectPublicKeyInfo)".into())
    }

    /// The first public key in a PEM file (`PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`).
    pub fn from_pem(text: &[u8]) -> Result<PublicKey, String> {
        let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
        for block in &blocks {
            match block.tag() {
                "PUBLIC KEY" => return PublicKey::from_spki_der(block.contents()),
                "RSA PUBLIC KEY" => {
                    return rsa::RsaPublicKey::from_pkcs1_der(block.contents())
                        .map(PublicKey::Rsa)
                        .map_err(|e| format!("bad RSA PUBLIC KEY: {e}"))
                }
                _ => {}
            }
        }
        let found: Vec<&str> = blocks.iter().map(|b| b.tag()).collect();
        Err(format!(
            "no PUBLIC KEY block (found {}); a cosign public key is the cosign.pub that `wharf key generate` or `cosign generate-key-pair` writes",
            if found.is_empty() { "none".to_owned() } else { found.join(", ") }
        ))
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "ECDSA P-256",
            PublicKey::P384(_) => "ECDSA P-384",
            PublicKey::Ed25519(_) => "Ed25519",
            PublicKey::Rsa(_) => "RSA",
        }
    }

    /// The SubjectPublicKeyInfo in DER, what the fingerprint hashes.
    pub fn spki_der(&self) -> Vec<u8> {
        use p256::pkcs8::EncodePublicKey;
        let doc = match self {
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
            PublicKey::Ed25519(k) => k.to_public_key_der(),
            PublicKey::Rsa(k) => k.to_public_key_der(),
        };
        // Encoding a key that decoded cannot fail; an empty result only weakens a label.
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// `sha256:<hex>` of the SubjectPublicKeyInfo: one name for a key wherever it is.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.spki_der())))
    }

    /// The key as PEM `PUBLIC KEY`, as cosign.pub holds it.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki_der()))
    }

    /// cosign's check of a key-based signature over its payload.
    pub fn verify_cosign(&self, payload: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        use p256::ecdsa::signature::Verifier;
        let digest = Sha256::digest(payload);
        match self {
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok()),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok()),
            PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(payload, &s).is_ok()),
            PublicKey::Rsa(k) => k
                .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
                .is_ok(),
        }
    }

    /// A JWS signature (RFC 7515/7518) by algorithm name, over the signing input.
    pub fn verify_jws(&self, alg: &str, input: &[u8], signature: &[u8]) -> Result<(), String> {
        use p256::ecdsa::signature::Verifier;
        let ok = match (alg, self) {
            ("ES256", PublicKey::P256(k)) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(input, &s).is_ok()),
            ("ES384", PublicKey::P384(k)) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify(input, &s).is_ok()),
            ("PS256", PublicKey::Rsa(k)) => pss::<Sha256>(k, input, signature),
            ("PS384", PublicKey::Rsa(k)) => pss::<Sha384>(k, input, signature),
            ("PS512", PublicKey::Rsa(k)) => pss::<Sha512>(k, input, signature),
            ("ES256" | "ES384" | "PS256" | "PS384" | "PS512", key) => {
                return Err(format!(
                    "the envelope says {alg}, but the certificate holds an {} key",
                    key.algorithm()
                ))
            }
            _ => {
                return Err(format!(
                    "algorithm {alg:?} is not one Notation signs with (ES256, ES384, PS256, PS384, PS512)"
                ))
            }
        };
        if ok {
            Ok(())
        } else {
            Err("the envelope's signature does not verify with its leaf certificate's key (altered payload or header)".into())
        }
    }
}

fn pss<D>(key: &rsa::RsaPublicKey, input: &[u8], signature: &[u8]) -> bool
where
    D: 'static + sha2::Digest + sha2::digest::DynDigest + Send + Sync,
{
    let digest = D::digest(input);
    key.verify(rsa::Pss::new::<D>(), &digest, signature).is_ok()
}
