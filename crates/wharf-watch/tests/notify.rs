//! Notifications against real receivers: an HTTP server in the test for the webhook and
//! Slack, and Python's SMTP server for email; plus the watchtower environment names.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wharf_watch::notify::{Notifiers, NotifyError, NotifySettings, NotifyWhen, SmtpTls, Target};
use wharf_watch::report::{ContainerReport, Outcome, SessionReport};

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn report() -> SessionReport {
    SessionReport {
        started: 1_700_000_000,
        finished: 1_700_000_005,
        containers: vec![
            ContainerReport {
                name: "web".to_owned(),
                image: "registry.local/shop/web:1.4".to_owned(),
                old_digest: Some(OLD.to_owned()),
                new_digest: Some(NEW.to_owned()),
                outcome: Outcome::Updated,
                detail: None,
                host: None,
            },
            ContainerReport {
                name: "db".to_owned(),
                image: "postgres:16".to_owned(),
                old_digest: Some(OLD.to_owned()),
                new_digest: Some(OLD.to_owned()),
                outcome: Outcome::Fresh,
                detail: None,
                host: None,
            },
        ],
    }
}

fn quiet_report() -> SessionReport {
    let mut report = report();
    report.containers.remove(0);
    report
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn error_text(result: Result<NotifySettings, NotifyError>) -> String {
    match result {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(error) => error.to_string(),
    }
}

// ---- a real HTTP receiver ----

struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

async fn capture(
    State(tx): State<mpsc::UnboundedSender<Received>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let body = serde_json::from_slice(&body).expect("the notifier sent JSON");
    let _ = tx.send(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    "ok"
}

/// An HTTP server on a free port that answers every POST and hands over what it got.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().fallback(capture).with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("127.0.0.1:{}", address.port()), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the receiver got nothing within 10 s")
        .expect("the receiver stopped")
}

/// A port where nothing listens, for targets that must fail.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn assert_summary_line(text: &str) {
    assert!(
        text.contains("- web (registry.local/shop/web:1.4) updated: sha256:111111111111 → sha256:222222222222"),
        "{text}"
    );
    assert!(text.contains("1 updated, 0 failed"), "{text}");
    assert!(!text.contains("db (postgres:16)"), "{text}");
}

#[tokio::test]
async fn webhook_posts_the_report_as_json() {
    let (address, mut rx) = receiver().await;
    let mut settings = NotifySettings::default();
    settings
        .add_url(&format!(
            "generic+http://{address}/hooks/wharf?@X-Token=s3cret&source=watch"
        ))
        .unwrap();
    let notifiers = Notifiers::new(&settings).unwrap();

    let errors = notifiers.send(&report()).await;
    assert!(errors.is_empty(), "{errors:?}");

    let got = next(&mut rx).await;
    assert_eq!(got.path, "/hooks/wharf");
    assert_eq!(got.headers["x-token"], "s3cret");
    assert_eq!(got.headers["content-type"], "application/json");
    let web = &got.body["containers"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["image"], "registry.local/shop/web:1.4");
    assert_eq!(web["old_digest"], OLD);
    assert_eq!(web["new_digest"], NEW);
    assert_eq!(web["outcome"], "updated");
    assert_eq!(got.body["containers"][1]["outcome"], "fresh");
    assert_eq!(got.body["finished"], 1_700_000_005);
}

#[tokio::test]
async fn slack_url_posts_text_username_and_channel() {
    let (address, mut rx) = receiver().await;
    let mut settings = NotifySettings::default();
    settings
        .add_url(&format!(
            "slack+http://{address}/services/T1/B2/C3?channel=%23ops&username=wharf"
        ))
        .unwrap();
    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;
    assert!(errors.is_empty(), "{errors:?}");

    let got = next(&mut rx).await;
    assert_eq!(got.path, "/services/T1/B2/C3");
    assert_eq!(got.body["channel"], "#ops");
    assert_eq!(got.body["username"], "wharf");
    assert_summary_line(got.body["text"].as_str().unwrap());
}

