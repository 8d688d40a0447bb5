//! Settling what clients signed: receipts (and CDN egress allowances) go to the chain once they
//! are worth it.

use std::sync::Arc;

use ledger_lite::{Amount, ChannelId, ChannelStatus, TxKind};
use tracing::{info, warn};

use super::Billing;

/// Receipts settled in one transaction, at most.
const SETTLE_BATCH: usize = 1000;

/// Once the chain is open: settle receipts as they come.
pub fn on_chain_open(billing: &Arc<Billing>) {
    billing.tasks.spawn(settle_loop(billing.clone()));
}

/// Settles stored receipts: when a channel's unsettled amount reaches the threshold, when its
/// payer starts closing it, or when its receipts stopped changing (session over); and only
/// when the batch earns more than the transaction's fee.
async fn settle_loop(billing: Arc<Billing>) {
    let Some(chain) = billing.chain.get().cloned() else {
        return;
    };
    let mut heights = chain.subscribe();
    let mut last_seen: std::collections::HashMap<ChannelId, (Amount, u32)> = Default::default();
    loop {
        tokio::select! {
            r = heights.changed() => if r.is_err() { return },
            _ = billing.shutdown.cancelled() => return,
        }
        let store = billing.receipts.clone();
        let receipts = match tokio::task::spawn_blocking(move || store.all()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                warn!("reading receipts: {e}");
                continue;
            }
            Err(_) => continue,
        };
        let me = billing.identity.account_id();
        let threshold = billing.terms.settle_threshold;
        let mut closed = Vec::new();
        let (due, fee): (Vec<_>, _) = chain.with_state(|s| {
            let due = receipts
                .into_iter()
                .filter_map(|r| {
                    let c = s.channel(&r.body.channel)?;
                    if c.status == ChannelStatus::Closed {
                        // Settled for good: nothing more can be claimed on it.
                        closed.push(r.body.channel);
                        return None;
                    }
                    if c.relay != me {
                        return None;
                    }
                    let unsettled = r.body.cum_amount.min(c.lock).saturating_sub(c.settled);
                    if unsettled.is_zero() {
                        return None;
                    }
                    let idle = {
                        let seen = last_seen
                            .entry(r.body.channel)
                            .or_insert((r.body.cum_amount, 0));
                        if seen.0 == r.body.cum_amount {
                            seen.1 += 1;
                        } else {
                            *seen = (r.body.cum_amount, 0);
                        }
                        seen.1 >= 3
                    };
                    let due = unsettled >= threshold
                        || matches!(c.status, ChannelStatus::Closing { .. })
                        || idle;
                    due.then_some((r, unsettled))
                })
                .take(SETTLE_BATCH)
                .collect();
            (due, s.params.min_fee)
        });
        prune(&billing, closed, &mut last_seen).await;
        settle_egress(&billing, &chain, &mut last_seen).await;
        if !worth_settling(due.iter().map(|(_, unsettled)| *unsettled), fee) {
            continue;
        }
        let n = due.len();
        let receipts = due.into_iter().map(|(r, _)| r).collect();
        let kind = TxKind::Settle { receipts };
        match submit_timed(&billing, &chain, kind).await {
            Ok((_, height)) => info!("settled {n} receipts (block {height:?})"),
            Err(e) => warn!("settlement of {n} receipts failed: {e}"),
        }
    }
}

/// Submits a settlement and waits for its commit, timing it for `/metrics`.
async fn submit_timed(
    billing: &Billing,
    chain: &crate::ledger::chain::ChainNode,
    kind: TxKind,
) -> crate::ledger::error::ChainResult<(ledger_lite::TxHash, Option<u64>)> {
    let start = std::time::Instant::now();
    let submitted = chain.submit_own(&billing.identity, kind, true).await;
    if let Ok((_, Some(_))) = &submitted {
        let settlement = &billing.metrics.latency.settlement;
        crate::node::latency::observe(settlement, start.elapsed());
    }
    submitted
}

/// Forgets the receipts of closed channels, so the store and the loop's memory stay the size of
/// the channels still open.
async fn prune(
    billing: &Billing,
    closed: Vec<ChannelId>,
    last_seen: &mut std::collections::HashMap<ChannelId, (Amount, u32)>,
) {
    if closed.is_empty() {
        return;
    }
    for channel in &closed {
        last_seen.remove(channel);
    }
    let store = billing.receipts.clone();
    let n = closed.len();
    match tokio::task::spawn_blocking(move || store.remove(&closed)).await {
        Ok(Ok(())) => tracing::debug!("pruned the receipts of {n} closed channels"),
        Ok(Err(e)) => warn!("pruning receipts: {e}"),
        Err(_) => {}
    }
}

/// Settles HTTP egress served under publishers' allowances, on the same rules as receipts:
/// at the threshold, when the publisher starts closing the channel, or once serving stopped.
async fn settle_egress(
    billing: &Arc<Billing>,
    chain: &crate::ledger::chain::ChainNode,
    last_seen: &mut std::collections::HashMap<ChannelId, (Amount, u32)>,
) {
    // Its files are fsynced: keep that off the async workers.
    let book = billing.clone();
    tokio::task::spawn_blocking(move || book.egress.persist())
        .await
        .ok();
    let threshold = billing.terms.settle_threshold;
    let (due, fee): (Vec<_>, _) = chain.with_state(|s| {
        let due = billing
            .egress
            .claims(s, &billing.terms.prices)
            .into_iter()
            .filter_map(|claim| {
                let c = s.channel(&claim.allowance.body.channel)?;
                let seen = last_seen
                    .entry(claim.allowance.body.channel)
                    .or_insert((claim.cum_amount, 0));
                if seen.0 == claim.cum_amount {
                    seen.1 += 1;
                } else {
                    *seen = (claim.cum_amount, 0);
                }
                let unsettled = claim.cum_amount.saturating_sub(c.settled);
                let due = unsettled >= threshold
                    || matches!(c.status, ChannelStatus::Closing { .. })
                    || seen.1 >= 3;
                due.then_some((claim, unsettled))
            })
            .take(SETTLE_BATCH)
            .collect();
        (due, s.params.min_fee)
    });
    if !worth_settling(due.iter().map(|(_, unsettled)| *unsettled), fee) {
        return;
    }
    let n = due.len();
    let claims = due.into_iter().map(|(c, _)| c).collect();
    let kind = TxKind::SettleEgress { claims };
    match submit_timed(billing, chain, kind).await {
        Ok((_, height)) => info!("settled {n} egress claims (block {height:?})"),
        Err(e) => warn!("settlement of {n} egress claims failed: {e}"),
    }
}

/// Whether settling claims worth `unsettled` earns more than the transaction's `fee` (what the
/// relay keeps is each claim less its burn); smaller batches wait for more.
pub fn worth_settling(unsettled: impl Iterator<Item = Amount>, fee: Amount) -> bool {
    let kept = unsettled.fold(Amount::ZERO, |sum, u| {
        sum.saturating_add(u.saturating_sub(u.burn_share()))
    });
    !kept.is_zero() && kept > fee
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settlement_must_earn_more_than_its_fee() {
        let fee = Amount::from_units(1_000);
        let u = Amount::from_units;
        assert!(!worth_settling([].into_iter(), Amount::ZERO));
        assert!(!worth_settling([u(1_111)].into_iter(), fee), "keeps 999");
        assert!(worth_settling([u(1_200)].into_iter(), fee), "keeps 1080");
        assert!(
            worth_settling([u(600), u(600)].into_iter(), fee),
            "a batch adds up"
        );
    }
}
