//! Signature checks for transactions and the receipts and allowances inside them, one by one
//! or in batches.
//!
//! Both paths use the one rule of [`top_proto::identity::verify`] (ZIP-215), whose batch and
//! single verification accept exactly the same signatures.

use ed25519_zebra::{VerificationKeyBytes, batch};

use crate::apply::TxError;
use crate::tx::{SignedTx, TxKind};

/// Checks the transaction's signature and every receipt signature inside it.
pub fn verify_tx(stx: &SignedTx) -> Result<(), TxError> {
    if !stx.verify() {
        return Err(TxError::BadSignature);
    }
    if let TxKind::Settle { receipts } = &stx.tx.kind
        && !receipts.iter().all(|r| r.verify())
    {
        return Err(TxError::BadReceiptSignature);
    }
    if let TxKind::SettleEgress { claims } = &stx.tx.kind
        && !claims.iter().all(|c| c.allowance.verify())
    {
        return Err(TxError::BadReceiptSignature);
    }
    Ok(())
}

/// Below this many signatures a batch is not worth a second thread.
const PARALLEL_MIN: usize = 512;

/// Checks every signature in `txs`; on failure names the first bad transaction.
///
/// Signatures are verified in batches (one multi-scalar multiplication per batch), split over
/// the machine's cores; a failed batch is rechecked one by one to find the culprit.
pub fn verify_txs(txs: &[SignedTx]) -> Result<(), (usize, TxError)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sigs: usize = txs.iter().map(signature_count).sum();
    if threads < 2 || sigs < PARALLEL_MIN {
        return verify_chunk(txs, 0);
    }
    let per_thread = txs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = txs
            .chunks(per_thread)
            .enumerate()
            .map(|(i, chunk)| scope.spawn(move || verify_chunk(chunk, i * per_thread)))
            .collect();
        let mut first_error: Option<(usize, TxError)> = None;
        for handle in handles {
            let result = handle.join().unwrap_or(Err((0, TxError::BadSignature)));
            if let Err(e) = result
                && first_error.as_ref().is_none_or(|f| e.0 < f.0)
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

fn signature_count(stx: &SignedTx) -> usize {
    match &stx.tx.kind {
        TxKind::Settle { receipts } => 1 + receipts.len(),
        TxKind::SettleEgress { claims } => 1 + claims.len(),
        _ => 1,
    }
}

fn verify_chunk(txs: &[SignedTx], offset: usize) -> Result<(), (usize, TxError)> {
    let mut verifier = batch::Verifier::new();
    for stx in txs {
        let msg = stx.signing_bytes();
        verifier.queue((
            VerificationKeyBytes::from(*stx.tx.from.as_bytes()),
            stx.signature,
            &msg,
        ));
        if let TxKind::Settle { receipts } = &stx.tx.kind {
            for receipt in receipts {
                let msg = receipt.signing_bytes();
                verifier.queue((
                    VerificationKeyBytes::from(*receipt.signer.as_bytes()),
                    receipt.signature,
                    &msg,
                ));
            }
        }
        if let TxKind::SettleEgress { claims } = &stx.tx.kind {
            for claim in claims {
                let msg = claim.allowance.signing_bytes();
                verifier.queue((
                    VerificationKeyBytes::from(*claim.allowance.signer.as_bytes()),
                    claim.allowance.signature,
                    &msg,
                ));
            }
        }
    }
    if verifier.verify(rand::rng()).is_ok() {
        return Ok(());
    }
    for (i, stx) in txs.iter().enumerate() {
        verify_tx(stx).map_err(|e| (offset + i, e))?;
    }
    // The batch failed but every signature passed alone: impossible under ZIP-215, so refuse.
    Err((offset, TxError::BadSignature))
}
