//! Robot tokens and the audit log kept in PostgreSQL, shared by three `wharf serve`
//! replicas: a token made on one is accepted by all, a revoked or expired one refused by
//! all within a second, the stored row holds no secret, and concurrent logins on every
//! replica extend one audit chain that `wharf audit verify` checks, and whose tampering
//! (an edited byte, a removed row, two rows swapped) it names.

use std::path::Path;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;

use crate::harness::postgres::Postgres;
use crate::harness::Served;
use crate::identity::{audit_records, count, create_token, wharf, wharf_ok, within};

fn replica_config(htpasswd: &Path) -> String {
    format!(
        "version: 0.1
storage:
  filesystem:
    rootdirectory: @DIR@/data
http:
  addr: 127.0.0.1:@PORT@
  secret: replicas-share-this
auth:
  htpasswd:
    realm: wharf
    path: {}
",
        htpasswd.display()
    )
}

fn status(c: &Client, replica: &Served, user: &str, password: &str) -> StatusCode {
    c.get(format!("http://{}/v2/", replica.host()))
        .basic_auth(user, Some(password))
        .send()
        .unwrap()
        .status()
}

#[test]
fn tokens_and_the_audit_chain_in_postgres_hold_on_every_replica() {
    let pg = Postgres::start();
    let env = pg.env();
    let shared = tempfile::tempdir().unwrap();
    let htpasswd = shared.path().join("htpasswd");
    crate::harness::htpasswd(&htpasswd, "admin", "admin-pw");
    let yaml = replica_config(&htpasswd);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<Served> = dirs
        .iter()
        .map(|d| Served::start(d.path(), &yaml, &envs))
        .collect();
    let config = dirs[0].path().join("config.yml");
    let c = Client::new();

    let secret = create_token(&config, &env, "ci-deploy", "team/*:pull,push", "90d");
    for r in &replicas {
        assert_eq!(status(&c, r, "ci-deploy", &secret), StatusCode::OK);
        assert_eq!(
            status(&c, r, "ci-deploy", "wharf_rt_wrong"),
            StatusCode::UNAUTHORIZED
        );
    }
    let row = pg.psql("SELECT name, scopes, hash FROM robot_tokens");
    assert!(
        row.contains("ci-deploy") && !row.contains(&secret["wharf_rt_".len()..]),
        "{row}"
    );

    wharf_ok(&config, &env, &["token", "revoke", "ci-deploy"]);
    let refused_everywhere = within(Duration::from_secs(1), || {
        replicas
            .iter()
            .all(|r| status(&c, r, "ci-deploy", &secret) == StatusCode::UNAUTHORIZED)
    });
    assert!(
        refused_everywhere.is_some(),
        "a revoked token still works on a replica after 1 s"
    );

    // Expiry is kept in whole seconds: a few of them, so the token is live when checked.
    let short = create_token(&config, &env, "short", "team/*:pull", "4s");
    for r in &replicas {
        assert_eq!(status(&c, r, "short", &short), StatusCode::OK);
    }
    std::thread::sleep(Duration::from_millis(4100));
    let expired_everywhere = within(Duration::from_secs(1), || {
        replicas
            .iter()
            .all(|r| status(&c, r, "short", &short) == StatusCode::UNAUTHORIZED)
    });
    assert!(
        expired_everywhere.is_some(),
        "an expired token still works on a replica"
    );

    // Logins on every replica at once: one linear chain.
    std::thread::scope(|s| {
        for r in &replicas {
            let c = c.clone();
            s.spawn(move || {
                for _ in 0..10 {
                    assert_eq!(status(&c, r, "admin", "admin-pw"), StatusCode::OK);
                }
            });
        }
    });
    let records = audit_records(&config, &env);
    assert_eq!(count(&records, "admin", "login", "basic"), 30);
    assert!(records
        .iter()
        .any(|r| r["action"] == "token revoke" && r["target"] == "ci-deploy"));
    let verified = wharf_ok(&config, &env, &["audit", "verify"]);
    assert!(verified.contains("intact"), "{verified}");

    let broken_at = |position: usize| {
        let out = wharf(&config, &env, &["audit", "verify"]);
        assert!(!out.status.success(), "verify passed a tampered log");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("broken at record {position}:")),
            "{err}"
        );
    };
    let line = |p: usize| pg.psql(&format!("SELECT line FROM audit_log WHERE position = {p}"));
    let (two, three) = (line(2), line(3));
    let set = |p: usize, text: &str| {
        let quoted = text.replace('\'', "''");
        pg.psql(&format!(
            "UPDATE audit_log SET line = '{quoted}' WHERE position = {p}"
        ));
    };
    // One byte flipped.
    let flipped = two.replacen("\"seq\":2", "\"seq\":3", 1);
    set(2, &flipped);
    broken_at(2);
    set(2, &two);
    // Two records swapped.
    set(2, &three);
    set(3, &two);
    broken_at(2);
    set(2, &two);
    set(3, &three);
    wharf_ok(&config, &env, &["audit", "verify"]);
    // A record removed.
    pg.psql("DELETE FROM audit_log WHERE position = 3");
    broken_at(3);
}

