//! Reading a registry's answer: success, or an error that carries the registry's own
//! reason (`errors[].message`), so that the user sees why, not only the status.

use reqwest::{Response, StatusCode};

use super::{ClientError, RegistryClient};

impl RegistryClient {
    /// The body of a successful response; a failure status becomes an error that names it.
    pub(crate) async fn expect_success(
        &self,
        response: Response,
        what: &str,
    ) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let registry = self.registry.to_string();
        let what = what.to_owned();
        Err(match status {
            StatusCode::NOT_FOUND => ClientError::NotFound { registry, what },
            StatusCode::FORBIDDEN => ClientError::Denied {
                registry,
                what,
                status: status.as_u16(),
                message: registry_messages(&response.text().await.unwrap_or_default(), false),
            },
            StatusCode::TOO_MANY_REQUESTS => ClientError::TooManyRequests {
                retry_after: retry_after(&response),
                registry,
                what,
            },
            _ => {
                let body = response.text().await.unwrap_or_default();
                let mut detail: String = registry_messages(&body, true)
                    .unwrap_or_else(|| body.trim().to_owned())
                    .chars()
                    .take(300)
                    .collect();
                if detail.is_empty() {
                    detail = "empty body".into();
                }
                ClientError::Status {
                    registry,
                    what,
                    status: status.as_u16(),
                    detail,
                }
            }
        })
    }
}

/// The messages of a spec-shaped error body (`{"errors":[{"code","message"}]}`), joined,
/// each after its code when `with_codes` (`DIGEST_INVALID: ...`, which callers match on);
/// None when the body is not one or says nothing.
fn registry_messages(body: &str, with_codes: bool) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let parsed: Body = serde_json::from_str(body).ok()?;
    let messages: Vec<String> = parsed
        .errors
        .into_iter()
        .filter_map(|e| {
            let message: String = e.message?.trim().chars().take(500).collect();
            match e.code {
                _ if message.is_empty() => None,
                Some(code) if with_codes => Some(format!("{code}: {message}")),
                _ => Some(message),
            }
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

/// `Retry-After` in its delta-seconds form; an HTTP date is rare from registries and
/// callers fall back to their own backoff without one.
fn retry_after(response: &Response) -> Option<std::time::Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let seconds: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::{registry_messages, ClientError};

    #[test]
    fn the_registrys_reason_is_shown_with_the_hint_that_fits_it() {
        let body = r#"{"errors":[{"code":"DENIED","message":"quota 20.0 MiB for nc/*, used 3.0 MiB: a blob of 24.0 MiB does not fit"}]}"#;
        let message = registry_messages(body, false);
        let denied = ClientError::Denied {
            registry: "r:5000".into(),
            what: "uploading blob".into(),
            status: 403,
            message,
        }
        .to_string();
        assert!(denied.contains(": quota 20.0 MiB for nc/*"), "{denied}");
        assert!(denied.contains("raise the quota"), "{denied}");
        assert!(
            !denied.contains("ask its administrator for access"),
            "{denied}"
        );
        let bare = ClientError::Denied {
            registry: "r:5000".into(),
            what: "the catalog".into(),
            status: 403,
            message: None,
        }
        .to_string();
        assert!(bare.ends_with("ask its administrator for access"), "{bare}");
        assert_eq!(
            registry_messages(
                r#"{"errors":[{"code":"DIGEST_INVALID","message":"m"}]}"#,
                true
            )
            .as_deref(),
            Some("DIGEST_INVALID: m")
        );
        assert_eq!(registry_messages("<html>", true), None);
    }
}
