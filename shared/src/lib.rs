//! weir's core library: the job model, the broker seam and its backends, and
//! configuration. Every role (API, worker, scheduler, CLI) builds on it.
//!
//! # Layout
//!
//! - [`job`]: ids, states, priorities, the job record and its limits. Depends on nothing.
//! - [`broker`]: the [`broker::Broker`] trait, its request structs and
//!   [`broker::BrokerError`]; one folder per backend (`broker/sqlite/`).
//! - [`config`]: typed, validated settings from the environment and `WEIR_CONFIG`.
//! - [`limit`]: rates and rate limiters (in-process; the Redis one is a
//!   backend), and the flow-control limits a claim enforces.
//! - [`inspect`]: read-only views for the CLI and API (explain, limits in force).
//! - [`schedule`]: cron schedules and their fire times.
//! - [`cache`]: the read-through cache's stampede guard.
//! - [`node`]: what a worker node reports in its heartbeat.
//! - [`queue_order`]: strict and weighted order across a worker's queues.

pub mod broker;
pub mod cache;
pub mod config;
pub mod inspect;
pub mod job;
pub mod limit;
pub mod node;
pub mod queue_order;
pub mod schedule;
