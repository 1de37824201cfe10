//! Email over SMTP: the summary as plain text, counts and host in the subject.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::settings::{EmailTarget, SmtpTls};
use super::{title, NotifyError};
use crate::report::SessionReport;

pub(super) struct Email {
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_tag: Option<String>,
    server: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    pub(super) fn new(target: &EmailTarget, timeout: Duration) -> Result<Email, NotifyError> {
        let server = format!("{}:{}", target.host, target.port);
        let setup = |problem: String| NotifyError::Setup {
            target: format!("email via {server}"),
            problem,
        };
        let address = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| setup(format!("{text:?} is not an email address: {e}")))
        };
        let from = address(&target.from)?;
        let to = target
            .to
            .iter()
            .map(|text| address(text))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(setup("no recipient".to_owned()));
        }
        let tls = tls(target).map_err(|e| setup(format!("TLS: {e}")))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&target.host)
            .port(target.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(user) = &target.user {
            let password = target.password.clone().unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Email {
            from,
            to,
            subject_tag: target.subject_tag.clone(),
            transport: builder.build(),
            server,
        })
    }

    /// `text`: the body, the report's summary or the user's template rendered.
    pub(super) async fn send(
        &self,
        report: &SessionReport,
        text: &str,
        hostname: &str,
    ) -> Result<(), String> {
        let message = self
            .message(report, text, hostname)
            .map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn message(
        &self,
        report: &SessionReport,
        text: &str,
        hostname: &str,
    ) -> Result<Message, lettre::error::Error> {
        let title = title(report, hostname);
        let subject = match &self.subject_tag {
            Some(tag) => format!("[{tag}] {title}"),
            None => title,
        };
        let mut builder = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_owned())
    }

    pub(super) fn describe(&self) -> String {
        format!("email via {}", self.server)
    }
}

fn tls(target: &EmailTarget) -> Result<Tls, lettre::transport::smtp::Error> {
    let parameters = || {
        TlsParameters::builder(target.host.clone())
            .dangerous_accept_invalid_certs(target.skip_verify)
            .build_rustls()
    };
    Ok(match target.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Opportunistic => Tls::Opportunistic(parameters()?),
        SmtpTls::Required => Tls::Required(parameters()?),
        SmtpTls::Implicit => Tls::Wrapper(parameters()?),
    })
}
