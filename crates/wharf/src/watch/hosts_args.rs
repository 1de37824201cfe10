//! `wharf watch`'s flags for many hosts: more engines, agents, the dashboard. Docker's names where
//! docker has one (`--tlscacert`, `--tlscert`, `--tlskey`).

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Default)]
pub struct HostsArgs {
    /// Engines to manage, one a line: `NAME URL [tlsverify] [cert-path=DIR]
    /// [tlscacert=F tlscert=F tlskey=F]`; added to --host.
    #[arg(long, env = "WHARF_WATCH_HOSTS_FILE", value_name = "FILE")]
    pub(super) hosts_file: Option<PathBuf>,
    /// The tcp:// engines' CA (default DOCKER_CERT_PATH/ca.pem); turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub(super) tlscacert: Option<PathBuf>,
    /// This client's certificate for tcp:// engines (default DOCKER_CERT_PATH/cert.pem).
    #[arg(long, value_name = "FILE")]
    pub(super) tlscert: Option<PathBuf>,
    /// This client's key for tcp:// engines (default DOCKER_CERT_PATH/key.pem).
    #[arg(long, value_name = "FILE")]
    pub(super) tlskey: Option<PathBuf>,
    /// Be a controller: listen here (HTTPS) for agents dialling in, e.g. 0.0.0.0:8443.
    /// Needs --agents-tokens, --agents-tls-cert and --agents-tls-key.
    #[arg(long, env = "WHARF_WATCH_AGENTS_LISTEN", value_name = "ADDR")]
    pub(super) agents_listen: Option<String>,
    /// The agents allowed in: `NAME sha256:HEX` a line, the SHA-256 of each agent's
    /// token (`printf %s "$TOKEN" | sha256sum`).
    #[arg(long, env = "WHARF_WATCH_AGENTS_TOKENS", value_name = "FILE")]
    pub(super) agents_tokens: Option<PathBuf>,
    /// The controller's TLS certificate (PEM) for --agents-listen.
    #[arg(long, env = "WHARF_WATCH_AGENTS_TLS_CERT", value_name = "FILE")]
    pub(super) agents_tls_cert: Option<PathBuf>,
    /// The key of --agents-tls-cert.
    #[arg(long, env = "WHARF_WATCH_AGENTS_TLS_KEY", value_name = "FILE")]
    pub(super) agents_tls_key: Option<PathBuf>,
    /// `wharf watch agent --controller URL --token-file F`: run as an agent of the
    /// controller at this https:// URL, dialling out; the agent changes nothing unless
    /// the controller asks.
    #[arg(long, env = "WHARF_WATCH_CONTROLLER", value_name = "URL")]
    pub(super) controller: Option<String>,
    /// The agent's token (one line), as issued by the controller's operator.
    #[arg(long, env = "WHARF_WATCH_TOKEN_FILE", value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
    /// A CA bundle to trust for the controller's certificate, beyond the public roots.
    #[arg(long, env = "WHARF_WATCH_CONTROLLER_CA", value_name = "FILE")]
    pub(super) controller_ca: Option<PathBuf>,
    /// Serve the dashboard at /dashboard on the HTTP API address (sign-in with the API
    /// token, or a user of --dashboard-users).
    #[arg(long, env = "WHARF_WATCH_DASHBOARD", value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::client_args::flag_bool)]
    pub(super) dashboard: bool,
    /// People who may sign in to the dashboard: an htpasswd file (bcrypt, `htpasswd -B`).
    #[arg(long, env = "WHARF_WATCH_DASHBOARD_USERS", value_name = "FILE")]
    pub(super) dashboard_users: Option<PathBuf>,
}
