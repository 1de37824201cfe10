//! A server put together from its configuration, in the order its pieces need each other:
//! the store; auth, metrics and the registry over it; the state requests share; then the
//! background jobs; then the listeners.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::Auth;
use crate::config::Config;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::registry::events::{Events, Source};
use crate::registry::Registry;
use crate::store::{StorageConfig, Store};

/// How long shutdown waits for in-flight requests, unless `http.draintimeout` says otherwise.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The state a configuration gives requests, without serving it.
pub async fn state_for(config: &Config) -> anyhow::Result<Arc<AppState>> {
    Ok(Wiring::new(config).state().await?.0)
}

/// Serve `config` until `shutdown` resolves, then drain.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let wiring = Wiring::new(&config);
    let root = config.storage.local_root();
    std::fs::create_dir_all(root).with_context(|| {
        format!(
            "cannot create storage root {}: choose another with --root",
            root.display()
        )
    })?;
    let (state, store) = wiring.state().await?;
    let (listener, tls) = wiring.listen().await?;
    wiring.log_listening(&listener, &state, tls.is_some())?;
    wiring.spawn_jobs(&state)?;
    let events = state.registry.events().cloned();
    let (closing, closed) = tokio::sync::watch::channel(false);
    wiring.spawn_health_check(&state, store);
    if let Some(debug) = config.http.debug.clone() {
        let mut closed = closed.clone();
        let stop = async move {
            let _ = closed.wait_for(|c| *c).await;
        };
        let metrics = state.metrics.clone();
        crate::debug::serve(debug, metrics, state.health.clone(), stop).await?;
    }
    let drain = config.http.drain_timeout.unwrap_or(DRAIN_TIMEOUT);
    // Event streams never end by themselves: end them when shutdown begins, or they
    // would hold the drain open until it times out.
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
        if let Some(e) = events {
            e.close();
        }
    };
    let registry = state.registry.clone();
    let router = super::router(state, &config.ui);
    let served = super::serve_listener(listener, router, tls, drain, shutdown).await;
    // The pulls the drained requests counted, before the process ends.
    registry.flush_pulls().await;
    served
}

/// Builds each piece of a server from one configuration.
pub struct Wiring<'a> {
    config: &'a Config,
    /// The review-queue workers' figures: registered with the metrics, handed to the jobs.
    queue_metrics: Arc<crate::registry::gc_queue::QueueMetrics>,
}

