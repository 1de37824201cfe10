//! The generic webhook: the whole report as JSON, for scripts and other services.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::settings::{redact_url, WebhookTarget};
use super::{post, NotifyError};
use crate::report::SessionReport;

pub(super) struct Webhook {
    url: String,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl Webhook {
    pub(super) fn new(
        target: &WebhookTarget,
        client: &reqwest::Client,
    ) -> Result<Webhook, NotifyError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &target.headers {
            let setup = |problem: String| NotifyError::Setup {
                target: format!("webhook {}", redact_url(&target.url)),
                problem,
            };
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| setup(format!("{name:?} is not a header name")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| setup(format!("the value of header {name} is not valid")))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        Ok(Webhook {
            url: target.url.clone(),
            headers,
            client: client.clone(),
        })
    }

    pub(super) async fn send(&self, report: &SessionReport) -> Result<(), String> {
        let request = self.client.post(&self.url).headers(self.headers.clone());
        post(request.json(report)).await
    }

    pub(super) fn describe(&self) -> String {
        format!("webhook {}", redact_url(&self.url))
    }
}
