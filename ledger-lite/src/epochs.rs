//! The validator set by stake: on a chain of several validators with epochs, the registered
//! relays staking most (at least the rule's validator stake: staking that much is how a relay
//! offers to validate) become the validators of the next epoch when an epoch's last block is
//! applied. The set is part of the state (and of its root), so every node derives the same one
//! from the blocks, and a follower knows whose finality proofs to take for every height.

use serde::{Deserialize, Serialize};
use top_proto::id::AccountId;

use crate::block::MAX_VALIDATORS;
use crate::state::State;

/// The least blocks an epoch holds (a consensus engine starts afresh at each epoch).
pub const MIN_EPOCH_BLOCKS: u64 = 4;
/// The fewest candidates a set changes to (fewer keep the current set).
pub const MIN_VALIDATORS: usize = 4;

/// How a chain's validator set changes: every `blocks` blocks, to the `max_validators`
/// registered relays staking most, of those staking at least `min_stake`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRule {
    /// Blocks in one epoch: epoch `e` holds heights `e * blocks ..= e * blocks + blocks - 1`.
    pub blocks: u64,
    /// The most validators an epoch has.
    pub max_validators: u32,
    /// The least stake of a validator (a relay staking less only relays).
    pub min_stake: crate::Amount,
}

impl EpochRule {
    /// Why the rule cannot be used, if it cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.blocks < MIN_EPOCH_BLOCKS {
            return Some("an epoch holds at least 4 blocks");
        }
        if self.max_validators == 0 || self.max_validators as usize > MAX_VALIDATORS {
            return Some("max_validators must be between 1 and 128");
        }
        None
    }

    /// The epoch holding `height`.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.blocks.max(1)
    }

    /// Whether `height` is the last block of its epoch.
    pub fn is_last(&self, height: u64) -> bool {
        height % self.blocks.max(1) == self.blocks.max(1) - 1
    }

    /// The last height of `epoch` (none past the heights there are).
    pub fn last_of(&self, epoch: u64) -> Option<u64> {
        epoch
            .checked_add(1)?
            .checked_mul(self.blocks.max(1))?
            .checked_sub(1)
    }
}

impl State {
    /// The validators the next epoch would have, were this epoch to end now: the first of
    /// [`State::candidates`], at most the rule's number, but
    /// - fewer than [`MIN_VALIDATORS`] candidates (or the rule's number, if smaller) keep the
    ///   current set: a handful of keys never becomes the whole set;
    /// - newcomers take at most [`State::newcomers_allowed`] of the next set's seats, the best
    ///   ranked first; the seats they would have taken go to current validators (those still
    ///   ranked first, then the others by id), so the validators of one epoch always hold a
    ///   quorum of the next (a set of 3 or fewer never seats a newcomer).
    pub fn next_validators(&self) -> Vec<AccountId> {
        let Some(rule) = self.epochs else {
            return self.validators.clone();
        };
        let seats = rule.max_validators as usize;
        let ranked = self.candidates(seats);
        if ranked.len() < MIN_VALIDATORS.min(seats) {
            return self.validators.clone();
        }
        let mut next = ranked;
        // Newcomers beyond what keeps the current set a
        // quorum of the next give their seats back, the lowest ranked first, to current
        // validators (ranked ones are in already; then the others, by id).
        let mut incumbents_left: Vec<AccountId> = self
            .validators
            .iter()
            .filter(|id| !next.contains(id))
            .copied()
            .collect();
        incumbents_left.sort();
        incumbents_left.reverse();
        loop {
            let newcomers = next
                .iter()
                .filter(|id| !self.validators.contains(id))
                .count();
            if newcomers <= Self::newcomers_allowed(next.len()) {
                break;
            }
            if let Some(last) = next.iter().rposition(|id| !self.validators.contains(id)) {
                next.remove(last);
            }
            if let Some(incumbent) = incumbents_left.pop() {
                next.push(incumbent);
            }
        }
        if next.len() < MIN_VALIDATORS.min(seats) {
            return self.validators.clone();
        }
        next
    }

    /// Newcomers a set of `seats` validators may hold so that the others are a quorum of it
    /// (simplex's: all but (n - 1) / 3): none in a set of 3 or fewer.
    pub fn newcomers_allowed(seats: usize) -> usize {
        seats.saturating_sub(1) / 3
    }

