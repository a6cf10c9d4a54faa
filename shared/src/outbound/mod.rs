//! Outbound HTTP for tasks (`http.request`, provider calls): an HTTP client
//! that refuses the addresses a job must never reach (this host, private
//! networks, link-local metadata services) unless the operator allows the
//! host, checked on the address it actually connects to.

mod client;
mod guard;

pub use client::{CallError, Client, ClientOptions, Response, install_crypto_provider};
pub use guard::{Guard, Refusal, refused_range};
