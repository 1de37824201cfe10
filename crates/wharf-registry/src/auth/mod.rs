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
pub mod ldap;
pub mod oidc;
pub mod policy;
pub mod ratelimit;
pub mod robots;
mod settings;
pub mod sso;
pub mod token;
pub mod workload;

use std::net::IpAddr;

use base64::Engine;

use self::htpasswd::Htpasswd;
use self::ldap::{Directory, LdapError};
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
    /// `auth.htpasswd` and/or `auth.ldap` / `auth.workload`: Basic auth.
    Basic {
        realm: String,
        users: Option<Htpasswd>,
    },
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
    /// `auth.ldap`: users htpasswd does not know are looked up here.
    ldap: Option<Directory>,
    /// `auth.oidc`: the UI's sign-in through a provider.
    oidc: Option<sso::OidcLogin>,
    /// `auth.workload`: issuers whose ID tokens are accepted as passwords.
    workload: Vec<workload::Workload>,
}

/// A user who proved who they are, with the groups their directory (LDAP, an OIDC
/// provider) says they are in; htpasswd users have none beyond `access.groups`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
    /// Set for a workload (an OIDC ID token as password): all it may do, whatever the
    /// policy grants its name.
    pub scopes: Option<Vec<(policy::RepoGlob, Actions)>>,
}

impl Principal {
    pub fn local(name: impl Into<String>) -> Principal {
        Principal::member(name, Vec::new())
    }

    pub fn member(name: impl Into<String>, groups: Vec<String>) -> Principal {
        Principal {
            name: name.into(),
            groups,
            scopes: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Identity {
    Anonymous,
    /// Proven with a password (Basic), an ID token (workload) or a UI session.
    User(Principal),
    /// A robot or personal token, used as a password: its scopes are all it may do.
    Robot(Box<Robot>),
    /// A verified bearer token.
    Token(Box<Claims>),
}

impl Identity {
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User(u) => Some(&u.name),
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
                users: Some(Htpasswd::load(path)?),
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
            ldap: None,
            oidc: None,
            workload: Vec::new(),
        })
    }

    /// Add `auth.ldap`. Local (htpasswd) accounts are checked first: a name htpasswd has is
    /// decided by htpasswd alone, so local admins sign in while the directory is down and a
    /// directory entry cannot take over a local account. Without htpasswd, `realm` names
    /// the Basic realm.
    pub fn with_ldap(mut self, config: ldap::LdapConfig, realm: &str) -> Result<Auth, String> {
        if matches!(self.mode, Mode::External { .. }) {
            return Err("auth.ldap cannot be combined with auth.token: the external token server decides who is who".into());
        }
        self.ldap = Some(Directory::new(config)?);
        self.take_passwords(realm);
        Ok(self)
    }

    /// Add `auth.oidc` (the UI's sign-in) and `auth.workload` (ID tokens as passwords).
    pub fn with_oidc(
        mut self,
        login: Option<sso::OidcConfig>,
        workload: Vec<workload::WorkloadConfig>,
        realm: &str,
    ) -> Result<Auth, String> {
        self.oidc = login.map(sso::OidcLogin::new).transpose()?;
        self.workload = workload
            .into_iter()
            .map(workload::Workload::new)
            .collect::<Result<_, _>>()?;
        if !self.workload.is_empty() {
            if matches!(self.mode, Mode::External { .. }) {
                return Err("auth.workload cannot be combined with auth.token".into());
            }
            self.take_passwords(realm);
        }
        // Signing in through a provider means the registry has users: the API must ask
        // who is calling too (personal tokens made after the sign-in are docker's
        // passwords), or an operator who "added SSO" would leave /v2/ open to anyone.
        if self.oidc.is_some() {
            self.take_passwords(realm);
        }
        Ok(self)
    }

    /// An open registry that gains a password source asks for Basic credentials.
    fn take_passwords(&mut self, realm: &str) {
        if matches!(self.mode, Mode::Open) {
            self.mode = Mode::Basic {
                realm: realm.to_owned(),
                users: None,
            };
        }
    }

    /// The UI's OIDC sign-in, when `auth.oidc` is set.
    pub fn oidc(&self) -> Option<&sso::OidcLogin> {
        self.oidc.as_ref()
    }

    /// An open registry with no policy: everyone may do everything.
    pub fn open() -> Auth {
        Auth {
            mode: Mode::Open,
            policy: None,
            limiter: FailureLimiter::default(),
            robots: None,
            ldap: None,
            oidc: None,
            workload: Vec::new(),
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
            Mode::Basic { users, .. } => users.as_ref(),
            Mode::Tokens { users, .. } => Some(users),
            _ => None,
        }
    }

