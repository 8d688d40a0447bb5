//! The latest receipt of every channel this relay serves, on redb, fsynced before it counts.

use std::path::Path;
use std::sync::Arc;

use ledger_lite::{ChannelId, Receipt};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const RECEIPTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("receipts");

/// Durable latest receipts by channel.
#[derive(Clone)]
pub struct ReceiptStore {
    db: Arc<Database>,
}

/// A receipt store failure.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptStoreError {
    /// The database failed.
    #[error("receipt store: {0}")]
    Db(#[from] redb::Error),
    /// A receipt could not be encoded.
    #[error("receipt store: cannot encode a receipt: {0}")]
    Encode(#[from] postcard::Error),
}

fn db(e: impl Into<redb::Error>) -> ReceiptStoreError {
    ReceiptStoreError::Db(e.into())
}

impl ReceiptStore {
    /// Opens or creates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, ReceiptStoreError> {
        let database = Database::create(path).map_err(db)?;
        let txn = database.begin_write().map_err(db)?;
        txn.open_table(RECEIPTS).map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(Self {
            db: Arc::new(database),
        })
    }

    /// Stores `receipt` as its channel's latest (if it is newer) and commits.
    pub fn put(&self, receipt: &Receipt) -> Result<(), ReceiptStoreError> {
        let bytes = postcard::to_stdvec(receipt)?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(RECEIPTS).map_err(db)?;
            let key = &receipt.body.channel.0;
            let newer = match table.get(key).map_err(db)? {
                Some(old) => postcard::from_bytes::<Receipt>(old.value())
                    .map_or(true, |old| old.body.cum_amount < receipt.body.cum_amount),
                None => true,
            };
            if newer {
                table.insert(key, bytes.as_slice()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// The latest receipt of `channel`.
    pub fn get(&self, channel: &ChannelId) -> Result<Option<Receipt>, ReceiptStoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(RECEIPTS).map_err(db)?;
        match table.get(&channel.0).map_err(db)? {
            Some(v) => Ok(postcard::from_bytes(v.value()).ok()),
            None => Ok(None),
        }
    }

    /// Forgets the receipts of `channels` (closed on the chain: nothing more can be settled).
    pub fn remove(&self, channels: &[ChannelId]) -> Result<(), ReceiptStoreError> {
        if channels.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(RECEIPTS).map_err(db)?;
            for channel in channels {
                table.remove(&channel.0).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// Every stored receipt.
    pub fn all(&self) -> Result<Vec<Receipt>, ReceiptStoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(RECEIPTS).map_err(db)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            if let Ok(r) = postcard::from_bytes(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use ledger_lite::{Amount, ChainId, ChannelId, ReceiptBody};
    use top_proto::identity::Identity;

    use super::*;

    fn receipt(payer: &Identity, channel: u8, units: u128) -> Receipt {
        ReceiptBody {
            chain: ChainId([1; 32]),
            channel: ChannelId([channel; 32]),
            cum_bytes: 1,
            cum_amount: Amount::from_units(units),
        }
        .sign(payer)
    }

    #[test]
    fn keeps_the_newest_receipt_per_channel_and_forgets_closed_ones_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.redb");
        let payer = Identity::generate();
        {
            let store = ReceiptStore::open(&path).unwrap();
            store.put(&receipt(&payer, 1, 10)).unwrap();
            store.put(&receipt(&payer, 1, 5)).unwrap();
            store.put(&receipt(&payer, 2, 7)).unwrap();
            let one = store.get(&ChannelId([1; 32])).unwrap().unwrap();
            assert_eq!(
                one.body.cum_amount,
                Amount::from_units(10),
                "an older one is ignored"
            );
            store.remove(&[ChannelId([1; 32])]).unwrap();
        }
        let store = ReceiptStore::open(&path).unwrap();
        assert!(store.get(&ChannelId([1; 32])).unwrap().is_none());
        let all = store.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].body.channel, ChannelId([2; 32]));
    }
}
