//! `wharf watch`'s flags: watchtower's names, variables and defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};
use wharf_oci::units::parse_duration;

use crate::client_args::flag_bool;

/// no-color.org: NO_COLOR set to anything but empty (or an explicit false) means no colour.
fn no_color(text: &str) -> Result<bool, String> {
    Ok(flag_bool(text).unwrap_or(true))
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Containers to watch, by name; all (or all labelled, with --label-enable) when none.
    #[arg(value_name = "NAME")]
    pub(super) names: Vec<String>,
    /// Time between checks: seconds, or 30s/5m/1h.
    #[arg(long, short = 'i', env = "WATCHTOWER_POLL_INTERVAL", default_value = "86400", value_parser = duration)]
    pub(super) interval: Duration,
    /// When to check instead: a 6-field cron expression (seconds first), or @every 1h.
    #[arg(
        long,
        short = 's',
        env = "WATCHTOWER_SCHEDULE",
        conflicts_with = "interval"
    )]
    pub(super) schedule: Option<String>,
    /// Check once, update what is stale, print the report as JSON and exit.
    #[arg(long, short = 'R', env = "WATCHTOWER_RUN_ONCE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) run_once: bool,
    /// Remove old images after updating, once no container uses them.
    #[arg(long, short = 'c', env = "WATCHTOWER_CLEANUP", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) cleanup: bool,
    /// Watch only containers labelled com.centurylinklabs.watchtower.enable=true.
    #[arg(long, env = "WATCHTOWER_LABEL_ENABLE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) label_enable: bool,
    /// Report newer images without updating anything.
    #[arg(long, short = 'm', env = "WATCHTOWER_MONITOR_ONLY", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) monitor_only: bool,
    /// Ask no registry and pull nothing: recreate a container when its image reference
    /// names another image on the engine (built or pulled by hand). The no-pull label
    /// overrides it either way.
    #[arg(long, env = "WATCHTOWER_NO_PULL", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) no_pull: bool,
    /// Container names never watched (comma separated).
    #[arg(
        long,
        short = 'x',
        env = "WATCHTOWER_DISABLE_CONTAINERS",
        value_delimiter = ','
    )]
    pub(super) disable_containers: Vec<String>,
    /// Watch only containers whose com.centurylinklabs.watchtower.scope label matches.
    #[arg(long, env = "WATCHTOWER_SCOPE")]
    pub(super) scope: Option<String>,
    /// Also watch created and exited containers.
    #[arg(long, env = "WATCHTOWER_INCLUDE_STOPPED", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) include_stopped: bool,
    /// Start the replacement of a stopped container too (with --include-stopped).
    #[arg(long, env = "WATCHTOWER_REVIVE_STOPPED", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) revive_stopped: bool,
    /// Give a replacement fresh anonymous volumes from its new image, and remove the old
    /// container's once the update stands (named volumes and binds are never removed).
    #[arg(long, env = "WATCHTOWER_REMOVE_VOLUMES", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) remove_volumes: bool,
    /// A container's monitor-only or no-pull label beats --monitor-only / --no-pull
    /// (otherwise either one being true holds).
    #[arg(long, env = "WATCHTOWER_LABEL_TAKE_PRECEDENCE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) label_take_precedence: bool,
    /// Where rolled-back images are remembered across restarts (default
    /// $XDG_STATE_HOME/wharf-watch, ~/.local/state/wharf-watch, or /var/lib/wharf-watch).
    #[arg(long, env = "WHARF_WATCH_STATE_DIR", value_name = "DIR")]
    pub(super) state_dir: Option<PathBuf>,
    /// Also watch restarting containers.
    #[arg(long, env = "WATCHTOWER_INCLUDE_RESTARTING", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) include_restarting: bool,
    /// Replace containers one at a time, each proving healthy before the next.
    #[arg(long, env = "WATCHTOWER_ROLLING_RESTART", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) rolling_restart: bool,
    /// Run the lifecycle hooks set in container labels.
    #[arg(long = "enable-lifecycle-hooks", env = "WATCHTOWER_LIFECYCLE_HOOKS", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) lifecycle_hooks: bool,
    /// How long a container may take to stop before it is killed.
    #[arg(long, env = "WATCHTOWER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub(super) stop_timeout: Duration,
    /// How long a new container must stay up (and not unhealthy) before the update counts;
    /// if it exits or turns unhealthy sooner, the old container comes back.
    #[arg(long, env = "WHARF_ROLLBACK_GRACE", default_value = "30s", value_parser = duration)]
    pub(super) rollback_grace: Duration,
    /// How long a registry may take to answer a request of a check before that image's
    /// check fails (the other containers' checks go on).
    #[arg(long, env = "WHARF_REGISTRY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub(super) registry_timeout: Duration,
    /// The Docker Engine: unix:///var/run/docker.sock or tcp://host:port. Repeat it to
    /// manage several engines (`NAME=URL` names one in reports and on the dashboard).
    #[arg(long, short = 'H', env = "DOCKER_HOST", value_name = "URL")]
    pub(super) host: Vec<String>,
    /// Pin the Engine API version (normally negotiated with the engine).
    #[arg(long, env = "DOCKER_API_VERSION")]
    pub(super) api_version: Option<String>,
    /// Reach a tcp:// engine over TLS, verifying it against DOCKER_CERT_PATH/ca.pem and
    /// showing DOCKER_CERT_PATH/cert.pem and key.pem, as `docker --tlsverify` does.
    #[arg(long = "tlsverify", env = "DOCKER_TLS_VERIFY", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) tls_verify: bool,
    /// Where --tlsverify finds ca.pem, cert.pem and key.pem (default ~/.docker).
    #[arg(long, env = "DOCKER_CERT_PATH", value_name = "DIR")]
    pub(super) cert_path: Option<PathBuf>,
    /// Serve POST /v1/update, which runs a check now (needs --http-api-token).
    #[arg(long, env = "WATCHTOWER_HTTP_API_UPDATE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) http_api_update: bool,
    /// Serve Prometheus metrics at GET /v1/metrics (needs --http-api-token).
    #[arg(long, env = "WATCHTOWER_HTTP_API_METRICS", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) http_api_metrics: bool,
    /// Serve POST /v1/events (needs --http-api-token): registry:2 notification envelopes,
    /// as Distribution's `notifications.endpoints` send them with
    /// `headers: {Authorization: [Bearer <token>]}`. A pushed tag that a watched container
    /// uses is checked at once; the schedule keeps running as a safety net.
    #[arg(long, env = "WHARF_HTTP_API_EVENTS", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) http_api_events: bool,
    /// Subscribe to this wharf registry's event stream (GET /v2/_events), with the
    /// credentials used for its checks: a pushed tag that a watched container uses is
    /// checked at once. Repeatable (or comma separated); reconnects by itself, and while
    /// it is down the schedule finds new images.
    #[arg(
        long = "events-from",
        value_name = "HOST",
        env = "WHARF_EVENTS_FROM",
        value_delimiter = ','
    )]
    pub(super) events_from: Vec<String>,
    /// Move every container to the highest tag in this semver range (`^1.2`, `~1.2.3`,
    /// `>=1.0 <2`) newer than its own; the wharf.watch.semver label overrides it.
    #[arg(long, env = "WHARF_TAG_SEMVER", value_name = "RANGE")]
    pub(super) tag_semver: Option<String>,
    /// Follow only tags matching this regex (alone, it makes containers follow tags too);
    /// the wharf.watch.include label overrides it.
    #[arg(long, env = "WHARF_TAG_INCLUDE", value_name = "REGEX")]
    pub(super) tag_include: Option<String>,
    /// Never move to tags matching this regex; the wharf.watch.exclude label overrides it.
    #[arg(long, env = "WHARF_TAG_EXCLUDE", value_name = "REGEX")]
    pub(super) tag_exclude: Option<String>,
    /// Hold back a newer tag until its image is this old (by its `created` time), e.g.
    /// 24h; the wharf.watch.min-age label overrides it.
    #[arg(long, env = "WHARF_MIN_AGE", value_name = "DURATION")]
    pub(super) min_age: Option<String>,
    /// Keep checking on schedule when the update API is on.
    #[arg(long, env = "WATCHTOWER_HTTP_API_PERIODIC_POLLS", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) http_api_periodic_polls: bool,
    /// The bearer token the HTTP API requires.
    #[arg(long, env = "WATCHTOWER_HTTP_API_TOKEN", hide_env_values = true)]
    pub(super) http_api_token: Option<String>,
    /// Where to send each session's report: generic+https://host/hook (JSON webhook),
    /// slack://hooks.slack.com/services/… , smtp://user:pass@host:port/?from=…&to=…;
    /// repeatable, added to WATCHTOWER_NOTIFICATION_URL and the other WATCHTOWER_NOTIFICATION_* settings.
    #[arg(long = "notification-url", value_name = "URL")]
    pub(super) notification_urls: Vec<String>,
    /// Where the HTTP API listens.
    #[arg(long, env = "WHARF_HTTP_API_ADDR", default_value = "0.0.0.0:8080")]
    pub(super) http_api_addr: String,
    /// A PEM bundle of CA certificates to trust for the registries, on top of the
    /// system's roots and /etc/docker/certs.d/<host:port>/*.crt.
    #[arg(long, value_name = "FILE", env = "WATCHTOWER_REGISTRY_CA")]
    pub(super) registry_ca: Option<PathBuf>,
    /// Check the --registry-ca file at start, and stop at once if it is unusable.
    #[arg(long, env = "WATCHTOWER_REGISTRY_CA_VALIDATE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) registry_ca_validate: bool,
    /// A registry (host:port, or a CIDR) reached over plain http or with any certificate,
    /// on top of the engine's insecure registries; repeatable.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "WHARF_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub(super) insecure_registries: Vec<String>,
    /// Accept any certificate and fall back to plain http for every registry, as the
    /// other client commands' --insecure does (also accepted before `watch`).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) insecure: bool,
    /// Pull new images, but leave the containers running as they are.
    #[arg(long, env = "WATCHTOWER_NO_RESTART", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) no_restart: bool,
    /// Log at debug level.
    #[arg(long, short = 'd', env = "WATCHTOWER_DEBUG", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) debug: bool,
    /// Log at trace level (more than --debug).
    #[arg(long, env = "WATCHTOWER_TRACE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) trace: bool,
    /// The log level: panic, fatal, error, warn, info, debug or trace.
    #[arg(long, env = "WATCHTOWER_LOG_LEVEL", value_parser = ["panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"], ignore_case = true)]
    pub(super) log_level: Option<String>,
    /// Auto, LogFmt, Pretty or JSON (one JSON object a line).
    #[arg(long, env = "WATCHTOWER_LOG_FORMAT", default_value = "auto", value_parser = ["auto", "logfmt", "pretty", "json"], ignore_case = true)]
    pub(super) log_format: String,
    /// Notification services, as watchtower names them (email, slack, shoutrrr), each
    /// configured by its WATCHTOWER_NOTIFICATION_* variables.
    #[arg(
        long,
        short = 'n',
        env = "WATCHTOWER_NOTIFICATIONS",
        value_name = "TYPES"
    )]
    pub(super) notifications: Option<String>,
    /// The Go template of notification messages (Slack, email, logger://); see README for
    /// the supported subset. Anything outside it stops the watcher at start.
    #[arg(
        long,
        env = "WATCHTOWER_NOTIFICATION_TEMPLATE",
        value_name = "TEMPLATE"
    )]
    pub(super) notification_template: Option<String>,
    /// Give the template the session report (.Report, .Entries, .Title, .Host) rather
    /// than the log entries alone.
    #[arg(long, env = "WATCHTOWER_NOTIFICATION_REPORT", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) notification_report: bool,
    /// The least severe entry a notification carries: panic, fatal, error, warn, info
    /// (default) , debug or trace.
    #[arg(long, env = "WATCHTOWER_NOTIFICATIONS_LEVEL", value_parser = ["panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"], ignore_case = true)]
    pub(super) notifications_level: Option<String>,
    /// Write each session's result to stdout in a stable format: `v1`, one line per
    /// container, `name (image): State[ Error: why]`.
    #[arg(long, short = 'P', env = "WATCHTOWER_PORCELAIN", value_name = "VERSION", value_parser = ["v1"])]
    pub(super) porcelain: Option<String>,
    /// No ANSI colours in the log (NO_COLOR, set to anything, does the same).
    #[arg(long, env = "NO_COLOR", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = no_color)]
    pub(super) no_color: bool,
    /// When a failed registry check is logged as a warning: always, auto or never
    /// (then at debug level; it is in the report either way).
    #[arg(long, env = "WATCHTOWER_WARN_ON_HEAD_FAILURE", default_value = "auto", value_parser = ["always", "auto", "never"], ignore_case = true)]
    pub(super) warn_on_head_failure: String,
    /// Earlier images kept per container for `wharf watch rollback`, safe from --cleanup;
    /// the wharf.watch.keep-previous label overrides it.
    #[arg(
        long,
        env = "WHARF_WATCH_KEEP_PREVIOUS",
        default_value = "0",
        value_name = "N"
    )]
    pub(super) keep_previous: usize,
    /// When updates may run: `Sat 02:00-04:00 Europe/Berlin` (days optional, an IANA
    /// zone, UTC if none); repeatable, or separated by `;`. Updates found outside wait
    /// for the window (scheduled and push-driven alike); the wharf.watch.window label
    /// overrides it per container.
    #[arg(
        long = "window",
        env = "WHARF_WATCH_WINDOW",
        value_name = "WINDOW",
        value_delimiter = ';'
    )]
    pub(super) windows: Vec<String>,
    /// The address people reach the watch API (and dashboard) at, for the link in an
    /// "approval waiting" notification (default: http://<host name>:<API port>).
    #[arg(long, env = "WHARF_WATCH_PUBLIC_URL", value_name = "URL")]
    pub(super) public_url: Option<String>,
    /// Serve the fleet endpoints (approve, rollback, history, pending) on the HTTP API;
    /// they are served with any other --http-api-* flag too. Needs --http-api-token.
    #[arg(long, env = "WHARF_HTTP_API_FLEET", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) http_api_fleet: bool,
    /// The docker-compose binary asked for a compose service's new config hash, so a
    /// later `docker-compose up -d` leaves an updated container alone (default: the
    /// docker-compose on PATH).
    #[arg(long, env = "WHARF_COMPOSE_BIN", value_name = "PATH")]
    pub(super) compose_bin: Option<PathBuf>,
    /// TESTS ONLY: let POST /v1/clock set the clock maintenance windows are read by
    /// (WHARF_WATCH_FAKE_NOW sets where it starts).
    #[arg(long, hide = true, env = "WHARF_WATCH_TEST_CLOCK", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) test_clock: bool,
    /// `rollback` or `history`.
    #[command(subcommand)]
    pub(super) command: Option<super::fleet::FleetCommand>,
    /// A cosign public key (PEM) every watched container's new image must be signed
    /// with; a container's `wharf.watch.verify` label names another key or rule.
    #[arg(long = "verify", value_name = "KEY", env = "WHARF_WATCH_VERIFY")]
    pub(super) verify: Option<PathBuf>,
    /// A file with a `trust:` list (a wharf config will do) whose rules, by `name:`, the
    /// `wharf.watch.verify` label may name.
    #[arg(long = "trust", value_name = "FILE", env = "WHARF_WATCH_TRUST")]
    pub(super) trust: Option<PathBuf>,
    /// Do not log the startup message.
    #[arg(long, env = "WATCHTOWER_NO_STARTUP_MESSAGE", value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = flag_bool)]
    pub(super) no_startup_message: bool,
    /// Many hosts, agents and the dashboard.
    #[command(flatten)]
    pub(super) hosts: super::hosts_args::HostsArgs,
}