impl<'a> Wiring<'a> {
    pub fn new(config: &'a Config) -> Wiring<'a> {
        Wiring {
            config,
            queue_metrics: Arc::default(),
        }
    }

    /// Everything a request needs: the store opened, the registry over it, auth; and the
    /// store, for the health check that probes it.
    pub async fn state(&self) -> anyhow::Result<(Arc<AppState>, Store)> {
        let config = self.config;
        let store = self.store().await?;
        let auth = self.auth(&store)?;
        let extra_headers = self.extra_headers()?;
        let upload_secret = self.upload_secret()?;
        let (registry, metrics) = self.registry(store.clone()).await?;
        let state = Arc::new(AppState {
            registry: Arc::new(registry),
            metrics,
            auth,
            upload_secret,
            base_url: config.http.host.clone(),
            tls: config.http.tls.is_some(),
            extra_headers,
            access_log: config.log.access_log,
            health: Arc::default(),
        });
        Ok((state, store))
    }

    async fn store(&self) -> anyhow::Result<Store> {
        let storage = &self.config.storage;
        if let crate::store::StorageConfig::Filesystem { root } = storage {
            crate::store::fs::check_root(root, self.config.read_only)?;
        }
        crate::store::open(storage, self.config.database.as_ref(), true)
            .await
            .with_context(|| format!("cannot open storage {}", storage.describe()))
    }

    fn auth(&self, store: &Store) -> anyhow::Result<Auth> {
        let config = self.config;
        let mut auth = Auth::new(
            config.auth.as_ref(),
            config.access.clone(),
            config.http.secret.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        if let Some(identity) = &store.identity {
            auth.use_tokens(identity.clone());
        }
        let auth = match &config.ldap {
            Some((ldap, realm)) => auth
                .with_ldap(ldap.clone(), realm)
                .map_err(anyhow::Error::msg)?,
            None => auth,
        };
        #[allow(unused_mut)] // mutated only with the postgres feature
        let mut auth = auth
            .with_oidc(
                config.oidc.clone(),
                config.workload.clone(),
                "Registry Realm",
            )
            .map_err(anyhow::Error::msg)?;
        #[cfg(feature = "postgres")]
        if let Some(db) = &config.database {
            auth.share_failures(Arc::new(crate::store::postgres::open_failures(db)?));
            return Ok(auth);
        }
        Ok(auth)
    }

    fn extra_headers(&self) -> anyhow::Result<Vec<(http::HeaderName, http::HeaderValue)>> {
        self.config
            .http
            .headers
            .iter()
            .map(|(k, v)| {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .with_context(|| format!("http.headers: {k:?} is not a header name"))?;
                let value = http::HeaderValue::from_str(v)
                    .with_context(|| format!("http.headers.{k}: {v:?} is not a header value"))?;
                Ok((name, value))
            })
            .collect()
    }

    fn upload_secret(&self) -> anyhow::Result<Vec<u8>> {
        match &self.config.http.secret {
            Some(s) => Ok(s.as_bytes().to_vec()),
            None if !matches!(self.config.storage, StorageConfig::Filesystem { .. }) => {
                // Shared storage means replicas, and registry:2's trap: each would sign upload
                // locations with its own key and refuse the others'.
                tracing::warn!(
                    "http.secret is not set: this process signs upload locations with a random key, \
                     so replicas behind one load balancer will reject each other's uploads; \
                     set the same http.secret (REGISTRY_HTTP_SECRET) on every replica"
                );
                random_secret()
            }
            None => random_secret(),
        }
    }

    /// The registry's layers around `store`, as the configuration asks, and the metrics
    /// that count what it does (the collectors of its figures registered here).
    async fn registry(&self, store: Store) -> anyhow::Result<(Registry, Arc<Metrics>)> {
        let config = self.config;
        let mut metrics = Metrics::new();
        if let Some(state) = &store.state {
            let runs = crate::registry::reports::StoredRuns {
                records: state.clone(),
            };
            metrics.add_collector(Arc::new(runs));
        }
        let proxy = match &config.proxy {
            Some(p) => Some(crate::registry::proxy::Proxy::new(p).context("proxy:")?),
            None => None,
        };
        if let Some(p) = &proxy {
            metrics.add_collector(p.stats.clone());
            p.check_credentials();
        }
        if store.meta.review_queue().is_some() {
            metrics.add_collector(self.queue_metrics.clone());
        }
        let replication = crate::registry::replication::Replication::new(&config.replication)
            .context("replication:")?;
        if let Some(r) = &replication {
            metrics.add_collector(r.status.clone());
        }
        let trust = crate::registry::trust::TrustRules::load(&config.trust).context("trust:")?;
        if let Some(t) = &trust {
            metrics.add_collector(t.metrics.clone());
        }
        let metrics = Arc::new(metrics);
        let events = self.events(&store, metrics.clone()).await?;
        let rules = crate::registry::Rules {
            delete_enabled: config.delete_enabled,
            read_only: config.read_only,
        };
        let audit = crate::registry::audit::Audit::from_config(&config.audit, &store);
        let registry = Registry::builder(store)
            .audit(audit)
            .governance(Arc::new(config.governance.clone()))
            .rules(rules)
            .proxy(proxy)
            .events(events)
            .replication(replication)
            .trust(trust)
            .build();
        Ok((registry, metrics))
    }

    async fn events(
        &self,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Arc<Events>>> {
        let config = self.config;
        if !config.event_log {
            tracing::info!("notifications.eventlog is false: no event log, no /v2/_events");
            return Ok(None);
        }
        // Without a store that keeps state (S3), the event log stays under the local root.
        let wharf_dir = crate::store::fs::Layout::new(config.storage.local_root()).wharf_dir();
        let events_dir = wharf_dir.join("events");
        // With a database, the log is its table, written in the changes' transactions.
        let in_transaction = store.events.is_some();
        let log: Arc<dyn crate::store::state::EventLog> = match (&store.events, &store.state) {
            (Some(events), _) => events.clone(),
            (None, Some(state)) => state.clone(),
            (None, None) => Arc::new(crate::store::fs::FsState::new(wharf_dir)),
        };
        let source = Source {
            addr: format!(
                "{}:{}",
                crate::registry::audit::hostname(),
                config.addr.port()
            ),
            instance_id: uuid::Uuid::new_v4().to_string(),
        };
        match Events::open(log, config.notifications.clone(), source, metrics).await {
            Ok(events) => Ok(Some(Arc::new(
                events
                    .recorded_in_transaction(in_transaction)
                    .include_references(config.include_references),
            ))),
            // A read-only store can still be served, without events, unless webhooks are wanted.
            Err(e) if config.notifications.is_empty() => {
                tracing::warn!(error = %e, dir = %events_dir.display(), "no event log: /v2/_events is off");
                Ok(None)
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "cannot open the event log in {} that notifications.endpoints need",
                events_dir.display()
            ))),
        }
    }

    /// Background jobs over the registry (upload purging, scheduled collection, retention,
    /// the proxy's figures in the log), and its event deliveries.
    fn spawn_jobs(&self, state: &AppState) -> anyhow::Result<()> {
        let config = self.config;
        let schedules = crate::registry::jobs::Schedules {
            purging: config.upload_purging.clone(),
            gc: config.gc.clone(),
            proxy: config.proxy.clone(),
            retention: config
                .governance
                .retention
                .as_ref()
                .and_then(|r| r.schedule),
            queue_metrics: Some(self.queue_metrics.clone()),
        };
        crate::registry::jobs::spawn(&state.registry, schedules);
        if let Some(e) = state.registry.events() {
            e.start()?;
        }
        // A read-only registry has nothing new to send, and cannot store what sync fetches.
        if let Some(r) = state.registry.replication().filter(|_| !config.read_only) {
            r.start(&state.registry);
        }
        Ok(())
    }

    /// `health.storagedriver`: probe the storage on a schedule.
    fn spawn_health_check(&self, state: &AppState, store: Store) {
        let Some(check) = self.config.health.clone() else {
            return;
        };
        let probe = match &self.config.storage {
            StorageConfig::Filesystem { root } => crate::debug::Probe {
                name: "storagedriver_filesystem".into(),
                root: Some(root.clone()),
                store: self.config.database.as_ref().map(|_| store),
            },
            StorageConfig::S3 { .. } => crate::debug::Probe {
                name: "storagedriver_s3".into(),
                root: None,
                store: Some(store),
            },
        };
        tokio::spawn(crate::debug::check_storage(
            check,
            probe,
            state.health.clone(),
            state.metrics.clone(),
        ));
    }

    /// The API's listener, with its TLS acceptor when wharf terminates TLS itself.
    async fn listen(&self) -> anyhow::Result<(TcpListener, Option<TlsAcceptor>)> {
        let config = self.config;
        let tls = match &config.http.tls {
            Some(t) => Some(crate::tls::acceptor(t).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let listener = TcpListener::bind(config.addr).await.with_context(|| {
            format!(
                "cannot listen on {}: is another registry running? choose another with --addr",
                config.addr
            )
        })?;
        Ok((listener, tls))
    }

    fn log_listening(
        &self,
        listener: &TcpListener,
        state: &AppState,
        tls: bool,
    ) -> anyhow::Result<()> {
        let config = self.config;
        tracing::info!(
            addr = %listener.local_addr()?,
            root = %config.storage.local_root().display(),
            tls,
            auth = state.auth.enabled(),
            delete_enabled = config.delete_enabled,
            "wharf registry listening"
        );
        if let Some(db) = &config.database {
            tracing::info!(database = %db.describe(), "metadata in PostgreSQL");
        }
        for u in config.proxy.iter().flat_map(|p| &p.upstreams) {
            let prefix = if u.prefix.is_empty() {
                "(every repository)"
            } else {
                u.prefix.as_str()
            };
            tracing::info!(prefix, upstream = %u.remoteurl, ttl_secs = u.ttl.as_secs(), "pull-through cache");
        }
        Ok(())
    }
}

fn random_secret() -> anyhow::Result<Vec<u8>> {
    let mut random = vec![0u8; 32];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(random)
}
