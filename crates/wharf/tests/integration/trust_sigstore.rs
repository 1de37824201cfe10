//! Interop with an independent implementation of cosign's formats, the `sigstore` crate
//! (cosign and notation have no Debian package): keys it generates and signatures it
//! pushes to a real wharf are verified (and its key file used) by `wharf`; a key file and
//! signature `wharf` makes are opened and verified by the crate, through the registry.

use sigstore::cosign::constraint::PrivateKeySigner;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{
    verify_constraints, ClientBuilder, Constraint, CosignCapabilities, SignatureLayer,
};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::SigningScheme;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

use crate::harness::{docker_pushed, unique, Wharf};
use crate::trust_sign::{digest_of, wharf_fails, wharf_ok, PASSWORD};

fn client(host: &str) -> sigstore::cosign::Client {
    ClientBuilder::default()
        .with_oci_client_config(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![host.to_owned()]),
            ..Default::default()
        })
        .build()
        .expect("a sigstore cosign client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn keys_and_signatures_the_sigstore_crate_makes_verify_with_wharf() {
    let w = Wharf::start();
    let host = w.host();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    for (scheme, repo) in [
        (SigningScheme::ECDSA_P256_SHA256_ASN1, "team/by-sigstore"),
        (SigningScheme::ED25519, "team/by-sigstore-ed25519"),
        (
            SigningScheme::RSA_PKCS1_SHA256(2048),
            "team/by-sigstore-rsa",
        ),
    ] {
        let image = docker_pushed(&host, repo, &unique("sigstore-signed "));
        let signer = scheme.create_signer().unwrap();
        let pair = signer.to_sigstore_keypair().unwrap();
        let public = cwd.join(format!("{scheme}.pub"));
        std::fs::write(&public, pair.public_key_to_pem().unwrap()).unwrap();
        std::fs::write(
            cwd.join(format!("{scheme}.key")),
            pair.private_key_to_encrypted_pem(PASSWORD.as_bytes())
                .unwrap()
                .as_bytes(),
        )
        .unwrap();

        // Signed and pushed by the crate's cosign client.
        runtime().block_on(async {
            let reference: OciReference = image.parse().unwrap();
            let mut client = client(&host);
            let (sig_image, digest) = client
                .triangulate(&reference, &Auth::Anonymous)
                .await
                .unwrap();
            let mut layer = SignatureLayer::new_unsigned(&reference, &digest).unwrap();
            assert!(PrivateKeySigner::new_with_signer(signer)
                .add_constraint(&mut layer)
                .unwrap());
            client
                .push_signature(None, &Auth::Anonymous, &sig_image, vec![layer])
                .await
                .unwrap();
        });
        let verified = wharf_ok(cwd, &["verify", "--key", public.to_str().unwrap(), &image]);
        assert!(
            verified.contains("Verified") && verified.contains(&format!("{scheme}.pub")),
            "{scheme}: {verified}"
        );

        // wharf signs with the crate's key file (cosign's encrypted format), on another image.
        let second = docker_pushed(&host, &format!("{repo}-2"), &unique("wharf-signed "));
        let key = format!("{scheme}.key");
        wharf_ok(cwd, &["sign", "--key", &key, &second]);
        wharf_ok(cwd, &["verify", "--key", public.to_str().unwrap(), &second]);
        let wrong = wharf_fails(cwd, Some("wrong"), &["sign", "--key", &key, &second]);
        assert!(wrong.contains("wrong password"), "{wrong}");
    }
}

#[test]
fn a_key_file_and_signature_wharf_makes_verify_with_the_sigstore_crate() {
    let w = Wharf::start();
    let host = w.host();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let image = docker_pushed(&host, "team/by-wharf", &unique("wharf-signed "));
    let digest = digest_of(cwd, &image);
    wharf_ok(cwd, &["key", "generate"]);
    wharf_ok(cwd, &["sign", "--key", "cosign.key", &image]);

    // The crate opens wharf's key file with the password, and only with it.
    let key_pem = std::fs::read(cwd.join("cosign.key")).unwrap();
    let pair = SigStoreKeyPair::from_encrypted_pem(&key_pem, PASSWORD.as_bytes()).unwrap();
    let public_pem = std::fs::read_to_string(cwd.join("cosign.pub")).unwrap();
    assert_eq!(pair.public_key_to_pem().unwrap(), public_pem);
    assert!(SigStoreKeyPair::from_encrypted_pem(&key_pem, b"wrong").is_err());

    // The crate's cosign verification of what wharf pushed.
    runtime().block_on(async {
        let reference: OciReference = image.parse().unwrap();
        let mut client = client(&host);
        let layers = client
            .trusted_signature_layers(&Auth::Anonymous, &reference)
            .await
            .unwrap();
        assert_eq!(layers.len(), 1, "{layers:?}");
        assert_eq!(
            layers[0]
                .simple_signing
                .critical
                .image
                .docker_manifest_digest,
            digest
        );
        let by_key: Vec<Box<dyn VerificationConstraint>> = vec![Box::new(
            PublicKeyVerifier::new(
                public_pem.as_bytes(),
                &SigningScheme::ECDSA_P256_SHA256_ASN1,
            )
            .unwrap(),
        )];
        verify_constraints(&layers, by_key.iter()).expect("the crate verifies wharf's signature");
        // And it refuses them under another key, so the check above can fail.
        let other = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .unwrap();
        let other_pem = other
            .to_sigstore_keypair()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        let by_other: Vec<Box<dyn VerificationConstraint>> = vec![Box::new(
            PublicKeyVerifier::new(other_pem.as_bytes(), &SigningScheme::ECDSA_P256_SHA256_ASN1)
                .unwrap(),
        )];
        assert!(verify_constraints(&layers, by_other.iter()).is_err());
    });
}
