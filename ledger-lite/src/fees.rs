//! Who pays a transaction's fee, and out of what. Every transaction pays at least the chain's
//! minimum fee, burned; an account is never stuck because its spendable coins sit in one place.

use crate::amount::Amount;
use crate::apply::TxError;
use crate::state::{Account, State};
use crate::tx::{Tx, TxKind};
use top_proto::id::AccountId;

/// Where a transaction's fee comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FeeFrom {
    /// The sender's balance.
    Balance,
    /// The sender's free deposit, when its balance is short (a user who moved every coin into
    /// its deposit can still close its channels and withdraw).
    Deposit,
    /// A sponsoring app's free deposit: a sponsored user's channel opens and closes. Opens
    /// are charged where the grant is checked.
    Sponsor(AccountId),
    /// What a settling relay earns in the same transaction (checked with the settlement).
    Earnings,
}

impl State {
    /// Where `tx`'s fee comes from, `sender` being its account as it stands (`None`: new). A
    /// sender that can pay it nowhere is refused here, before any signature is checked.
    pub(crate) fn fee_from(&self, tx: &Tx, sender: Option<&Account>) -> Result<FeeFrom, TxError> {
        let deposit_of = |id: &AccountId| self.accounts.get(id).map_or(Amount::ZERO, |a| a.deposit);
        match &tx.kind {
            TxKind::Settle { .. } | TxKind::SettleEgress { .. } => return Ok(FeeFrom::Earnings),
            TxKind::OpenChannel {
                sponsor: Some(app), ..
            } if *app != tx.from => {
                // The app pays it: the minimum, not what its user chooses.
                if tx.fee != self.params.min_fee {
                    return Err(TxError::SponsoredFee {
                        need: self.params.min_fee,
                    });
                }
                return Ok(FeeFrom::Sponsor(*app));
            }
            TxKind::CloseChannel { channel } => {
                // A sponsored user closing its channel: the app pays the minimum fee, counted
                // against the grant like the open's (a user cannot make it pay more). A larger
                // fee, or a grant used up, is the user's own to pay.
                if let Some(c) = self.channels.get(channel)
                    && c.signer == tx.from
                    && c.payer != tx.from
                    && tx.fee == self.params.min_fee
                    && deposit_of(&c.payer) >= tx.fee
                    && self
                        .grants
                        .get(&(c.payer, c.signer))
                        .is_some_and(|g| g.used.checked_add(tx.fee).is_ok_and(|used| used <= g.cap))
                {
                    return Ok(FeeFrom::Sponsor(c.payer));
                }
            }
            _ => {}
        }
        let (balance, deposit) =
            sender.map_or((Amount::ZERO, Amount::ZERO), |a| (a.balance, a.deposit));
        if balance >= tx.fee {
            Ok(FeeFrom::Balance)
        } else if deposit >= tx.fee {
            Ok(FeeFrom::Deposit)
        } else {
            Err(TxError::Insufficient {
                what: "balance",
                have: balance,
                need: tx.fee,
            })
        }
    }
}
