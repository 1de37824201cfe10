//! Building responses: the body type and the few shapes the API answers with.

use std::io;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;

use crate::registry::ByteStream;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;
pub type Resp = Response<Body>;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn streaming(stream: ByteStream) -> Body {
    StreamBody::new(stream.map(|r| r.map(Frame::data))).boxed_unsync()
}

pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

pub fn bytes_response(status: StatusCode, content_type: &str, bytes: Bytes) -> Resp {
    let len = bytes.len();
    let mut r = Response::new(full(bytes));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, header_value(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    let body = serde_json::to_vec(value).expect("serialisable");
    bytes_response(status, wharf_oci::media_type::JSON, body.into())
}

/// A header value from text we built; anything unrepresentable becomes empty rather than panic.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

pub trait RespExt {
    fn with(self, name: HeaderName, value: &str) -> Self;
    fn location(self, value: &str) -> Self;
}

impl RespExt for Resp {
    fn with(mut self, name: HeaderName, value: &str) -> Self {
        self.headers_mut().insert(name, header_value(value));
        self
    }

    fn location(self, value: &str) -> Self {
        self.with(LOCATION, value)
    }
}
