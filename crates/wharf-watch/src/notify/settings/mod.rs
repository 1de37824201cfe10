//! Where notifications go, read from watchtower's environment names and notification URLs
//! so that an existing watchtower configuration works unchanged.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use reqwest::Url;

use super::NotifyError;

mod urls;
pub(super) use urls::redact_url;
use urls::*;

const NOTIFICATIONS: &str = "WATCHTOWER_NOTIFICATIONS";
const URLS: &str = "WATCHTOWER_NOTIFICATION_URL";
const LEVEL: &str = "WATCHTOWER_NOTIFICATIONS_LEVEL";
const TEMPLATE: &str = "WATCHTOWER_NOTIFICATION_TEMPLATE";
const REPORT: &str = "WATCHTOWER_NOTIFICATION_REPORT";
const HOSTNAME: &str = "WATCHTOWER_NOTIFICATIONS_HOSTNAME";
const SLACK_HOOK_URL: &str = "WATCHTOWER_NOTIFICATION_SLACK_HOOK_URL";
const SLACK_IDENTIFIER: &str = "WATCHTOWER_NOTIFICATION_SLACK_IDENTIFIER";
const SLACK_CHANNEL: &str = "WATCHTOWER_NOTIFICATION_SLACK_CHANNEL";
const EMAIL_FROM: &str = "WATCHTOWER_NOTIFICATION_EMAIL_FROM";
const EMAIL_TO: &str = "WATCHTOWER_NOTIFICATION_EMAIL_TO";
const EMAIL_SERVER: &str = "WATCHTOWER_NOTIFICATION_EMAIL_SERVER";
const EMAIL_PORT: &str = "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_PORT";
const EMAIL_USER: &str = "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_USER";
const EMAIL_PASSWORD: &str = "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_PASSWORD";
const EMAIL_SKIP_VERIFY: &str = "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_TLS_SKIP_VERIFY";
const EMAIL_SUBJECT_TAG: &str = "WATCHTOWER_NOTIFICATION_EMAIL_SUBJECTTAG";

/// The name a `--notification-url` flag's errors are reported under.
const URL_FLAG: &str = "--notification-url";

const SLACK_HOOKS: &str = "https://hooks.slack.com/services";

/// Everything the notifiers need; plain data, so the CLI can fill or amend it.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub targets: Vec<Target>,
    pub when: NotifyWhen,
    /// The host named in email subjects; the machine's hostname when `None`.
    pub hostname: Option<String>,
    /// How long one target may take before it counts as failed.
    pub timeout: Duration,
    /// `--notification-template`: the message of Slack, email and logger targets.
    pub template: Option<String>,
    /// `--notification-report`: the template sees `.Report`, `.Entries`, `.Title`, `.Host`
    /// rather than the entries alone.
    pub report: bool,
    /// `--notifications-level` as a rank (0 panic … 6 trace): the entries a template sees.
    pub level_rank: u8,
    /// `--porcelain v1`: the session's results on stdout, one line per container.
    pub porcelain: bool,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            targets: Vec::new(),
            when: NotifyWhen::Noteworthy,
            hostname: None,
            timeout: Duration::from_secs(10),
            template: None,
            report: false,
            level_rank: 4,
            porcelain: false,
        }
    }
}

/// Which sessions are worth a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyWhen {
    /// Every session, even one that found nothing.
    Always,
    /// Sessions with an update, a newer image or a failure.
    Noteworthy,
    /// Sessions with a failed or rolled-back update.
    Failures,
}

