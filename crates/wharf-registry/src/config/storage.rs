//! `storage:` as registry:2 names it (and `REGISTRY_STORAGE_*`): the driver, and the
//! switches registry:2 keeps beside it (delete, maintenance, redirect). Keys of `storage.s3`
//! wharf cannot honour are not modelled, so that the loader refuses them by name (see
//! `cannot_honour`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_norway::Value;

use super::{lenient, ConfigError, UploadPurging};
use crate::store::s3::{S3Config, MIN_PART};
use crate::store::{built_without, StorageConfig};

#[derive(Deserialize, Default)]
pub(super) struct Storage {
    filesystem: Option<Filesystem>,
    s3: Option<S3File>,
    delete: Option<Enabled>,
    maintenance: Option<Maintenance>,
    /// registry:2's blob descriptor cache; wharf always caches, so this is accepted as is.
    #[serde(rename = "cache")]
    _cache: Option<Value>,
    /// Pulls from S3 redirect to presigned URLs unless `redirect.disable`.
    redirect: Option<Redirect>,
}

#[derive(Deserialize, Default)]
struct Redirect {
    #[serde(default, deserialize_with = "lenient::bool")]
    disable: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Filesystem {
    rootdirectory: Option<PathBuf>,
    /// Go's limit on blocking filesystem threads; tokio's blocking pool bounds ours.
    #[serde(rename = "maxthreads")]
    _maxthreads: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Enabled {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Maintenance {
    uploadpurging: Option<Purging>,
    readonly: Option<Enabled>,
}

#[derive(Deserialize, Default)]
struct Purging {
    #[serde(default, deserialize_with = "lenient::bool")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::duration")]
    age: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::bool")]
    dryrun: Option<bool>,
}

/// What `storage:` decides.
pub(super) struct StorageSection {
    pub driver: StorageConfig,
    pub delete_enabled: bool,
    pub read_only: bool,
    pub upload_purging: Option<UploadPurging>,
}

impl Storage {
    pub(super) fn into_config(
        self,
        origin: &str,
        warnings: &mut Vec<String>,
    ) -> Result<StorageSection, ConfigError> {
        // Even with S3 a local directory is wanted, for the records wharf keeps itself.
        let root = self
            .filesystem
            .as_ref()
            .and_then(|f| f.rootdirectory.clone())
            .unwrap_or_else(super::default_root);
        let driver = match self.s3 {
            None => StorageConfig::Filesystem { root },
            Some(_) if self.filesystem.is_some() => {
                return Err(ConfigError::value(
                    origin,
                    "storage",
                    "names both filesystem and s3: choose one driver",
                ));
            }
            Some(_) if !cfg!(feature = "s3") => {
                return Err(ConfigError::value(
                    origin,
                    "storage.s3",
                    built_without("s3", "S3 storage"),
                ));
            }
            Some(s3) => {
                let redirect = !self.redirect.and_then(|r| r.disable).unwrap_or(false);
                let s3 = s3
                    .into_config(redirect)
                    .map_err(|(k, m)| ConfigError::value(origin, k, m))?;
                StorageConfig::S3 { s3, local: root }
            }
        };
        let mut section = StorageSection {
            driver,
            delete_enabled: self.delete.and_then(|d| d.enabled).unwrap_or(false),
            read_only: false,
            upload_purging: Some(UploadPurging::default()),
        };
        if let Some(m) = self.maintenance {
            section.read_only = m.readonly.and_then(|r| r.enabled).unwrap_or(false);
            if let Some(p) = m.uploadpurging {
                section.upload_purging = p.into_config(origin, warnings);
            }
        }
        Ok(section)
    }
}

impl Purging {
    fn into_config(self, origin: &str, warnings: &mut Vec<String>) -> Option<UploadPurging> {
        if self.enabled == Some(false) {
            return None;
        }
        if self.dryrun == Some(true) {
            warnings.push(format!("{origin}: `storage.maintenance.uploadpurging.dryrun` is not supported; purging disabled"));
            return None;
        }
        let defaults = UploadPurging::default();
        Some(UploadPurging {
            age: self.age.unwrap_or(defaults.age),
            interval: self.interval.unwrap_or(defaults.interval),
        })
    }
}

#[derive(Deserialize, Default)]
struct S3File {
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
    fn into_config(self, redirect: bool) -> Result<S3Config, (&'static str, String)> {
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
