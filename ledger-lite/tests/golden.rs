//! Golden vectors: the exact bytes of a transaction, a receipt and a block. A change here is a
//! protocol change and breaks every deployed node; update the vectors only on purpose.

use ledger_lite::*;
use top_proto::identity::Identity;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fixtures() -> (Identity, Identity, ChainId, ChannelId) {
    let payer = Identity::from_seed(&[1; 32]);
    let relay = Identity::from_seed(&[2; 32]);
    let chain = ChainId([7; 32]);
    let channel = ChannelId::derive(&chain, &payer.account_id(), &relay.account_id(), 3);
    (payer, relay, chain, channel)
}

#[test]
fn receipt_encoding_is_frozen() {
    let (payer, _, chain, channel) = fixtures();
    let receipt = ReceiptBody {
        chain,
        channel,
        cum_bytes: 1 << 20,
        cum_amount: Amount::from_units(1_500),
    }
    .sign(&payer);
    let bytes = postcard::to_stdvec(&receipt).unwrap();
    assert_eq!(hex(&bytes), include_str!("golden/receipt.hex").trim());
    let back: Receipt = postcard::from_bytes(&bytes).unwrap();
    assert!(back.verify());
}

#[test]
fn transaction_encoding_is_frozen() {
    let (payer, relay, chain, channel) = fixtures();
    let receipt = ReceiptBody {
        chain,
        channel,
        cum_bytes: 1 << 20,
        cum_amount: Amount::from_units(1_500),
    }
    .sign(&payer);
    let txs = [
        Tx {
            chain,
            from: payer.account_id(),
            nonce: 3,
            fee: Amount::from_units(1_000),
            kind: TxKind::OpenChannel {
                relay: relay.account_id(),
                amount: Amount::from_units(10_000),
                sponsor: None,
            },
        }
        .sign(&payer),
        Tx {
            chain,
            from: relay.account_id(),
            nonce: 0,
            fee: Amount::from_units(1_000),
            kind: TxKind::Settle {
                receipts: vec![receipt],
            },
        }
        .sign(&relay),
    ];
    let encoded: Vec<String> = txs
        .iter()
        .map(|t| hex(&postcard::to_stdvec(t).unwrap()))
        .collect();
    assert_eq!(encoded.join("\n"), include_str!("golden/txs.hex").trim());
}

#[test]
fn block_encoding_is_frozen() {
    let (payer, relay, chain, _) = fixtures();
    let tx = Tx {
        chain,
        from: payer.account_id(),
        nonce: 0,
        fee: Amount::from_units(1_000),
        kind: TxKind::Transfer {
            to: relay.account_id(),
            amount: Amount::from_units(42),
        },
    }
    .sign(&payer);
    let header = BlockHeader {
        chain,
        height: 1,
        prev: BlockHash::default(),
        time_ms: 1_700_000_000_000,
        txs_root: ledger_lite::block::txs_root(std::slice::from_ref(&tx)),
        state_root: [9; 32],
    };
    let block = Block::sign(header, vec![tx], &relay);
    let bytes = postcard::to_stdvec(&block).unwrap();
    assert_eq!(hex(&bytes), include_str!("golden/block.hex").trim());
    assert_eq!(
        block.hash().to_string(),
        include_str!("golden/block_hash.txt").trim()
    );
}
