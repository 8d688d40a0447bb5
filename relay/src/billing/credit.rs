//! Credit across sessions: the unpaid usage a relay carries for one payer account, and for one
//! address, summed over all their sessions, live and recently ended. A session's own credit
//! window bounds one connection; this book stops many connections (or reconnecting) from
//! multiplying it: what an ended session left unpaid still counts for [`DEBT_MEMORY`].
//!
//! Sessions reserve credit here in steps (an eighth of the window), so the book's lock is taken
//! a few times per window, not per packet.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ledger_lite::Amount;
use lru::LruCache;
use top_proto::id::AccountId;

use crate::util::lock;

/// How long what an ended session left unpaid counts against its payer and address.
pub const DEBT_MEMORY: Duration = Duration::from_secs(3600);
/// Payers and addresses tracked at most (the least recently used are forgotten).
pub const TRACKED: usize = 65_536;

/// Unpaid usage of one account or address.
#[derive(Clone, Copy, Debug, Default)]
struct Owed {
    /// Reserved by live sessions.
    live: u128,
    /// Left unpaid by ended sessions; it drains steadily, all of it within `DEBT_MEMORY`
    /// (so a busy account's small tails never add up to a lock-out).
    ended: u128,
    /// When `ended` last drained.
    drained: Option<Instant>,
}

impl Owed {
    fn total(&mut self, now: Instant) -> u128 {
        if let Some(then) = self.drained {
            let elapsed = now.duration_since(then).as_millis();
            let memory = DEBT_MEMORY.as_millis();
            let drain = self.ended.saturating_mul(elapsed.min(memory)) / memory;
            self.ended = self.ended.saturating_sub(drain);
            self.drained = (self.ended > 0).then_some(now);
        }
        self.live.saturating_add(self.ended)
    }
}

/// The key an address's credit is kept under: an IPv4 address, or an IPv6 address's /64
/// (one subscriber's whole prefix).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Who a session's credit counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debtor {
    /// The account that signs the session's receipts.
    pub payer: AccountId,
    /// The client's address; `None` for a member relay's connection (an entry relay carries
    /// many users' sessions from its one address).
    pub addr: Option<IpAddr>,
}

/// The relay's book of credit per payer account and per address.
pub struct CreditBook {
    per_payer: u128,
    per_address: u128,
    inner: Mutex<Inner>,
}

struct Inner {
    payers: LruCache<AccountId, Owed>,
    addrs: LruCache<IpAddr, Owed>,
}

impl CreditBook {
    /// A book allowing `per_payer` unpaid per payer account and `per_address` per address.
    pub fn new(per_payer: Amount, per_address: Amount) -> Self {
        let cap = NonZeroUsize::new(TRACKED).unwrap_or(NonZeroUsize::MIN);
        Self {
            per_payer: per_payer.units(),
            per_address: per_address.units(),
            inner: Mutex::new(Inner {
                payers: LruCache::new(cap),
                addrs: LruCache::new(cap),
            }),
        }
    }

    /// Reserves `amount` more for `who` if both its payer and its address stay within their
    /// limits; returns whether it did.
    pub fn reserve(&self, who: &Debtor, amount: u128) -> bool {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let payer = inner.payers.get_or_insert_mut(who.payer, Owed::default);
        if payer.total(now).saturating_add(amount) > self.per_payer {
            return false;
        }
        if let Some(ip) = who.addr {
            let addr = inner.addrs.get_or_insert_mut(ip, Owed::default);
            if addr.total(now).saturating_add(amount) > self.per_address {
                return false;
            }
            addr.live = addr.live.saturating_add(amount);
        }
        if let Some(payer) = inner.payers.get_mut(&who.payer) {
            payer.live = payer.live.saturating_add(amount);
        }
        true
    }

    /// Gives back `amount` of what `who` reserved (its client paid).
    pub fn release(&self, who: &Debtor, amount: u128) {
        self.end(who, amount, 0);
    }

    /// A session of `who` ended (or moved to another payer) holding `reserved`, of which
    /// `unpaid` was never paid: that much counts as debt for a while.
    pub fn end(&self, who: &Debtor, reserved: u128, unpaid: u128) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let settle = |owed: &mut Owed| {
            owed.live = owed.live.saturating_sub(reserved);
            if unpaid > 0 {
                owed.total(now);
                owed.ended = owed.ended.saturating_add(unpaid);
                owed.drained = Some(now);
            }
        };
        if let Some(owed) = inner.payers.get_mut(&who.payer) {
            settle(owed);
        }
        if let Some(owed) = who.addr.and_then(|ip| inner.addrs.get_mut(&ip)) {
            settle(owed);
        }
    }

    /// What `payer` owes now (reserved by live sessions plus recent debt).
    pub fn owed_by(&self, payer: &AccountId) -> Amount {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        Amount::from_units(inner.payers.get_mut(payer).map_or(0, |o| o.total(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debtor(n: u8, ip: Option<[u8; 4]>) -> Debtor {
        Debtor {
            payer: AccountId::from_wire([n; 32]),
            addr: ip.map(IpAddr::from),
        }
    }

    #[test]
    fn a_payer_and_an_address_each_stay_within_their_limit() {
        let book = CreditBook::new(Amount::from_units(100), Amount::from_units(150));
        let a = debtor(1, Some([10, 0, 0, 1]));
        assert!(book.reserve(&a, 60));
        assert!(book.reserve(&a, 40));
        assert!(!book.reserve(&a, 1), "the payer's limit");
        // Another payer from the same address: only what the address has left.
        let b = debtor(2, Some([10, 0, 0, 1]));
        assert!(book.reserve(&b, 50));
        assert!(!book.reserve(&b, 1), "the address's limit");
        // A member relay's connection counts against the payer only.
        let c = debtor(2, None);
        assert!(book.reserve(&c, 50));
        assert!(
            !book.reserve(&c, 1),
            "the payer's limit, wherever it connects from"
        );
        book.release(&a, 100);
        assert!(book.reserve(&a, 100), "paid credit comes back");
    }

    #[test]
    fn what_an_ended_session_left_unpaid_still_counts() {
        let book = CreditBook::new(Amount::from_units(100), Amount::from_units(1_000));
        let a = debtor(1, Some([10, 0, 0, 1]));
        assert!(book.reserve(&a, 100));
        book.end(&a, 100, 90);
        assert_eq!(book.owed_by(&a.payer), Amount::from_units(90));
        assert!(
            !book.reserve(&a, 20),
            "reconnecting does not renew the credit"
        );
        assert!(book.reserve(&a, 10));
    }

    #[test]
    fn debt_drains_and_an_ipv6_prefix_is_one_address() {
        let mut owed = Owed {
            live: 0,
            ended: 1_000,
            drained: Some(Instant::now()),
        };
        let later = Instant::now() + DEBT_MEMORY / 2;
        assert!((490..=510).contains(&owed.total(later)), "half drained");
        assert_eq!(owed.total(later + DEBT_MEMORY), 0, "all drained");
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), IpAddr::from([10, 0, 0, 1]));
    }
}