impl NotifyWhen {
    /// watchtower forwards log entries at or above this level; a session report is the
    /// nearest thing: debug means every session, warn and above only failures.
    pub fn from_level(level: &str) -> Option<NotifyWhen> {
        match level.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Some(NotifyWhen::Always),
            "info" => Some(NotifyWhen::Noteworthy),
            "warn" | "warning" | "error" | "fatal" | "panic" => Some(NotifyWhen::Failures),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Target {
    Webhook(WebhookTarget),
    Slack(SlackTarget),
    Email(EmailTarget),
    /// shoutrrr's `logger://`: the message printed on stdout.
    Logger,
}

/// A generic webhook: the report is POSTed as JSON.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    /// Extra request headers (shoutrrr's `@Name=value` query parameters), often a token.
    pub headers: Vec<(String, String)>,
}

/// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat…).
#[derive(Clone)]
pub struct SlackTarget {
    /// The hook URL; its path is the secret.
    pub url: String,
    pub username: Option<String>,
    pub channel: Option<String>,
}

#[derive(Clone)]
pub struct EmailTarget {
    pub from: String,
    pub to: Vec<String>,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: SmtpTls,
    /// Accept any server certificate, for relays with self-signed ones.
    pub skip_verify: bool,
    /// Put in brackets before the subject, like watchtower.
    pub subject_tag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP: local relays and test servers.
    None,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS or fail.
    Required,
    /// TLS from the first byte (smtps, port 465).
    Implicit,
}

impl SmtpTls {
    /// Port 25 without credentials is a local relay, which often has no certificate a
    /// client would accept. A password is never sent unencrypted unless TLS was turned
    /// off by name (`starttls=no`, `encryption=none`): with opportunistic STARTTLS, a
    /// man in the middle that hides the offer gets it in the clear.
    fn default_for(port: u16, has_credentials: bool) -> SmtpTls {
        match port {
            465 => SmtpTls::Implicit,
            _ if has_credentials => SmtpTls::Required,
            25 => SmtpTls::None,
            _ => SmtpTls::Opportunistic,
        }
    }
}

impl NotifySettings {
    pub fn from_env(env: &HashMap<String, String>) -> Result<NotifySettings, NotifyError> {
        let get = |name: &str| {
            env.get(name)
                .map(|value| value.trim())
                .filter(|value| !value.is_empty())
        };
        let mut settings = NotifySettings::default();
        if let Some(level) = get(LEVEL) {
            settings.when = NotifyWhen::from_level(level).ok_or_else(|| {
                setting(
                    LEVEL,
                    format!("{level:?} is not a level; expected debug (every session), info (updates, newer images, failures) or warn (failures only)"),
                )
            })?;
            settings.level_rank = crate::notify::template::level_rank(level).unwrap_or(4);
        }
        settings.template = get(TEMPLATE).map(str::to_owned);
        if let Some(report) = get(REPORT) {
            settings.report = parse_bool(REPORT, report)?;
        }
        settings.hostname = get(HOSTNAME).map(str::to_owned);
        for kind in get(NOTIFICATIONS).map(split_list).unwrap_or_default() {
            match kind.to_ascii_lowercase().as_str() {
                "slack" => settings.targets.push(slack_from_env(&get)?),
                "email" => settings.targets.push(email_from_env(&get)?),
                "shoutrrr" if get(URLS).is_none() => {
                    return Err(setting(
                        NOTIFICATIONS,
                        format!("shoutrrr needs {URLS} with at least one URL"),
                    ))
                }
                "shoutrrr" => {}
                _ => {
                    return Err(setting(
                        NOTIFICATIONS,
                        format!("unsupported notification type {kind:?}; expected slack, email or shoutrrr (other services: a generic+https:// URL in {URLS})"),
                    ))
                }
            }
        }
        for url in get(URLS).unwrap_or_default().split_whitespace() {
            settings.targets.push(parse_url(URLS, url)?);
        }
        Ok(settings)
    }

    /// `--porcelain v1`, as watchtower sets it up: the report as the template's data, the
    /// porcelain template for every target, and stdout as one more target.
    pub fn porcelain_v1(&mut self) {
        self.porcelain = true;
        self.report = true;
        self.template = Some(crate::notify::PORCELAIN_V1.to_owned());
        self.targets.push(Target::Logger);
    }

