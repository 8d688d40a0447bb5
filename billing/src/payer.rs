//! The client's side: it counts its own usage and signs only what it agrees it owes.

use ledger_lite::{Amount, ChainId, ChannelId, Receipt, ReceiptBody};
use top_proto::identity::Identity;

use crate::prices::{Prices, Usage};

/// Why the client refused to sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    /// The relay metered more than the client used.
    #[error("the relay claims more usage than this client counted")]
    Overclaimed,
    /// The amount does not match the offered prices.
    #[error("the amount asked does not match the offered prices")]
    WrongAmount,
    /// More than the channel's lock.
    #[error("the amount asked is beyond the channel's lock")]
    BeyondLock,
    /// Smaller than an amount already signed.
    #[error("the amount asked is below one already signed")]
    Backwards,
}

/// A client's channel with one relay, from the client's side.
#[derive(Clone, Debug)]
pub struct Payer {
    chain: ChainId,
    channel: ChannelId,
    prices: Prices,
    lock: Amount,
    base_amount: Amount,
    base_bytes: u64,
    signed: Amount,
}

impl Payer {
    /// Bills to `channel` from `cum_amount` / `cum_bytes` already signed on it.
    pub fn new(
        chain: ChainId,
        channel: ChannelId,
        prices: Prices,
        lock: Amount,
        cum_amount: Amount,
        cum_bytes: u64,
    ) -> Self {
        Self {
            chain,
            channel,
            prices,
            lock,
            base_amount: cum_amount,
            base_bytes: cum_bytes,
            signed: cum_amount,
        }
    }

    /// The channel.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The cumulative amount signed so far.
    pub fn signed(&self) -> Amount {
        self.signed
    }

