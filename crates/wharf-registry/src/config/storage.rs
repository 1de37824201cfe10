//! `storage.s3` as registry:2 names it (and `REGISTRY_STORAGE_S3_*`). Keys wharf cannot
//! honour are not modelled, so that the loader refuses them by name (see `cannot_honour`).

use serde::Deserialize;

use super::file::lenient;
use crate::store::s3::{S3Config, MIN_PART};

#[derive(Deserialize, Default)]
pub(super) struct S3File {
    accesskey: Option<String>,
    secretkey: Option<String>,
    region: Option<String>,
    regionendpoint: Option<String>,
    bucket: Option<String>,
    rootdirectory: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    secure: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    v4auth: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    forcepathstyle: Option<bool>,
    #[serde(default, deserialize_with = "lenient::u64")]
    chunksize: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    multipartcopychunksize: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    multipartcopymaxconcurrency: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    multipartcopythresholdsize: Option<u64>,
    /// The SDK's own logging settings: tracing covers it.
    #[serde(rename = "loglevel")]
    _loglevel: Option<serde_norway::Value>,
    #[serde(rename = "useragent")]
    _useragent: Option<serde_norway::Value>,
}

impl S3File {
    /// The configuration, or the key that is wrong and why.
    pub(super) fn into_config(self, redirect: bool) -> Result<S3Config, (&'static str, String)> {
        let bucket = self
            .bucket
            .filter(|b| !b.is_empty())
            .ok_or(("storage.s3.bucket", "is required".to_owned()))?;
        let region = self.region.filter(|r| !r.is_empty()).ok_or((
            "storage.s3.region",
            "is required (any name for an S3-compatible store with a regionendpoint)".to_owned(),
        ))?;
        if self.v4auth == Some(false) {
            return Err((
                "storage.s3.v4auth",
                "false is not supported: wharf signs every request with AWS Signature Version 4"
                    .into(),
            ));
        }
        if self.accesskey.is_some() != self.secretkey.is_some() {
            return Err((
                "storage.s3.secretkey",
                "accesskey and secretkey go together (or leave both out to use the AWS environment and profile)".into(),
            ));
        }
        let mut config = S3Config::new(bucket, region);
        config.accesskey = self.accesskey.filter(|k| !k.is_empty());
        config.secretkey = self.secretkey.filter(|k| !k.is_empty());
        config.regionendpoint = self.regionendpoint.filter(|e| !e.is_empty());
        config.rootdirectory = self.rootdirectory.unwrap_or_default();
        config.secure = self.secure.unwrap_or(true);
        config.forcepathstyle = self.forcepathstyle.unwrap_or(false);
        if let Some(c) = self.chunksize {
            if c < MIN_PART {
                return Err((
                    "storage.s3.chunksize",
                    format!("{c} is below S3's smallest part, {MIN_PART} bytes"),
                ));
            }
            config.chunksize = c;
        }
        if let Some(c) = self.multipartcopychunksize {
            config.multipartcopychunksize = c;
        }
        if let Some(c) = self.multipartcopymaxconcurrency {
            config.multipartcopymaxconcurrency = c as usize;
        }
        if let Some(c) = self.multipartcopythresholdsize {
            config.multipartcopythresholdsize = c;
        }
        config.redirect = redirect;
        Ok(config)
    }
}
