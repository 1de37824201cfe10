//! Notifications after a session: a generic JSON webhook, Slack-compatible hooks and
//! email, configured with watchtower's environment names and notification URLs.
//!
//! ```ignore
//! let mut settings = NotifySettings::from_env(&std::env::vars().collect())?;
//! for url in &args.notification_url { settings.add_url(url)?; }
//! let notifiers = Notifiers::new(&settings)?;
//! for error in notifiers.send(&report).await { tracing::warn!("{error}") }
//! ```

mod email;
mod settings;
mod slack;
pub mod template;
mod webhook;

use std::time::Duration;

use futures::future::join_all;

use crate::report::SessionReport;

pub use settings::{
    EmailTarget, NotifySettings, NotifyWhen, SlackTarget, SmtpTls, Target, WebhookTarget,
};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A setting is missing or malformed; `variable` is the environment variable or flag.
    #[error("{variable}: {problem}")]
    Setting { variable: String, problem: String },
    /// A target could not be prepared (TLS set-up, an address).
    #[error("cannot set up {target}: {problem}")]
    Setup { target: String, problem: String },
    /// Sending to one target failed; the others were still tried.
    #[error("notifying {target} failed: {problem}")]
    Send { target: String, problem: String },
}

/// `--porcelain v1`'s template: one line per container, `name (image): State`, with
/// ` Error: why` when there is one, or `no containers matched filter`.
pub const PORCELAIN_V1: &str = "{{- range .Report.All}}{{.Name}} ({{.ImageName}}): {{.State}}{{with .Error}} Error: {{.}}{{end}}{{println}}{{else}}no containers matched filter{{println}}{{end -}}";

/// The targets, ready to send; built once and used for every session.
pub struct Notifiers {
    senders: Vec<Sender>,
    when: NotifyWhen,
    timeout: Duration,
    hostname: String,
    message: Option<Message>,
}

/// A user's template (or porcelain's), and what it is given.
struct Message {
    template: template::Template,
    report: bool,
    level_rank: u8,
}

impl Message {
    /// Checked at start: a template that cannot be parsed, or that asks the data for
    /// something it does not have, stops the watcher naming the construct.
    fn new(settings: &NotifySettings) -> Result<Option<Message>, NotifyError> {
        let Some(text) = &settings.template else {
            return Ok(None);
        };
        let invalid = |problem: String| NotifyError::Setting {
            variable: "--notification-template (WATCHTOWER_NOTIFICATION_TEMPLATE)".to_owned(),
            problem,
        };
        let message = Message {
            template: template::Template::parse(text).map_err(invalid)?,
            report: settings.report,
            level_rank: settings.level_rank,
        };
        message
            .render(&template::sample_report(), "host")
            .map_err(|e| {
                invalid(format!(
                    "{e} (with --notification-report {})",
                    settings.report
                ))
            })?;
        Ok(Some(message))
    }

    fn render(&self, report: &SessionReport, hostname: &str) -> Result<String, String> {
        let entries = template::entries(report, self.level_rank);
        let data = if self.report {
            template::report_data(report, &entries, hostname)
        } else {
            template::legacy_data(report, &entries)
        };
        self.template.render(&data)
    }
}

enum Sender {
    Webhook(webhook::Webhook),
    Slack(slack::Slack),
    Email(email::Email),
    Logger,
}

impl Notifiers {
    pub fn new(settings: &NotifySettings) -> Result<Notifiers, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| NotifyError::Setup {
                target: "the HTTP client".to_owned(),
                problem: e.to_string(),
            })?;
        let senders = settings
            .targets
            .iter()
            .map(|target| match target {
                Target::Webhook(t) => Ok(Sender::Webhook(webhook::Webhook::new(t, &client)?)),
                Target::Slack(t) => Ok(Sender::Slack(slack::Slack::new(t, &client))),
                Target::Email(t) => Ok(Sender::Email(email::Email::new(t, settings.timeout)?)),
                Target::Logger => Ok(Sender::Logger),
            })
            .collect::<Result<_, NotifyError>>()?;
        Ok(Notifiers {
            senders,
            when: settings.when,
            timeout: settings.timeout,
            hostname: settings.hostname.clone().unwrap_or_else(machine_hostname),
            message: Message::new(settings)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Whether `send` would send this report anywhere (with a template, also when its
    /// message comes out empty: watchtower's rule for "nothing to say").
    pub fn wants(&self, report: &SessionReport) -> bool {
        !self.senders.is_empty()
            && match (&self.message, self.when) {
                // watchtower's report mode at level error: only sessions with a failure.
                (Some(m), _) if m.report && m.level_rank <= 2 => report.failed() > 0,
                (Some(_), _) => true,
                (None, NotifyWhen::Always) => true,
                (None, NotifyWhen::Noteworthy) => report.is_noteworthy(),
                (None, NotifyWhen::Failures) => report.failed() > 0,
            }
    }

    /// Sends to every target at once and returns what failed; a failed notifier must
    /// never hold up or stop the updater, so nothing here panics or retries.
    pub async fn send(&self, report: &SessionReport) -> Vec<NotifyError> {
        if !self.wants(report) {
            return Vec::new();
        }
        let text = match &self.message {
            Some(m) => match m.render(report, &self.hostname) {
                Ok(text) if text.is_empty() => return Vec::new(),
                Ok(text) => text,
                Err(problem) => {
                    return vec![NotifyError::Send {
                        target: "the notification template".to_owned(),
                        problem,
                    }]
                }
            },
            None => report.summary(),
        };
        let sends = self
            .senders
            .iter()
            .map(|sender| self.send_one(sender, report, &text));
        join_all(sends).await.into_iter().flatten().collect()
    }

    async fn send_one(
        &self,
        sender: &Sender,
        report: &SessionReport,
        text: &str,
    ) -> Option<NotifyError> {
        let sending = async {
            match sender {
                Sender::Webhook(s) => s.send(report).await,
                Sender::Slack(s) => s.send(text).await,
                Sender::Email(s) => s.send(report, text, &self.hostname).await,
                Sender::Logger => {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())
                        .and_then(|()| out.flush())
                        .map_err(|e| e.to_string())
                }
            }
        };
        let problem = match tokio::time::timeout(self.timeout, sending).await {
            Ok(Ok(())) => return None,
            Ok(Err(problem)) => problem,
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        Some(NotifyError::Send {
            target: sender.describe(),
            problem,
        })
    }
}

impl Sender {
    fn describe(&self) -> String {
        match self {
            Sender::Webhook(s) => s.describe(),
            Sender::Slack(s) => s.describe(),
            Sender::Email(s) => s.describe(),
            Sender::Logger => "logger (stdout)".to_owned(),
        }
    }
}

/// The subject of an email: counts first, so they show in a mail list.
pub fn title(report: &SessionReport, hostname: &str) -> String {
    format!(
        "wharf watch: {} updated, {} failed on {hostname}",
        report.count(crate::report::Outcome::Updated),
        report.failed()
    )
}

fn machine_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Send a prepared POST; anything but a 2xx is an error that says what the server said.
async fn post(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request.send().await.map_err(http_error)?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(http_failure(response).await)
    }
}

/// A non-2xx answer, with the start of its body: Slack and most hooks say there what
/// was wrong ("invalid_token", "channel_not_found").
async fn http_failure(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(200).collect();
    if body.is_empty() {
        format!("the server answered {status}")
    } else {
        format!("the server answered {status}: {body}")
    }
}

/// reqwest's messages quote the URL, whose path or query may be the secret.
fn http_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
