//! Checks of a relay's configuration: every problem found, each with what to do about it
//! (`toprelay config check` prints them all; loading stops at the first).

use crate::node::config::RelayConfig;

impl RelayConfig {
    /// Everything wrong with this configuration, each with what to do about it.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.check_limits() {
            problems.push(e);
        }
        if let Err(e) = self.check_http() {
            problems.push(e);
        }
        if let Err(e) = self.check_vpn() {
            problems.push(e);
        }
        problems.extend(self.check_billing());
        problems
    }

    fn check_http(&self) -> Result<(), String> {
        match &self.http_token {
            Some(t) if t.chars().count() < 16 || t.chars().any(|c| c.is_whitespace()) => Err(
                "http_token must be at least 16 characters without spaces (e.g. the output of \
                 `openssl rand -hex 16`)"
                    .into(),
            ),
            None if !self.http.ip().is_loopback() => Err(format!(
                "http = \"{}\" is reachable from other hosts: set http_token (a secret of at \
                 least 16 characters) so that only who holds it reads /api and /metrics, or bind \
                 http to 127.0.0.1",
                self.http
            )),
            _ => Ok(()),
        }
    }

    fn check_limits(&self) -> Result<(), String> {
        if self.mailbox.home_replicas == 0 {
            return Err("mailbox.home_replicas must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.new_connections_per_ip == 0 {
            return Err("new_connections_per_ip must be at least 1".into());
        }
        if !(1..=86_400).contains(&self.link_idle_secs) {
            return Err("link_idle_secs must be 1 to 86400".into());
        }
        if self.cdn_http_requests_per_ip == 0 {
            return Err("cdn_http_requests_per_ip must be at least 1".into());
        }
        if self.ledger.block_interval_ms == 0 {
            return Err("ledger.block_interval_ms must be at least 1".into());
        }
        Ok(())
    }

    fn check_vpn(&self) -> Result<(), String> {
        if self.vpn.mtu < 576 || usize::from(self.vpn.mtu) > 1500 {
            return Err("vpn.mtu must be between 576 and 1500".into());
        }
        crate::vpn::pool::Pool::new(self.vpn.pool)?;
        crate::vpn::pool::AddressPlan::new(self.vpn.pool, Some(self.vpn.pool6))?;
        if self.vpn.tun.is_empty() || self.vpn.tun.len() > 15 {
            return Err("vpn.tun must be a device name of 1 to 15 characters".into());
        }
        Ok(())
    }

    fn check_billing(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let b = &self.billing;
        for (name, value) in [
            ("billing.stake", &b.stake),
            ("billing.msg_price_per_mib", &b.msg_price_per_mib),
            ("billing.mailbox_price_per_mib", &b.mailbox_price_per_mib),
            ("billing.pipe_price_per_mib", &b.pipe_price_per_mib),
            ("billing.vpn_price_per_mib", &b.vpn_price_per_mib),
            ("billing.cdn_price_per_mib", &b.cdn_price_per_mib),
            ("billing.credit_window", &b.credit_window),
            ("billing.credit_per_payer", &b.credit_per_payer),
            ("billing.credit_per_address", &b.credit_per_address),
            ("billing.settle_threshold", &b.settle_threshold),
            ("billing.link_lock", &b.link_lock),
            ("billing.link_deposit", &b.link_deposit),
        ] {
            if let Err(e) = value.parse::<ledger_lite::Amount>() {
                problems.push(format!("{name}: {e}"));
            }
        }
        // A bound across sessions below one session's window would refuse every session.
        let amount = |s: &String| s.parse::<ledger_lite::Amount>().unwrap_or_default();
        let window = amount(&b.credit_window);
        for (name, value) in [
            ("billing.credit_per_payer", &b.credit_per_payer),
            ("billing.credit_per_address", &b.credit_per_address),
        ] {
            if amount(value) < window {
                problems.push(format!(
                    "{name} ({value}) must be at least billing.credit_window ({})",
                    b.credit_window
                ));
            }
        }
        problems
    }
}

/// Reads a config file and lists what is wrong with it: a file that does not parse is one
/// error (where, and why); one that parses gets every check.
pub fn check_file(path: &std::path::Path) -> Result<Vec<String>, crate::node::config::ConfigError> {
    use crate::node::config::ConfigError;
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::Missing(
            path.parent()
                .map_or_else(|| name.clone(), |d| d.display().to_string()),
        ),
        _ => ConfigError::Io {
            path: name.clone(),
            source,
        },
    })?;
    let config: RelayConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: name,
        message: e.to_string(),
    })?;
    Ok(config.problems())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_problem_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let mut config = RelayConfig::new(
            "127.0.0.1:7700".parse().unwrap(),
            "0.0.0.0:7780".parse().unwrap(),
        );
        config.max_connections = 0;
        config.vpn.mtu = 100;
        config.billing.stake = "lots".into();
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let problems = check_file(&path).unwrap();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("http_token")));
        assert!(problems.iter().any(|p| p.contains("max_connections")));
        assert!(problems.iter().any(|p| p.contains("vpn.mtu")));
        assert!(problems.iter().any(|p| p.contains("billing.stake")));

        config.http_token = Some("short".into());
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let problems = check_file(&path).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("at least 16 characters"))
        );

        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nhttp = 7\n").unwrap();
        let err = check_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        let good = RelayConfig::new(
            "127.0.0.1:7700".parse().unwrap(),
            "127.0.0.1:7780".parse().unwrap(),
        );
        std::fs::write(&path, toml::to_string(&good).unwrap()).unwrap();
        assert_eq!(check_file(&path).unwrap(), Vec::<String>::new());
    }
}
