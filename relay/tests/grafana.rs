//! The Grafana dashboard shipped in packaging/grafana/ charts only metrics the relay exports
//! (a renamed metric would leave a panel silently empty).

use top_relay::{InitOptions, Relay, init};

const DASHBOARD: &str = include_str!("../../packaging/grafana/toprelay.json");

#[tokio::test]
async fn every_metric_the_dashboard_queries_exists() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), InitOptions::loopback_dev()).unwrap();
    let relay = Relay::start(dir.path()).await.unwrap();
    let exported = top_relay::node::metrics::openmetrics_to_text(&relay.metrics_text());
    let names: std::collections::BTreeSet<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queried.extend(
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("toprelay_") || w.starts_with("process_"))
                    .map(str::to_string),
            );
        }
    }
    assert!(queried.len() > 20, "{queried:?}");
    for metric in &queried {
        let family = metric.strip_suffix("_bucket").unwrap_or(metric);
        assert!(
            names.contains(family),
            "the dashboard queries {metric}, not exported"
        );
    }
    relay.shutdown().await;
}
