//! Who is calling, decided once per request by [`authenticate`]: the tenant
//! comes only from the API key, never from the body, path or headers.
//!
//! - With keys configured (and `WEIR_AUTH` not `disabled`), `/v1` requests
//!   need `Authorization: Bearer KEY`: 401 without a known key; then the
//!   per-key and per-tenant rate limits apply (429 with `Retry-After`).
//!   A tenant key sees only its tenant's jobs; an admin key sees all and
//!   may use the admin routes. An address with too many failed keys is
//!   429 before its key is checked (`limits::AuthFailures`).
//! - Without keys (`weir dev` on loopback, or `WEIR_AUTH=disabled`), every
//!   caller is the operator: tenant `default`, every job visible.

use crate::error::ApiError;
use crate::{AppState, DEFAULT_TENANT};
use axum::extract::ConnectInfo;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use weir_shared::broker::Scope;
use weir_shared::limit::{Decision, Rate};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Tenant new jobs belong to.
    pub tenant: String,
    /// What the caller may see and change.
    pub scope: Scope,
    /// May use admin routes.
    pub admin: bool,
    /// Whose budgets the request spends (open streams): the key's id, or
    /// the client's address when authentication is off.
    pub identity: String,
}

impl Caller {
    fn operator(peer: Option<IpAddr>) -> Self {
        Caller {
            tenant: DEFAULT_TENANT.to_owned(),
            scope: Scope::All,
            admin: true,
            identity: peer.map_or_else(|| "local".to_owned(), |ip| format!("address:{ip}")),
        }
    }

    /// 403 unless the caller holds an admin key.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs an admin key",
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })
    }
}

fn unauthorized() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or unknown API key: send Authorization: Bearer KEY",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn limited(rate: Rate, decision: Decision, scope: &str) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("the {scope} rate limit of {rate} is used up; retry after the Retry-After seconds"),
    )
    .into_response();
    let retry = decision.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    headers.insert("ratelimit-limit", HeaderValue::from(rate.count));
    headers.insert("ratelimit-remaining", HeaderValue::from(0));
    response
}

/// Middleware of the `/v1` routes: authenticates, applies rate limits and
/// leaves the [`Caller`] in the request for the handlers.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = &state.settings.auth;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if !auth.required() {
        request.extensions_mut().insert(Caller::operator(peer));
        let mut response = next.run(request).await;
        response
            .extensions_mut()
            .insert(crate::access::ServedTenant(DEFAULT_TENANT.to_owned()));
        return response;
    }
    // A request without a socket (in-process tests) counts as one address.
    let address = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if let Some(wait) = state.auth_failures.blocked(address) {
        return state.auth_failures.refusal(wait);
    }
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` is `Bearer`.
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    let Some(key) = presented.and_then(|p| auth.verify(p)) else {
        state.auth_failures.record(address);
        return unauthorized();
    };
    // Limiter keys use a digest prefix, never the key itself.
    let key_id = weir_shared::config::auth::digest_id(&key.digest);
    let mut tightest: Option<(Rate, Decision)> = None;
    for (scope, limiter_key, rate) in [
        ("API key", format!("key:{key_id}"), auth.rate_limit_key),
        (
            "tenant",
            format!("tenant:{}", key.tenant),
            auth.rate_limit_tenant,
        ),
    ] {
        match state.limiter.check(&limiter_key, rate).await {
            Ok(d) if !d.allowed => return limited(rate, d, scope),
            Ok(d) => {
                if tightest.is_none_or(|(_, t)| d.remaining < t.remaining) {
                    tightest = Some((rate, d));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Rate limiter unavailable");
                return ApiError::from(weir_shared::broker::BrokerError::Unavailable(
                    e.to_string(),
                ))
                .into_response();
            }
        }
    }
    let caller = Caller {
        tenant: key.tenant.clone(),
        scope: if key.admin {
            Scope::All
        } else {
            Scope::Tenant(key.tenant.clone())
        },
        admin: key.admin,
        identity: format!("key:{key_id}"),
    };
    let tenant = caller.tenant.clone();
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    response
        .extensions_mut()
        .insert(crate::access::ServedTenant(tenant));
    if let Some((rate, d)) = tightest {
        let headers = response.headers_mut();
        headers.insert("ratelimit-limit", HeaderValue::from(rate.count));
        headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    }
    response
}
