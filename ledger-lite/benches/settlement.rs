//! Applying blocks full of settlements (signature checks included) beside bare ed25519
//! verification of the same number of signatures, in the same run; and what every block costs
//! a node whatever it holds: the state root, a copy of the state, transaction hashes.
//!
//! `cargo bench -p ledger-lite --bench settlement`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ledger_lite::*;
use top_proto::identity::Identity;

const CHANNELS: usize = 4096;
const RELAYS: usize = 8;

struct Fixture {
    state: State,
    validator: Identity,
    /// One block: each relay settles its channels' receipts in one aggregated transaction.
    aggregated: Block,
    /// One block: one settlement transaction per receipt.
    single: Block,
    /// Every (key, message, signature) the aggregated block carries.
    signatures: Vec<(
        ed25519_dalek::VerifyingKey,
        Vec<u8>,
        ed25519_dalek::Signature,
    )>,
}

fn fixture() -> Fixture {
    let validator = Identity::from_seed(&[250; 32]);
    let relays: Vec<Identity> = (0..RELAYS)
        .map(|i| Identity::from_seed(&[i as u8 + 1; 32]))
        .collect();
    let payers: Vec<Identity> = (0..CHANNELS)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1000).to_le_bytes());
            Identity::from_seed(&seed)
        })
        .collect();
    let top = |n| Amount::from_top(n).unwrap_or(Amount::ZERO);
    let genesis = Genesis {
        bootstrap: Vec::new(),
        epochs: None,
        name: "bench".into(),
        time_ms: 0,
        validator: validator.account_id(),
        validators: vec![],
        params: Params {
            unbonding_blocks: 10,
            max_block_txs: 1 << 20,
            min_stake: ledger_lite::Amount::ZERO,
            min_fee: ledger_lite::Amount::from_units(1),
        },
        faucet: None,
        allocations: payers
            .iter()
            .chain(&relays)
            .map(|p| (p.account_id(), top(100)))
            .collect(),
    };
    let mut state = genesis.state().expect("genesis");
    let chain = state.chain;
    let mut setup = Vec::new();
    let mut channels = Vec::new();
    for (i, payer) in payers.iter().enumerate() {
        let relay = relays[i % RELAYS].account_id();
        let from = payer.account_id();
        setup.push(
            Tx {
                chain,
                from,
                nonce: 0,
                fee: Amount::from_units(1),
                kind: TxKind::Deposit { amount: top(10) },
            }
            .sign(payer),
        );
        setup.push(
            Tx {
                chain,
                from,
                nonce: 1,
                fee: Amount::from_units(1),
                kind: TxKind::OpenChannel {
                    relay,
                    amount: top(10),
                    sponsor: None,
                },
            }
            .sign(payer),
        );
        channels.push(ChannelId::derive(&chain, &from, &relay, 1));
    }
    let built = state.build_block(setup, 1, BlockHash::default(), &validator);
    assert!(built.rejected.is_empty());
    let head = built.block.hash();

    let receipts: Vec<Receipt> = channels
        .iter()
        .zip(&payers)
        .map(|(channel, payer)| {
            ReceiptBody {
                chain,
                channel: *channel,
                cum_bytes: 1 << 20,
                cum_amount: top(1),
            }
            .sign(payer)
        })
        .collect();
    let aggregated_txs: Vec<SignedTx> = relays
        .iter()
        .enumerate()
        .map(|(r, relay)| {
            let mine = receipts.iter().skip(r).step_by(RELAYS).cloned().collect();
            Tx {
                chain,
                from: relay.account_id(),
                nonce: 0,
                fee: Amount::from_units(1),
                kind: TxKind::Settle { receipts: mine },
            }
            .sign(relay)
        })
        .collect();
    let mut nonces = [0u64; RELAYS];
    let single_txs: Vec<SignedTx> = receipts
        .iter()
        .enumerate()
        .map(|(i, receipt)| {
            let r = i % RELAYS;
            let nonce = nonces[r];
            nonces[r] += 1;
            Tx {
                chain,
                from: relays[r].account_id(),
                nonce,
                fee: Amount::from_units(1),
                kind: TxKind::Settle {
                    receipts: vec![receipt.clone()],
                },
            }
            .sign(&relays[r])
        })
        .collect();
    let mut probe = state.clone();
    let aggregated = probe.build_block(aggregated_txs.clone(), 2, head, &validator);
    assert!(aggregated.rejected.is_empty());
    let mut probe = state.clone();
    let single = probe.build_block(single_txs, 2, head, &validator);
    assert!(single.rejected.is_empty());

    let mut signatures = Vec::new();
    for stx in &aggregated_txs {
        let key = stx.tx.from.verifying_key().expect("key");
        signatures.push((key, stx.signing_bytes(), stx.signature));
        if let TxKind::Settle { receipts } = &stx.tx.kind {
            for r in receipts {
                signatures.push((
                    r.signer.verifying_key().expect("key"),
                    r.signing_bytes(),
                    r.signature,
                ));
            }
        }
    }
    Fixture {
        state,
        validator,
        aggregated: aggregated.block,
        single: single.block,
        signatures,
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let validator = f.validator.account_id();
    let prev = f.aggregated.header.prev;
    let mut group = c.benchmark_group("settlement");
    group.sample_size(20);
    group.throughput(Throughput::Elements(CHANNELS as u64));
    group.bench_function("apply_block_aggregated_4096", |b| {
        b.iter_batched(
            || f.state.clone(),
            |mut s| {
                s.apply_block(&f.aggregated, &prev, &validator)
                    .expect("valid block")
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("apply_block_one_tx_each_4096", |b| {
        b.iter_batched(
            || f.state.clone(),
            |mut s| {
                s.apply_block(&f.single, &prev, &validator)
                    .expect("valid block")
            },
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(f.signatures.len() as u64));
    group.bench_function("baseline_dalek_verify_strict_4104_sigs", |b| {
        b.iter(|| {
            for (key, msg, sig) in &f.signatures {
                key.verify_strict(msg, sig).expect("valid");
            }
        })
    });
    group.bench_function("baseline_zip215_verify_4104_sigs", |b| {
        b.iter(|| {
            for (key, msg, sig) in &f.signatures {
                let key = ed25519_zebra::VerificationKey::try_from(key.to_bytes()).expect("key");
                key.verify(sig, msg).expect("valid");
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("state");
    group.sample_size(30);
    let entries = f.state.accounts().count() + f.state.channels().count();
    group.throughput(Throughput::Elements(entries as u64));
    group.bench_function("root", |b| b.iter(|| f.state.root()));
    group.bench_function("clone", |b| b.iter(|| f.state.clone()));
    group.throughput(Throughput::Elements(f.single.txs.len() as u64));
    group.bench_function("tx_hashes", |b| {
        b.iter(|| f.single.txs.iter().map(SignedTx::hash).collect::<Vec<_>>())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
