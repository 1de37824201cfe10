//! Where notifications go, read from watchtower's environment names and notification URLs
//! so that an existing watchtower configuration works unchanged.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use reqwest::Url;

use super::NotifyError;

const NOTIFICATIONS: &str = "WATCHTOWER_NOTIFICATIONS";
const URLS: &str = "WATCHTOWER_NOTIFICATION_URL";
const LEVEL: &str = "WATCHTOWER_NOTIFICATIONS_LEVEL";
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
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            targets: Vec::new(),
            when: NotifyWhen::Noteworthy,
            hostname: None,
            timeout: Duration::from_secs(10),
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
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
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

/// One notification URL, in shoutrrr's syntax where watchtower users will have one.
/// Errors never quote the URL: it may hold a password or a token.
fn parse_url(source: &str, text: &str) -> Result<Target, NotifyError> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(setting(
            source,
            "a notification URL needs a scheme; expected generic+https://, https://, slack://, slack+https:// or smtp://",
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "generic+http" | "generic+https" | "http" | "https" => {
            let scheme = scheme.trim_start_matches("generic+");
            webhook(source, &format!("{scheme}://{rest}"), false)
        }
        "generic" => webhook(source, &format!("https://{rest}"), true),
        "slack+http" | "slack+https" => Ok(Target::Slack(slack_from_http(
            source,
            &text["slack+".len()..],
        )?)),
        "slack" => Ok(Target::Slack(slack_from_shoutrrr(source, text)?)),
        "smtp" | "smtps" => email_from_url(source, text),
        other => Err(setting(
            source,
            format!("unsupported notification URL scheme {other:?}; expected generic+https://, https://, slack://, slack+https:// or smtp://"),
        )),
    }
}

fn parse_http_url(source: &str, text: &str) -> Result<Url, NotifyError> {
    let url = Url::parse(text).map_err(|e| {
        setting(
            source,
            format!("not a valid URL ({e}); expected one like https://host/path"),
        )
    })?;
    if !matches!(url.host_str(), Some(host) if !host.is_empty()) {
        return Err(setting(
            source,
            "the URL has no host; expected one like https://host/path",
        ));
    }
    Ok(url)
}

/// shoutrrr's `@Name=value` query parameters become headers; `generic://` means https
/// unless `disabletls=yes`.
fn webhook(source: &str, text: &str, shoutrrr_generic: bool) -> Result<Target, NotifyError> {
    let mut url = parse_http_url(source, text)?;
    let mut headers = Vec::new();
    let mut kept = Vec::new();
    let mut plain_http = false;
    for (key, value) in url.query_pairs() {
        if let Some(name) = key.strip_prefix('@') {
            headers.push((name.to_owned(), value.into_owned()));
        } else if shoutrrr_generic && key.eq_ignore_ascii_case("disabletls") {
            plain_http = parse_bool(source, &value)?;
        } else {
            kept.push((key.into_owned(), value.into_owned()));
        }
    }
    set_query(&mut url, &kept);
    if plain_http {
        // Both are special schemes, so the switch cannot fail.
        let _ = url.set_scheme("http");
    }
    Ok(Target::Webhook(WebhookTarget {
        url: url.to_string(),
        headers,
    }))
}

fn set_query(url: &mut Url, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
}

/// A Slack-compatible hook given as http(s); `channel` and `username` may ride in the query.
fn slack_from_http(source: &str, text: &str) -> Result<SlackTarget, NotifyError> {
    let mut url = parse_http_url(source, text)?;
    let mut target = SlackTarget {
        url: String::new(),
        username: None,
        channel: None,
    };
    let kept = take_slack_options(&url, &mut target);
    set_query(&mut url, &kept);
    target.url = url.to_string();
    Ok(target)
}

