//! An agent (`wharf watch agent`) on a second Docker Engine, reaching its controller
//! (`wharf watch --agents-listen`) only by dialling out over HTTPS: the controller is
//! given no address for it. Pushes reach the controller over a wharf registry's event
//! stream; the agent carries out the update on its engine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::dockerd::SecondEngine;
use crate::harness::*;
use crate::watch::*;
use crate::watch_hosts::{run_on, wait_until_runs_on, MACHINE_ENGINE};

pub(crate) const TOKEN: &str = "agents-api-token-for-test";
const AGENT_TOKEN: &str = "edge-agent-token-0123456789";

/// A `wharf watch` process of the test, its log in a file.
pub(crate) struct Watching {
    log: PathBuf,
    proc: Option<Proc>,
    command: Vec<String>,
    env: Vec<(String, String)>,
}

impl Watching {
    pub(crate) fn start(log: PathBuf, env: &[(&str, &str)], args: &[&str]) -> Watching {
        let mut w = Watching {
            log,
            proc: None,
            command: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        w.launch();
        w
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(WHARF)
            .env_remove("WATCHTOWER_POLL_INTERVAL")
            .env("WHARF_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(&self.command)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
    }

    pub(crate) fn kill(&mut self) {
        self.proc = None;
    }

    pub(crate) fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `text` `times` times.
    pub(crate) fn wait_for(&self, text: &str, times: usize, limit: Duration) {
        let started = Instant::now();
        while self.log().matches(text).count() < times {
            assert!(
                started.elapsed() < limit,
                "never logged {text:?} {times} times within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The controller's TLS certificate and the agents' tokens file: (cert, key, tokens).
pub(crate) fn controller_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = self_signed(dir, "controller");
    let tokens = dir.join("agents");
    let hash = run(Command::new("sh").args([
        "-c",
        &format!("printf %s '{AGENT_TOKEN}' | sha256sum | cut -d' ' -f1"),
    ]));
    std::fs::write(&tokens, format!("edge sha256:{}\n", hash.trim())).unwrap();
    (cert, key, tokens)
}

/// The agent of the second engine, dialling `controller`.
pub(crate) fn start_agent(
    registry: &Registry,
    engine: &SecondEngine,
    controller: &str,
    cert: &Path,
    name: &str,
) -> Watching {
    let token_file = registry.dir.path().join("agent-token");
    std::fs::write(&token_file, format!("{AGENT_TOKEN}\n")).unwrap();
    let config = registry.docker_config().display().to_string();
    let state = registry
        .dir
        .path()
        .join("agent-state")
        .display()
        .to_string();
    Watching::start(
        registry.dir.path().join("agent.log"),
        &[
            ("DOCKER_CONFIG", &config),
            ("WHARF_WATCH_STATE_DIR", &state),
        ],
        &[
            "watch",
            "agent",
            "--controller",
            controller,
            "--token-file",
            &token_file.display().to_string(),
            "--controller-ca",
            &cert.display().to_string(),
            "--host",
            &engine.host(),
            "--registry-ca",
            &registry.cert.display().to_string(),
            "--stop-timeout",
            "5s",
            "--rollback-grace",
            "2s",
            "--keep-previous",
            "2",
            name,
        ],
    )
}

#[test]
fn agents_dial_out_update_on_push_and_leave_containers_alone_without_the_controller() {
    let registry = Registry::start();
    let mut cleanup = Cleanup::default();
    let (_, v2, image) = v1_pushed(&registry, &mut cleanup, "agent", "apps/edge");
    let engine = SecondEngine::start();
    let name = unique("wharf-agent-");
    run_on(&registry, &engine, &["--name", &name, &image]);

    let dir = tempfile::tempdir().unwrap();
    let (cert, key, tokens) = controller_files(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = registry.docker_config().display().to_string();
    let state = dir.path().join("state").display().to_string();
    let api = format!("127.0.0.1:{}", free_port());
    // The controller watches only its own engine's containers of this name (none):
    // everything on the second engine reaches it through the agent.
    let mut controller = Watching::start(
        dir.path().join("controller.log"),
        &[
            ("DOCKER_CONFIG", &config),
            ("WATCHTOWER_HTTP_API_TOKEN", TOKEN),
            ("WHARF_WATCH_STATE_DIR", &state),
        ],
        &[
            "watch",
            "--interval",
            "24h",
            "--host",
            &format!("local={MACHINE_ENGINE}"),
            "--agents-listen",
            &listen,
            "--agents-tokens",
            &tokens.display().to_string(),
            "--agents-tls-cert",
            &cert.display().to_string(),
            "--agents-tls-key",
            &key.display().to_string(),
            "--events-from",
            &registry.host(),
            "--registry-ca",
            &registry.cert.display().to_string(),
            "--http-api-update",
            "--http-api-addr",
            &api,
            &name,
        ],
    );
    controller.wait_for("subscribed to registry events", 1, Duration::from_secs(30));
    let agent = start_agent(
        &registry,
        &engine,
        &format!("https://{listen}"),
        &cert,
        &name,
    );
    controller.wait_for("agent connected", 1, Duration::from_secs(30));
    assert!(
        controller.log().contains("agent=edge"),
        "the token names the agent: {}",
        controller.log()
    );

    // A push: the controller hears it and has the agent update its container.
    registry.push(&v2, "apps/edge:latest");
    let took = wait_until_runs_on(
        &engine,
        &name,
        &image_id(&v2),
        Duration::from_secs(10),
        &|| format!("controller:\n{}\nagent:\n{}", controller.log(), agent.log()),
    );
    eprintln!("push to running through the agent: {took:?}");
    assert!(agent
        .log()
        .contains("push event: checking the containers that use it"));

    // The controller goes away: the agent retries, and its containers run on untouched.
    let before = engine.inspect("{{.Id}} {{.State.StartedAt}} {{.Image}}", &name);
    controller.kill();
    agent_waits_for(&agent, "containers run on untouched");
    let v3 = serving_image(&mut cleanup, "agent3", &[]);
    registry.push(&v3, "apps/edge:latest");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        engine.inspect("{{.Id}} {{.State.StartedAt}} {{.Image}}", &name),
        before,
        "with the controller down, the agent changes nothing"
    );
    assert_eq!(engine.inspect("{{.State.Running}}", &name), "true");

    // Back: the agent reconnects by itself, and the controller's check updates it.
    controller.restart();
    controller.wait_for("agent connected", 2, Duration::from_secs(90));
    let report: serde_json::Value = http_client()
        .post(format!("http://{api}/v1/update"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let line = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name.as_str() && c["host"] == "edge")
        .unwrap_or_else(|| {
            panic!("the agent's container is in the controller's report, named by host: {report:#}")
        });
    assert_eq!(line["outcome"], "updated", "{report:#}");
    assert_eq!(engine.inspect("{{.Image}}", &name), image_id(&v3));
}

fn agent_waits_for(agent: &Watching, text: &str) {
    agent.wait_for(text, 1, Duration::from_secs(30));
}

/// A wrong token is refused at the upgrade, and the agent says what to check.
#[test]
fn agents_with_a_wrong_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, tokens) = controller_files(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let _controller = Watching::start(
        dir.path().join("controller.log"),
        &[("WATCHTOWER_HTTP_API_TOKEN", TOKEN)],
        &[
            "watch",
            "--interval",
            "24h",
            "--host",
            MACHINE_ENGINE,
            "--agents-listen",
            &listen,
            "--agents-tokens",
            &tokens.display().to_string(),
            "--agents-tls-cert",
            &cert.display().to_string(),
            "--agents-tls-key",
            &key.display().to_string(),
            "--http-api-update",
            "--http-api-addr",
            &format!("127.0.0.1:{}", free_port()),
            "no-such-container",
        ],
    );
    _controller.wait_for("listening for agents", 1, Duration::from_secs(30));
    let token_file = dir.path().join("wrong");
    std::fs::write(&token_file, "not-the-token").unwrap();
    let agent = Watching::start(
        dir.path().join("agent.log"),
        &[],
        &[
            "watch",
            "agent",
            "--controller",
            &format!("https://{listen}"),
            "--token-file",
            &token_file.display().to_string(),
            "--controller-ca",
            &cert.display().to_string(),
            "--host",
            MACHINE_ENGINE,
            "no-such-container",
        ],
    );
    agent.wait_for(
        "refused this agent's token (401)",
        1,
        Duration::from_secs(30),
    );
}
