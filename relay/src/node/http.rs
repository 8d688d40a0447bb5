//! The relay's HTTP port: the dashboard `/`, `/health`, `/metrics` (Prometheus text), `/api/…`
//! (JSON) and the CDN gateway `/cdn/{cid}`. With `http_token` set, `/metrics` and `/api/…` need
//! it as a bearer token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::node::state::Shared;
use crate::node::status::RelayStatus;

#[derive(Clone)]
struct HttpState {
    shared: Arc<Shared>,
    http: String,
    cdn_limit: Arc<crate::node::accept::PerIpLimiter>,
}

/// The HTTP routes of a relay.
pub fn router(shared: Arc<Shared>, http: String) -> Router {
    let cdn_limit = Arc::new(crate::node::accept::per_ip_limiter(
        shared.config.cdn_http_requests_per_ip,
    ));
    let (limiter, stop) = (cdn_limit.clone(), shared.shutdown.clone());
    shared.tasks.spawn(async move {
        let mut forget = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = forget.tick() => limiter.retain_recent(),
                _ = stop.cancelled() => return,
            }
        }
    });
    let token = shared
        .config
        .http_token
        .as_deref()
        .map(|t| blake3::hash(t.as_bytes()));
    let private = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/ledger/summary", get(ledger_summary))
        .route("/api/ledger/account/{id}", get(ledger_account))
        .route("/api/ledger/block/{height}", get(ledger_block))
        .layer(axum::middleware::from_fn(move |request, next| {
            authorized(token, request, next)
        }));
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/cdn/{cid}", get(cdn_content))
        .merge(crate::node::dashboard::routes())
        .merge(private)
        .with_state(HttpState {
            cdn_limit,
            shared,
            http,
        })
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.x`, `[::1]`, any
/// port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Lets a request through when it carries the token (`Authorization: Bearer …`; the
/// comparison takes the same time wherever they differ) or, with no token set (the port is on
/// loopback), when it names loopback as its host: a web page whose name an attacker rebinds to
/// 127.0.0.1 sends its own name, and is refused.
async fn authorized(
    token: Option<blake3::Hash>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(token) = token else {
        let host = request.headers().get(header::HOST);
        if host.is_some_and(|h| !h.to_str().is_ok_and(loopback_host)) {
            let body = axum::Json(json!({ "error": "this relay's API answers on localhost only" }));
            return (StatusCode::MISDIRECTED_REQUEST, body).into_response();
        }
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| blake3::hash(t.trim().as_bytes()));
    if given == Some(token) {
        return next.run(request).await;
    }
    let challenge = [(header::WWW_AUTHENTICATE, "Bearer realm=\"toprelay\"")];
    let body = axum::Json(json!({ "error": "this relay's API needs its http_token" }));
    (StatusCode::UNAUTHORIZED, challenge, body).into_response()
}

/// `GET /cdn/{cid}`: published content (see [`crate::cdn::gateway`]).
async fn cdn_content(
    State(s): State<HttpState>,
    Path(cid): Path<String>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if s.cdn_limit.check_key(&peer.ip()).is_err() {
        return (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response();
    }
    let head = method == axum::http::Method::HEAD;
    crate::cdn::gateway::get_content(s.shared.cdn.clone(), &cid, head, &headers).await
}

/// `GET /metrics`: OpenMetrics to scrapers that ask for it (Prometheus does), the Prometheus
/// text format (0.0.4) to everyone else (curl, promtool, older scrapers).
async fn metrics(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let rendered = s.shared.metrics.render();
    if openmetrics {
        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, kind)], rendered)
    } else {
        let kind = "text/plain; version=0.0.4; charset=utf-8";
        let text = crate::node::metrics::openmetrics_to_text(&rendered);
        ([(header::CONTENT_TYPE, kind)], text)
    }
}

async fn status(State(s): State<HttpState>) -> axum::Json<RelayStatus> {
    let shared = s.shared.clone();
    let http = s.http.clone();
    // The mailbox totals read the store: keep that off the async workers.
    let status = tokio::task::spawn_blocking(move || RelayStatus::of(&shared, &http)).await;
    axum::Json(status.unwrap_or_else(|_| RelayStatus::of(&s.shared, &s.http)))
}

type ApiResult = Result<axum::Json<Value>, (StatusCode, axum::Json<Value>)>;

fn api_error(code: StatusCode, message: impl Into<String>) -> (StatusCode, axum::Json<Value>) {
    (code, axum::Json(json!({ "error": message.into() })))
}

fn chain(
    s: &HttpState,
) -> Result<Arc<crate::ledger::chain::ChainNode>, (StatusCode, axum::Json<Value>)> {
    s.shared
        .chain
        .get()
        .cloned()
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "this relay has no chain"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /api/ledger/summary`: height, supply, burned, accounts. Amounts in base units.
async fn ledger_summary(State(s): State<HttpState>) -> ApiResult {
    let c = chain(&s)?;
    let sum = c.summary();
    Ok(axum::Json(json!({
        "chain": sum.name,
        "chain_id": hex(&sum.chain.0),
        "height": sum.height,
        "head": sum.head.to_string(),
        "time_ms": sum.time_ms,
        "genesis_supply": sum.genesis_supply,
        "total_supply": sum.total_supply,
        "burned": sum.burned,
        "accounts": sum.accounts,
        "channels": sum.channels,
        "invariant_ok": sum.invariant_ok,
        "faucet": sum.faucet,
        "unbonding_blocks": sum.unbonding_blocks,
        "epoch": sum.epoch,
        "validators": sum.validators.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "finalized": sum.finalized,
    })))
}