fn take_slack_options(url: &Url, target: &mut SlackTarget) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    for (key, value) in url.query_pairs() {
        match key.to_ascii_lowercase().as_str() {
            "channel" => target.channel = Some(value.into_owned()),
            "username" | "botname" => target.username = Some(value.into_owned()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    kept
}

/// `slack://hooks.slack.com/services/A/B/C`, shoutrrr's `slack://[botname@]A/B/C` and
/// `slack://hook:A-B-C@webhook`, each with optional `?channel=…&username=…`. Parsed by
/// hand because the tokens are case-sensitive and a URL parser may fold the "host".
fn slack_from_shoutrrr(source: &str, text: &str) -> Result<SlackTarget, NotifyError> {
    let expected = "expected slack://hooks.slack.com/services/T…/B…/… or slack://[botname@]T…/B…/…";
    let rest = &text["slack://".len()..];
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, path) = match main.split_once('@') {
        Some((userinfo, path)) => (Some(userinfo), path),
        None => (None, main),
    };
    let path = path.trim_end_matches('/');
    let mut target = SlackTarget {
        url: String::new(),
        username: None,
        channel: None,
    };
    let tokens: Vec<&str> = path.split('/').collect();
    match (userinfo.and_then(|u| u.split_once(':')), tokens.as_slice()) {
        (Some((_, token)), ["webhook"]) => {
            let parts: Vec<&str> = token.splitn(3, '-').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(setting(
                    source,
                    format!("the hook token is not A-B-C; {expected}"),
                ));
            }
            target.url = format!("{SLACK_HOOKS}/{}", parts.join("/"));
        }
        (None, [host, ..]) if host.contains('.') => target.url = format!("https://{path}"),
        (_, [a, b, c]) if [a, b, c].iter().all(|t| !t.is_empty() && !t.contains('.')) => {
            target.url = format!("{SLACK_HOOKS}/{a}/{b}/{c}");
            target.username = userinfo.map(percent_decode);
        }
        _ => return Err(setting(source, format!("not a Slack hook URL; {expected}"))),
    }
    if !query.is_empty() {
        let url = Url::parse(&format!("https://query.invalid/?{query}"))
            .map_err(|e| setting(source, format!("bad query ({e}); {expected}")))?;
        take_slack_options(&url, &mut target);
    }
    Ok(target)
}

/// `smtp://user:pass@host:port/?from=a@b&to=c@d,e@f[&starttls=yes|no]`, and `smtps://`
/// for TLS from the start; shoutrrr's `usestarttls` and `encryption` are understood too.
fn email_from_url(source: &str, text: &str) -> Result<Target, NotifyError> {
    let expected = "expected smtp://user:password@host:port/?from=a@example.com&to=b@example.com[&starttls=yes|no]";
    let url = Url::parse(text).map_err(|e| setting(source, format!("{e}; {expected}")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| setting(source, format!("the SMTP URL has no host; {expected}")))?;
    let implicit = url.scheme() == "smtps";
    let port = url.port().unwrap_or(if implicit { 465 } else { 25 });
    let user = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(percent_decode);
    let mut from = None;
    let mut to = Vec::new();
    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match key.to_ascii_lowercase().as_str() {
            "from" => from = Some(mailbox(source, &value)?),
            "to" => to.extend(mailboxes(source, &value)?),
            "starttls" | "usestarttls" => {
                tls = Some(match parse_bool(source, &value)? {
                    true => SmtpTls::Required,
                    false => SmtpTls::None,
                })
            }
            "encryption" => tls = encryption(source, &value)?.or(tls),
            // shoutrrr has more (fromname, auth, clienthost…); ignored rather than
            // refused so a watchtower URL keeps working.
            _ => {}
        }
    }
    let from =
        from.ok_or_else(|| setting(source, format!("the SMTP URL has no from=; {expected}")))?;
    if to.is_empty() {
        return Err(setting(
            source,
            format!("the SMTP URL has no to=; {expected}"),
        ));
    }
    let tls = match (implicit, tls) {
        (true, _) => SmtpTls::Implicit,
        (false, Some(tls)) => tls,
        (false, None) => SmtpTls::default_for(port, user.is_some()),
    };
    Ok(Target::Email(EmailTarget {
        from,
        to,
        host: host.to_owned(),
        port,
        user,
        password,
        tls,
        skip_verify: false,
        subject_tag: None,
    }))
}

/// shoutrrr's `encryption=`; `auto` leaves the choice to the port.
fn encryption(source: &str, value: &str) -> Result<Option<SmtpTls>, NotifyError> {
    match value.to_ascii_lowercase().as_str() {
        "none" => Ok(Some(SmtpTls::None)),
        "explicittls" => Ok(Some(SmtpTls::Required)),
        "implicittls" => Ok(Some(SmtpTls::Implicit)),
        "auto" => Ok(None),
        _ => Err(setting(
            source,
            format!("encryption={value:?}; expected none, explicittls, implicittls or auto"),
        )),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Scheme, host and port: enough to tell targets apart in logs, while the path (a Slack
/// hook's secret), query and user info stay out.
pub(super) fn redact_url(text: &str) -> String {
    let Ok(url) = Url::parse(text) else {
        return "<unparsable URL>".to_owned();
    };
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = if url.path().trim_start_matches('/').is_empty() {
        ""
    } else {
        "/…"
    };
    format!("{}://{host}{port}{path}", url.scheme())
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
        }
    }
}