#[tokio::test]
async fn slack_from_watchtower_environment() {
    let (address, mut rx) = receiver().await;
    let settings = NotifySettings::from_env(&env(&[
        ("WATCHTOWER_NOTIFICATIONS", "slack"),
        (
            "WATCHTOWER_NOTIFICATION_SLACK_HOOK_URL",
            &format!("http://{address}/hook"),
        ),
        (
            "WATCHTOWER_NOTIFICATION_SLACK_IDENTIFIER",
            "watchtower-prod",
        ),
        ("WATCHTOWER_NOTIFICATION_SLACK_CHANNEL", "#deploys"),
    ]))
    .unwrap();
    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;
    assert!(errors.is_empty(), "{errors:?}");

    let got = next(&mut rx).await;
    assert_eq!(got.path, "/hook");
    assert_eq!(got.body["username"], "watchtower-prod");
    assert_eq!(got.body["channel"], "#deploys");
    assert_summary_line(got.body["text"].as_str().unwrap());
}

#[tokio::test]
async fn slack_without_options_sends_only_text() {
    let (address, mut rx) = receiver().await;
    let mut settings = NotifySettings::default();
    settings
        .add_url(&format!("slack+http://{address}/x"))
        .unwrap();
    Notifiers::new(&settings).unwrap().send(&report()).await;
    let got = next(&mut rx).await;
    let keys: Vec<&String> = got.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text"]);
}

#[tokio::test]
async fn one_failing_target_does_not_stop_the_others() {
    let (address, mut rx) = receiver().await;
    let dead = closed_port().await;
    let mut settings = NotifySettings::default();
    settings
        .add_url(&format!(
            "slack+http://127.0.0.1:{dead}/services/T/B/SECRETTOKEN"
        ))
        .unwrap();
    settings
        .add_url(&format!("http://{address}/alive"))
        .unwrap();
    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;

    assert_eq!(next(&mut rx).await.path, "/alive");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(
        text.contains(&format!("slack http://127.0.0.1:{dead}")),
        "{text}"
    );
    assert!(
        !text.contains("SECRETTOKEN"),
        "the hook's secret path leaked: {text}"
    );
}

#[tokio::test]
async fn an_error_status_is_reported_with_the_servers_reason() {
    let app =
        Router::new().fallback(|| async { (axum::http::StatusCode::FORBIDDEN, "invalid_token") });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut settings = NotifySettings::default();
    settings
        .add_url(&format!("slack+http://127.0.0.1:{port}/services/T/B/C"))
        .unwrap();
    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(text.contains("403 Forbidden: invalid_token"), "{text}");
}

#[tokio::test]
async fn a_silent_target_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut settings = NotifySettings {
        timeout: Duration::from_millis(300),
        ..NotifySettings::default()
    };
    settings
        .add_url(&format!("http://127.0.0.1:{port}/slow"))
        .unwrap();
    let started = std::time::Instant::now();
    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[tokio::test]
async fn a_quiet_session_is_sent_only_when_asked() {
    // A dead target shows whether anything was attempted: trying fails.
    let dead = closed_port().await;
    let mut settings = NotifySettings::default();
    settings
        .add_url(&format!("http://127.0.0.1:{dead}/"))
        .unwrap();

    let notifiers = Notifiers::new(&settings).unwrap();
    assert!(!notifiers.wants(&quiet_report()));
    assert!(notifiers.send(&quiet_report()).await.is_empty());

    settings.when = NotifyWhen::Always;
    let notifiers = Notifiers::new(&settings).unwrap();
    assert_eq!(notifiers.send(&quiet_report()).await.len(), 1);

    settings.when = NotifyWhen::Failures;
    let notifiers = Notifiers::new(&settings).unwrap();
    assert!(!notifiers.wants(&report()), "an update without failures");
    let mut failed = report();
    failed.containers[0].outcome = Outcome::RolledBack;
    assert!(notifiers.wants(&failed));
}

// ---- a real SMTP server ----

const SMTP_SERVER: &str = r#"
import email, email.policy, json, os, sys, warnings
warnings.simplefilter("ignore")
out = sys.argv[1]
count = 0

def save(mail_from, rcpt_tos, data):
    global count
    count += 1
    msg = email.message_from_bytes(data, policy=email.policy.default)
    record = {"mail_from": mail_from, "rcpt_tos": rcpt_tos, "subject": str(msg["subject"]),
              "to": str(msg["to"]), "content_type": msg.get_content_type(), "body": msg.get_content()}
    path = os.path.join(out, "msg-%d.json" % count)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.rename(path + ".tmp", path)

