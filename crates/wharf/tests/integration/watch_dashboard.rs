//! The watch dashboard in Chromium (headless, through chromedriver): sign in with the API
//! token, see both hosts (the machine's engine and a second dockerd), click "Update now"
//! and "Roll back" and see the container's history change; and a form posted without
//! its CSRF token is refused.

use std::time::{Duration, Instant};

use crate::harness::dockerd::SecondEngine;
use crate::harness::*;
use crate::watch::*;
use crate::watch_agents::{Watching, TOKEN};
use crate::watch_hosts::{run_on, MACHINE_ENGINE};
use crate::webdriver::Browser;

/// Reloads until the page's text holds `text`.
fn wait_text(b: &Browser, base: &str, text: &str) -> String {
    let started = Instant::now();
    loop {
        let now = b.text();
        if now.contains(text) {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the dashboard never showed {text:?}: {now}"
        );
        std::thread::sleep(Duration::from_millis(300));
        b.goto(&format!("{base}/dashboard"));
    }
}

#[test]
fn dashboard_signs_in_shows_both_hosts_updates_and_rolls_back_in_chromium() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "dash", "apps/dash");
    let engine = SecondEngine::start();
    let (here, there) = (unique("wharf-dash-one-"), unique("wharf-dash-two-"));
    cleanup.containers.push(here.clone());
    docker_run(&registry, &["--name", &here, &image]);
    run_on(&registry, &engine, &["--name", &there, &image]);
    let v1_id = engine.inspect("{{.Image}}", &there);

    let api = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{api}");
    let config = registry.docker_config().display().to_string();
    let state = registry.dir.path().join("state").display().to_string();
    let watcher = Watching::start(
        registry.dir.path().join("dashboard.log"),
        &[
            ("DOCKER_CONFIG", &config),
            ("WATCHTOWER_HTTP_API_TOKEN", TOKEN),
            ("WHARF_WATCH_STATE_DIR", &state),
        ],
        &[
            "watch",
            "--interval",
            "24h",
            "--stop-timeout",
            "5s",
            "--rollback-grace",
            "2s",
            "--keep-previous",
            "2",
            "--host",
            &format!("one={MACHINE_ENGINE}"),
            "--host",
            &format!("two={}", engine.host()),
            "--registry-ca",
            &registry.cert.display().to_string(),
            "--dashboard",
            "--http-api-addr",
            &api,
            &here,
            &there,
        ],
    );
    watcher.wait_for("HTTP API listening", 1, Duration::from_secs(30));
    registry.push(&v2, "apps/dash:latest");

    let b = Browser::start();
    b.goto(&format!("{base}/dashboard"));
    assert!(
        b.text().contains("Sign in"),
        "signed out, the dashboard asks for a sign-in"
    );
    b.type_into("#token", TOKEN);
    b.click("#signin");
    let text = wait_text(&b, &base, "Signed in as");
    assert_eq!(b.count("#host-one"), 1, "host one is listed: {text}");
    assert_eq!(b.count("#host-two"), 1, "host two is listed: {text}");
    assert!(text.contains(&here) && text.contains(&there), "{text}");

    b.click(&format!("#update-two-{there}"));
    let text = wait_text(&b, &base, "Updated");
    assert_eq!(
        engine.inspect("{{.Image}}", &there),
        image_id(&v2),
        "{text}"
    );
    let history = b.source();
    assert!(
        history.contains("update "),
        "the history shows the update: {text}"
    );

    b.click(&format!("#rollback-two-{there}"));
    let text = wait_text(&b, &base, "rollback");
    assert_eq!(
        engine.inspect("{{.Image}}", &there),
        v1_id,
        "rolled back to the first image: {text}"
    );
    assert_eq!(engine.inspect("{{.State.Running}}", &there), "true");

    // The same browser's cookies, but a form without its CSRF token: refused, no change.
    let session = b.cookie("wharf_watch_session").expect("a session cookie");
    let csrf = b.cookie("wharf_watch_csrf").expect("a CSRF cookie");
    let refused = http_client()
        .post(format!("{base}/dashboard/action"))
        .header(
            "Cookie",
            format!("wharf_watch_session={session}; wharf_watch_csrf={csrf}"),
        )
        .form(&[
            ("action", "update"),
            ("host", "two"),
            ("container", there.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    assert!(refused.text().unwrap().contains("CSRF"));
    assert_eq!(
        engine.inspect("{{.Image}}", &there),
        v1_id,
        "nothing changed"
    );
    let page = http_client()
        .get(format!("{base}/dashboard"))
        .send()
        .unwrap();
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
}
