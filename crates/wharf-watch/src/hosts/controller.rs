//! The controller's side of agents (`wharf watch --agents-listen ADDR`): a TLS listener
//! whose one route upgrades to a WebSocket once the agent's token checks. Tokens are
//! known only by their SHA-256 (`--agents-tokens FILE`, lines `NAME sha256:HEX`), compared
//! in constant time; the matching line names the agent. While connected, an agent is one
//! more host of the fleet: commands go out as requests and come back as replies.
//!
//! Why a WebSocket rather than HTTP/2 streaming: one connection carries both directions
//! (requests down, replies and pings up) with message framing and ping/pong built in, it
//! passes HTTP/1.1 proxies and load balancers that do not speak HTTP/2 to the back end,
//! and axum serves it on the same stack as the rest of the watch API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};
use wharf_oci::sync::lock;

use super::protocol::{Command, ContainerInfo, FromAgent, Reply, ToAgent, CONNECT_PATH};
use super::HostStatus;
use crate::report::{ContainerReport, Outcome, SessionReport};

/// How often each side pings; a connection silent for `DEAD` is closed.
pub const PING: Duration = Duration::from_secs(15);
pub const DEAD: Duration = Duration::from_secs(45);
/// How long a session on an agent may take before the controller stops waiting.
const SESSION_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Agents' messages are reports and container lists: bounded.
const MAX_MESSAGE: usize = 16 << 20;

/// One connected agent.
struct Conn {
    generation: u64,
    tx: mpsc::Sender<ToAgent>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    containers: Mutex<Vec<ContainerInfo>>,
    engine: String,
    peer: SocketAddr,
}

pub struct Agents {
    /// Every agent a token names, connected or not.
    known: Vec<(String, [u8; 32])>,
    live: Mutex<HashMap<String, Arc<Conn>>>,
    next: AtomicU64,
}

/// `sha256:HEX` of a token, as the tokens file holds it.
pub fn token_hash(token: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(token.trim().as_bytes()))
    )
}

