//! Docker registry tokens (JWTs): the built-in issuer, which signs with an HMAC key or
//! with a certificate's private key, and the verifier for tokens from an external token
//! server, which trusts the public keys of the certificates in `auth.token.rootcertbundle`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::policy::Actions;

/// One entry of a token's `access` claim: `{"type":"repository","name":"x","actions":["pull"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Grant>,
    /// Set on refresh tokens, which grant nothing by themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Set on tokens issued to a robot or personal token (`sub` is its name), so that
    /// each use checks the token is still unrevoked and unexpired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub robot: bool,
    /// Set on tokens issued to a workload (an OIDC ID token as password): what it grants is
    /// all its holder may see too, in listings as in requests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workload: bool,
}

/// Whom a token is issued to, which decides how each use is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder {
    Person,
    Robot,
    Workload,
}

impl Claims {
    /// What this token grants on `repo`.
    pub fn actions_on(&self, repo: &str) -> Actions {
        self.access
            .iter()
            .filter(|g| g.kind == "repository" && g.name == repo)
            .fold(Actions::NONE, |acc, g| {
                acc | Actions::from_words(g.actions.iter().map(String::as_str))
            })
    }

    pub fn grants_catalog(&self) -> bool {
        self.access.iter().any(|g| {
            g.kind == "registry" && g.name == "catalog" && g.actions.iter().any(|a| a == "*")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("randomness");
    hex_encode(&b)
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the built-in issuer signs with.
pub enum SigningKey<'a> {
    /// HMAC (HS256) with `http.secret`, so every replica sharing it accepts the others'
    /// tokens; without one, a random key that lives as long as the process.
    Secret(Option<&'a str>),
    /// The private key of `certificate` (RSA, ECDSA P-256 or Ed25519), with the
    /// certificate in each token's `x5c` header: any registry whose
    /// `auth.token.rootcertbundle` holds it (Distribution, another wharf) accepts the
    /// tokens, as from docker_auth.
    Certified {
        key: &'a Path,
        certificate: &'a Path,
    },
}

/// Issues and checks wharf's own tokens.
pub struct Issuer {
    header: Header,
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub issuer: String,
    pub service: String,
    pub expiration: Duration,
}

impl Issuer {
    pub fn new(
        signing: SigningKey<'_>,
        issuer: String,
        service: String,
        expiration: Duration,
    ) -> Result<Issuer, String> {
        let (header, encoding, decoding) = match signing {
            SigningKey::Secret(secret) => {
                let key = match secret {
                    Some(s) => s.as_bytes().to_vec(),
                    None => {
                        let mut k = vec![0u8; 32];
                        getrandom::fill(&mut k).expect("randomness");
                        k
                    }
                };
                (
                    Header::new(Algorithm::HS256),
                    EncodingKey::from_secret(&key),
                    DecodingKey::from_secret(&key),
                )
            }
            SigningKey::Certified { key, certificate } => certified(key, certificate)?,
        };
        Ok(Issuer {
            header,
            encoding,
            decoding,
            issuer,
            service,
            expiration,
        })
    }

    fn sign(
        &self,
        sub: &str,
        access: Vec<Grant>,
        lifetime: Duration,
        typ: Option<&str>,
        holder: Holder,
    ) -> String {
        let iat = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: Audience::One(self.service.clone()),
            exp: iat + lifetime.as_secs(),
            nbf: iat.saturating_sub(1),
            iat,
            jti: random_id(),
            access,
            typ: typ.map(str::to_owned),
            robot: holder == Holder::Robot,
            workload: holder == Holder::Workload,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.encoding)
            .expect("a key checked at start signs")
    }

    pub fn access_token(&self, sub: &str, access: Vec<Grant>) -> String {
        self.sign(sub, access, self.expiration, None, Holder::Person)
    }

    /// As [`Issuer::access_token`], for a workload: it never refreshes, and listings show
    /// it only what it was granted.
    pub fn workload_access_token(&self, sub: &str, access: Vec<Grant>) -> String {
        self.sign(sub, access, self.expiration, None, Holder::Workload)
    }

    pub fn refresh_token(&self, sub: &str) -> String {
        self.sign(
            sub,
            vec![],
            REFRESH_LIFETIME,
            Some("refresh"),
            Holder::Person,
        )
    }

    /// As [`Issuer::access_token`], for the robot token `sub`.
    pub fn robot_access_token(&self, sub: &str, access: Vec<Grant>) -> String {
        self.sign(sub, access, self.expiration, None, Holder::Robot)
    }

    /// As [`Issuer::refresh_token`], for the robot token `sub`.
    pub fn robot_refresh_token(&self, sub: &str) -> String {
        self.sign(
            sub,
            vec![],
            REFRESH_LIFETIME,
            Some("refresh"),
            Holder::Robot,
        )
    }

    fn validation(&self) -> Validation {
        let mut v = Validation::new(self.header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.leeway = 5;
        v
    }

    pub fn verify_access(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation())
            .map_err(|e| TokenError::Invalid(e.to_string()))?
            .claims;
        match claims.typ {
            None => Ok(claims),
            Some(_) => Err(TokenError::Invalid(
                "a refresh token is not an access token".into(),
            )),
        }
    }

    pub fn verify_refresh(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation())
            .map_err(|e| TokenError::Invalid(e.to_string()))?
            .claims;
        match claims.typ.as_deref() {
            Some("refresh") => Ok(claims),
            _ => Err(TokenError::Invalid("not a refresh token".into())),
        }
    }
}

/// The header (algorithm and `x5c`), signing key and checking key for a private key and
/// its certificate, both PEM files.
fn certified(key: &Path, certificate: &Path) -> Result<(Header, EncodingKey, DecodingKey), String> {
    let what = |p: &Path| format!("auth.htpasswd.token: {}", p.display());
    let pem = std::fs::read(certificate)
        .map_err(|e| format!("cannot read {}: {e}", what(certificate)))?;
    // The signer first, then any intermediates, as `x5c` lists them: a registry that
    // trusts only the root still verifies the chain.
    let chain: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .filter_map(Result::ok)
        .filter(|b| b.label == "CERTIFICATE")
        .collect();
    let block = chain
        .first()
        .ok_or_else(|| format!("{}: no PEM certificate in it", what(certificate)))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("{}: bad certificate: {e}", what(certificate)))?;
    let (kind, decoding) = public_key(&cert)
        .ok_or_else(|| {
            format!(
                "{}: the key is not RSA, ECDSA or Ed25519",
                what(certificate)
            )
        })?
        .map_err(|e| format!("{}: unusable public key: {e}", what(certificate)))?;
    let private = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", what(key)))?;
    let (alg, encoding) = match kind {
        KeyKind::Rsa => (Algorithm::RS256, EncodingKey::from_rsa_pem(&private)),
        KeyKind::Ec => (ec_algorithm(&cert), EncodingKey::from_ec_pem(&private)),
        KeyKind::Ed => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&private)),
    };
    let encoding = encoding.map_err(|e| {
        format!("{}: not a PEM private key for the certificate's key type ({e}); ECDSA and Ed25519 keys must be PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`)", what(key))
    })?;
    // A key of the right type but another certificate's would sign tokens nobody accepts.
    let probe = jsonwebtoken::encode(&Header::new(alg), &serde_json::json!({}), &encoding)
        .map_err(|e| format!("{}: cannot sign with it: {e}", what(key)))?;
    let mut check = Validation::new(alg);
    check.required_spec_claims.clear();
    check.validate_exp = false;
    jsonwebtoken::decode::<serde_json::Value>(&probe, &decoding, &check).map_err(|_| {
        format!(
            "{}: not the private key of {}",
            what(key),
            certificate.display()
        )
    })?;
    let mut header = Header::new(alg);
    // DER in standard base64, as RFC 7515 and Distribution's verifier read it.
    header.x5c = Some(
        chain
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(&b.contents))
            .collect(),
    );
    Ok((header, encoding, decoding))
}