    /// Whether user names and passwords sign in here (htpasswd, LDAP, ID tokens).
    pub fn takes_passwords(&self) -> bool {
        matches!(self.mode, Mode::Basic { .. } | Mode::Tokens { .. })
    }

    pub fn user_exists(&self, user: &str) -> bool {
        self.users().is_some_and(|u| u.has_user(user))
    }

    /// The user a refresh token or an LDAP session names, with its groups now: from
    /// htpasswd, else the directory. None: the user no longer exists.
    pub async fn lookup(&self, user: &str) -> Result<Option<Principal>, AuthError> {
        if self.user_exists(user) {
            return Ok(Some(Principal::local(user)));
        }
        match &self.ldap {
            Some(d) => match d.lookup(user).await {
                Ok(groups) => Ok(Some(Principal::member(user, groups))),
                Err(LdapError::BadCredentials) => Ok(None),
                Err(e) => Err(AuthError::Unavailable(e.to_string())),
            },
            None => Ok(None),
        }
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
        if !self.takes_passwords() {
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
    /// decides, or passes to the next: robot tokens, workload ID tokens, htpasswd, LDAP.
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
        if let Some(w) = self.workload.iter().find(|w| w.issues(password)) {
            return match w.login(password).await {
                Ok(p) => Ok(Identity::User(p)),
                Err(oidc::OidcError::Unavailable(m)) => Err(AuthError::Unavailable(m)),
                Err(oidc::OidcError::Rejected(m)) => Err(AuthError::BadToken(m)),
            };
        }
        // htpasswd: local accounts. A name it has is decided by it alone (see with_ldap).
        if let Some(users) = self.users() {
            if users.has_user(user) || self.ldap.is_none() {
                return match users.verify(user, password).await {
                    true => Ok(Identity::User(Principal::local(user))),
                    false => Err(AuthError::BadCredentials),
                };
            }
        }
        match &self.ldap {
            Some(directory) => match directory.login(user, password).await {
                Ok(groups) => Ok(Identity::User(Principal::member(user, groups))),
                Err(LdapError::BadCredentials) => Err(AuthError::BadCredentials),
                // Not a failed login: the password may be right (login does not count it).
                Err(e) => Err(AuthError::Unavailable(e.to_string())),
            },
            None => Err(AuthError::BadCredentials),
        }
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
            if !self.takes_passwords() {
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
            Identity::User(u) => self.principal_allows(u, repo),
            Identity::Robot(r) => self.robot_allows(r, repo),
            Identity::Anonymous => self.policy_allows(None, repo),
        }
    }

    /// A token's scopes, and for a personal token no more than its owner may do now.
    pub fn robot_allows(&self, robot: &Robot, repo: &str) -> Actions {
        let scoped = robot.scoped(repo);
        match &robot.owner {
            Some(owner) => {
                let owner = Principal::member(owner.clone(), robot.owner_groups.clone());
                scoped.intersect(self.principal_allows(&owner, repo))
            }
            None => scoped,
        }
    }

    /// What `who` may see in listings (the catalog, the event stream): a bearer token's
    /// subject as the policy sees them, a robot's bearer token only what it was granted.
    pub fn listable(&self, who: &Identity, repo: &str) -> Actions {
        match who {
            Identity::Token(c) if c.robot || c.workload => c.actions_on(repo),
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

    /// What the policy allows a signed-in user, counting the groups their directory gave;
    /// a workload gets what its rules grant, and nothing else.
    pub fn principal_allows(&self, who: &Principal, repo: &str) -> Actions {
        if let Some(scopes) = &who.scopes {
            return scopes
                .iter()
                .filter(|(g, _)| g.is_match(repo))
                .fold(Actions::NONE, |acc, (_, a)| acc | *a);
        }
        match &self.policy {
            Some(p) => p.allowed_in_groups(Some(&who.name), &who.groups, repo),
            None => Actions::ALL,
        }
    }

    /// The `groups` that some `access:` rule names: all a session needs to carry.
    pub fn groups_in_policy(&self, groups: &[String]) -> Vec<String> {
        let Some(p) = &self.policy else {
            return Vec::new();
        };
        groups
            .iter()
            .filter(|g| p.rules.iter().any(|r| r.groups.contains(g)))
            .cloned()
            .collect()
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
