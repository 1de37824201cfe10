//! PostgreSQL metadata over S3 blobs (a real Garage): the combination several replicas on
//! a bucket need, since S3 has no locks of its own.

use wharf_registry::store::s3::S3Config;
use wharf_registry::store::{self, suite, StorageConfig};

use crate::harness::garage::{Garage, BUCKET};
use crate::harness::http_client;
use crate::harness::postgres::Postgres;
use crate::harness::Served;
use crate::pushes::*;

#[test]
fn s3_blobs_with_postgres_metadata_keep_the_contract_and_serve_pushes() {
    let (g, pg) = (Garage::start(), Postgres::start());
    let mut s3 = S3Config::new(BUCKET.into(), "garage".into());
    s3.accesskey = Some(g.access_key.clone());
    s3.secretkey = Some(g.secret_key.clone());
    s3.regionendpoint = Some(g.endpoint.clone());
    s3.rootdirectory = "/contract".into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Only a server writes to the local directory; the store itself is all in the bucket.
    let local = tempfile::tempdir().unwrap();
    let storage = StorageConfig::S3 {
        s3,
        local: local.path().into(),
    };
    rt.block_on(async {
        let s = store::open(&storage, Some(&pg.config()), true)
            .await
            .unwrap();
        suite::blob_store_contract(s.blobs.clone()).await;
        suite::meta_store_contract(s.meta.clone(), s.blobs.clone()).await;
    });

    // A server from registry:2's and GitLab's variables alone.
    let dir = tempfile::tempdir().unwrap();
    let mut env = pg.env();
    env.extend(g.storage_env("/served"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let yaml = "version: 0.1\nlog:\n  level: warn\nstorage:\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:@PORT@\n";
    let served = Served::start(dir.path(), yaml, &env);
    let (c, base) = (http_client(), format!("http://{}", served.host()));
    let a = push_image(&c, &base, "s3pg/app", "v1", 1, 2).unwrap();
    let b = push_image(&c, &base, "s3pg/app", "v2", 2, 1).unwrap();
    verify_pulls(&c, &base, &a);
    verify_pulls(&c, &base, &b);
    let r = c
        .get(format!("{base}/v2/s3pg/app/tags/list?n=1"))
        .send()
        .unwrap();
    assert!(crate::harness::header(&r, "link").contains("last=v1"));
    assert_eq!(
        pg.psql("SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = 's3pg/app'"),
        "2"
    );
}
