//! A real OpenID Connect provider for tests: PyPI's `oidc-provider-mock` (discovery, JWKS,
//! authorization code flow, nonces), from the venv `.ci/run` makes (recipe: the design
//! notes' test-servers.md, section 8). A new process has a new signing key, so `restart`
//! is a key rotation. `id_token` drives its authorization form over HTTP, as a CI job's
//! identity provider would hand a job its token.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{free_port, wait_for_port, Proc};

/// Where `.ci/run` puts the venv; `WHARF_OIDC_VENV` overrides it.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("WHARF_OIDC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/wharf-test/oidc-venv"));
    assert!(
        dir.join("bin/oidc-provider-mock").is_file(),
        "the OIDC provider for these tests is not installed at {}: run .ci/run, or \
         `python3 -m venv {0} && {0}/bin/pip install oidc-provider-mock` \
         (or point WHARF_OIDC_VENV at such a venv)",
        dir.display()
    );
    dir
}

pub struct Provider {
    pub port: u16,
    args: Vec<String>,
    proc: Option<Proc>,
}

impl Provider {
    /// `users` are JSON claim sets (each with `sub`), offered as one-click users on its form.
    pub fn start(users: &[Value], extra: &[&str]) -> Provider {
        let mut args = vec!["--require-nonce".to_owned(), "true".to_owned()];
        for u in users {
            args.push("--user-claims".into());
            args.push(u.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = Provider {
            port: free_port(),
            args,
            proc: None,
        };
        p.restart();
        p
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start it (again) on the same port: a new process, a new signing key.
    pub fn restart(&mut self) {
        self.proc = None;
        let child = Command::new(venv().join("bin/oidc-provider-mock"))
            .args(["--port", &self.port.to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        wait_for_port(self.port, &mut proc.0, "oidc-provider-mock");
        self.proc = Some(proc);
    }

    /// Sign `sub` in on the provider's form for `client_id` and return the redirect back
    /// (with `code` and `state`), without following it.
    pub fn authorize(&self, authorize_url: &str, sub: &str) -> String {
        let http = super::http_client();
        let r = http
            .post(authorize_url)
            .form(&[("sub", sub)])
            .send()
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            302,
            "provider form: {}",
            r.text().unwrap_or_default()
        );
        super::header(&r, "location")
    }

    /// An ID token for `sub` with audience `client_id`, by the authorization code flow.
    pub fn id_token(&self, sub: &str, client_id: &str) -> String {
        let redirect = "http://127.0.0.1/callback";
        let url = format!(
            "{}/oauth2/authorize?response_type=code&client_id={client_id}&redirect_uri={redirect}&scope=openid&state=s&nonce=n",
            self.issuer()
        );
        let back = self.authorize(&url, sub);
        let code = reqwest::Url::parse(&back)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code in {back}"));
        let r = super::http_client()
            .post(format!("{}/oauth2/token", self.issuer()))
            .basic_auth(client_id, Some("secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
            ])
            .send()
            .unwrap();
        let body: Value = r.json().unwrap();
        body["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no id_token: {body}"))
            .to_owned()
    }
}