/// The scale-out deployment: three replicas on one bucket and one database behind nginx
/// round-robin. docker logs in and pushes with a token through the front; revoked and
/// expired tokens are refused by each replica within a second.
#[test]
fn robot_tokens_on_three_replicas_behind_nginx_with_docker() {
    use crate::harness::garage::Garage;
    use crate::harness::{
        build_busybox_image, docker_rmi, output_with_stdin, require_docker, run, unique,
    };
    use crate::replicas::{replica_env, Cluster};
    use std::process::Command;

    require_docker();
    let (g, pg) = (Garage::start(), Postgres::start());
    let shared = tempfile::tempdir().unwrap();
    let htpasswd = shared.path().join("htpasswd");
    crate::harness::htpasswd(&htpasswd, "admin", "admin-pw");
    let mut env = replica_env(&g, &pg);
    env.push(("REGISTRY_AUTH_HTPASSWD_REALM".into(), "wharf".into()));
    env.push((
        "REGISTRY_AUTH_HTPASSWD_PATH".into(),
        htpasswd.display().to_string(),
    ));
    let cluster = Cluster::start(&env, g);
    let config = shared.path().join("config.yml");
    std::fs::write(&config, "version: 0.1\n").unwrap();
    let c = Client::new();

    let secret = create_token(&config, &env, "ci-deploy", "team/*:pull,push", "90d");
    let docker_config = shared.path().join("docker");
    let login = output_with_stdin(
        Command::new("docker")
            .env("DOCKER_CONFIG", &docker_config)
            .args([
                "login",
                &cluster.front,
                "-u",
                "ci-deploy",
                "--password-stdin",
            ]),
        &secret,
    );
    assert!(login.status.success(), "{login:?}");
    let local = build_busybox_image(&unique("wharf-replica-token:"), &unique("replica"));
    let allowed = format!("{}/team/app:v1", cluster.front);
    let denied = format!("{}/other/x:v1", cluster.front);
    let push = |remote: &str| {
        run(Command::new("docker").args(["tag", &local, remote]));
        Command::new("docker")
            .env("DOCKER_CONFIG", &docker_config)
            .args(["push", remote])
            .output()
            .unwrap()
    };
    let pushed = push(&allowed);
    assert!(pushed.status.success(), "{pushed:?}");
    assert!(
        !push(&denied).status.success(),
        "a push outside the token's scope"
    );

    wharf_ok(&config, &env, &["token", "revoke", "ci-deploy"]);
    let refused = within(Duration::from_secs(1), || {
        cluster
            .replicas
            .iter()
            .all(|r| status(&c, r, "ci-deploy", &secret) == StatusCode::UNAUTHORIZED)
    });
    assert!(
        refused.is_some(),
        "a revoked token still works on a replica after 1 s"
    );
    assert!(
        !push(&allowed).status.success(),
        "docker with a revoked token"
    );

    let short = create_token(&config, &env, "short", "team/*:pull", "4s");
    for r in &cluster.replicas {
        assert_eq!(status(&c, r, "short", &short), StatusCode::OK);
    }
    std::thread::sleep(Duration::from_millis(4100));
    let expired = within(Duration::from_secs(1), || {
        cluster
            .replicas
            .iter()
            .all(|r| status(&c, r, "short", &short) == StatusCode::UNAUTHORIZED)
    });
    assert!(
        expired.is_some(),
        "an expired token still works on a replica"
    );
    let records = audit_records(&config, &env);
    assert_eq!(
        count(&records, "ci-deploy", "push", "team/app:v1"),
        1,
        "{records:#?}"
    );
    wharf_ok(&config, &env, &["audit", "verify"]);
    docker_rmi(&[&local, &allowed, &denied]);
}