try:
    import smtpd, asyncore
except ImportError:
    smtpd = None

if smtpd is not None:
    class Server(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            save(mailfrom, rcpttos, data)
    server = Server(("127.0.0.1", 0), None)
    print(server.socket.getsockname()[1], flush=True)
    asyncore.loop()
else:
    try:
        import asyncio
        from aiosmtpd.smtp import SMTP
    except ImportError:
        sys.exit(3)
    class Handler:
        async def handle_DATA(self, server, session, envelope):
            save(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
            return "250 OK"
    async def main():
        server = await asyncio.get_running_loop().create_server(lambda: SMTP(Handler()), "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()
    asyncio.run(main())
"#;

const SMTP_MISSING: &str = "the email tests need an SMTP server: python3 with the standard \
library's smtpd module (Python 3.11 and older, e.g. Debian bookworm's `apt-get install python3`), \
or on newer Pythons `apt-get install python3-aiosmtpd` (or `pip install aiosmtpd`)";

struct SmtpServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn smtp_server(name: &str) -> SmtpServer {
    let dir = std::env::temp_dir().join(format!("wharf-notify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SMTP_SERVER)
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {SMTP_MISSING}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Ok(port) = line.trim().parse() else {
        let status = child.wait().unwrap();
        panic!("the SMTP server did not start ({status}): {SMTP_MISSING}");
    };
    SmtpServer { child, port, dir }
}

/// The first message the server received, as the Python side decoded it.
async fn received_mail(dir: &Path) -> Value {
    let path = dir.join("msg-1.json");
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no message reached the SMTP server in 10 s");
}

#[tokio::test]
async fn email_from_watchtower_environment() {
    let server = smtp_server("env");
    let port = server.port.to_string();
    let settings = NotifySettings::from_env(&env(&[
        ("WATCHTOWER_NOTIFICATIONS", "email"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_FROM", "watch@example.com"),
        (
            "WATCHTOWER_NOTIFICATION_EMAIL_TO",
            "ops@example.com,dev@example.com",
        ),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER", "127.0.0.1"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER_PORT", &port),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SUBJECTTAG", "prod"),
        ("WATCHTOWER_NOTIFICATIONS_HOSTNAME", "docker-01"),
    ]))
    .unwrap();
    // Not port 25: STARTTLS is tried, and a server without it still gets the mail.
    let Target::Email(target) = &settings.targets[0] else {
        panic!("{settings:?}")
    };
    assert_eq!(target.tls, SmtpTls::Opportunistic);

    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;
    assert!(errors.is_empty(), "{errors:?}");

    let mail = received_mail(&server.dir).await;
    assert_eq!(
        mail["subject"],
        "[prod] wharf watch: 1 updated, 0 failed on docker-01"
    );
    assert_eq!(mail["mail_from"], "watch@example.com");
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["ops@example.com", "dev@example.com"])
    );
    assert_eq!(mail["content_type"], "text/plain");
    assert_summary_line(mail["body"].as_str().unwrap());
}

#[tokio::test]
async fn email_from_an_smtp_url_without_tls() {
    let server = smtp_server("url");
    let mut settings = NotifySettings {
        hostname: Some("edge".to_owned()),
        ..NotifySettings::default()
    };
    settings
        .add_url(&format!(
            "smtp://127.0.0.1:{}/?from=wharf@example.com&to=a@example.com&starttls=no",
            server.port
        ))
        .unwrap();
    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;
    assert!(errors.is_empty(), "{errors:?}");

    let mail = received_mail(&server.dir).await;
    assert_eq!(mail["subject"], "wharf watch: 1 updated, 0 failed on edge");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["a@example.com"]));
    assert_summary_line(mail["body"].as_str().unwrap());
}

#[tokio::test]
async fn email_that_requires_starttls_fails_against_a_plain_server() {
    let server = smtp_server("starttls");
    let mut settings = NotifySettings::default();
    settings
        .add_url(&format!(
            "smtp://127.0.0.1:{}/?from=wharf@example.com&to=a@example.com&starttls=yes",
            server.port
        ))
        .unwrap();
    let errors = Notifiers::new(&settings).unwrap().send(&report()).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]
        .to_string()
        .contains(&format!("email via 127.0.0.1:{}", server.port)));
}