impl Agents {
    /// The tokens file: `NAME sha256:HEX` a line (`#` comments); make a line with
    /// `printf %s "$TOKEN" | sha256sum`.
    pub fn from_file(path: &Path) -> Result<Agents, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --agents-tokens {}: {e}", path.display()))?;
        let mut known = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                format!("{}:{}: expected `NAME sha256:<64 hex digits>` (the SHA-256 of the agent's token, as `printf %s \"$TOKEN\" | sha256sum` prints it)", path.display(), i + 1)
            };
            let (name, hash) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let hash = hash.trim();
            let hex_part = hash.strip_prefix("sha256:").unwrap_or(hash);
            let bytes: [u8; 32] = hex::decode(hex_part)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?;
            if known.iter().any(|(n, _): &(String, [u8; 32])| n == name) {
                return Err(format!(
                    "{}:{}: agent {name} is named twice",
                    path.display(),
                    i + 1
                ));
            }
            known.push((name.to_owned(), bytes));
        }
        if known.is_empty() {
            return Err(format!("--agents-tokens {} names no agent", path.display()));
        }
        Ok(Agents {
            known,
            live: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        })
    }

    /// The agent whose token this is; every known hash is compared, in constant time.
    fn identify(&self, token: &str) -> Option<String> {
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let mut found = None;
        for (name, hash) in &self.known {
            if bool::from(presented.ct_eq(hash)) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Listen on `addr` with TLS and serve agents until the process ends.
    pub async fn listen(
        self: &Arc<Self>,
        addr: &str,
        cert: &Path,
        key: &Path,
    ) -> Result<SocketAddr, String> {
        let acceptor = super::tls::acceptor(cert, key)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for agents: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let router = self.router();
        tokio::spawn(super::engines::serve_tls(listener, acceptor, router));
        tracing::info!(%local, "listening for agents");
        Ok(local)
    }

    fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(CONNECT_PATH, get(connect))
            .with_state(self.clone())
    }

    /// Send `command` to the agent `name` and wait for its reply.
    async fn request(
        &self,
        name: &str,
        command: Command,
        limit: Duration,
    ) -> Result<Reply, String> {
        let conn = lock(&self.live)
            .get(name)
            .cloned()
            .ok_or_else(|| format!("agent {name} is not connected"))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        if conn
            .tx
            .send(ToAgent::Request { id, command })
            .await
            .is_err()
        {
            lock(&conn.pending).remove(&id);
            return Err(format!("agent {name} disconnected"));
        }
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(format!("agent {name} disconnected before it answered")),
            Err(_) => {
                lock(&conn.pending).remove(&id);
                Err(format!(
                    "agent {name} did not answer within {} s",
                    limit.as_secs()
                ))
            }
        }
    }

    /// `command` on every agent (or the one named), side by side. An agent that is not
    /// connected, or drops, gives a failed "(agent)" line, except for a push: an absent
    /// agent is told nothing, and catches up on its next check.
    pub async fn everywhere(
        &self,
        command: &Command,
        only: Option<&str>,
    ) -> Vec<(String, Option<SessionReport>)> {
        let names: Vec<String> = self
            .known
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| only.is_none_or(|o| o == n))
            .collect();
        let quiet_if_absent = matches!(command, Command::Pushed { .. });
        let asks = names.into_iter().map(|name| async move {
            let connected = lock(&self.live).contains_key(&name);
            if !connected && quiet_if_absent {
                return (name, None);
            }
            let report = match self.request(&name, command.clone(), SESSION_LIMIT).await {
                Ok(Reply::Report(r)) => Some(r),
                Ok(Reply::Error(e)) | Err(e) => Some(unreachable(&e)),
                Ok(_) => None,
            };
            (name, report)
        });
        futures::future::join_all(asks).await
    }

    /// Every known agent, connected or not, with what it last said it runs.
    pub async fn status(&self) -> Vec<HostStatus> {
        let live = lock(&self.live).clone();
        self.known
            .iter()
            .map(|(name, _)| match live.get(name) {
                Some(c) => HostStatus {
                    name: name.clone(),
                    kind: "agent",
                    url: format!("{} (agent at {})", c.engine, c.peer),
                    connected: true,
                    detail: None,
                    containers: lock(&c.containers).clone(),
                },
                None => HostStatus {
                    name: name.clone(),
                    kind: "agent",
                    url: String::new(),
                    connected: false,
                    detail: Some("not connected".into()),
                    containers: Vec::new(),
                },
            })
            .collect()
    }

    /// Serve one agent's connection until it ends.
    async fn attach(self: Arc<Self>, name: String, peer: SocketAddr, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::channel::<ToAgent>(64);
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let first = tokio::time::timeout(DEAD, stream.next()).await;
        let Ok(Some(Ok(Message::Text(text)))) = first else {
            tracing::warn!(agent = %name, %peer, "agent connected but sent no hello; closed");
            return;
        };
        let Ok(FromAgent::Hello {
            version,
            engine,
            containers,
        }) = serde_json::from_str(&text)
        else {
            tracing::warn!(agent = %name, %peer, "agent's first message is not a hello; closed");
            return;
        };
        let conn = Arc::new(Conn {
            generation,
            tx,
            pending: Mutex::new(HashMap::new()),
            containers: Mutex::new(containers),
            engine,
            peer,
        });
        // A reconnecting agent replaces its old connection, which may not have died yet.
        lock(&self.live).insert(name.clone(), conn.clone());
        tracing::info!(agent = %name, %peer, %version, "agent connected");
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
        let why = self.read(&name, &conn, &mut stream).await;
        writer.abort();
        let mut live = lock(&self.live);
        if live.get(&name).is_some_and(|c| c.generation == generation) {
            live.remove(&name);
        }
        drop(live);
        // Dropping the waiting senders tells every pending request the agent is gone.
        lock(&conn.pending).clear();
        tracing::warn!(agent = %name, %peer, reason = %why, "agent disconnected");
    }

    /// Replies and updates from the agent, until it goes or falls silent.
    async fn read(
        &self,
        name: &str,
        conn: &Conn,
        stream: &mut futures::stream::SplitStream<WebSocket>,
    ) -> String {
        loop {
            let next = match tokio::time::timeout(DEAD, stream.next()).await {
                Err(_) => return format!("silent for {} s", DEAD.as_secs()),
                Ok(None) => return "closed".into(),
                Ok(Some(Err(e))) => return e.to_string(),
                Ok(Some(Ok(m))) => m,
            };
            let text = match next {
                Message::Text(t) => t,
                Message::Close(_) => return "closed by the agent".into(),
                _ => continue,
            };
            match serde_json::from_str::<FromAgent>(&text) {
                Ok(FromAgent::Reply { id, reply }) => {
                    if let Reply::Containers(list) = &reply {
                        *lock(&conn.containers) = list.clone();
                    }
                    if let Some(waiting) = lock(&conn.pending).remove(&id) {
                        let _ = waiting.send(reply);
                    }
                }
                Ok(FromAgent::Hello { containers, .. }) => *lock(&conn.containers) = containers,
                Err(e) => {
                    tracing::warn!(agent = %name, error = %e, "unreadable message from agent; ignored")
                }
            }
        }
    }

    /// Whether a token names agent `name`.
    pub fn knows(&self, name: &str) -> bool {
        self.known.iter().any(|(n, _)| n == name)
    }

    /// `command` on agent `name`, for as long as a session may take.
    pub async fn ask(&self, name: &str, command: Command) -> Result<Reply, String> {
        self.request(name, command, SESSION_LIMIT).await
    }

    /// Refresh what each connected agent runs (the dashboard's lists).
    pub async fn refresh(&self) {
        let names: Vec<String> = lock(&self.live).keys().cloned().collect();
        let asks = names
            .iter()
            .map(|n| self.request(n, Command::Containers, Duration::from_secs(10)));
        futures::future::join_all(asks).await;
    }
}

fn unreachable(detail: &str) -> SessionReport {
    let now = super::now();
    SessionReport {
        started: now,
        finished: now,
        containers: vec![ContainerReport {
            name: "(agent)".into(),
            image: String::new(),
            old_digest: None,
            new_digest: None,
            outcome: Outcome::Failed,
            detail: Some(detail.to_owned()),
            host: None,
        }],
    }
}

async fn connect(
    State(agents): State<Arc<Agents>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(name) = (!token.is_empty())
        .then(|| agents.identify(token))
        .flatten()
    else {
        tracing::warn!(%peer, "agent refused: missing or unknown token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or unknown agent token: the agent sends Authorization: Bearer <the token in its --token-file>, whose SHA-256 the controller's --agents-tokens file lists\n",
        )
            .into_response();
    };
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| agents.attach(name, peer, socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_known_by_their_hash_and_name_the_agent() {
        let dir = std::env::temp_dir().join(format!("wharf-agents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        let line = format!("# agents\nedge-1 {}\n", token_hash("s3cret"));
        std::fs::write(&file, line).unwrap();
        let agents = Agents::from_file(&file).unwrap();
        assert_eq!(agents.identify("s3cret").as_deref(), Some("edge-1"));
        assert_eq!(agents.identify("s3cret\n").as_deref(), Some("edge-1"));
        assert_eq!(agents.identify("other"), None);
        std::fs::write(&file, "edge-1 sha256:abcd\n").unwrap();
        let Err(e) = Agents::from_file(&file) else {
            panic!("a short hash was accepted")
        };
        assert!(e.contains("sha256sum"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
