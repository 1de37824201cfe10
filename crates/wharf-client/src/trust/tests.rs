//! The formats and refusals, over an in-memory signature store; the integration tests
//! prove the same against a real registry with docker, and against the `sigstore` crate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use wharf_oci::{Descriptor, Digest};

use super::*;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/trust/testdata");

#[derive(Default)]
struct Memory {
    manifests: Mutex<HashMap<String, Vec<u8>>>,
    blobs: Mutex<HashMap<Digest, Vec<u8>>>,
    referrers: Mutex<HashMap<Digest, Vec<Descriptor>>>,
}

#[async_trait::async_trait]
impl SignatureSource for Memory {
    async fn manifest(&self, _: &str, r: &str) -> Result<Option<(Vec<u8>, String)>, TrustError> {
        let found = self.manifests.lock().unwrap().get(r).cloned();
        Ok(found.map(|b| (b, wharf_oci::media_type::OCI_MANIFEST.to_owned())))
    }
    async fn referrers(&self, _: &str, d: &Digest) -> Result<Vec<Descriptor>, TrustError> {
        Ok(self
            .referrers
            .lock()
            .unwrap()
            .get(d)
            .cloned()
            .unwrap_or_default())
    }
    async fn blob(&self, _: &str, d: &Digest, max: u64) -> Result<Vec<u8>, TrustError> {
        let blob = self.blobs.lock().unwrap().get(d).cloned();
        let blob = blob.ok_or_else(|| TrustError::Source(format!("no blob {d}")))?;
        if blob.len() as u64 > max {
            return Err(TrustError::TooLarge {
                what: d.to_string(),
                size: blob.len() as u64,
                max,
            });
        }
        Ok(blob)
    }
}

fn image() -> Digest {
    Digest::sha256_of(b"an image manifest")
}

fn layer(payload: &[u8], signature: &str) -> Descriptor {
    Descriptor {
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
        digest: Digest::sha256_of(payload),
        size: payload.len() as u64,
        artifact_type: None,
        annotations: Some(BTreeMap::from([(
            SIGNATURE_ANNOTATION.into(),
            signature.into(),
        )])),
        urls: None,
        platform: None,
    }
}

impl Memory {
    /// Store one cosign signature over `payload` under the `.sig` tag of `image()`.
    fn sign_tag(&self, key: &PrivateKey, payload: Vec<u8>) {
        let signature = B64.encode(key.sign_cosign(&payload));
        self.put_tag(vec![layer(&payload, &signature)], payload);
    }
    fn put_tag(&self, layers: Vec<Descriptor>, payload: Vec<u8>) {
        let (_, manifest) = signature_manifest(&layers, None);
        self.blobs
            .lock()
            .unwrap()
            .insert(Digest::sha256_of(&payload), payload);
        self.manifests
            .lock()
            .unwrap()
            .insert(signature_tag(&image()), manifest);
    }
}

fn roots_for(key: &PrivateKey) -> TrustRoots {
    let mut roots = TrustRoots::default();
    roots.add_key("cosign.pub", key.public());
    roots
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn verdict(memory: &Memory, roots: &TrustRoots) -> Verdict {
    run(verify(memory, "team/app", &image(), roots))
}

#[test]
fn cosigns_own_key_files_open_with_their_password_and_sign() {
    for file in ["sigstore.key", "cosign-rsa.key"] {
        let text = std::fs::read(format!("{VECTORS}/{file}")).unwrap();
        let key = PrivateKey::from_pem(&text, b"hello").unwrap_or_else(|e| panic!("{file}: {e}"));
        let payload = cosign_payload("localhost:5000/team/app", &image());
        assert!(
            key.public()
                .verify_cosign(&payload, &key.sign_cosign(&payload)),
            "{file}"
        );
        let wrong = PrivateKey::from_pem(&text, b"not hello").err().unwrap();
        assert!(
            matches!(wrong, KeyFileError::WrongPassword),
            "{file}: {wrong}"
        );
        assert!(wrong.to_string().contains("COSIGN_PASSWORD"), "{wrong}");
    }
    // cosign itself refuses this one (a SEC1 key where PKCS#8 belongs); so does wharf,
    // saying why rather than blaming the password.
    let text = std::fs::read(format!("{VECTORS}/cosign-ec-sec1.key")).unwrap();
    let refused = PrivateKey::from_pem(&text, b"hello").err().unwrap();
    assert!(refused.to_string().contains("PKCS#8"), "{refused}");
}

#[test]
fn a_generated_key_file_round_trips_and_is_cosigns_format() {
    let key = PrivateKey::generate_p256();
    let pem = key.to_encrypted_pem(b"pw").unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{pem}"
    );
    let body = ::pem::parse(&pem).unwrap();
    let json: serde_json::Value = serde_json::from_slice(body.contents()).unwrap();
    assert_eq!(json["kdf"]["name"], "scrypt");
    assert_eq!(json["kdf"]["params"]["N"], 32768);
    assert_eq!(json["cipher"]["name"], "nacl/secretbox");
    let again = PrivateKey::from_pem(pem.as_bytes(), b"pw").unwrap();
    assert_eq!(again.public().fingerprint(), key.public().fingerprint());
    let public = PublicKey::from_pem(key.public().to_pem().as_bytes()).unwrap();
    assert_eq!(public.fingerprint(), key.public().fingerprint());
}

