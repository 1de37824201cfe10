//! `GET /v2/`: the API version check every client starts with.

use bytes::Bytes;
use http::StatusCode;

use super::response::{bytes_response, Resp};

pub fn get() -> Resp {
    bytes_response(
        StatusCode::OK,
        wharf_oci::media_type::JSON,
        Bytes::from_static(b"{}"),
    )
}
