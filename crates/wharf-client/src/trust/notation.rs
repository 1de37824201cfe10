//! Notation's X.509 signatures: a referrer of artifact type
//! `application/vnd.cncf.notary.signature` whose layer is a JWS envelope in JSON
//! serialization (`application/jose+json`). The protected header names the algorithm and
//! the signing scheme (`notary.x509`); the unprotected header carries the chain (`x5c`,
//! leaf first); the payload is `{"targetArtifact": <descriptor>}`. Verification needs no
//! network: the chain must end at (or be issued by) a configured root, every
//! certificate must be within its validity period now, and the leaf's key must verify
//! the envelope.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use wharf_oci::{Descriptor, Digest, Manifest};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::keys::PublicKey;
use super::{
    Refusal, SignatureForm, SignatureInfo, SignatureSource, TrustError, TrustRoots, Verdict,
    MAX_SIGNATURE_BYTES, MAX_SIGNATURE_LAYERS,
};

pub const NOTATION_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
pub const NOTATION_ENVELOPE_MEDIA_TYPE: &str = "application/jose+json";
const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const EXPIRY: &str = "io.cncf.notary.expiry";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
/// Longer chains than this are not what a signing CA issues.
const MAX_CHAIN: usize = 10;

/// A configured root certificate.
#[derive(Clone)]
pub(super) struct TrustedRoot {
    der: Vec<u8>,
}

impl TrustedRoot {
    pub(super) fn from_pem(text: &[u8]) -> Result<Vec<TrustedRoot>, String> {
        let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
        let mut roots = Vec::new();
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            X509Certificate::from_der(block.contents())
                .map_err(|e| format!("a CERTIFICATE block does not parse: {e}"))?;
            roots.push(TrustedRoot {
                der: block.contents().to_vec(),
            });
        }
        if roots.is_empty() {
            return Err("no CERTIFICATE block; a root is a PEM certificate (ca.pem)".into());
        }
        Ok(roots)
    }
}

#[derive(Deserialize)]
struct Envelope {
    payload: String,
    protected: String,
    #[serde(default)]
    header: Header,
    signature: String,
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default)]
    x5c: Vec<String>,
}

/// Check one Notation signature referrer.
pub(super) async fn check(
    source: &dyn SignatureSource,
    repo: &str,
    digest: &Digest,
    referrer: &Descriptor,
    roots: &TrustRoots,
) -> Result<SignatureInfo, TrustError> {
    let at = referrer.digest.clone();
    let mut info = SignatureInfo {
        form: SignatureForm::Notation,
        manifest: at.clone(),
        signer: None,
        verdict: Verdict::Refused(Refusal::NoSignature),
        details: BTreeMap::new(),
    };
    let envelope = match envelope(source, repo, &at).await? {
        Ok(bytes) => bytes,
        Err(why) => {
            info.verdict = Verdict::Refused(Refusal::Invalid(why));
            return Ok(info);
        }
    };
    info.verdict = match judge(&envelope, digest, roots, &mut info) {
        Ok(by) => Verdict::Verified {
            by,
            form: SignatureForm::Notation,
        },
        Err(refusal) => Verdict::Refused(refusal),
    };
    Ok(info)
}

