//! The operator's dashboard in a real browser (Debian's chromium, driven through chromedriver):
//! it loads with no console errors, shows the relay's id and live figures that change after
//! traffic is sent, and a screenshot is written as an artifact. A page published to the CDN and
//! opened on the same HTTP port cannot read the dashboard's API.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{dev_relay, wait_until_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use top_client::Identity;

/// chromedriver on a free loopback port in a process group of its own: dropping it kills the
/// group, the browser it started included (also when the test fails midway).
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        self.child.wait().ok();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; scripts/install-deps.sh)");
    let driver = Driver { child, port };
    wait_until_for(
        "chromedriver to listen",
        Duration::from_secs(30),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    driver
}

/// A headless chromium session that keeps the browser's console log.
async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1000,1400",
    ];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session")
}

/// chromedriver's browser log since the last call (`POST /session/{id}/se/log`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// Console entries at error level (`SEVERE`).
async fn console_errors(client: &Client) -> Vec<String> {
    let log = client.issue_cmd(BrowserLog).await.expect("the browser log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].to_string())
        .collect()
}

async fn text_of(client: &Client, id: &str) -> String {
    match client.find(Locator::Id(id)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn number(text: &str) -> u64 {
    text.replace(',', "").trim().parse().unwrap_or(0)
}

/// A page that tries to read the relay's API from its own origin, and says what happened in
/// its title.
const HOSTILE_PAGE: &str = r#"<!doctype html><title>waiting</title><script>
fetch("/api/status").then(r => r.text())
  .then(t => { document.title = "READ " + t.slice(0, 40); })
  .catch(e => { document.title = "BLOCKED " + e.name; });
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_live_figures_and_published_pages_cannot_read_the_api() {
    let dir = tempfile::tempdir().unwrap();
    // A dev relay whose traffic is free: the test's clients need no channel.
    let relay = dev_relay(&dir.path().join("relay"), |c| c.billing.enabled = false).await;
    let base = format!("http://{}", relay.http_addr());
    let driver = chromedriver().await;
    let client = browser(&driver, &dir.path().join("profile")).await;

    client.goto(&format!("{base}/")).await.unwrap();
    let id = relay.id().to_string();
    wait_until_for(
        "the dashboard to show the relay id",
        Duration::from_secs(30),
        async || text_of(&client, "relay-id").await == id,
    )
    .await;
    assert_eq!(text_of(&client, "role").await, "validator");
    let before = number(&text_of(&client, "messages-received").await);

    // Traffic: the figures on the page follow (the page polls by itself).
    let alice = top_client::Client::connect(&relay.addr(), Identity::generate())
        .await
        .unwrap();
    let bob_id = Identity::generate();
    let bob = top_client::Client::connect(&relay.addr(), bob_id.clone())
        .await
        .unwrap();
    for i in 0..5u8 {
        alice
            .send_tracked(&bob_id.account_id(), &[i; 100])
            .await
            .unwrap();
    }
    wait_until_for(
        "the page to count the messages",
        Duration::from_secs(30),
        async || number(&text_of(&client, "messages-received").await) >= before + 5,
    )
    .await;
    wait_until_for(
        "the page to count the sessions",
        Duration::from_secs(30),
        async || number(&text_of(&client, "sessions").await) == 2,
    )
    .await;
    let errors = console_errors(&client).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let shot = client.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&artifact, shot).unwrap();
    println!("dashboard screenshot: {}", artifact.display());

    // A published page on the same port runs its scripts, but in an opaque origin: its
    // request for the API is refused to it.
    let cid = alice
        .publish(HOSTILE_PAGE.as_bytes(), Some("text/html"))
        .await
        .unwrap();
    client.goto(&format!("{base}/cdn/{cid}")).await.unwrap();
    let mut title = String::new();
    wait_until_for(
        "the published page's script to finish",
        Duration::from_secs(30),
        async || {
            title = client.title().await.unwrap_or_default();
            title != "waiting" && !title.is_empty()
        },
    )
    .await;
    assert!(
        title.starts_with("BLOCKED"),
        "a published page read the API: {title}"
    );

    client.close().await.ok();
    alice.close().await;
    bob.close().await;
    relay.shutdown().await;
}
