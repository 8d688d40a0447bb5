//! Membership on the chain: registering this relay from its config (a `RegisterRelay`
//! transaction signed by the relay key, staking what the config asks, at least the chain's
//! minimum), and keeping the member set in step with the chain's registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ledger_lite::registry::{Prices, RelayRecord, Services};
use ledger_lite::{Amount, State, TxKind};
use top_proto::addr::RelayAddr;
use top_proto::id::RelayId;
use tracing::{info, warn};

use crate::ledger::chain::ChainNode;
use crate::ledger::error::ChainError;
use crate::node::config::RelayConfig;
use crate::node::peers::{HomeTicket, MAX_MEMBERS, Member};
use crate::node::state::Shared;

/// Longest wait between registration attempts.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Once the chain is open: follow its registry, and register this relay.
pub fn on_chain_open(shared: &Arc<Shared>) {
    let Some(chain) = shared.chain.get().cloned() else {
        return;
    };
    shared
        .tasks
        .spawn(follow_registry(shared.clone(), chain.clone()));
    if shared.config.auto_register {
        shared
            .tasks
            .spawn(register_from_config(shared.clone(), chain));
    }
}

/// The registered relays (this one included) as dialable addresses, each record's first, with
/// the height of the block that registered each; when there are more than a relay links with,
/// those with the most stake (not the lowest ids, which anyone can grind keys for).
pub fn registered_addrs(state: &State) -> Vec<(RelayAddr, u64)> {
    let mut relays: Vec<(Amount, RelayAddr, u64)> = state
        .relays()
        .filter_map(|(id, account, record)| {
            let addr = RelayAddr {
                id: RelayId::from_wire(*id.as_bytes()),
                host_port: record.addrs.first()?.clone(),
            };
            Some((account.stake, addr, account.relay_since))
        })
        .collect();
    if relays.len() > MAX_MEMBERS {
        relays.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        relays.truncate(MAX_MEMBERS + 1);
    }
    relays
        .into_iter()
        .map(|(_, addr, since)| (addr, since))
        .collect()
}

/// Home tickets already drawn, by relay and registration height (a block read each, once).
type Tickets = HashMap<(RelayId, u64), HomeTicket>;

/// The registry as members with their home tickets, drawn from their registration blocks.
fn registered_members(chain: &ChainNode, drawn: &mut Tickets) -> Vec<Member> {
    let registered = chain.with_state(registered_addrs);
    let keys: std::collections::HashSet<_> = registered.iter().map(|(a, h)| (a.id, *h)).collect();
    drawn.retain(|key, _| keys.contains(key));
    registered
        .into_iter()
        .map(|(addr, since)| {
            let ticket = match drawn.get(&(addr.id, since)) {
                Some(ticket) => *ticket,
                None => match chain.block(since) {
                    Ok(Some(block)) => {
                        let ticket = HomeTicket::drawn(&block.hash().0, &addr.id);
                        drawn.insert((addr.id, since), ticket);
                        ticket
                    }
                    // Not readable now (the store reopening): the id stands in until the next
                    // refresh reads the block (not remembered).
                    _ => HomeTicket::unregistered(&addr.id),
                },
            };
            Member { addr, ticket }
        })
        .collect()
}

/// Puts the registry into the member set (drawing new tickets reads blocks: off the async
/// workers).
async fn refresh(shared: &Shared, chain: &Arc<ChainNode>, drawn: Tickets) -> Tickets {
    let c = chain.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut drawn = drawn;
        let members = registered_members(&c, &mut drawn);
        (members, drawn)
    })
    .await;
    match done {
        Ok((members, drawn)) => {
            shared.peers.set_registered(members);
            drawn
        }
        Err(_) => Tickets::new(),
    }
}

