//! Integration tests: the real `wharf` binary driven over HTTP and by real clients
//! (docker, skopeo, podman, the OCI conformance suite, Distribution 2.8.2).

mod harness;

mod api;
mod auth;
mod client_cli;
mod client_copy;
mod client_copy_auth;
mod client_tar;
mod clients;
mod compat;
mod conformance;
mod database;
mod database_gc_queue_races;
mod database_gc_queues;
mod database_races;
mod database_s3;
mod events;
mod governance;
mod http_edges;
mod image;
mod lifecycle;
mod lifecycle_races;
mod messages;
mod observability;
mod plain_http;
mod proxy;
mod proxy_faults;
mod pushes;
mod replicas;
mod replicas_database;
mod s3;
mod s3_store;
mod seed003;
mod store_shared;
mod ui;
mod ui_http;
mod watch;
mod watch_env;
mod watch_events;
mod watch_flags;
mod watch_policy;
mod webdriver;