// ---- settings ----

#[test]
fn nothing_configured_means_no_targets() {
    let settings = NotifySettings::from_env(&env(&[])).unwrap();
    assert!(settings.targets.is_empty());
    assert_eq!(settings.when, NotifyWhen::Noteworthy);
    assert_eq!(settings.timeout, Duration::from_secs(10));
    assert!(Notifiers::new(&settings).unwrap().is_empty());
}

#[test]
fn notification_urls_are_space_separated() {
    let settings = NotifySettings::from_env(&env(&[(
        "WATCHTOWER_NOTIFICATION_URL",
        "generic+https://hooks.example.com/a  slack://hooks.slack.com/services/T0/B0/XyZ\nsmtp://mail.example.com/?from=a@example.com&to=b@example.com",
    )]))
    .unwrap();
    let kinds: Vec<&str> = settings
        .targets
        .iter()
        .map(|t| match t {
            Target::Webhook(_) => "webhook",
            Target::Slack(_) => "slack",
            Target::Email(_) => "email",
            Target::Logger => "logger",
        })
        .collect();
    assert_eq!(kinds, ["webhook", "slack", "email"]);
}

fn only_target(url: &str) -> Target {
    let mut settings = NotifySettings::default();
    settings.add_url(url).unwrap();
    assert_eq!(settings.targets.len(), 1);
    settings.targets.remove(0)
}

#[test]
fn generic_urls() {
    let Target::Webhook(t) =
        only_target("generic+https://example.com/hook?a=1&@Authorization=Bearer%20x")
    else {
        panic!()
    };
    assert_eq!(t.url, "https://example.com/hook?a=1");
    assert_eq!(
        t.headers,
        [("Authorization".to_owned(), "Bearer x".to_owned())]
    );

    let Target::Webhook(t) = only_target("generic://example.com:8080/hook") else {
        panic!()
    };
    assert_eq!(t.url, "https://example.com:8080/hook");

    let Target::Webhook(t) = only_target("generic://example.com/hook?disabletls=yes") else {
        panic!()
    };
    assert_eq!(t.url, "http://example.com/hook");

    let Target::Webhook(t) = only_target("http://10.0.0.1/x") else {
        panic!()
    };
    assert_eq!(t.url, "http://10.0.0.1/x");
}

#[test]
fn slack_urls() {
    let hook = |url: &str| match only_target(url) {
        Target::Slack(t) => (t.url, t.username, t.channel),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        hook("slack://hooks.slack.com/services/T0AB/B0CD/XyZw?channel=ops"),
        (
            "https://hooks.slack.com/services/T0AB/B0CD/XyZw".to_owned(),
            None,
            Some("ops".to_owned())
        )
    );
    assert_eq!(
        hook("slack://Watchtower@T0AB/B0CD/XyZw"),
        (
            "https://hooks.slack.com/services/T0AB/B0CD/XyZw".to_owned(),
            Some("Watchtower".to_owned()),
            None
        )
    );
    assert_eq!(
        hook("slack://hook:T0AB-B0CD-XyZw@webhook?botname=wharf"),
        (
            "https://hooks.slack.com/services/T0AB/B0CD/XyZw".to_owned(),
            Some("wharf".to_owned()),
            None
        )
    );
    assert_eq!(
        hook("slack+https://chat.example.com/hooks/abc").0,
        "https://chat.example.com/hooks/abc"
    );
    assert_eq!(
        hook("Slack+HTTPS://chat.example.com/hooks/abc").0,
        "https://chat.example.com/hooks/abc",
        "schemes are case-insensitive"
    );
}

