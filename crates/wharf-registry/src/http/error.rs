//! API errors, answered with the spec's JSON body: `{"errors":[{"code","message","detail"}]}`.

use std::borrow::Cow;

use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use wharf_oci::name::NameError;
use wharf_oci::ErrorCode;

use super::response::{json_response, Resp};
use crate::registry::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub detail: Option<Value>,
    pub status: StatusCode,
    /// Extra headers: `Range` on a 416, `WWW-Authenticate` on a 401.
    pub headers: Vec<(http::HeaderName, String)>,
}

pub type ApiResult<T = Resp> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode) -> ApiError {
        ApiError {
            code,
            message: Cow::Borrowed(code.default_message()),
            detail: None,
            status: StatusCode::from_u16(code.status()).expect("valid status"),
            headers: Vec::new(),
        }
    }

    pub fn message(mut self, m: impl Into<Cow<'static, str>>) -> ApiError {
        self.message = m.into();
        self
    }

    pub fn detail(mut self, d: Value) -> ApiError {
        self.detail = Some(d);
        self
    }

    pub fn status(mut self, s: StatusCode) -> ApiError {
        self.status = s;
        self
    }

    pub fn header(mut self, name: http::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_response(self) -> Resp {
        let mut err = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let mut resp = json_response(self.status, &json!({ "errors": [err] }));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UploadUnknown(id) => ApiError::new(ErrorCode::BlobUploadUnknown)
                .detail(json!({ "uuid": id.to_string() })),
            StoreError::UploadOffset { actual, .. } => ApiError::new(ErrorCode::RangeInvalid)
                .message(format!("{e}: resume from the upload's current Range"))
                .header(
                    http::header::RANGE,
                    format!("0-{}", actual.saturating_sub(1)),
                ),
            StoreError::DigestMismatch { .. } => {
                ApiError::new(ErrorCode::DigestInvalid).message(e.to_string())
            }
            StoreError::BlobUnknown(d) => {
                ApiError::new(ErrorCode::BlobUnknown).detail(json!({ "digest": d }))
            }
            StoreError::RangeInvalid { .. } => {
                ApiError::new(ErrorCode::RangeInvalid).message(e.to_string())
            }
            StoreError::Body(_) => {
                ApiError::new(ErrorCode::BlobUploadInvalid).message(e.to_string())
            }
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "storage unavailable");
                ApiError::new(ErrorCode::Unavailable).message(e.to_string())
            }
            // The storage stopped letting us in (a root made read-only, or chowned away):
            // the client's request was fine and may succeed once the operator fixes it.
            StoreError::Io(ref io) if refused_by_storage(io) => {
                tracing::error!(error = %e, "storage refuses access: check its permissions");
                ApiError::new(ErrorCode::Unavailable).message(format!(
                    "the registry's storage refuses access ({e}); its administrator must make it readable and writable again"
                ))
            }
            StoreError::Io(ref io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                tracing::error!(error = %e, "storage is full");
                ApiError::new(ErrorCode::Unavailable).message(format!(
                    "the registry's storage is full ({e}); retry once its administrator has freed space"
                ))
            }
            StoreError::Io(_) | StoreError::Corrupt { .. } | StoreError::NotAStore(_) => {
                tracing::error!(error = %e, "storage failure");
                ApiError::new(ErrorCode::Unknown).message(e.to_string())
            }
        }
    }
}

impl From<crate::registry::Error> for ApiError {
    fn from(e: crate::registry::Error) -> ApiError {
        match e {
            crate::registry::Error::Store(e) => e.into(),
            crate::registry::Error::Upstream {
                code,
                status,
                message,
            } => ApiError::new(code)
                .message(message)
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)),
            crate::registry::Error::Refused {
                code,
                message,
                detail,
            } => {
                let err = ApiError::new(code).message(message);
                match detail {
                    Some(d) => err.detail(d),
                    None => err,
                }
            }
        }
    }
}

pub fn name_invalid(e: NameError) -> ApiError {
    ApiError::new(ErrorCode::NameInvalid).message(e.to_string())
}

pub fn digest_invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::DigestInvalid).message(e.to_string())
}

/// Permission denied, or a read-only filesystem (EROFS).
fn refused_by_storage(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}
