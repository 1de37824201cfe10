//! `WWW-Authenticate` challenges (RFC 7235), as registries send them on a 401:
//! `Basic realm="Registry Realm"` or
//! `Bearer realm="https://auth/token",service="registry",scope="repository:a/b:pull,push"`,
//! with `error="insufficient_scope"` when a token lacks an action.
//!
//! Values may be quoted, and a quoted scope holds commas (`pull,push`), so the header is
//! tokenised rather than split on commas. One header may carry several challenges.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error(
        "WWW-Authenticate header is empty: the registry asked for credentials without saying how"
    )]
    Empty,
    #[error("WWW-Authenticate header {header:?} is malformed at byte {at}: {why}")]
    Malformed {
        header: String,
        at: usize,
        why: &'static str,
    },
    #[error("Bearer challenge {header:?} has no realm, so there is no token server to ask")]
    NoRealm { header: String },
}

/// A Bearer challenge: where to get a token and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    /// Space-separated scopes, as sent; usually one `repository:<name>:<actions>`.
    pub scope: Option<String>,
    /// `insufficient_scope` when the token we sent lacks an action, `invalid_token` when it
    /// expired or was revoked.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl BearerChallenge {
    /// The token we hold does not cover the request: ask again with this challenge's scope.
    pub fn is_insufficient_scope(&self) -> bool {
        self.error.as_deref() == Some("insufficient_scope")
    }

    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().unwrap_or("").split_whitespace()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer(BearerChallenge),
    /// A scheme we do not speak (Negotiate, Digest...), kept so a caller can say which.
    Other {
        scheme: String,
        params: BTreeMap<String, String>,
    },
}

impl Challenge {
    /// Every challenge in one header value.
    pub fn parse_all(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
        let raw = Parser::new(header).challenges()?;
        if raw.is_empty() {
            return Err(ChallengeError::Empty);
        }
        raw.into_iter()
            .map(|(scheme, mut params)| {
                Ok(match scheme.to_ascii_lowercase().as_str() {
                    "basic" => Challenge::Basic {
                        realm: params.remove("realm"),
                    },
                    "bearer" => Challenge::Bearer(BearerChallenge {
                        realm: params
                            .remove("realm")
                            .filter(|r| !r.is_empty())
                            .ok_or_else(|| ChallengeError::NoRealm {
                                header: header.to_owned(),
                            })?,
                        service: params.remove("service"),
                        scope: params.remove("scope"),
                        error: params.remove("error"),
                        error_description: params.remove("error_description"),
                    }),
                    _ => Challenge::Other { scheme, params },
                })
            })
            .collect()
    }

    /// The challenge to answer: Bearer if offered (a token is scoped and short-lived, so
    /// it is preferred to sending a password on every request), else Basic, else the first.
    pub fn parse(header: &str) -> Result<Challenge, ChallengeError> {
        let all = Self::parse_all(header)?;
        let pick = all
            .iter()
            .position(|c| matches!(c, Challenge::Bearer(_)))
            .or_else(|| {
                all.iter()
                    .position(|c| matches!(c, Challenge::Basic { .. }))
            })
            .unwrap_or(0);
        all.into_iter().nth(pick).ok_or(ChallengeError::Empty)
    }
}

type RawChallenge = (String, BTreeMap<String, String>);