/// The envelope bytes of a signature manifest, or why there are none.
async fn envelope(
    source: &dyn SignatureSource,
    repo: &str,
    at: &Digest,
) -> Result<Result<Vec<u8>, String>, TrustError> {
    let Some((bytes, _)) = source.manifest(repo, &at.to_string()).await? else {
        return Ok(Err(format!(
            "signature manifest {at} is listed but missing"
        )));
    };
    let manifest = match Manifest::parse(&bytes, None) {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("signature manifest {at}: {e}"))),
    };
    if manifest.layers.len() > MAX_SIGNATURE_LAYERS {
        return Ok(Err(format!(
            "signature manifest {at} has {} layers; at most {MAX_SIGNATURE_LAYERS} are read",
            manifest.layers.len()
        )));
    }
    let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| l.media_type == NOTATION_ENVELOPE_MEDIA_TYPE)
    else {
        return Ok(Err(format!(
            "signature manifest {at} has no {NOTATION_ENVELOPE_MEDIA_TYPE} envelope (COSE envelopes are not read)"
        )));
    };
    if layer.size > MAX_SIGNATURE_BYTES {
        return Ok(Err(format!(
            "envelope {} is {} bytes, more than {MAX_SIGNATURE_BYTES}",
            layer.digest, layer.size
        )));
    }
    match source.blob(repo, &layer.digest, MAX_SIGNATURE_BYTES).await {
        Ok(b) if Digest::of(layer.digest.algorithm(), &b) == layer.digest => Ok(Ok(b)),
        Ok(_) => Ok(Err(format!(
            "envelope {} does not hash to its digest",
            layer.digest
        ))),
        Err(e @ TrustError::TooLarge { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

fn invalid(why: impl Into<String>) -> Refusal {
    Refusal::Invalid(why.into())
}

/// The envelope's verdict: the leaf's subject when it verifies.
fn judge(
    bytes: &[u8],
    digest: &Digest,
    roots: &TrustRoots,
    info: &mut SignatureInfo,
) -> Result<String, Refusal> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "the envelope is not a JWS in JSON serialization: {e}"
        ))
    })?;
    let protected: Value = B64URL
        .decode(&env.protected)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("the protected header is not base64url JSON"))?;
    let alg = check_header(&protected)?;
    if let Some(t) = protected[SIGNING_TIME].as_str() {
        info.details.insert("signingTime".into(), t.to_owned());
    }
    let chain = decode_chain(&env.header.x5c)?;
    let leaf = X509Certificate::from_der(&chain[0])
        .map_err(|e| invalid(format!("leaf certificate: {e}")))?
        .1;
    let subject = leaf.subject().to_string();
    info.signer = Some(subject.clone());
    check_chain(&chain, roots)?;
    let key = PublicKey::from_spki_der(leaf.public_key().raw).map_err(invalid)?;
    let signature = B64URL
        .decode(&env.signature)
        .map_err(|_| invalid("the signature is not base64url"))?;
    let input = format!("{}.{}", env.protected, env.payload);
    key.verify_jws(&alg, input.as_bytes(), &signature)
        .map_err(invalid)?;
    let payload: Value = B64URL
        .decode(&env.payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("the payload is not base64url JSON"))?;
    match payload["targetArtifact"]["digest"].as_str() {
        Some(d) if d == digest.to_string() => Ok(subject),
        Some(_) => Err(Refusal::OtherDigest),
        None => Err(invalid("the payload names no targetArtifact.digest")),
    }
}

/// The protected header's algorithm, once its content type, scheme and critical
/// parameters are ones this verifier honours.
fn check_header(protected: &Value) -> Result<String, Refusal> {
    let alg = protected["alg"]
        .as_str()
        .ok_or_else(|| invalid("no alg in the protected header"))?;
    if protected["cty"].as_str() != Some(PAYLOAD_CONTENT_TYPE) {
        return Err(invalid(format!("cty is not {PAYLOAD_CONTENT_TYPE}")));
    }
    match protected[SIGNING_SCHEME].as_str() {
        Some("notary.x509") => {}
        other => {
            return Err(invalid(format!(
                "signing scheme {other:?}: only notary.x509 is verified (no timestamping authority is consulted)"
            )))
        }
    }
    let known = [SIGNING_SCHEME, EXPIRY];
    for name in protected["crit"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if !known.contains(&name) {
            return Err(invalid(format!(
                "critical header {name:?} is not understood"
            )));
        }
    }
    if let Some(expiry) = protected[EXPIRY].as_str() {
        let at = x509_parser::time::ASN1Time::from_timestamp(rfc3339_seconds(expiry)?)
            .map_err(|_| invalid("bad io.cncf.notary.expiry"))?;
        if at.timestamp() < now() {
            return Err(Refusal::Expired(format!(
                "the signature expired at {expiry}"
            )));
        }
    }
    Ok(alg.to_owned())
}

