//! `http_token`: with it set, `/api/…` and `/metrics` answer only to who sends it; the
//! dashboard page, `/health` and the CDN gateway stay open.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use top_relay::config::RelayConfig;
use top_relay::{InitOptions, Relay, init};

const TOKEN: &str = "0123456789abcdef0123";

/// The status line of `GET path`, sending `auth` as the Authorization header when given.
async fn get(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> String {
    get_as(addr, "localhost", path, auth).await
}

/// [`get`] naming `host` as the Host.
async fn get_as(addr: std::net::SocketAddr, host: &str, path: &str, auth: Option<&str>) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn api_and_metrics_need_the_token_the_page_and_gateway_do_not() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let mut config = RelayConfig::load(dir.path()).unwrap();
    config.http_token = Some(TOKEN.into());
    config.save(dir.path()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let http = relay.http_addr();
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/api/status", "/metrics", "/api/ledger/summary"] {
        assert!(get(http, path, None).await.contains(" 401 "), "{path}");
        let wrong = Some("Bearer 0123456789abcdef0124");
        assert!(get(http, path, wrong).await.contains(" 401 "), "{path}");
        let basic = Some("Basic MDEyMzQ1Njc4OWFiY2RlZjAxMjM=");
        assert!(get(http, path, basic).await.contains(" 401 "), "{path}");
    }
    assert!(
        get(http, "/api/status", Some(&bearer))
            .await
            .contains(" 200 ")
    );
    assert!(get(http, "/metrics", Some(&bearer)).await.contains(" 200 "));
    // No chain on this relay: the ledger API says so, past the token.
    assert!(
        get(http, "/api/ledger/summary", Some(&bearer))
            .await
            .contains(" 404 ")
    );
    for open in ["/", "/dashboard/dashboard.js", "/health"] {
        assert!(get(http, open, None).await.contains(" 200 "), "{open}");
    }
    // The gateway answers for itself (an unknown content), not with a 401.
    let cdn = get(http, "/cdn/cid1nothing", None).await;
    assert!(!cdn.contains(" 401 "), "{cdn}");
    relay.shutdown().await;
}

/// DNS rebinding: a web page whose name now resolves to 127.0.0.1 sends its own name as Host;
/// without a token (loopback only) the API answers loopback names only.
#[tokio::test]
async fn without_a_token_the_api_answers_loopback_names_only() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let http = relay.http_addr();
    for path in ["/api/status", "/metrics"] {
        let rebound = get_as(http, "attacker.example:7780", path, None).await;
        assert!(rebound.contains(" 421 "), "{path}: {rebound}");
        for name in ["localhost:7780", &http.to_string(), "[::1]:7780"] {
            assert!(
                get_as(http, name, path, None).await.contains(" 200 "),
                "{name}"
            );
        }
    }
    // The page itself holds nothing: it loads under any name.
    assert!(
        get_as(http, "attacker.example", "/", None)
            .await
            .contains(" 200 ")
    );
    relay.shutdown().await;
}

#[test]
fn a_relay_serving_http_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback()).unwrap();
    let mut config = RelayConfig::load(dir.path()).unwrap();
    config.http = "0.0.0.0:0".parse().unwrap();
    config.save(dir.path()).unwrap();
    let err = RelayConfig::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("http_token"), "{err}");
    config.http_token = Some(TOKEN.into());
    config.save(dir.path()).unwrap();
    assert!(RelayConfig::load(dir.path()).is_ok());
}
