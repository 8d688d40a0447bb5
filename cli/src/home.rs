//! The end user's home directory: identity key, default relay and the local inbox.

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use top_client::{Identity, Message, RelayAddr};

/// `config.toml` of a home directory.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeConfig {
    /// The relay to connect to unless `--relay` says otherwise.
    pub relay: Option<RelayAddr>,
}

/// One message in the local inbox (`inbox.jsonl`).
#[derive(Debug, Serialize, Deserialize)]
pub struct InboxEntry {
    /// Message id (hex).
    pub id: String,
    /// Sender id.
    pub from: String,
    /// Sender's clock, ms since the Unix epoch.
    pub sent_ms: u64,
    /// The body as text (invalid UTF-8 replaced).
    pub text: String,
}

/// Paths and files of a home directory.
pub struct Home(pub PathBuf);

impl Home {
    fn key(&self) -> PathBuf {
        self.0.join("identity.key")
    }
    fn config_path(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    fn inbox_path(&self) -> PathBuf {
        self.0.join("inbox.jsonl")
    }

    /// Fails if an identity exists here already.
    pub fn check_new(&self) -> Result<()> {
        if self.key().exists() {
            bail!(
                "{} already holds an identity; use another --home",
                self.0.display()
            );
        }
        Ok(())
    }

    /// Creates the identity and config; fails if an identity exists.
    pub fn init(&self, relay: Option<RelayAddr>) -> Result<Identity> {
        self.check_new()?;
        std::fs::create_dir_all(&self.0)
            .with_context(|| format!("creating {}", self.0.display()))?;
        let identity = Identity::generate();
        identity.save(&self.key())?;
        self.save_config(&HomeConfig { relay })?;
        Ok(identity)
    }

    fn save_config(&self, config: &HomeConfig) -> Result<()> {
        std::fs::write(self.config_path(), toml::to_string_pretty(config)?)
            .with_context(|| format!("writing {}", self.config_path().display()))
    }

    /// The identity; says how to create one when missing.
    pub fn identity(&self) -> Result<Identity> {
        if !self.key().exists() {
            bail!(
                "no identity in {}; create one with `top --home {} init`",
                self.0.display(),
                self.0.display()
            );
        }
        Ok(Identity::load(&self.key())?)
    }

    /// The relay to use: `--relay` if given, else the stored default.
    pub fn relay(&self, flag: Option<RelayAddr>) -> Result<RelayAddr> {
        if let Some(relay) = flag {
            return Ok(relay);
        }
        let config = self.config()?;
        config.relay.with_context(|| {
            format!("no relay configured; pass --relay ID@ADDR or run `top --home {} init --relay ID@ADDR`", self.0.display())
        })
    }

    fn config(&self) -> Result<HomeConfig> {
        let path = self.config_path();
        if !path.exists() {
            return Ok(HomeConfig::default());
        }
        let text = std::fs::read_to_string(&path)?;
        toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }

    /// Appends messages to the local inbox and syncs it to disk (before they are acknowledged);
    /// returns those that were new (a message already in the inbox, e.g. a second mailbox copy
    /// delivered later, is not added again).
    pub fn append_inbox<'m>(&self, messages: &'m [Message]) -> Result<Vec<&'m Message>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // Keyed by sender too: a stranger who learns a message id cannot hide another sender's
        // message by sending one with the same id first.
        let mut known: std::collections::HashSet<(String, String)> =
            self.inbox()?.into_iter().map(|e| (e.from, e.id)).collect();
        let mut fresh = Vec::new();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.inbox_path())?;
        for m in messages {
            let entry = InboxEntry {
                id: m.id.0.iter().map(|b| format!("{b:02x}")).collect(),
                from: m.from.to_string(),
                sent_ms: m.sent_ms,
                text: String::from_utf8_lossy(&m.body).into_owned(),
            };
            if !known.insert((entry.from.clone(), entry.id.clone())) {
                continue;
            }
            writeln!(file, "{}", serde_json::to_string(&entry)?)?;
            fresh.push(m);
        }
        file.sync_all()?;
        Ok(fresh)
    }

    /// Every message in the local inbox, oldest first.
    pub fn inbox(&self) -> Result<Vec<InboxEntry>> {
        read_inbox(&self.inbox_path())
    }
}

fn read_inbox(path: &Path) -> Result<Vec<InboxEntry>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(entry) => out.push(entry),
            Err(e) => eprintln!(
                "warning: skipping line {} of {}: {e}",
                n + 1,
                path.display()
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use top_proto::frame::MsgId;

    fn message(id: MsgId, from: &Identity, body: &str) -> Message {
        Message {
            id,
            from: from.account_id(),
            sent_ms: 1,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_inbox_keeps_one_copy_per_sender_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home(dir.path().to_path_buf());
        let (alice, eve) = (Identity::generate(), Identity::generate());
        let id = MsgId::random();
        // Eve reuses the id of Alice's message: both are kept.
        let first = [message(id, &eve, "decoy"), message(id, &alice, "hello")];
        assert_eq!(home.append_inbox(&first).unwrap().len(), 2);
        // Alice's message pushed again (by a second home relay): shown once.
        let again = [message(id, &alice, "hello")];
        assert!(home.append_inbox(&again).unwrap().is_empty());
        assert_eq!(home.inbox().unwrap().len(), 2);
    }
}
