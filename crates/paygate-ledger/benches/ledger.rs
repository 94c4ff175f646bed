//! The ledger's costs per operation: a payment posting (recipe + apply, on the whole state
//! and on the snapshot the store would load), a journal append, an inclusion proof.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench setup

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use paygate_core::money::Money;
use paygate_ledger::merkle::{MerkleTree, leaf_hash, verify_inclusion};
use paygate_ledger::{CompactTree, Journal, LedgerState, append_entries, recipes, required};

const MERCHANTS: u64 = 1_000;
const NOW: u64 = 1_777_600_000_000;

fn payment(i: u64) -> paygate_ledger::Posting {
    let tx = format!("4200000000202605{i:012}");
    let mchid = format!("19{:08}", i % MERCHANTS);
    recipes::payment_success(&recipes::PaymentSuccess {
        transaction_id: &tx,
        mchid: &mchid,
        channel_id: "wx-main",
        total: Money::cny_fen(10_000 + (i % 997) as i64),
        fee: Money::cny_fen(60),
        profit_sharing: false,
    })
    .unwrap()
}

fn posting(c: &mut Criterion) {
    let mut state = LedgerState::new();
    for i in 0..MERCHANTS * 10 {
        state.apply_posting(&payment(i), NOW).unwrap();
    }
    let mut i = MERCHANTS * 10;
    c.bench_function(
        "payment posting: recipe + apply (10k payments, 1k merchants)",
        |b| {
            b.iter(|| {
                i += 1;
                let p = payment(i);
                black_box(state.apply_posting(&p, NOW).unwrap());
            })
        },
    );
    // The store path: load the required rows into a fresh snapshot, apply, read the delta.
    let mut j = i;
    c.bench_function("payment posting: snapshot of required rows + apply", |b| {
        b.iter(|| {
            j += 1;
            let p = payment(j);
            let req = required(&p.accounts, &p.transfers);
            let accounts: Vec<_> = req
                .account_ids
                .iter()
                .filter_map(|id| state.account(*id).cloned())
                .collect();
            let mut snap = LedgerState::from_rows(accounts, Vec::new(), Vec::new()).unwrap();
            black_box(snap.apply_posting(&p, NOW).unwrap());
        })
    });
}

fn journal(c: &mut Criterion) {
    let mut s = LedgerState::new();
    let records: Vec<_> = (0..1_000u64)
        .flat_map(|i| s.apply_posting(&payment(i), NOW).unwrap().delta.created)
        .collect();
    let mut journal = Journal::new();
    let mut k = 0usize;
    c.bench_function("journal append (encode + leaf hash + full tree)", |b| {
        b.iter(|| {
            k = (k + 1) % records.len();
            black_box(journal.append(&records[k]));
        })
    });
    let mut head = CompactTree::new();
    c.bench_function("journal append, store path (compact tree)", |b| {
        b.iter(|| {
            k = (k + 1) % records.len();
            black_box(append_entries(&mut head, std::slice::from_ref(&records[k])));
        })
    });
}

fn proofs(c: &mut Criterion) {
    let size = 1u64 << 20;
    let tree = MerkleTree::from_leaf_hashes((0..size).map(|i| leaf_hash(&i.to_be_bytes())));
    let root = tree.root();
    let mut index = 0u64;
    c.bench_function("inclusion proof, 2^20 leaves: generate", |b| {
        b.iter(|| {
            index = (index + 7_919) % size;
            black_box(tree.inclusion_proof(index, size).unwrap());
        })
    });
    c.bench_function("inclusion proof, 2^20 leaves: generate + verify", |b| {
        b.iter(|| {
            index = (index + 7_919) % size;
            let proof = tree.inclusion_proof(index, size).unwrap();
            let leaf = tree.leaf(index).unwrap();
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
        })
    });
}

criterion_group!(benches, posting, journal, proofs);
criterion_main!(benches);