/// `GET /api/ledger/account/{id}`: one account's holdings and next nonce.
async fn ledger_account(State(s): State<HttpState>, Path(id): Path<String>) -> ApiResult {
    let c = chain(&s)?;
    let id: top_proto::id::AccountId = id
        .parse()
        .map_err(|e| api_error(StatusCode::BAD_REQUEST, format!("bad account id: {e}")))?;
    let view = c.account(&id);
    let a = view.account.clone().unwrap_or_default();
    Ok(axum::Json(json!({
        "account": id.to_string(),
        "exists": view.account.is_some(),
        "height": view.height,
        "balance": a.balance,
        "deposit": a.deposit,
        "stake": a.stake,
        "unbonding": a.unbonding.iter().map(|u| json!({
            "amount": u.amount, "release_height": u.release_height })).collect::<Vec<_>>(),
        "next_nonce": view.next_nonce,
        "fees_earned": a.fees_earned,
        "fees_burned": a.fees_burned,
    })))
}

/// `GET /api/ledger/block/{height}`: one committed block.
async fn ledger_block(State(s): State<HttpState>, Path(height): Path<String>) -> ApiResult {
    let c = chain(&s)?;
    let height: u64 = height
        .parse()
        .map_err(|_| api_error(StatusCode::BAD_REQUEST, format!("bad height `{height}`")))?;
    let block = tokio::task::spawn_blocking(move || c.block(height))
        .await
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| {
            api_error(
                StatusCode::NOT_FOUND,
                format!("no block at height {height}"),
            )
        })?;
    let h = &block.header;
    Ok(axum::Json(json!({
        "height": h.height,
        "hash": block.hash().to_string(),
        "prev": h.prev.to_string(),
        "time_ms": h.time_ms,
        "txs_root": hex(&h.txs_root),
        "state_root": hex(&h.state_root),
        "txs": block.txs.iter().map(|t| json!({
            "hash": hex(&t.hash().0),
            "from": t.tx.from.to_string(),
            "nonce": t.tx.nonce,
            "kind": serde_json::to_value(&t.tx.kind).unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for good in [
            "localhost",
            "LOCALHOST:7780",
            "127.0.0.1",
            "127.0.0.1:7780",
            "[::1]:7780",
            "[::1]",
            "127.8.9.1:1",
        ] {
            assert!(super::loopback_host(good), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:7780",
            "localhost.evil.example",
            "10.0.0.1:7780",
            "[2001:db8::1]:7780",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!super::loopback_host(bad), "{bad}");
        }
    }
}
