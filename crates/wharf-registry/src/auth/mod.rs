//! Who is calling and what they may do.
//!
//! - [`Auth::identify`] turns a request's `Authorization` header into an [`Identity`]
//!   (Basic against htpasswd, or a Bearer token from wharf or an external token server).
//! - [`Auth::allowed`] says which [`Actions`] that identity has on a repository: from the
//!   token's grants, else from the access policy.
//! - [`Auth::challenge`] builds the `WWW-Authenticate` header that tells a client how to
//!   authenticate, with the scope it needs.

pub mod htpasswd;
pub mod htpasswd_file;
pub mod policy;
pub mod ratelimit;
pub mod robots;
mod settings;
pub mod token;

use std::net::IpAddr;

use base64::Engine;

use self::htpasswd::Htpasswd;
use self::policy::{AccessPolicy, Actions};
use self::ratelimit::FailureLimiter;
use self::robots::{Refused, Robot, Robots, SECRET_PREFIX};
pub use self::settings::{AuthConfig, BuiltinTokens, CertifiedKey};
use self::token::{Claims, Issuer, SigningKey, Verifier};

/// How requests authenticate.
enum Mode {
    /// No auth configured: everyone may do everything the policy (if any) allows
    /// anonymous callers, or everything when there is no policy.
    Open,
    /// `auth.htpasswd`: Basic auth.
    Basic { realm: String, users: Htpasswd },
    /// `auth.htpasswd` with `token`: wharf issues tokens at `/auth/token` and also accepts Basic.
    /// The issuer is boxed: a JWT header (with its certificate) is large.
    Tokens {
        users: Htpasswd,
        issuer: Box<Issuer>,
    },
    /// `auth.token`: tokens from an external server.
    External {
        realm: String,
        service: String,
        verifier: Verifier,
    },
}

pub struct Auth {
    mode: Mode,
    policy: Option<AccessPolicy>,
    limiter: FailureLimiter,
    /// Robot and personal tokens, when the store keeps them.
    robots: Option<Robots>,
}

#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    /// Proven with a password (Basic).
    User(String),
    /// A robot or personal token, used as a password: its scopes are all it may do.
    Robot(Box<Robot>),
    /// A verified bearer token.
    Token(Box<Claims>),
}

impl Identity {
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(u),
            Identity::Robot(r) => Some(&r.name),
            Identity::Token(c) => Some(&c.sub),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed: wrong user name or password")]
    BadCredentials,
    #[error("too many failed logins for this user from this address: wait a minute")]
    TooManyFailures,
    #[error("{0}")]
    BadToken(String),
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// The right secret for a token that is revoked or expired: refused (401), but no
    /// guess, so it does not count towards the failed-login limit.
    #[error("{0}")]
    Unusable(String),
    /// An identity source that is down: the client may retry (503).
    #[error("{0}")]
    Unavailable(String),
}

/// Where a built-in token endpoint lives, relative to the registry's base URL.
pub const TOKEN_PATH: &str = "/auth/token";

impl Auth {
    /// `secret` is `http.secret`, which signs the built-in tokens when no certificate does.
    pub fn new(
        config: Option<&AuthConfig>,
        access: Option<AccessPolicy>,
        secret: Option<&str>,
    ) -> Result<Auth, String> {
        let mode = match config {
            None => Mode::Open,
            Some(AuthConfig::Htpasswd {
                realm,
                path,
                tokens: None,
            }) => Mode::Basic {
                realm: realm.clone(),
                users: Htpasswd::load(path)?,
            },
            Some(AuthConfig::Htpasswd {
                path,
                tokens: Some(t),
                ..
            }) => Mode::Tokens {
                users: Htpasswd::load(path)?,
                issuer: Box::new(Issuer::new(
                    match &t.signing {
                        Some(c) => SigningKey::Certified {
                            key: &c.key,
                            certificate: &c.certificate,
                        },
                        None => SigningKey::Secret(secret),
                    },
                    t.issuer.clone(),
                    t.service.clone(),
                    t.expiration,
                )?),
            },
            Some(AuthConfig::Token {
                realm,
                service,
                issuer,
                rootcertbundle,
            }) => Mode::External {
                realm: realm.clone(),
                service: service.clone(),
                verifier: Verifier::from_bundle(rootcertbundle, issuer.clone(), service.clone())?,
            },
        };
        Ok(Auth {
            mode,
            policy: access,
            limiter: FailureLimiter::default(),
            robots: None,
        })
    }