    /// The registered relays staking at least the rule's validator stake, most stake first
    /// (ties to the lower id), at most `limit`.
    pub fn candidates(&self, limit: usize) -> Vec<AccountId> {
        let Some(rule) = self.epochs else {
            return Vec::new();
        };
        let mut staked: Vec<(AccountId, crate::Amount)> = self
            .registered
            .iter()
            .filter_map(|id| Some((*id, self.accounts.get(id)?.stake)))
            .filter(|(id, stake)| {
                *stake >= rule.min_stake
                    && *stake >= self.params.min_stake
                    && !stake.is_zero()
                    && id.verifying_key().is_ok()
            })
            .collect();
        staked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        staked.truncate(limit);
        staked.into_iter().map(|(id, _)| id).collect()
    }

    /// Ends the block just applied: at an epoch's last block, the next epoch begins with the
    /// validators [`State::next_validators`] picks.
    pub(crate) fn end_block(&mut self) {
        let Some(rule) = self.epochs else {
            return;
        };
        if rule.is_last(self.height) {
            self.validators = self.next_validators();
            self.epoch = rule.epoch_of(self.height) + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Amount;
    use crate::state::Params;
    use crate::tx::ChainId;

    fn id(n: u8) -> AccountId {
        top_proto::identity::Identity::from_seed(&[n; 32]).account_id()
    }

    /// A state of `current` validators; `staked` registered with the given stakes.
    fn state(seats: u32, current: &[AccountId], staked: &[(AccountId, u128)]) -> State {
        let params = Params {
            unbonding_blocks: 1,
            max_block_txs: 1,
            min_stake: Amount::from_units(1),
            min_fee: Amount::from_units(1),
        };
        let mut s = State::empty(ChainId([0; 32]), params, 0);
        s.epochs = Some(EpochRule {
            blocks: 4,
            max_validators: seats,
            min_stake: Amount::from_units(10),
        });
        s.validators = current.to_vec();
        for (who, stake) in staked {
            let account = s.accounts.entry(*who).or_default();
            account.stake = Amount::from_units(*stake);
            s.registered.insert(*who);
        }
        s
    }

    /// Simplex's quorum of `n`.
    fn quorum(n: usize) -> usize {
        n - (n - 1) / 3
    }

    #[test]
    fn the_current_set_always_holds_a_quorum_of_the_next() {
        let incumbents: Vec<AccountId> = (1..=10).map(id).collect();
        let strangers: Vec<AccountId> = (101..=110).map(id).collect();
        for v in 1..=10usize {
            for seats in 1..=10u32 {
                for ranked_incumbents in 0..=v {
                    for newcomers in 0..=10usize {
                        let current = &incumbents[..v];
                        // Strangers outbid every incumbent; some incumbents left the registry.
                        let staked: Vec<(AccountId, u128)> = current[..ranked_incumbents]
                            .iter()
                            .map(|i| (*i, 20))
                            .chain(strangers[..newcomers].iter().map(|n| (*n, 1000)))
                            .collect();
                        let s = state(seats, current, &staked);
                        let next = s.next_validators();
                        let kept = next.iter().filter(|n| current.contains(n)).count();
                        assert!(!next.is_empty());
                        assert!(next.len() <= (seats as usize).max(v));
                        assert!(
                            next == current || kept >= quorum(next.len()),
                            "v={v} seats={seats} ranked={ranked_incumbents} new={newcomers}: \
                             {kept} of {} kept",
                            next.len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn epochs_cover_heights_without_gaps() {
        let rule = EpochRule {
            blocks: 10,
            max_validators: 4,
            min_stake: crate::Amount::ZERO,
        };
        assert_eq!(rule.epoch_of(0), 0);
        assert_eq!(rule.epoch_of(9), 0);
        assert_eq!(rule.epoch_of(10), 1);
        assert!(rule.is_last(9) && rule.is_last(19) && !rule.is_last(10));
        assert_eq!(rule.last_of(0), Some(9));
        assert_eq!(rule.last_of(2), Some(29));
        assert_eq!(rule.last_of(u64::MAX), None);
        assert!(rule.problem().is_none());
        assert!(EpochRule { blocks: 3, ..rule }.problem().is_some());
        assert!(
            EpochRule {
                max_validators: 0,
                ..rule
            }
            .problem()
            .is_some()
        );
        assert!(
            EpochRule {
                max_validators: 129,
                ..rule
            }
            .problem()
            .is_some()
        );
    }
}
