//! Paid HTTP egress: what publishers allowed this relay to charge for serving their content
//! through the gateway (no downloader signs receipts there), what it served under each
//! allowance, and the claims it settles on chain (`SettleEgress`, with the burn).
//!
//! One allowance per content: a publisher-signed cap on one of its channels to this relay. The
//! gateway serves a content only while its allowance has room and its channel is open; the
//! served amount is kept on disk (rewritten atomically) so a restart loses no claim.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ledger_lite::{Allowance, Amount, ChannelStatus, EgressClaim, State};
use serde::{Deserialize, Serialize};
use top_billing::{Prices, Usage};
use top_proto::cdn::Cid;

use crate::util::lock;
use top_proto::id::AccountId;

/// Why an allowance was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowanceError {
    /// Signature, chain, content or channel do not fit.
    #[error("allowance refused: {0}")]
    Invalid(&'static str),
    /// It could not be stored.
    #[error("cannot store the allowance: {0}")]
    Store(String),
}

/// An allowance and what was served under it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    allowance: Allowance,
    served_bytes: u64,
}

/// The allowances this relay holds, by content.
pub struct EgressBook {
    dir: PathBuf,
    entries: Mutex<HashMap<Cid, Entry>>,
}

/// The amount owed for `bytes` of CDN egress at `prices` (exact, rounded up).
fn cost(prices: &Prices, bytes: u64) -> Amount {
    let usage = Usage {
        cdn: bytes,
        ..Usage::default()
    };
    usage.cost(prices).unwrap_or(Amount::from_units(u128::MAX))
}