    /// An open registry with no policy: everyone may do everything.
    pub fn open() -> Auth {
        Auth {
            mode: Mode::Open,
            policy: None,
            limiter: FailureLimiter::default(),
            robots: None,
        }
    }

    /// Whether callers must authenticate to reach `/v2/` at all.
    pub fn enabled(&self) -> bool {
        !matches!(self.mode, Mode::Open)
    }

    pub fn issuer(&self) -> Option<&Issuer> {
        match &self.mode {
            Mode::Tokens { issuer, .. } => Some(issuer),
            _ => None,
        }
    }

    /// The htpasswd users, when the registry has them (the UI signs them in and manages them).
    pub fn htpasswd(&self) -> Option<&Htpasswd> {
        self.users()
    }

    /// The `access:` policy, if any.
    pub fn policy(&self) -> Option<&AccessPolicy> {
        self.policy.as_ref()
    }

    fn users(&self) -> Option<&Htpasswd> {
        match &self.mode {
            Mode::Basic { users, .. } | Mode::Tokens { users, .. } => Some(users),
            _ => None,
        }
    }

    pub fn user_exists(&self, user: &str) -> bool {
        self.users().is_some_and(|u| u.has_user(user))
    }

    /// Keep failed-login counts in `shared`, so every replica enforces one limit.
    pub fn share_failures(&mut self, shared: std::sync::Arc<dyn ratelimit::SharedFailures>) {
        self.limiter.share(shared);
    }

    /// Accept robot and personal tokens from `store` as passwords.
    pub fn use_tokens(&mut self, store: std::sync::Arc<dyn crate::store::state::Tokens>) {
        self.robots = Some(Robots::new(store));
    }

    /// The robot tokens, when the registry takes them.
    pub fn robots(&self) -> Option<&Robots> {
        self.robots.as_ref()
    }

    /// Check a user name and password, with the failure rate limit: who they prove to be.
    pub async fn login(
        &self,
        peer: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<Identity, AuthError> {
        if self.users().is_none() {
            return Err(AuthError::BadCredentials);
        }
        if self.limiter.is_blocked(peer, user).await {
            return Err(AuthError::TooManyFailures);
        }
        match self.check_credentials(user, password).await {
            Ok(who) => {
                self.limiter.record_success(peer, user).await;
                Ok(who)
            }
            Err(e @ (AuthError::Unavailable(_) | AuthError::Unusable(_))) => Err(e),
            Err(e) => {
                self.limiter.record_failure(peer, user).await;
                tracing::warn!(%peer, user, "failed login");
                Err(e)
            }
        }
    }

    /// The seam every identity source plugs into: each branch either knows `user` and
    /// decides, or passes to the next. A new source (LDAP, say) is one more branch here,
    /// returning `Identity::User` (with its groups, when policies learn them).
    async fn check_credentials(&self, user: &str, password: &str) -> Result<Identity, AuthError> {
        // Robot and personal tokens: their secrets are recognisable by their prefix, so
        // a user whose name is also a token's still signs in with their password.
        if let (Some(robots), true) = (&self.robots, password.starts_with(SECRET_PREFIX)) {
            match robots.check(user, password).await {
                Ok(Some(robot)) => return Ok(Identity::Robot(Box::new(robot))),
                Ok(None) => {}
                Err(Refused::Unavailable(why)) => return Err(AuthError::Unavailable(why)),
                Err(e @ Refused::WrongSecret(_)) => return Err(AuthError::BadToken(e.to_string())),
                Err(e) => return Err(AuthError::Unusable(e.to_string())),
            }
        }
        // htpasswd: local accounts.
        if let Some(users) = self.users() {
            if users.verify(user, password).await {
                return Ok(Identity::User(user.to_owned()));
            }
        }
        Err(AuthError::BadCredentials)
    }

    /// A bearer token issued to a robot is good only while the robot's token is.
    async fn still_active(&self, claims: &Claims) -> Result<(), AuthError> {
        if !claims.robot {
            return Ok(());
        }
        let Some(robots) = &self.robots else {
            return Err(AuthError::BadToken(
                "robot tokens are not accepted here".into(),
            ));
        };
        match robots.active(&claims.sub).await {
            Ok(_) => Ok(()),
            Err(Refused::Unavailable(why)) => Err(AuthError::Unavailable(why)),
            Err(e) => Err(AuthError::BadToken(e.to_string())),
        }
    }

    pub async fn identify(
        &self,
        authorization: Option<&str>,
        peer: IpAddr,
    ) -> Result<Identity, AuthError> {
        let Some(header) = authorization else {
            return Ok(Identity::Anonymous);
        };
        let (scheme, value) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthError::Malformed("expected `<scheme> <credentials>`"))?;
        if scheme.eq_ignore_ascii_case("basic") {
            if self.users().is_none() {
                // Open registries ignore credentials, as registry:2 does.
                return Ok(Identity::Anonymous);
            }
            let (user, password) = parse_basic(value.trim())?;
            self.login(peer, &user, &password).await
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let token = value.trim();
            let claims = match &self.mode {
                Mode::Tokens { issuer, .. } => issuer.verify_access(token),
                Mode::External { verifier, .. } => verifier.verify(token),
                Mode::Open | Mode::Basic { .. } => return Ok(Identity::Anonymous),
            }
            .map_err(|e| AuthError::BadToken(e.to_string()))?;
            self.still_active(&claims).await?;
            Ok(Identity::Token(Box::new(claims)))
        } else {
            Err(AuthError::Malformed("only Basic and Bearer are supported"))
        }
    }

