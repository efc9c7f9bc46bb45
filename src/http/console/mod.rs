//! The web console: read-only pages of inspections, runs, clusters and events, rendered on
//! the server, for a person with a browser and a token.
//!
//! # Access
//!
//! The console asks for the API's credentials. A person signs in with an API token once and
//! gets a session cookie (`session.rs`); the cookie holds a signed expiry and a keyed
//! fingerprint of the token, never the token. The links Guance events carry are share links
//! ([`crate::share`]): each opens its one page, read-only, without a token, until it
//! expires. With no API token configured (loopback only) the console is open, as the API is.
//!
//! # Hostile text
//!
//! CloudTrail fields are written by whoever makes the call: a user agent or a principal can
//! carry markup or script. Pages are [`maud`] templates, which escape every value unless it
//! is wrapped in `PreEscaped` (only this module's own fixed markup is), and every answer
//! carries a Content-Security-Policy that allows no script at all, styles only from this
//! service, and no framing. The pages use no JavaScript.
//!
//! # Layout
//!
//! `view.rs` (the page shell and formatting), `chart.rs` (SVG bar charts), one file per page
//! (`overview.rs`, `inspection.rs`, `run.rs`, `cluster.rs`, `events.rs`) and `console.css`.

mod chart;
mod cluster;
mod events;
mod inspection;
mod overview;
mod run;
mod session;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};

use super::AppState;
use crate::share::{LinkError, ShareKey};
use crate::store::StoreError;

/// Where `/` leads: the overview.
pub const HOME: &str = "/console";

/// The console's share links and sessions.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Signs share links and sessions (`SHARE_KEY` or `<data-dir>/share.key`).
    pub key: Arc<ShareKey>,
    /// How long a share link in an event opens its page.
    pub share_ttl: Duration,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
}

impl ConsoleSettings {
    pub const DEFAULT_SHARE_TTL: Duration = Duration::from_secs(30 * 86_400);
    pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
}

impl Default for ConsoleSettings {
    /// A key of this process only; `serve` replaces it with the configured one.
    fn default() -> Self {
        ConsoleSettings {
            key: Arc::new(ShareKey::ephemeral()),
            share_ttl: Self::DEFAULT_SHARE_TTL,
            session_ttl: Self::DEFAULT_SESSION_TTL,
        }
    }
}

/// How the person reading a page got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No API token is configured: the console is open.
    Open,
    /// Signed in with an API token.
    Session,
    /// Through a share link for this page only, until `expires`.
    Shared { expires: DateTime<Utc> },
}

/// The console's routes, behind their access rule and security headers.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route(HOME, get(overview::page))
        .route("/console/inspections/{id}", get(inspection::page))
        .route("/console/runs/{id}", get(run::page))
        .route("/console/clusters/{id}", get(cluster::page))
        .route("/console/events", get(events::list))
        .route("/console/events/{id}", get(events::page))
        .route_layer(middleware::from_fn_with_state(state, require_access));
    Router::new()
        .merge(pages)
        .route("/console/sign-in", get(session::form).post(session::sign_in))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/static/console.css", get(stylesheet))
        .layer(middleware::from_fn(security_headers))
}

/// Lets a request through when the console is open, the session is valid, or the URL is a
/// valid share link of this very page; otherwise sends the person to sign in.
async fn require_access(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let settings = &state.settings;
    let access = if settings.api_tokens.is_empty() {
        Access::Open
    } else if session::is_valid(req.headers(), settings, Utc::now()) {
        Access::Session
    } else {
        match req.uri().query() {
            Some(q) if q.contains("sig=") => match settings.console.key.verify_link(req.uri().path(), q, Utc::now()) {
                Ok(expires) => Access::Shared { expires },
                Err(e) => return refused_link(e),
            },
            _ => {
                let next_page = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(HOME);
                return Redirect::to(&session::sign_in_url(next_page)).into_response();
            }
        }
    };
    req.extensions_mut().insert(access);
    next.run(req).await
}

fn refused_link(e: LinkError) -> Response {
    let body = maud::html! {
        p { (e.to_string()) "." }
        p { "Ask for a new link, or " a href="/console/sign-in" { "sign in" } " with an API token." }
    };
    (StatusCode::FORBIDDEN, view::bare("Link not valid", body)).into_response()
}

/// What every console answer carries: no script may run, styles and images come only from
/// this service, forms post only here, no page may be framed, no URL (a share link holds its
/// signature) is sent on as a referrer, and nothing is cached on the way.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

/// Why a page could not be shown, as an HTML page.
#[derive(Debug)]
pub enum PageError {
    NotFound(&'static str),
    Store(StoreError),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Store(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let request_id = super::error::REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let (status, title, text) = match self {
            PageError::NotFound(what) => {
                (StatusCode::NOT_FOUND, "Not found", format!("There is no such {what}: it may have been deleted."))
            }
            PageError::Store(e) if e.is_unavailable() => {
                tracing::error!(error = %e, "database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Database unavailable",
                    "The database cannot be reached right now; try again shortly.".into(),
                )
            }
            PageError::Store(e) => {
                tracing::error!(error = %e, "console page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Error", format!("This page failed (request id {request_id})."))
            }
        };
        (status, view::bare(title, maud::html! { p { (text) } })).into_response()
    }
}

pub type PageResult = Result<maud::Markup, PageError>;

/// A path id, or the page's 404.
fn parse_id(raw: &str, what: &'static str) -> Result<uuid::Uuid, PageError> {
    raw.parse().map_err(|_| PageError::NotFound(what))
}
