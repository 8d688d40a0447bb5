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
pub type ReceiptStoreError = String;

impl ReceiptStore {
    /// Opens or creates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, ReceiptStoreError> {
        let db = Database::create(path).map_err(|e| e.to_string())?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(RECEIPTS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Stores `receipt` as its channel's latest (if it is newer) and commits.
    pub fn put(&self, receipt: &Receipt) -> Result<(), ReceiptStoreError> {
        let bytes = postcard::to_stdvec(receipt).map_err(|e| e.to_string())?;
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(RECEIPTS).map_err(|e| e.to_string())?;
            let key = &receipt.body.channel.0;
            let newer = match table.get(key).map_err(|e| e.to_string())? {
                Some(old) => postcard::from_bytes::<Receipt>(old.value())
                    .map_or(true, |old| old.body.cum_amount < receipt.body.cum_amount),
                None => true,
            };
            if newer {
                table
                    .insert(key, bytes.as_slice())
                    .map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }

    /// The latest receipt of `channel`.
    pub fn get(&self, channel: &ChannelId) -> Result<Option<Receipt>, ReceiptStoreError> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(RECEIPTS).map_err(|e| e.to_string())?;
        match table.get(&channel.0).map_err(|e| e.to_string())? {
            Some(v) => postcard::from_bytes(v.value())
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Every stored receipt.
    pub fn all(&self) -> Result<Vec<Receipt>, ReceiptStoreError> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(RECEIPTS).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| e.to_string())? {
            let (_, v) = row.map_err(|e| e.to_string())?;
            if let Ok(r) = postcard::from_bytes(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }
}
