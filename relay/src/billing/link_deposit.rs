//! The deposit a relay pays other relays from: kept at `billing.link_deposit`, topped up from
//! the relay's balance (what it earns settling) or, on a dev chain, from the faucet.

use ledger_lite::{Amount, TxKind};
use tracing::warn;

use super::Billing;
use crate::ledger::chain::ChainNode;

/// Tops up the deposit this relay pays other relays from to `billing.link_deposit`: from its
/// balance, or on a dev chain the faucet; elsewhere the owner is told when it stays short.
pub async fn keep_link_deposit(billing: &Billing, chain: &ChainNode) {
    // One top-up at a time: two would both see the deposit short and pay it twice.
    let _funding = billing.funding_links.lock().await;
    let me = billing.identity.account_id();
    let want = billing.terms.link_deposit;
    let (deposit, balance, fee) = chain.with_state(|s| {
        let account = s.account(&me);
        let deposit = account.map_or(Amount::ZERO, |a| a.deposit);
        (
            deposit,
            account.map_or(Amount::ZERO, |a| a.balance),
            s.params.min_fee,
        )
    });
    let Ok(short) = want.checked_sub(deposit) else {
        return;
    };
    if short.is_zero() {
        return;
    }
    // From the balance, keeping enough for the fees of the channels it opens; on a dev chain
    // the faucet adds what the balance lacks.
    let fees = Amount::from_units(fee.units().saturating_mul(FEES_KEPT));
    let faucet = chain.genesis().faucet.is_some();
    let (amount, lacking) = if faucet {
        let lacking = short.saturating_add(fees).saturating_sub(balance);
        (short, lacking)
    } else {
        let amount = short.min(balance.saturating_sub(fees));
        if amount < short {
            warn!(
                "the deposit for paying other relays is {deposit}, below billing.link_deposit \
                 {want}: deposit more, or forwarded messages go unpaid and are refused"
            );
        }
        (amount, Amount::ZERO)
    };
    // Moving less than a fee's worth costs more than it brings.
    if amount <= fee {
        return;
    }
    let result = async {
        if !lacking.is_zero() {
            chain.faucet(me, lacking).await?;
        }
        chain
            .submit_own(&billing.identity, TxKind::Deposit { amount }, true)
            .await
    };
    // A chain that does not answer must not hold up every other top-up behind this one.
    match tokio::time::timeout(FUNDING_TIMEOUT, result).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!("cannot fund the deposit for paying other relays: {e}"),
        Err(_) => warn!("funding the deposit for paying other relays timed out"),
    }
}

/// The longest a top-up waits for its transactions to land.
const FUNDING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Transaction fees' worth a relay keeps in its balance besides its deposit (channel opens).
const FEES_KEPT: u128 = 100;