    /// Adds one notification URL, as a `--notification-url` flag gives it.
    pub fn add_url(&mut self, url: &str) -> Result<(), NotifyError> {
        self.targets.push(parse_url(URL_FLAG, url.trim())?);
        Ok(())
    }
}

fn setting(variable: &str, problem: impl Into<String>) -> NotifyError {
    NotifyError::Setting {
        variable: variable.to_owned(),
        problem: problem.into(),
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split([' ', ',', '\t', '\n'])
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

fn required<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    name: &str,
    kind: &str,
    example: &str,
) -> Result<&'a str, NotifyError> {
    get(name).ok_or_else(|| {
        setting(
            name,
            format!("required when {NOTIFICATIONS} includes {kind}; expected {example}"),
        )
    })
}

fn slack_from_env<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Target, NotifyError> {
    let hook = required(
        get,
        SLACK_HOOK_URL,
        "slack",
        "a hook URL like https://hooks.slack.com/services/T…/B…/…",
    )?;
    let mut target = if hook.starts_with("slack://") {
        slack_from_shoutrrr(SLACK_HOOK_URL, hook)?
    } else {
        slack_from_http(SLACK_HOOK_URL, hook)?
    };
    if let Some(name) = get(SLACK_IDENTIFIER) {
        target.username = Some(name.to_owned());
    }
    if let Some(channel) = get(SLACK_CHANNEL) {
        target.channel = Some(channel.to_owned());
    }
    Ok(Target::Slack(target))
}

fn email_from_env<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Target, NotifyError> {
    let from = required(
        get,
        EMAIL_FROM,
        "email",
        "an address like watch@example.com",
    )?;
    let to = required(get, EMAIL_TO, "email", "addresses like ops@example.com")?;
    let host = required(get, EMAIL_SERVER, "email", "the SMTP server's host name")?;
    let port = match get(EMAIL_PORT) {
        Some(text) => parse_port(EMAIL_PORT, text)?,
        None => 25,
    };
    let user = get(EMAIL_USER).map(str::to_owned);
    let password = get(EMAIL_PASSWORD).map(str::to_owned);
    if password.is_some() && user.is_none() {
        return Err(setting(
            EMAIL_USER,
            format!("required when {EMAIL_PASSWORD} is set"),
        ));
    }
    let skip_verify = match get(EMAIL_SKIP_VERIFY) {
        Some(text) => parse_bool(EMAIL_SKIP_VERIFY, text)?,
        None => false,
    };
    Ok(Target::Email(EmailTarget {
        from: mailbox(EMAIL_FROM, from)?,
        to: mailboxes(EMAIL_TO, to)?,
        host: host.to_owned(),
        port,
        tls: SmtpTls::default_for(port, user.is_some()),
        user,
        password,
        skip_verify,
        subject_tag: get(EMAIL_SUBJECT_TAG).map(str::to_owned),
    }))
}

fn parse_port(variable: &str, text: &str) -> Result<u16, NotifyError> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(setting(
            variable,
            format!("{text:?} is not a port; expected a number from 1 to 65535"),
        )),
    }
}

fn parse_bool(variable: &str, text: &str) -> Result<bool, NotifyError> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "off" => Ok(false),
        _ => Err(setting(
            variable,
            format!("{text:?} is not a boolean; expected true or false (or yes/no)"),
        )),
    }
}

/// Checked now so a typo shows at start-up rather than at the first update.
fn mailbox(variable: &str, text: &str) -> Result<String, NotifyError> {
    text.parse::<Mailbox>().map_err(|e| {
        setting(
            variable,
            format!("{text:?} is not an email address ({e}); expected one like watch@example.com"),
        )
    })?;
    Ok(text.to_owned())
}

fn mailboxes(variable: &str, text: &str) -> Result<Vec<String>, NotifyError> {
    split_list(text)
        .iter()
        .map(|address| mailbox(variable, address))
        .collect()
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("WebhookTarget")
            .field("url", &redact_url(&self.url))
            .field("headers", &names)
            .finish()
    }
}

impl fmt::Debug for SlackTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackTarget")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("channel", &self.channel)
            .finish()
    }
}

impl fmt::Debug for EmailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailTarget")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("skip_verify", &self.skip_verify)
            .field("subject_tag", &self.subject_tag)
            .finish()
    }
}

impl Target {
    /// How errors and logs name the target, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Target::Webhook(t) => format!("webhook {}", redact_url(&t.url)),
            Target::Slack(t) => format!("slack {}", redact_url(&t.url)),
            Target::Email(t) => format!("email via {}:{}", t.host, t.port),
            Target::Logger => "logger (stdout)".to_owned(),
        }
    }
}