#[test]
fn the_payload_is_cosigns_simple_signing_document() {
    let text = String::from_utf8(cosign_payload("r:5000/team/app", &image())).unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r:5000/team/app"}},"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
            image()
        )
    );
}

#[test]
fn signatures_verify_by_the_right_key_for_the_right_digest_only() {
    for key in [PrivateKey::generate_p256(), ed25519(), rsa()] {
        let memory = Memory::default();
        assert_eq!(
            verdict(&memory, &roots_for(&key)),
            Verdict::Refused(Refusal::NoSignature)
        );
        memory.sign_tag(&key, cosign_payload("r/team/app", &image()));
        let ok = verdict(&memory, &roots_for(&key));
        assert!(ok.is_verified(), "{}: {ok:?}", key.public().algorithm());
        let other = roots_for(&PrivateKey::generate_p256());
        assert_eq!(
            verdict(&memory, &other),
            Verdict::Refused(Refusal::UntrustedKey)
        );
    }
    let key = PrivateKey::generate_p256();
    let memory = Memory::default();
    memory.sign_tag(
        &key,
        cosign_payload("r/team/app", &Digest::sha256_of(b"another")),
    );
    let refused = verdict(&memory, &roots_for(&key));
    assert_eq!(refused, Verdict::Refused(Refusal::OtherDigest));
    assert_eq!(
        Refusal::OtherDigest.to_string(),
        "signature is for another digest"
    );
}

#[test]
fn a_tampered_payload_does_not_verify() {
    let key = PrivateKey::generate_p256();
    let payload = cosign_payload("r/team/app", &image());
    let signature = B64.encode(key.sign_cosign(&payload));
    let mut tampered = payload.clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 1;
    let memory = Memory::default();
    memory.put_tag(vec![layer(&tampered, &signature)], tampered);
    assert_eq!(
        verdict(&memory, &roots_for(&key)),
        Verdict::Refused(Refusal::UntrustedKey)
    );
}

#[test]
fn malformed_oversized_and_thousand_layer_signatures_are_refused_with_reasons() {
    let key = PrivateKey::generate_p256();
    let payload = cosign_payload("r/team/app", &image());
    let cases: Vec<(Vec<Descriptor>, &str)> = vec![
        (
            vec![layer(&payload, &"A".repeat(65 * 1024))],
            "more than 65536",
        ),
        (vec![layer(&payload, "not base64!")], "not base64"),
        (vec![layer(&payload, "QUJD"); 1000], "1000 layers"),
    ];
    for (layers, expected) in cases {
        let memory = Memory::default();
        memory.put_tag(layers, payload.clone());
        match verdict(&memory, &roots_for(&key)) {
            Verdict::Refused(Refusal::Invalid(why)) => assert!(why.contains(expected), "{why}"),
            other => panic!("{expected}: {other:?}"),
        }
    }
    let memory = Memory::default();
    memory
        .manifests
        .lock()
        .unwrap()
        .insert(signature_tag(&image()), b"{not json".to_vec());
    assert!(matches!(
        verdict(&memory, &roots_for(&key)),
        Verdict::Refused(Refusal::Invalid(_))
    ));
}

#[test]
fn one_good_signature_among_bad_ones_verifies() {
    let key = PrivateKey::generate_p256();
    let stranger = PrivateKey::generate_p256();
    let payload = cosign_payload("r/team/app", &image());
    let layers = vec![
        layer(&payload, &B64.encode(stranger.sign_cosign(&payload))),
        layer(&payload, &B64.encode(key.sign_cosign(&payload))),
    ];
    let memory = Memory::default();
    memory.put_tag(layers, payload);
    let found = run(list_signatures(
        &memory,
        "team/app",
        &image(),
        &roots_for(&key),
    ))
    .unwrap();
    assert_eq!(found.len(), 2);
    assert!(!found[0].verdict.is_verified() && found[1].verdict.is_verified());
    assert!(verdict(&memory, &roots_for(&key)).is_verified());
}

fn ed25519() -> PrivateKey {
    PrivateKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
}

fn rsa() -> PrivateKey {
    PrivateKey::Rsa(Box::new(
        rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap(),
    ))
}