struct Parser<'a> {
    header: &'a str,
    bytes: &'a [u8],
    at: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl<'a> Parser<'a> {
    fn new(header: &'a str) -> Parser<'a> {
        Parser {
            header,
            bytes: header.as_bytes(),
            at: 0,
        }
    }

    fn error(&self, why: &'static str) -> ChallengeError {
        ChallengeError::Malformed {
            header: self.header.to_owned(),
            at: self.at,
            why,
        }
    }

    fn skip_ws(&mut self) {
        while self.at < self.bytes.len() && matches!(self.bytes[self.at], b' ' | b'\t') {
            self.at += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while self.at < self.bytes.len() && matches!(self.bytes[self.at], b' ' | b'\t' | b',') {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn token(&mut self) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        &self.header[start..self.at]
    }

    fn bare_value(&mut self) -> &'a str {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| !matches!(b, b',' | b' ' | b'\t' | b'"'))
        {
            self.at += 1;
        }
        &self.header[start..self.at]
    }

    fn quoted(&mut self) -> Result<String, ChallengeError> {
        // Opening quote already seen.
        self.at += 1;
        let mut out = String::new();
        let mut chars = self.header[self.at..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.at = self.bytes.len();
        Err(self.error("a quoted value is not closed"))
    }

    /// Is the text at the cursor `token=` (a parameter) rather than a new scheme?
    fn at_param(&self) -> bool {
        let mut i = self.at;
        while i < self.bytes.len() && is_tchar(self.bytes[i]) {
            i += 1;
        }
        while i < self.bytes.len() && matches!(self.bytes[i], b' ' | b'\t') {
            i += 1;
        }
        // `token68` values end in '=' too, but are followed by ',' or the end, not a value.
        i > self.at && self.bytes.get(i) == Some(&b'=') && self.bytes.get(i + 1) != Some(&b'=')
    }

    fn challenges(&mut self) -> Result<Vec<RawChallenge>, ChallengeError> {
        let mut out: Vec<RawChallenge> = Vec::new();
        loop {
            self.skip_ws_and_commas();
            if self.peek().is_none() {
                return Ok(out);
            }
            let scheme = self.token();
            if scheme.is_empty() {
                return Err(self.error("expected an auth scheme such as Basic or Bearer"));
            }
            let mut params = BTreeMap::new();
            loop {
                self.skip_ws_and_commas();
                if self.peek().is_none() || !self.at_param() {
                    break;
                }
                let name = self.token().to_ascii_lowercase();
                self.skip_ws();
                // at_param guaranteed the '='.
                self.at += 1;
                self.skip_ws();
                let value = match self.peek() {
                    Some(b'"') => self.quoted()?,
                    // RFC 7235 wants a token here, but some servers send a bare URL:
                    // take everything up to the next ',' or space.
                    _ => self.bare_value().to_owned(),
                };
                params.insert(name, value);
                self.skip_ws();
                match self.peek() {
                    None | Some(b',') => {}
                    Some(_) => return Err(self.error("expected ',' between parameters")),
                }
            }
            out.push((scheme.to_owned(), params));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(h: &str) -> BearerChallenge {
        match Challenge::parse(h) {
            Ok(Challenge::Bearer(b)) => b,
            other => panic!("{h}: expected Bearer, got {other:?}"),
        }
    }

    #[test]
    fn basic_from_htpasswd_registries() {
        assert_eq!(
            Challenge::parse("Basic realm=\"Registry Realm\""),
            Ok(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(
            Challenge::parse("basic"),
            Ok(Challenge::Basic { realm: None })
        );
    }

    #[test]
    fn bearer_with_scope_containing_commas() {
        let b = bearer(
            "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/busybox:pull,push\"",
        );
        assert_eq!(b.realm, "https://auth.docker.io/token");
        assert_eq!(b.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(
            b.scope.as_deref(),
            Some("repository:library/busybox:pull,push")
        );
        assert!(!b.is_insufficient_scope());
    }

    #[test]
    fn insufficient_scope_and_odd_spacing() {
        let b = bearer(
            "Bearer realm=\"http://127.0.0.1:5000/auth/token\", service=\"wharf\" , scope=\"repository:a:delete repository:b:pull\",error=\"insufficient_scope\"",
        );
        assert!(b.is_insufficient_scope());
        assert_eq!(
            b.scopes().collect::<Vec<_>>(),
            ["repository:a:delete", "repository:b:pull"]
        );
        // Unquoted values, mixed-case scheme and parameter names, escapes.
        let b =
            bearer("BEARER Realm=https://x/token,Service=s,error_description=\"say \\\"hi\\\"\"");
        assert_eq!(b.realm, "https://x/token");
        assert_eq!(b.service.as_deref(), Some("s"));
        assert_eq!(b.error_description.as_deref(), Some("say \"hi\""));
        assert_eq!(b.scope, None);
    }

    #[test]
    fn several_challenges_in_one_header() {
        let all = Challenge::parse_all(
            "Basic realm=\"r\", Bearer realm=\"https://t/token\",service=\"s\", Negotiate",
        )
        .expect("parse");
        assert_eq!(all.len(), 3);
        assert!(matches!(&all[0], Challenge::Basic { realm: Some(r) } if r == "r"));
        assert!(matches!(&all[2], Challenge::Other { scheme, .. } if scheme == "Negotiate"));
        // Bearer is preferred.
        assert_eq!(
            bearer("Basic realm=\"r\", Bearer realm=\"https://t/token\"").realm,
            "https://t/token"
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(Challenge::parse(""), Err(ChallengeError::Empty));
        assert_eq!(Challenge::parse(" , "), Err(ChallengeError::Empty));
        assert!(matches!(
            Challenge::parse("Bearer service=\"s\""),
            Err(ChallengeError::NoRealm { .. })
        ));
        assert!(matches!(
            Challenge::parse("Bearer realm=\"unterminated"),
            Err(ChallengeError::Malformed { .. })
        ));
        assert!(matches!(
            Challenge::parse("Bearer realm=\"a\" service=\"b\""),
            Err(ChallengeError::Malformed { .. })
        ));
        assert!(matches!(
            Challenge::parse("\"quoted\""),
            Err(ChallengeError::Malformed { .. })
        ));
    }
}