async fn follow_registry(shared: Arc<Shared>, chain: Arc<ChainNode>) {
    // Configured relays are members only on a dev chain; on a real one the registry decides
    // (known first, so that configured relays that are registered stay linked).
    let mut drawn = refresh(&shared, &chain, Tickets::new()).await;
    shared
        .peers
        .set_trust_configured(chain.genesis().faucet.is_some());
    let mut heights = chain.subscribe();
    loop {
        drawn = refresh(&shared, &chain, drawn).await;
        tokio::select! {
            r = heights.changed() => if r.is_err() { return },
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// The record a relay publishes: its address, services from its config, its prices.
pub fn record_for(config: &RelayConfig, host_port: String, prices: Prices) -> RelayRecord {
    RelayRecord {
        addrs: vec![host_port],
        services: Services {
            messaging: true,
            mailbox: true,
            pipes: true,
            vpn_exit: config.vpn_exit,
            cdn: true,
        },
        prices,
        region: config.region.clone(),
    }
}

/// The record this running relay publishes.
pub fn record_from_config(shared: &Shared) -> RelayRecord {
    record_for(
        &shared.config,
        shared.addr.host_port.clone(),
        shared.billing.terms.prices,
    )
}

use crate::billing::link_deposit::keep_link_deposit;

async fn register_from_config(shared: Arc<Shared>, chain: Arc<ChainNode>) {
    let mut retry = Duration::from_millis(200);
    loop {
        match register(&shared, &chain).await {
            Ok(Registered::Already) => return keep_link_deposit(&shared.billing, &chain).await,
            Ok(Registered::Now(height)) => {
                info!(height, "registered as a relay on the chain");
                return keep_link_deposit(&shared.billing, &chain).await;
            }
            Err(e) => warn!("cannot register this relay yet: {e} (retrying)"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// What registering did.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// The chain already holds this record with enough stake.
    Already,
    /// Registered (or updated) in the block at this height.
    Now(u64),
}

/// Why registering failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The chain refused or could not be reached.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Registers this relay (or updates its record) unless the chain already holds it; on a dev
/// chain, takes what the stake lacks from the faucet.
pub async fn register(shared: &Shared, chain: &ChainNode) -> Result<Registered, RegisterError> {
    let me = shared.identity.account_id();
    let record = record_from_config(shared);
    // A follower registers once it has caught up enough to see its own account.
    let (stake, balance, current, min, fee) = chain.with_state(|s| {
        let account = s.account(&me);
        (
            account.map_or(Amount::ZERO, |a| a.stake),
            account.map_or(Amount::ZERO, |a| a.balance),
            s.relay(&me).cloned(),
            s.params.min_stake,
            s.params.min_fee,
        )
    });
    let want = shared.billing.terms.stake.max(min);
    let missing = want.saturating_sub(stake);
    if current.as_ref() == Some(&record) && missing.is_zero() {
        return Ok(Registered::Already);
    }
    // The transaction's fee comes out of the balance too.
    if let Ok(short) = missing.saturating_add(fee).checked_sub(balance)
        && !short.is_zero()
        && chain.genesis().faucet.is_some()
    {
        chain.faucet(me, short).await?;
    }
    let kind = TxKind::RegisterRelay {
        record: Box::new(record),
        stake: missing,
    };
    let (_, height) = chain.submit_own(&shared.identity, kind, true).await?;
    Ok(Registered::Now(height.unwrap_or_default()))
}

/// `toprelay register` / `toprelay deregister`: signs as the relay's key and submits through
/// the running relay (which forwards to its validator if it follows); returns the block height.
pub async fn submit_from_cli(
    relay: RelayAddr,
    identity: top_proto::identity::Identity,
    config: &RelayConfig,
    deregister: bool,
) -> Result<u64, RegisterError> {
    use ledger_lite::wire::{LedgerRequest, LedgerResponse};
    let upstream = crate::ledger::upstream::Upstream::new(relay.clone(), identity.clone());
    let me = identity.account_id();
    let call = async |req| match upstream.call(req).await? {
        LedgerResponse::Error(e) => Err(RegisterError::Chain(ChainError::Upstream(e))),
        other => Ok(other),
    };
    let summary = match call(LedgerRequest::Summary).await? {
        LedgerResponse::Summary(s) => s,
        other => return Err(ChainError::Unexpected(format!("{other:?}")).into()),
    };
    // The running relay signs with the same key (settlements, its deposit, channels to other
    // relays): when it took the nonce or spent the balance first, look again and sign anew.
    let terms = crate::billing::meter::Terms::from_config(&config.billing);
    let record = record_for(config, relay.host_port.clone(), terms.prices);
    let want_stake = terms.stake.max(summary.min_stake);
    for attempt in 1..=NONCE_ATTEMPTS {
        let view = settled_account(&call, me).await?;
        let balance = view.account.as_ref().map_or(Amount::ZERO, |a| a.balance);
        let (kind, stake) = if deregister {
            (TxKind::DeregisterRelay, Amount::ZERO)
        } else {
            let stake = view.account.as_ref().map_or(Amount::ZERO, |a| a.stake);
            let missing = want_stake.saturating_sub(stake);
            let kind = TxKind::RegisterRelay {
                record: Box::new(record.clone()),
                stake: missing,
            };
            (kind, missing)
        };
        // What the transaction takes from the balance: the stake it adds and its fee.
        let needed = stake.saturating_add(summary.min_fee);
        if let Ok(short) = needed.checked_sub(balance)
            && !short.is_zero()
            && summary.faucet
        {
            call(LedgerRequest::Faucet {
                to: me,
                amount: short,
            })
            .await?;
        }
        // The nonce after a faucet transfer is the same: the faucet signs its own transactions.
        let tx = ledger_lite::Tx {
            chain: summary.chain,
            from: me,
            nonce: view.next_nonce,
            fee: summary.min_fee,
            kind,
        }
        .sign(&identity);
        match call(LedgerRequest::Submit { tx, wait: true }).await {
            Ok(LedgerResponse::Submitted { height, .. }) => return Ok(height.unwrap_or_default()),
            Ok(other) => return Err(ChainError::Unexpected(format!("{other:?}")).into()),
            Err(RegisterError::Chain(ChainError::Upstream(e)))
                if attempt < NONCE_ATTEMPTS
                    && (e.contains("wrong nonce")
                        || (summary.faucet && e.contains("insufficient balance"))) =>
            {
                // The relay answering may not have seen that transaction's block yet.
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ChainError::Unexpected("no nonce left to try".into()).into())
}

/// This account once none of its transactions waits for a block (so its balance is what the
/// next one spends from), or as it is after [`SETTLE_WAIT`].
async fn settled_account(
    call: &impl AsyncFn(
        ledger_lite::wire::LedgerRequest,
    ) -> Result<ledger_lite::wire::LedgerResponse, RegisterError>,
    me: top_proto::id::AccountId,
) -> Result<ledger_lite::wire::AccountView, RegisterError> {
    use ledger_lite::wire::{LedgerRequest, LedgerResponse};
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let view = match call(LedgerRequest::Account(me)).await? {
            LedgerResponse::Account(v) => v,
            other => return Err(ChainError::Unexpected(format!("{other:?}")).into()),
        };
        let committed = view.account.as_ref().map_or(0, |a| a.nonce);
        if view.next_nonce <= committed || tokio::time::Instant::now() >= deadline {
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The longest `toprelay register` waits for the relay's own transactions to land.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Times `toprelay register` signs again when the running relay took the nonce or spent the
/// balance first.
const NONCE_ATTEMPTS: u32 = 5;