/// ES384 for a P-384 key, else ES256 (P-256; any other curve fails the signing probe).
fn ec_algorithm(cert: &x509_parser::certificate::X509Certificate<'_>) -> Algorithm {
    const SECP384R1: &str = "1.3.132.0.34";
    let curve = cert
        .public_key()
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    match curve.as_deref() {
        Some(SECP384R1) => Algorithm::ES384,
        _ => Algorithm::ES256,
    }
}

/// A certificate's public key as a JWT checking key; `None` for a key type tokens do not use.
fn public_key(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Option<Result<(KeyKind, DecodingKey), jsonwebtoken::errors::Error>> {
    let spki = cert.public_key();
    let spki_pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(spki.raw)
    );
    let pem = spki_pem.as_bytes();
    Some(match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.113549.1.1.1" => DecodingKey::from_rsa_pem(pem).map(|k| (KeyKind::Rsa, k)),
        "1.2.840.10045.2.1" => DecodingKey::from_ec_pem(pem).map(|k| (KeyKind::Ec, k)),
        "1.3.101.112" => DecodingKey::from_ed_pem(pem).map(|k| (KeyKind::Ed, k)),
        _ => return None,
    })
}

/// Checks tokens from an external token server (Harbor, docker_auth, ...).
pub struct Verifier {
    keys: Vec<(KeyKind, DecodingKey)>,
    issuer: String,
    service: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyKind {
    Rsa,
    Ec,
    Ed,
}

impl Verifier {
    pub fn from_bundle(path: &Path, issuer: String, service: String) -> Result<Verifier, String> {
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read auth.token.rootcertbundle {}: {e}",
                path.display()
            )
        })?;
        let mut keys = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
            let block = block.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
            if block.label != "CERTIFICATE" {
                continue;
            }
            let cert = block
                .parse_x509()
                .map_err(|e| format!("{}: bad certificate: {e}", path.display()))?;
            let Some(key) = public_key(&cert) else {
                let oid = cert.public_key().algorithm.algorithm.to_id_string();
                tracing::warn!(bundle = %path.display(), %oid, "certificate key type not supported; skipped");
                continue;
            };
            keys.push(key.map_err(|e| format!("{}: unusable public key: {e}", path.display()))?);
        }
        if keys.is_empty() {
            return Err(format!(
                "{}: no usable certificates (RSA, ECDSA or Ed25519) in the bundle",
                path.display()
            ));
        }
        Ok(Verifier {
            keys,
            issuer,
            service,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let kind = match header.alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => KeyKind::Ec,
            Algorithm::EdDSA => KeyKind::Ed,
            other => {
                return Err(TokenError::Invalid(format!(
                    "algorithm {other:?} is not accepted"
                )))
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.service]);
        validation.leeway = 30;
        let mut last = TokenError::Invalid("no key in the bundle matches".into());
        for (_, key) in self.keys.iter().filter(|(k, _)| *k == kind) {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer::new(
            SigningKey::Secret(Some("s3cret")),
            "wharf".into(),
            "registry".into(),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_grants() {
        let i = issuer();
        let grant = Grant {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into(), "push".into()],
        };
        let claims = i
            .verify_access(&i.access_token("alice", vec![grant]))
            .unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.actions_on("a/b"), Actions::PULL | Actions::PUSH);
        assert_eq!(claims.actions_on("a/c"), Actions::NONE);
    }

    #[test]
    fn tampered_foreign_expired_and_refresh_tokens_are_refused() {
        let i = issuer();
        let t = i.access_token("alice", vec![]);
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let forged = serde_json::json!({"iss":"wharf","sub":"admin","aud":"registry","exp":now()+60,"nbf":0,"iat":0,"jti":"x",
            "access":[{"type":"repository","name":"a","actions":["*"]}]});
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(
            i.verify_access(&parts.join(".")).is_err(),
            "payload swapped under the old signature"
        );

        let other = Issuer::new(
            SigningKey::Secret(Some("other")),
            "wharf".into(),
            "registry".into(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(i
            .verify_access(&other.access_token("alice", vec![]))
            .is_err());

        let expired = i.sign("alice", vec![], Duration::ZERO, None, Holder::Person);
        let mut v = i.validation();
        v.leeway = 0;
        std::thread::sleep(Duration::from_millis(1100));
        assert!(jsonwebtoken::decode::<Claims>(&expired, &i.decoding, &v).is_err());

        assert!(i.verify_access(&i.refresh_token("alice")).is_err());
        assert!(i.verify_refresh(&i.access_token("alice", vec![])).is_err());
        assert_eq!(
            i.verify_refresh(&i.refresh_token("alice")).unwrap().sub,
            "alice"
        );
    }
}
