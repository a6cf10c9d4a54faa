//! Who is calling: the tenant jobs are enqueued for and the scope of what
//! the caller may see. With authentication off (the only mode of this
//! version, for `weir dev` on loopback), every caller is the operator:
//! jobs belong to the `default` tenant and every job is visible.

use crate::{AppState, DEFAULT_TENANT};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::convert::Infallible;
use weir_shared::broker::Scope;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Tenant new jobs belong to.
    pub tenant: String,
    /// What the caller may see and change.
    pub scope: Scope,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(
        _parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            tenant: DEFAULT_TENANT.to_owned(),
            scope: Scope::All,
        })
    }
}
