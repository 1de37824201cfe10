//! Races on the registry's own rules, with two cores on one root standing for two
//! processes (each has its own locks, open files and caches; `flock` holds between them
//! as between processes): racing pushes never take a quota over its bytes, and of racing
//! first pushes of one immutable tag exactly one wins.

use std::sync::Arc;

use bytes::Bytes;
use wharf_oci::{Digest, ErrorCode, Reference};

use super::{Core, Error};
use crate::config::governance::Governance;
use crate::store::ByteStream;

fn body(b: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(b) }))
}

/// `quotas:` or `immutable:` rules in YAML.
fn rules(quotas: &str, immutable: &str) -> Arc<Governance> {
    Arc::new(Governance {
        quotas: serde_norway::from_str(quotas).unwrap(),
        immutable: serde_norway::from_str(immutable).unwrap(),
        ..Governance::default()
    })
}

fn core_on(root: &std::path::Path, governance: &Arc<Governance>) -> Arc<Core> {
    let mut core = Core::new(crate::store::fs::open(root, true).unwrap());
    core.governance = governance.clone();
    Arc::new(core)
}

fn denied(e: &Error) -> bool {
    matches!(
        e,
        Error::Refused {
            code: ErrorCode::Denied,
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_pushes_fill_a_quota_with_room_for_ten_and_no_more() {
    for processes in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let g = rules("- repositories: ['t/*']\n  bytes: 100\n", "[]");
        let cores: Vec<Arc<Core>> = (0..processes).map(|_| core_on(dir.path(), &g)).collect();
        let mut pushes = Vec::new();
        for i in 0..20u8 {
            let core = cores[i as usize % processes].clone();
            pushes.push(tokio::spawn(async move {
                let blob = Bytes::from(vec![i; 10]);
                let d = Digest::sha256_of(&blob);
                let repo = format!("t/r{}", i % 5).parse().unwrap();
                core.store_blob(&repo, &d, None, body(blob)).await
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for p in pushes {
            match p.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) if denied(&e) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((ok, refused), (10, 10), "with {processes} processes");
        let recount = cores[0].recount_quotas(false).await.unwrap();
        assert_eq!(recount[0].counted, 100, "the links hold 100 bytes");
        assert_eq!(recount[0].recorded, Some(100), "and the figure agrees");
        let summary = cores[processes - 1].governance_summary().await.unwrap();
        assert_eq!(summary.quotas[0].used, 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_gives_the_room_back_and_scrub_repairs_a_drifted_figure() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = Core::new(crate::store::fs::open(dir.path(), true).unwrap());
    core.governance = rules("- repositories: ['t/*']\n  bytes: 20\n", "[]");
    core.rules.delete_enabled = true;
    let repo = "t/a".parse().unwrap();
    let (a, b) = (Bytes::from(vec![1u8; 15]), Bytes::from(vec![2u8; 15]));
    let (da, db) = (Digest::sha256_of(&a), Digest::sha256_of(&b));
    core.store_blob(&repo, &da, Some(15), body(a))
        .await
        .unwrap();
    let refused = core.store_blob(&repo, &db, Some(15), body(b.clone())).await;
    assert!(refused.is_err_and(|e| denied(&e)));
    let origin = super::events::Origin::default();
    use super::service::Service;
    assert!(core.delete_blob(&origin, &repo, &da).await.unwrap());
    core.store_blob(&repo, &db, Some(15), body(b))
        .await
        .unwrap();
    // A figure edited by hand (or left high by a crash) is found and put right.
    let key = super::quotas::quota_key(&core.governance.quotas[0]);
    let usage = dir
        .path()
        .join(format!("docker/registry/v2/_wharf/quotas/{key}/usage"));
    std::fs::write(&usage, b"99").unwrap();
    let opts = super::scrub::ScrubOptions {
        repair: true,
        stale_uploads: std::time::Duration::from_secs(3600),
        progress: None,
        total: None,
    };
    let report = core.scrub(&opts).await.unwrap();
    let drift: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == super::scrub::Kind::QuotaDrift)
        .collect();
    assert_eq!(drift.len(), 1, "{:?}", report.findings);
    assert!(drift[0]
        .detail
        .contains("recorded as 99 bytes, counted 15 bytes"));
    assert_eq!(std::fs::read_to_string(&usage).unwrap(), "15");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_racing_first_pushes_of_an_immutable_tag_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let g = rules("[]", "- repositories: ['rel/*']\n  tags: '^v.*'\n");
    let cores = [core_on(dir.path(), &g), core_on(dir.path(), &g)];
    let repo: wharf_oci::RepoName = "rel/app".parse().unwrap();
    let config = Bytes::from_static(b"{}");
    let cd = Digest::sha256_of(&config);
    cores[0]
        .store_blob(&repo, &cd, None, body(config.clone()))
        .await
        .unwrap();
    let manifest = |n: usize| {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd.to_string(), "size": config.len()},
            "layers": [],
            "annotations": {"n": n.to_string()},
        });
        Bytes::from(serde_json::to_vec(&m).unwrap())
    };
    for round in 0..50 {
        let tag: Reference = format!("v{round}").parse().unwrap();
        let mut racers = Vec::new();
        for (i, core) in cores.iter().enumerate() {
            let (core, repo, tag) = (core.clone(), repo.clone(), tag.clone());
            let bytes = manifest(round * 2 + i);
            racers.push(tokio::spawn(async move {
                let origin = crate::registry::events::Origin::default();
                core.store_manifest(&origin, &repo, &tag, None, bytes).await
            }));
        }
        let mut winners = Vec::new();
        for r in racers {
            match r.await.unwrap() {
                Ok(put) => winners.push(put.digest),
                Err(e) if denied(&e) => {
                    assert!(e.to_string().contains("immutable rule 1"), "{e}");
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let Reference::Tag(t) = &tag else {
            unreachable!()
        };
        let now = cores[1].store.meta.resolve_tag(&repo, t).await.unwrap();
        assert_eq!(now.as_ref(), Some(&winners[0]), "round {round}");
    }
}