impl EgressBook {
    /// Opens (creating) the book in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut entries = HashMap::new();
        for entry in fs::read_dir(dir)?.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let parsed = blake3::Hash::from_hex(&name).ok().zip(
                fs::read(entry.path())
                    .ok()
                    .and_then(|b| postcard::from_bytes::<Entry>(&b).ok()),
            );
            match parsed {
                Some((hash, e)) => drop(entries.insert(Cid(*hash.as_bytes()), e)),
                None => drop(fs::remove_file(entry.path())),
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries),
        })
    }

    fn save(&self, cid: &Cid, entry: &Entry) -> Result<(), AllowanceError> {
        let bytes =
            postcard::to_allocvec(entry).map_err(|e| AllowanceError::Store(e.to_string()))?;
        let tmp = self.dir.join(format!(".{}.tmp", cid.hex()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(cid.hex()))
        };
        write().map_err(|e| AllowanceError::Store(e.to_string()))
    }

    /// Takes `allowance` for `cid` after checking it against the chain: signed by the signer
    /// of an open channel of the chain to `relay`, for this content. A new allowance on the
    /// same channel replaces the old one (the served amount carries over), never with a cap
    /// below what was already served at `prices`: a publisher cannot cancel what it owes.
    pub fn allow(
        &self,
        state: &State,
        prices: &Prices,
        relay: &AccountId,
        cid: &Cid,
        allowance: Allowance,
    ) -> Result<(), AllowanceError> {
        let body = &allowance.body;
        if body.chain != state.chain {
            return Err(AllowanceError::Invalid("for another chain"));
        }
        if body.content != cid.0 {
            return Err(AllowanceError::Invalid("for another content"));
        }
        let channel = state
            .channel(&body.channel)
            .ok_or(AllowanceError::Invalid("unknown channel"))?;
        if channel.relay != *relay || channel.signer != allowance.signer {
            return Err(AllowanceError::Invalid(
                "the channel is not the signer's to this relay",
            ));
        }
        if channel.status != ChannelStatus::Open {
            return Err(AllowanceError::Invalid("the channel is closing"));
        }
        if channel.settles == Some(ledger_lite::SettleKind::Receipts) {
            return Err(AllowanceError::Invalid(
                "the channel pays session receipts; open one for egress",
            ));
        }
        // The signature last: lookups first.
        if !allowance.verify() {
            return Err(AllowanceError::Invalid("bad signature"));
        }
        let mut entries = lock(&self.entries);
        if entries
            .iter()
            .any(|(c, e)| c != cid && e.allowance.body.channel == body.channel)
        {
            return Err(AllowanceError::Invalid(
                "that channel backs another content's allowance; open one per content",
            ));
        }
        let served_bytes = entries
            .get(cid)
            .filter(|e| e.allowance.body.channel == body.channel)
            .map_or(0, |e| e.served_bytes);
        if cost(prices, served_bytes) > body.cap {
            return Err(AllowanceError::Invalid(
                "the cap is below what was already served under it",
            ));
        }
        let entry = Entry {
            allowance,
            served_bytes,
        };
        self.save(cid, &entry)?;
        entries.insert(*cid, entry);
        Ok(())
    }

    /// Charges `bytes` of egress for `cid` if its allowance has room and its channel is open;
    /// returns whether it may be served.
    pub fn charge(&self, state: &State, prices: &Prices, cid: &Cid, bytes: u64) -> bool {
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(cid) else {
            return false;
        };
        let body = &entry.allowance.body;
        let Some(channel) = state.channel(&body.channel) else {
            return false;
        };
        let open = channel.status == ChannelStatus::Open;
        // Never serve more than the publisher can pay: its cap, and what the channel's lock
        // still holds (egress claims settle against the same lock).
        let served = entry.served_bytes.saturating_add(bytes);
        let payable = body.cap.min(channel.lock);
        let within = cost(prices, served) <= payable;
        if open && within {
            entry.served_bytes = served;
        }
        open && within
    }

    /// Whether `channel` backs an allowance (it is not for session receipts then).
    pub fn backs(&self, channel: &ledger_lite::ChannelId) -> bool {
        lock(&self.entries)
            .values()
            .any(|e| &e.allowance.body.channel == channel)
    }

    /// Writes what was served under every allowance to disk.
    pub fn persist(&self) {
        let entries: Vec<_> = lock(&self.entries)
            .iter()
            .map(|(c, e)| (*c, e.clone()))
            .collect();
        for (cid, entry) in entries {
            if let Err(e) = self.save(&cid, &entry) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Claims for everything served and not yet settled, at `prices` (capped by each
    /// allowance and the channel's lock).
    pub fn claims(&self, state: &State, prices: &Prices) -> Vec<EgressClaim> {
        lock(&self.entries)
            .values()
            .filter_map(|e| {
                let channel = state.channel(&e.allowance.body.channel)?;
                let owed = cost(prices, e.served_bytes)
                    .min(e.allowance.body.cap)
                    .min(channel.lock);
                (owed > channel.settled && channel.status != ChannelStatus::Closed).then(|| {
                    EgressClaim {
                        allowance: e.allowance.clone(),
                        cum_bytes: e.served_bytes,
                        cum_amount: owed,
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use ledger_lite::{AllowanceBody, ChannelId, Genesis, Params, Tx, TxKind};
    use top_proto::identity::Identity;

    use super::*;

    /// A chain where `publisher` has a channel of 1 TOP to `relay`.
    fn chain_with_channel(publisher: &Identity, relay: &Identity) -> (State, ChannelId) {
        let validator = Identity::from_seed(&[9; 32]);
        let genesis = Genesis {
            bootstrap: Vec::new(),
            epochs: None,
            name: "t".into(),
            time_ms: 1,
            validator: validator.account_id(),
            validators: vec![],
            params: Params {
                unbonding_blocks: 3,
                max_block_txs: 100,
                min_stake: ledger_lite::Amount::ZERO,
                min_fee: ledger_lite::Amount::from_units(1),
            },
            faucet: None,
            allocations: vec![(publisher.account_id(), Amount::from_top(10).unwrap())],
        };
        let mut state = genesis.state().unwrap();
        let tx = |nonce, kind| {
            Tx {
                chain: state.chain,
                from: publisher.account_id(),
                nonce,
                fee: Amount::from_units(1),
                kind,
            }
            .sign(publisher)
        };
        let one = Amount::from_top(1).unwrap();
        let txs = vec![
            tx(0, TxKind::Deposit { amount: one }),
            tx(
                1,
                TxKind::OpenChannel {
                    relay: relay.account_id(),
                    amount: one,
                    sponsor: None,
                },
            ),
        ];
        let built = state.build_block(txs, 2, Default::default(), &validator);
        assert!(built.rejected.is_empty());
        let channel = ChannelId::derive(
            &state.chain,
            &publisher.account_id(),
            &relay.account_id(),
            1,
        );
        (state, channel)
    }

    #[test]
    fn allowances_are_checked_capped_and_survive_a_restart() {
        let (publisher, relay) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let (state, channel) = chain_with_channel(&publisher, &relay);
        let dir = tempfile::tempdir().unwrap();
        let book = EgressBook::open(dir.path()).unwrap();
        let cid = Cid([5; 32]);
        let body = AllowanceBody {
            chain: state.chain,
            channel,
            content: cid.0,
            cap: Amount::from_units(3_000_000), // 3 MiB at 0.001 TOP/MiB
        };
        let me = relay.account_id();
        let prices = Prices {
            cdn: Amount::from_units(1_000_000),
            ..Prices::default()
        };
        // Signed by someone else, for another content, or tampered with: refused.
        let by_relay = body.clone().sign(&relay);
        assert!(book.allow(&state, &prices, &me, &cid, by_relay).is_err());
        let other = body.clone().sign(&publisher);
        assert!(
            book.allow(&state, &prices, &me, &Cid([6; 32]), other)
                .is_err()
        );
        let mut tampered = body.clone().sign(&publisher);
        tampered.body.cap = Amount::from_top(1).unwrap();
        assert!(book.allow(&state, &prices, &me, &cid, tampered).is_err());
        assert!(
            !book.charge(&state, &prices, &cid, 1),
            "no allowance, no egress"
        );

        book.allow(&state, &prices, &me, &cid, body.sign(&publisher))
            .unwrap();
        assert!(book.charge(&state, &prices, &cid, 2 << 20));
        assert!(
            !book.charge(&state, &prices, &cid, (1 << 20) + 1),
            "over the cap"
        );
        assert!(book.charge(&state, &prices, &cid, 1 << 20));
        book.persist();
        drop(book);
        let book = EgressBook::open(dir.path()).unwrap();
        let claims = book.claims(&state, &prices);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].cum_bytes, 3 << 20);
        assert_eq!(claims[0].cum_amount, Amount::from_units(3_000_000));
        assert!(book.backs(&channel));
    }

    #[test]
    fn egress_stays_within_the_lock_and_caps_never_drop_below_what_was_served() {
        let (publisher, relay) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let (state, channel) = chain_with_channel(&publisher, &relay);
        let dir = tempfile::tempdir().unwrap();
        let book = EgressBook::open(dir.path()).unwrap();
        let cid = Cid([5; 32]);
        let me = relay.account_id();
        // 1 TOP per MiB; the channel locks 1 TOP; the cap says 5 TOP.
        let prices = Prices {
            cdn: Amount::from_top(1).unwrap(),
            ..Prices::default()
        };
        let allowance = |cap| {
            AllowanceBody {
                chain: state.chain,
                channel,
                content: cid.0,
                cap,
            }
            .sign(&publisher)
        };
        book.allow(
            &state,
            &prices,
            &me,
            &cid,
            allowance(Amount::from_top(5).unwrap()),
        )
        .unwrap();
        assert!(
            book.charge(&state, &prices, &cid, 1 << 20),
            "1 TOP of egress"
        );
        assert!(
            !book.charge(&state, &prices, &cid, 1),
            "served beyond the channel's lock"
        );
        // A new allowance that would cap below the 1 TOP served is refused; one above is fine.
        assert!(
            book.allow(&state, &prices, &me, &cid, allowance(Amount::from_units(1)))
                .is_err()
        );
        book.allow(
            &state,
            &prices,
            &me,
            &cid,
            allowance(Amount::from_top(1).unwrap()),
        )
        .unwrap();
        let claims = book.claims(&state, &prices);
        assert_eq!(claims[0].cum_amount, Amount::from_top(1).unwrap());
    }
}
