//! weir's core library: the job model, the broker seam and its backends, and
//! configuration. Every role (API, worker, scheduler, CLI) builds on it.
//!
//! # Layout
//!
//! - [`job`]: ids, states, priorities, the job record and its limits. Depends on nothing.
//! - [`broker`]: the seam: the core [`broker::Broker`] trait and its
//!   capability traits, request structs, [`broker::BrokerError`],
//!   [`broker::BrokerConfig`]; one folder per backend with the same files
//!   (`broker/sqlite/`, `broker/redis/`); the conformance suites.
//! - [`config`]: typed, validated settings from the environment and `WEIR_CONFIG`.
//! - [`limit`]: rates, the one GCRA (`limit/gcra.rs`), the API's rate
//!   limiters, and the flow-control limits a claim enforces.
//! - [`input`]: a job request as a client writes it, checked against the
//!   configuration (one parser for the API and the CLI).
//! - [`inspect`]: the read model for the CLI and API (explain, limits,
//!   queues, schedules).
//! - [`schedule`]: cron schedules and their fire times.
//! - [`cache`]: the read-through cache's stampede guard.
//! - [`node`]: what a worker node reports in its heartbeat.
//! - [`outbound`]: the guarded HTTP client of tasks' outbound calls.
//! - [`provider`]: provider key pools (round robin, cooldowns, rpm and
//!   tpm per key, shared through the broker's coordination store).
//! - [`queue_order`]: strict and weighted order across a worker's queues.

pub mod broker;
pub mod bulk;
pub mod cache;
pub mod celery;
pub mod config;
pub mod embed;
pub mod index;
pub mod input;
pub mod inspect;
pub mod job;
pub mod limit;
pub mod node;
pub mod outbound;
pub mod provider;
pub mod queue_order;
pub mod schedule;
pub mod secret;
pub mod vector;
pub mod workflow;
