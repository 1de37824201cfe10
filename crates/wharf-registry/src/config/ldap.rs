//! `auth.ldap` (wharf's own): users and groups from an LDAP directory. Strict: an unknown
//! key is an error, since a misspelt `userfilter` would otherwise log everyone in as
//! whoever the default filter finds.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{lenient, ConfigError};
use crate::auth::ldap::{GroupSource, LdapConfig};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Ldap {
    url: Option<String>,
    ca: Option<PathBuf>,
    binddn: Option<String>,
    bindpassword: Option<String>,
    bindpasswordfile: Option<PathBuf>,
    basedn: Option<String>,
    userfilter: Option<String>,
    groupattribute: Option<String>,
    groupbasedn: Option<String>,
    groupfilter: Option<String>,
    groupnameattribute: Option<String>,
    #[serde(default, deserialize_with = "lenient::duration")]
    cachettl: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    timeout: Option<Duration>,
    /// The Basic realm when there is no `auth.htpasswd` to name one.
    realm: Option<String>,
}

impl Ldap {
    /// The directory's settings and the realm to use without htpasswd.
    pub(super) fn into_config(self, origin: &str) -> Result<(LdapConfig, String), ConfigError> {
        let err = |key: &str, m: String| ConfigError::value(origin, &format!("auth.ldap.{key}"), m);
        let url = self.url.ok_or_else(|| {
            err(
                "url",
                "is required (ldap://host:389 with StartTLS, or ldaps://host:636)".into(),
            )
        })?;
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
            return Err(err(
                "url",
                format!("{url:?} must start with ldap:// (StartTLS is then required) or ldaps://"),
            ));
        }
        let password = match (self.bindpassword, self.bindpasswordfile) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "bindpassword",
                    "give bindpassword or bindpasswordfile, not both".into(),
                ))
            }
            (Some(p), None) => Some(p),
            (None, Some(f)) => Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| {
                        err(
                            "bindpasswordfile",
                            format!("cannot read {}: {e}", f.display()),
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let bind = match (self.binddn, password) {
            (Some(dn), Some(pw)) => Some((dn, pw)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    "bindpassword",
                    "binddn needs bindpassword or bindpasswordfile".into(),
                ))
            }
            (None, Some(_)) => return Err(err("binddn", "a bind password needs binddn".into())),
        };
        let basedn = self
            .basedn
            .ok_or_else(|| err("basedn", "is required (where users are searched)".into()))?;
        let userfilter = self.userfilter.unwrap_or_else(|| "(uid={username})".into());
        if !userfilter.contains("{username}") {
            return Err(err(
                "userfilter",
                format!("{userfilter:?} must contain {{username}}, e.g. (uid={{username}})"),
            ));
        }
        let groups = match (self.groupbasedn, self.groupattribute) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "groupattribute",
                    "give groupattribute (memberOf) or groupbasedn (a group search), not both"
                        .into(),
                ))
            }
            (Some(basedn), None) => GroupSource::Search {
                basedn,
                filter: self.groupfilter.unwrap_or_else(|| "(member={dn})".into()),
                name: self.groupnameattribute.unwrap_or_else(|| "cn".into()),
            },
            (None, attribute) => {
                if self.groupfilter.is_some() || self.groupnameattribute.is_some() {
                    return Err(err(
                        "groupbasedn",
                        "groupfilter and groupnameattribute need groupbasedn".into(),
                    ));
                }
                GroupSource::Attribute(attribute.unwrap_or_else(|| "memberOf".into()))
            }
        };
        Ok((
            LdapConfig {
                url,
                ca: self.ca,
                bind,
                basedn,
                userfilter,
                groups,
                cachettl: self.cachettl.unwrap_or(Duration::from_secs(300)),
                timeout: self.timeout.unwrap_or(Duration::from_secs(5)),
            },
            self.realm.unwrap_or_else(|| "Registry Realm".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::ldap::GroupSource;
    use crate::config::load;

    fn load_str(yaml: &str) -> Result<crate::config::Config, String> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        load(Some(f.path()), std::iter::empty())
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }

    const BASE: &str =
        "version: 0.1\nauth:\n  ldap:\n    url: ldaps://ldap:636\n    basedn: ou=people,dc=x\n";

    #[test]
    fn ldap_alone_with_defaults() {
        let c = load_str(BASE).unwrap();
        assert!(c.auth.is_none(), "no htpasswd method");
        let (l, realm) = c.ldap.unwrap();
        assert_eq!(realm, "Registry Realm");
        assert_eq!(l.userfilter, "(uid={username})");
        assert!(matches!(l.groups, GroupSource::Attribute(ref a) if a == "memberOf"));
        assert_eq!(l.cachettl.as_secs(), 300);
    }

    #[test]
    fn bad_ldap_sections_are_refused_naming_the_key() {
        for (extra, key) in [
            ("    userfiler: (uid={username})\n", "userfiler"),
            ("    userfilter: (uid=alice)\n", "auth.ldap.userfilter"),
            ("    binddn: cn=x\n", "auth.ldap.bindpassword"),
            (
                "    groupattribute: memberOf\n    groupbasedn: ou=g\n",
                "auth.ldap.groupattribute",
            ),
        ] {
            let err = load_str(&format!("{BASE}{extra}")).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
        }
        let plain = BASE.replace("ldaps://ldap:636", "http://ldap");
        assert!(load_str(&plain).unwrap_err().contains("auth.ldap.url"));
        let with_token = format!(
            "{BASE}  token:\n    realm: r\n    service: s\n    issuer: i\n    rootcertbundle: /x\n"
        );
        assert!(load_str(&with_token).unwrap_err().contains("auth.token"));
    }

    #[test]
    fn oidc_and_workload_sections_parse_strictly() {
        let yaml = "version: 0.1\nauth:\n  oidc:\n    issuer: https://id\n    clientid: wharf\n    scopes: [profile]\n  workload:\n    - issuer: https://ci\n      audience: wharf\n      rules:\n        - { claims: { repository: team/app }, repositories: ['team/app*'], actions: [push] }\n";
        let c = load_str(yaml).unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(
            o.scopes,
            ["openid", "profile"],
            "openid is always asked for"
        );
        assert_eq!(c.workload.len(), 1);
        let typo = yaml.replace("audience", "audiance");
        assert!(load_str(&typo).is_err());
        let no_client = yaml.replace("    clientid: wharf\n", "");
        assert!(load_str(&no_client)
            .unwrap_err()
            .contains("auth.oidc.clientid"));
    }
}
