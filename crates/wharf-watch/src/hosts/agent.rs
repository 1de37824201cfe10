//! `wharf watch agent`: on a Docker host with no inbound port, dial out to the controller
//! over HTTPS, upgrade to a WebSocket, and carry out what it asks on the local engine.
//! The agent decides nothing by itself: with the controller gone it only tries to
//! reconnect (backing off up to a minute), and its containers run on untouched.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::controller::{DEAD, PING};
use super::protocol::{self, FromAgent, ToAgent, CONNECT_PATH};
use crate::session::Watcher;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A connection that lasted this long was healthy: the next failure starts over at
/// the first back-off.
const STABLE: Duration = Duration::from_secs(30);

pub struct AgentOptions {
    /// `https://host:port` (or `wss://`) of the controller's `--agents-listen`.
    pub controller: String,
    /// The bearer token, read from `--token-file`.
    pub token: String,
    /// A CA bundle to trust for the controller, beyond the public roots.
    pub ca: Option<PathBuf>,
    /// What the engine is called in the hello (its DOCKER_HOST).
    pub engine: String,
}

/// Connect, serve, reconnect: never returns.
pub async fn run(watcher: Arc<Watcher>, options: AgentOptions) -> Result<(), String> {
    let url = ws_url(&options.controller)?;
    let connector = super::tls::connector(options.ca.as_deref())?;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        match connect_once(&watcher, &options, &url, &connector).await {
            Ok(why) => {
                tracing::warn!(controller = %url, reason = %why, "connection to the controller ended; reconnecting (containers run on untouched)")
            }
            Err(e) => {
                tracing::warn!(controller = %url, error = %e, retry_in = ?backoff, "cannot reach the controller; containers run on untouched")
            }
        }
        if started.elapsed() >= STABLE {
            backoff = FIRST_BACKOFF;
        }
        // Jitter, so that agents cut off together do not all come back in one instant.
        let jitter =
            Duration::from_millis(u64::from(rand_byte()) * backoff.as_millis() as u64 / 1024);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    getrandom::fill(&mut b).unwrap_or(());
    b[0]
}

/// `wss://host:port/v1/agents/connect` from the controller's base URL.
fn ws_url(controller: &str) -> Result<String, String> {
    let rest = controller
        .strip_prefix("https://")
        .or_else(|| controller.strip_prefix("wss://"))
        .ok_or_else(|| format!("--controller {controller}: give the controller's https:// address (agents speak TLS only, as their token travels on the connection)"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("--controller {controller} names no host"));
    }
    Ok(format!("wss://{host}{CONNECT_PATH}"))
}

/// One connection: TLS, the upgrade, the hello, then requests until it ends. `Ok`: it
/// was up and ended (why); `Err`: it never came up.
async fn connect_once(
    watcher: &Arc<Watcher>,
    options: &AgentOptions,
    url: &str,
    connector: &tokio_rustls::TlsConnector,
) -> Result<String, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let authority = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .ok_or("no host in the controller's URL")?;
    let host = request.uri().host().unwrap_or_default().to_owned();
    let port = request.uri().port_u16().unwrap_or(443);
    let value = format!("Bearer {}", options.token)
        .parse()
        .map_err(|_| "the token holds characters a header cannot carry")?;
    request.headers_mut().insert("authorization", value);
    let tcp = tokio::time::timeout(DEAD, tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| format!("connecting to {authority} timed out"))?
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("{host}: {e}"))?;
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS with {authority}: {e}"))?;
    let (socket, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 401 => {
                "the controller refused this agent's token (401): check --token-file against the controller's --agents-tokens".to_owned()
            }
            e => format!("WebSocket upgrade at {url}: {e}"),
        })?;
    let (mut sink, mut stream) = socket.split();
    let hello = FromAgent::Hello {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        engine: options.engine.clone(),
        containers: protocol::containers(watcher).await.unwrap_or_default(),
    };
    let text = serde_json::to_string(&hello).map_err(|e| e.to_string())?;
    sink.send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(controller = %url, "connected to the controller");
    let (tx, mut rx) = mpsc::channel::<FromAgent>(64);
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING);
        loop {
            let message = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => Message::Text(serde_json::to_string(&m).unwrap_or_default().into()),
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Default::default()),
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let why = loop {
        let next = match tokio::time::timeout(DEAD, stream.next()).await {
            Err(_) => break format!("silent for {} s", DEAD.as_secs()),
            Ok(None) => break "closed".to_owned(),
            Ok(Some(Err(e))) => break e.to_string(),
            Ok(Some(Ok(m))) => m,
        };
        let text = match next {
            Message::Text(t) => t,
            Message::Close(_) => break "closed by the controller".to_owned(),
            _ => continue,
        };
        let Ok(ToAgent::Request { id, command }) = serde_json::from_str::<ToAgent>(&text) else {
            tracing::warn!("unreadable request from the controller; ignored");
            continue;
        };
        // In a task of its own: a session outlives a dropped connection (never left half
        // done), and a quick request is not held up behind a long one.
        let (watcher, tx) = (watcher.clone(), tx.clone());
        tokio::spawn(async move {
            let reply = protocol::execute(&watcher, command).await;
            let _ = tx.send(FromAgent::Reply { id, reply }).await;
        });
    };
    writer.abort();
    Ok(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_is_reached_over_tls_only() {
        assert_eq!(
            ws_url("https://ctl.example:8443").unwrap(),
            "wss://ctl.example:8443/v1/agents/connect"
        );
        assert_eq!(
            ws_url("wss://127.0.0.1:9/").unwrap(),
            "wss://127.0.0.1:9/v1/agents/connect"
        );
        assert!(ws_url("http://ctl:80").unwrap_err().contains("https://"));
    }
}