fn decode_chain(x5c: &[String]) -> Result<Vec<Vec<u8>>, Refusal> {
    if x5c.is_empty() {
        return Err(invalid("the envelope carries no certificate chain (x5c)"));
    }
    if x5c.len() > MAX_CHAIN {
        return Err(invalid(format!(
            "a chain of {} certificates; at most {MAX_CHAIN}",
            x5c.len()
        )));
    }
    x5c.iter()
        .map(|c| {
            B64.decode(c)
                .map_err(|_| invalid("an x5c entry is not base64"))
        })
        .collect()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Each certificate within its validity, each signed by the next, the last a configured
/// root or signed by one.
fn check_chain(chain: &[Vec<u8>], roots: &TrustRoots) -> Result<(), Refusal> {
    let mut certs = Vec::new();
    for der in chain {
        let cert = X509Certificate::from_der(der)
            .map_err(|e| invalid(format!("a chain certificate does not parse: {e}")))?
            .1;
        certs.push(cert);
    }
    let now = now();
    for cert in &certs {
        let v = cert.validity();
        if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
            return Err(Refusal::Expired(format!(
                "{} is valid from {} to {}",
                cert.subject(),
                v.not_before,
                v.not_after
            )));
        }
    }
    for pair in certs.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        if !parent.is_ca() || child.issuer() != parent.subject() {
            return Err(invalid(format!(
                "{} is not issued by the CA after it in the chain",
                child.subject()
            )));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| {
                invalid(format!(
                    "{}'s signature does not verify with its issuer's key",
                    child.subject()
                ))
            })?;
    }
    if roots.roots.is_empty() {
        return Err(Refusal::WrongRoot(
            "no root certificates are configured".into(),
        ));
    }
    let last = certs.last().expect("chain is not empty");
    for root in &roots.roots {
        if root.der == *chain.last().expect("chain is not empty") {
            return Ok(());
        }
        let Ok((_, root_cert)) = X509Certificate::from_der(&root.der) else {
            continue;
        };
        if last.issuer() == root_cert.subject()
            && last.verify_signature(Some(root_cert.public_key())).is_ok()
        {
            let v = root_cert.validity();
            if now < v.not_before.timestamp() || now > v.not_after.timestamp() {
                return Err(Refusal::Expired(format!(
                    "root {} is outside its validity",
                    root_cert.subject()
                )));
            }
            return Ok(());
        }
    }
    Err(Refusal::WrongRoot(format!(
        "the chain ends at {}, issued by {}, which is no configured root",
        last.subject(),
        last.issuer()
    )))
}

/// Seconds since the epoch of an RFC 3339 time (`2026-12-07T22:00:00Z`, offsets allowed).
fn rfc3339_seconds(text: &str) -> Result<i64, Refusal> {
    let bad = || invalid(format!("{text:?} is not an RFC 3339 time"));
    let (date, rest) = text.split_once(['T', 't']).ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, mo, da] = d[..] else {
        return Err(bad());
    };
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => return Err(bad()),
    };
    let clock = clock.split('.').next().unwrap_or_default();
    let c: Vec<i64> = clock
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [h, mi, s] = c[..] else { return Err(bad()) };
    let off = if offset.eq_ignore_ascii_case("z") {
        0
    } else {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (oh, om) = offset[1..].split_once(':').ok_or_else(bad)?;
        sign * (oh.parse::<i64>().map_err(|_| bad())? * 3600
            + om.parse::<i64>().map_err(|_| bad())? * 60)
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + h * 3600 + mi * 60 + s - off)
}