#[test]
fn smtp_urls() {
    let email = |url: &str| match only_target(url) {
        Target::Email(t) => t,
        other => panic!("{other:?}"),
    };
    let t = email("smtp://me%40example.com:p%40ss@mail.example.com:587/?from=me@example.com&to=a@example.com,b@example.com");
    assert_eq!(t.user.as_deref(), Some("me@example.com"));
    assert_eq!(t.password.as_deref(), Some("p@ss"));
    assert_eq!((t.host.as_str(), t.port), ("mail.example.com", 587));
    assert_eq!(t.from, "me@example.com");
    assert_eq!(t.to, ["a@example.com", "b@example.com"]);
    assert_eq!(t.tls, SmtpTls::Required);

    let plain = "smtp://relay/?from=a@example.com&to=b@example.com";
    assert_eq!(email(plain).port, 25);
    assert_eq!(email(plain).tls, SmtpTls::None);
    assert_eq!(
        email("smtp://u:p@relay/?from=a@example.com&to=b@example.com").tls,
        SmtpTls::Required,
        "a password is never sent in the clear unless asked for"
    );
    assert_eq!(
        email("smtp://u:p@relay:587/?from=a@example.com&to=b@example.com&starttls=no").tls,
        SmtpTls::None
    );
    assert_eq!(
        email("smtp://relay:587/?from=a@example.com&to=b@example.com").tls,
        SmtpTls::Opportunistic
    );
    assert_eq!(
        email("smtp://relay/?from=a@example.com&to=b@example.com&starttls=yes").tls,
        SmtpTls::Required
    );
    assert_eq!(
        email("smtp://relay:2525/?from=a@example.com&to=b@example.com&usestarttls=no").tls,
        SmtpTls::None
    );
    let t = email("smtps://relay/?from=a@example.com&to=b@example.com");
    assert_eq!((t.port, t.tls), (465, SmtpTls::Implicit));
}