    /// What `who` may do in `repo`. Tokens carry their grants; passwords and anonymous
    /// callers get what the policy says (everything for users when there is no policy).
    pub fn allowed(&self, who: &Identity, repo: &str) -> Actions {
        match who {
            Identity::Token(claims) => claims.actions_on(repo),
            Identity::User(u) => self.policy_allows(Some(u), repo),
            Identity::Robot(r) => self.robot_allows(r, repo),
            Identity::Anonymous => self.policy_allows(None, repo),
        }
    }

    /// A token's scopes, and for a personal token no more than its owner may do now.
    pub fn robot_allows(&self, robot: &Robot, repo: &str) -> Actions {
        let scoped = robot.scoped(repo);
        match &robot.owner {
            Some(owner) => scoped.intersect(self.policy_allows(Some(owner), repo)),
            None => scoped,
        }
    }

    /// What `who` may see in listings (the catalog, the event stream): a bearer token's
    /// subject as the policy sees them, a robot's bearer token only what it was granted.
    pub fn listable(&self, who: &Identity, repo: &str) -> Actions {
        match who {
            Identity::Token(c) if c.robot => c.actions_on(repo),
            Identity::Token(c) => self.policy_allows(Some(&c.sub), repo),
            other => self.allowed(other, repo),
        }
    }

    /// What the policy allows `user` (None: anonymous) in `repo`, for Basic callers and for
    /// the token issuer deciding what to grant.
    pub fn policy_allows(&self, user: Option<&str>, repo: &str) -> Actions {
        match (&self.policy, user) {
            (Some(p), _) => p.allowed(user, repo),
            (None, Some(_)) => Actions::ALL,
            (None, None) if !self.enabled() => Actions::ALL,
            (None, None) => Actions::NONE,
        }
    }

    /// May `who` list the catalog (filtered by pull access)?
    pub fn may_list_catalog(&self, who: &Identity) -> bool {
        match who {
            Identity::Token(c) => c.grants_catalog(),
            Identity::User(_) | Identity::Robot(_) => true,
            Identity::Anonymous => !self.enabled() || self.policy.is_some(),
        }
    }

    /// The `WWW-Authenticate` value for a request that needs `scope` (e.g.
    /// `repository:a/b:pull,push`). `base` is the registry's external URL, for the
    /// built-in token realm.
    pub fn challenge(&self, base: &str, scope: Option<&str>, insufficient: bool) -> Option<String> {
        let bearer = |realm: &str, service: &str| {
            let mut v = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
            if let Some(s) = scope {
                v.push_str(&format!(",scope=\"{s}\""));
            }
            if insufficient {
                v.push_str(",error=\"insufficient_scope\"");
            }
            v
        };
        match &self.mode {
            Mode::Open => None,
            Mode::Basic { realm, .. } => Some(format!("Basic realm=\"{realm}\"")),
            Mode::Tokens { issuer, .. } => {
                Some(bearer(&format!("{base}{TOKEN_PATH}"), &issuer.service))
            }
            Mode::External { realm, service, .. } => Some(bearer(realm, service)),
        }
    }
}

/// `base64(user:password)`; the password may contain ':'.
pub fn parse_basic(value: &str) -> Result<(String, String), AuthError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| AuthError::Malformed("Basic credentials are not base64"))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| AuthError::Malformed("Basic credentials are not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or(AuthError::Malformed("Basic credentials lack ':'"))?;
    Ok((user.to_owned(), password.to_owned()))
}