    /// Signs a receipt for `claimed` usage at `cum_amount` if the client's own count `counted`
    /// (plus `slack` bytes per service for traffic in flight) covers it and the amount is what
    /// the prices say.
    pub fn sign(
        &mut self,
        identity: &Identity,
        claimed: &Usage,
        cum_amount: Amount,
        counted: &Usage,
        slack: u64,
    ) -> Result<Receipt, PayError> {
        if !claimed.within(counted, slack) {
            return Err(PayError::Overclaimed);
        }
        let expected = claimed
            .cost(&self.prices)
            .and_then(|c| self.base_amount.checked_add(c))
            .map_err(|_| PayError::WrongAmount)?;
        if expected != cum_amount {
            return Err(PayError::WrongAmount);
        }
        if cum_amount > self.lock {
            return Err(PayError::BeyondLock);
        }
        if cum_amount < self.signed {
            return Err(PayError::Backwards);
        }
        self.signed = cum_amount;
        Ok(ReceiptBody {
            chain: self.chain,
            channel: self.channel,
            cum_bytes: self.base_bytes.saturating_add(claimed.total()),
            cum_amount,
        }
        .sign(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::{Meter, ReceiptError};

    fn setup() -> (Identity, Meter, Payer) {
        let client = Identity::from_seed(&[4; 32]);
        let prices = Prices {
            msg: Amount::from_units(1 << 20),
            mailbox: Amount::from_units(2 << 20),
            pipe: Amount::from_units(1 << 19),
            vpn: Amount::from_units(1 << 18),
            cdn: Amount::from_units(1 << 17),
        };
        let chain = ChainId([1; 32]);
        let channel = ChannelId([2; 32]);
        let mut meter = Meter::new(chain, prices, Amount::from_units(1000));
        meter.attach(channel, client.account_id(), Amount::from_units(5000), None);
        let payer = Payer::new(
            chain,
            channel,
            prices,
            Amount::from_units(5000),
            Amount::ZERO,
            0,
        );
        (client, meter, payer)
    }

    #[test]
    fn no_channel_no_credit() {
        let prices = Prices {
            msg: Amount::from_units(1),
            ..Prices::default()
        };
        let meter = Meter::new(ChainId([1; 32]), prices, Amount::from_units(1 << 30));
        assert!(!meter.may_carry(), "a fresh key is carried on credit");
        let free = Meter::new(ChainId([1; 32]), Prices::default(), Amount::ZERO);
        assert!(free.may_carry(), "a free relay carries everyone");
    }

    #[test]
    fn a_new_channel_is_billed_only_from_its_attach() {
        let (client, mut meter, _) = setup();
        meter.record(crate::prices::Service::Msg, 4 << 20);
        let before = meter.owed();
        assert!(!before.is_zero());
        // Another channel attached to the same meter (a payer's second session): what the
        // first carried is not billed to it again.
        meter.attach(
            ChannelId([3; 32]),
            client.account_id(),
            Amount::from_units(5000),
            None,
        );
        assert_eq!(meter.owed(), Amount::ZERO);
        assert_eq!(meter.usage(), Usage::default());
    }

    #[test]
    fn relay_and_client_agree_and_credit_runs_out_without_receipts() {
        let (client, mut meter, mut payer) = setup();
        let mut counted = Usage::default();
        counted.add(crate::Service::Msg, 200);
        meter.record(crate::Service::Msg, 200);
        assert!(
            meter.pay_request(false).is_none(),
            "below a quarter of the window"
        );
        meter.record(crate::Service::Msg, 400);
        counted.add(crate::Service::Msg, 400);
        let (usage, amount) = meter.pay_request(false).unwrap();
        assert_eq!(amount, Amount::from_units(600));
        let receipt = payer.sign(&client, &usage, amount, &counted, 0).unwrap();
        meter.check(&receipt).unwrap();
        assert!(meter.accept(receipt.clone()));
        assert_eq!(meter.check(&receipt), Err(ReceiptError::NotNewer(amount)));
        assert_eq!(meter.unpaid(), Amount::ZERO);

        meter.record(crate::Service::Pipe, 2000);
        assert!(meter.may_carry(), "exactly the credit window unpaid");
        meter.record(crate::Service::Pipe, 4);
        assert!(
            !meter.may_carry(),
            "beyond the credit window without a receipt"
        );
    }

    #[test]
    fn a_receipt_checked_before_another_stream_moved_on_is_not_taken() {
        let (client, mut meter, mut payer) = setup();
        let mut counted = Usage::default();
        counted.add(crate::Service::Msg, 600);
        meter.record(crate::Service::Msg, 600);
        let (usage, amount) = meter.pay_request(true).unwrap();
        let first = payer.sign(&client, &usage, amount, &counted, 0).unwrap();
        meter.check(&first).unwrap();
        counted.add(crate::Service::Msg, 100);
        meter.record(crate::Service::Msg, 100);
        let (usage, amount) = meter.pay_request(true).unwrap();
        let second = payer.sign(&client, &usage, amount, &counted, 0).unwrap();
        meter.check(&second).unwrap();
        // Both were checked; the newer one is taken first: the older one no longer counts.
        assert!(meter.accept(second.clone()));
        assert!(!meter.accept(first));
        assert_eq!(meter.paid(), second.body.cum_amount);
        // Another channel attached meanwhile: a receipt of the old one is not its payment.
        meter.record(crate::Service::Msg, 100);
        counted.add(crate::Service::Msg, 100);
        let (usage, amount) = meter.pay_request(true).unwrap();
        let third = payer.sign(&client, &usage, amount, &counted, 0).unwrap();
        meter.check(&third).unwrap();
        meter.attach(
            ChannelId([3; 32]),
            client.account_id(),
            Amount::from_units(5000),
            None,
        );
        assert!(!meter.accept(third));
        assert_eq!(meter.paid(), Amount::ZERO);
    }

    #[test]
    fn a_receipt_with_a_good_amount_and_a_broken_signature_is_refused() {
        let (client, mut meter, mut payer) = setup();
        let counted = Usage {
            msg: 600,
            ..Usage::default()
        };
        meter.record(crate::Service::Msg, 600);
        let (usage, amount) = meter.pay_request(true).unwrap();
        let mut receipt = payer.sign(&client, &usage, amount, &counted, 0).unwrap();
        receipt.body.cum_bytes -= 1;
        assert_eq!(meter.check(&receipt), Err(ReceiptError::BadSignature));
    }

    #[test]
    fn held_bytes_use_credit_but_are_asked_for_only_once_proven() {
        let (_, mut meter, _) = setup();
        // 1000 units of credit at 2^18 units per MiB of VPN: 4000 bytes.
        meter.hold(3000);
        assert!(meter.may_carry());
        assert!(
            meter.pay_request(true).is_none(),
            "held bytes were asked for"
        );
        meter.hold(2000);
        assert!(!meter.may_carry(), "held bytes beyond the window carried");
        // Proven: billed and asked for; lost: let go, credit free again.
        meter.prove(1000);
        let (usage, _) = meter.pay_request(true).unwrap();
        assert_eq!(usage.vpn, 1000);
        meter.release(3000);
        assert_eq!(meter.held(), 1000);
        assert!(meter.may_carry());
        // Released as lost, then proven after all: billed (it arrived); never below zero held.
        meter.prove(3000);
        meter.release(5000);
        assert_eq!((meter.held(), meter.usage().vpn), (0, 4000));
    }

    #[test]
    fn clients_refuse_overclaims_and_wrong_amounts() {
        let (client, mut meter, mut payer) = setup();
        meter.record(crate::Service::Msg, 900);
        let counted = Usage {
            msg: 100,
            ..Usage::default()
        };
        let (usage, amount) = meter.pay_request(false).unwrap();
        assert_eq!(
            payer.sign(&client, &usage, amount, &counted, 0),
            Err(PayError::Overclaimed)
        );
        let counted = Usage {
            msg: 900,
            ..Usage::default()
        };
        assert_eq!(
            payer.sign(&client, &usage, Amount::from_units(901), &counted, 0),
            Err(PayError::WrongAmount)
        );
        // VPN bytes are checked against the client's own VPN count too.
        meter.record(crate::Service::Vpn, 4096);
        let (vpn_usage, vpn_amount) = meter.pay_request(false).unwrap();
        assert_eq!(
            payer.sign(&client, &vpn_usage, vpn_amount, &counted, 0),
            Err(PayError::Overclaimed)
        );
        let stranger = Identity::from_seed(&[5; 32]);
        let forged = payer
            .clone()
            .sign(&stranger, &usage, amount, &counted, 0)
            .unwrap();
        assert_eq!(meter.check(&forged), Err(ReceiptError::BadSignature));
    }
}