#[test]
fn email_environment() {
    let settings = NotifySettings::from_env(&env(&[
        ("WATCHTOWER_NOTIFICATIONS", "email"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_FROM", "watch@example.com"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_TO", "ops@example.com"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER", "smtp.example.com"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER_USER", "watch"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER_PASSWORD", "hunter2"),
        (
            "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_TLS_SKIP_VERIFY",
            "true",
        ),
    ]))
    .unwrap();
    let Target::Email(t) = &settings.targets[0] else {
        panic!()
    };
    assert_eq!(t.port, 25, "watchtower's default port");
    assert_eq!(t.user.as_deref(), Some("watch"));
    assert_eq!(t.password.as_deref(), Some("hunter2"));
    assert!(t.skip_verify);
    assert_eq!(
        t.tls,
        SmtpTls::Required,
        "credentials are never sent in the clear"
    );
    assert_eq!(t.subject_tag, None);
}

#[test]
fn levels() {
    let when = |level: &str| {
        NotifySettings::from_env(&env(&[("WATCHTOWER_NOTIFICATIONS_LEVEL", level)]))
            .unwrap()
            .when
    };
    assert_eq!(when("debug"), NotifyWhen::Always);
    assert_eq!(when("trace"), NotifyWhen::Always);
    assert_eq!(when("info"), NotifyWhen::Noteworthy);
    assert_eq!(when("warn"), NotifyWhen::Failures);
    assert_eq!(when("ERROR"), NotifyWhen::Failures);
}

type Vars<'a> = &'a [(&'a str, &'a str)];

#[test]
fn bad_values_name_the_variable_and_what_is_expected() {
    // (environment, the variable the error must name, what it must say)
    let cases: &[(Vars, &str, &str)] = &[
        (
            &[("WATCHTOWER_NOTIFICATIONS_LEVEL", "loud")],
            "WATCHTOWER_NOTIFICATIONS_LEVEL",
            "expected debug",
        ),
        (
            &[("WATCHTOWER_NOTIFICATIONS", "msteams")],
            "WATCHTOWER_NOTIFICATIONS",
            "expected slack, email or shoutrrr",
        ),
        (
            &[("WATCHTOWER_NOTIFICATIONS", "shoutrrr")],
            "WATCHTOWER_NOTIFICATIONS",
            "WATCHTOWER_NOTIFICATION_URL",
        ),
        (
            &[("WATCHTOWER_NOTIFICATIONS", "slack")],
            "WATCHTOWER_NOTIFICATION_SLACK_HOOK_URL",
            "required",
        ),
        (
            &[
                ("WATCHTOWER_NOTIFICATIONS", "slack"),
                (
                    "WATCHTOWER_NOTIFICATION_SLACK_HOOK_URL",
                    "hooks.slack.com/x",
                ),
            ],
            "WATCHTOWER_NOTIFICATION_SLACK_HOOK_URL",
            "not a valid URL",
        ),
        (
            &[("WATCHTOWER_NOTIFICATIONS", "email")],
            "WATCHTOWER_NOTIFICATION_EMAIL_FROM",
            "required",
        ),
        (
            &[
                ("WATCHTOWER_NOTIFICATIONS", "email"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_FROM", "a@example.com"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_TO", "b@example.com"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER", "mail"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER_PORT", "70000"),
            ],
            "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_PORT",
            "\"70000\" is not a port; expected a number from 1 to 65535",
        ),
        (
            &[
                ("WATCHTOWER_NOTIFICATIONS", "email"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_FROM", "not an address"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_TO", "b@example.com"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER", "mail"),
            ],
            "WATCHTOWER_NOTIFICATION_EMAIL_FROM",
            "is not an email address",
        ),
        (
            &[
                ("WATCHTOWER_NOTIFICATIONS", "email"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_FROM", "a@example.com"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_TO", "b@example.com"),
                ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER", "mail"),
                (
                    "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_TLS_SKIP_VERIFY",
                    "maybe",
                ),
            ],
            "WATCHTOWER_NOTIFICATION_EMAIL_SERVER_TLS_SKIP_VERIFY",
            "expected true or false",
        ),
        (
            &[("WATCHTOWER_NOTIFICATION_URL", "discord://token@id")],
            "WATCHTOWER_NOTIFICATION_URL",
            "unsupported notification URL scheme \"discord\"",
        ),
        (
            &[("WATCHTOWER_NOTIFICATION_URL", "hooks.example.com/x")],
            "WATCHTOWER_NOTIFICATION_URL",
            "needs a scheme",
        ),
        (
            &[(
                "WATCHTOWER_NOTIFICATION_URL",
                "smtp://u:pw@mail:99999/?from=a@example.com&to=b@example.com",
            )],
            "WATCHTOWER_NOTIFICATION_URL",
            "expected smtp://",
        ),
        (
            &[(
                "WATCHTOWER_NOTIFICATION_URL",
                "smtp://mail/?to=b@example.com",
            )],
            "WATCHTOWER_NOTIFICATION_URL",
            "no from=",
        ),
        (
            &[("WATCHTOWER_NOTIFICATION_URL", "slack://just-one-token")],
            "WATCHTOWER_NOTIFICATION_URL",
            "not a Slack hook URL",
        ),
    ];
    for (vars, variable, expected) in cases {
        let text = error_text(NotifySettings::from_env(&env(vars)));
        assert!(
            text.starts_with(&format!("{variable}: ")),
            "{vars:?}: {text}"
        );
        assert!(text.contains(expected), "{vars:?}: {text}");
        assert!(!text.contains("pw@"), "a password leaked: {text}");
    }
}

#[test]
fn flag_errors_name_the_flag() {
    let mut settings = NotifySettings::default();
    let text = settings.add_url("teams://x").unwrap_err().to_string();
    assert!(
        text.starts_with("--notification-url: unsupported"),
        "{text}"
    );
}

#[test]
fn debug_output_hides_passwords_and_tokens() {
    let mut settings = NotifySettings::from_env(&env(&[
        ("WATCHTOWER_NOTIFICATIONS", "email slack"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_FROM", "a@example.com"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_TO", "b@example.com"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER", "mail"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER_USER", "watch"),
        ("WATCHTOWER_NOTIFICATION_EMAIL_SERVER_PASSWORD", "hunter2"),
        (
            "WATCHTOWER_NOTIFICATION_SLACK_HOOK_URL",
            "https://hooks.slack.com/services/T0/B0/SLACKSECRET",
        ),
    ]))
    .unwrap();
    settings
        .add_url("generic+https://example.com/h/PATHSECRET?@X-Key=HEADERSECRET&q=QUERYSECRET")
        .unwrap();
    settings
        .add_url("smtp://u:URLPASSWORD@mail/?from=a@example.com&to=b@example.com")
        .unwrap();
    let text = format!("{settings:?}");
    for secret in [
        "hunter2",
        "SLACKSECRET",
        "PATHSECRET",
        "HEADERSECRET",
        "QUERYSECRET",
        "URLPASSWORD",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("hooks.slack.com"), "{text}");
    assert!(text.contains("X-Key"), "{text}");
}
