//! The journal: the canonical encoding is pinned and strict, the store's compact appends equal
//! the in-memory tree, and `verify_log` names the first edited, missing or moved entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use paygate_core::money::{Currency, Money};
use paygate_ledger::canonical::{self, DecodeError};
use paygate_ledger::merkle::{verify_consistency, verify_inclusion};
use paygate_ledger::{
    AccountId, AuditError, BadEntry, CheckpointVerifier, CompactTree, Journal, JournalEntry,
    LedgerState, NoteSigner, Transfer, TransferId, TransferKind, TransferRecord, append_entries,
    recipes, verify_log,
};

fn sample_record() -> TransferRecord {
    TransferRecord {
        transfer: Transfer {
            id: TransferId::new(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10).unwrap(),
            debit_account_id: AccountId::new(0x11).unwrap(),
            credit_account_id: AccountId::new(0x22).unwrap(),
            amount: 10_000,
            pending_id: Some(TransferId::new(0x33).unwrap()),
            timeout_s: 0,
            ledger: Currency::CNY,
            code: 203,
            kind: TransferKind::PostPending,
            linked: true,
            user_data: "50300000012026050112345678".into(),
        },
        timestamp_ms: 1_777_600_000_000,
    }
}

#[test]
fn canonical_encoding_is_pinned() {
    let r = sample_record();
    let bytes = canonical::encode(&r);
    let want = concat!(
        "5401",                             // 'T', version 1
        "0102030405060708090a0b0c0d0e0f10", // id
        "00000000000000000000000000000011", // debit
        "00000000000000000000000000000022", // credit
        "0000000000002710",                 // amount 10000
        "00000000000000000000000000000033", // pending_id
        "00000000",                         // timeout_s
        "434e59",                           // CNY
        "00cb",                             // code 203
        "02",                               // post_pending
        "01",                               // linked
        "0000019de1377000",                 // timestamp_ms
        "1a",                               // user_data length 26
        "3530333030303030303132303236303530313132333435363738",
    );
    assert_eq!(hex::encode(&bytes), want);
    assert_eq!(bytes.len(), canonical::FIXED_BYTES + 26);
    assert_eq!(canonical::decode(&bytes).unwrap(), r);
    // The leaf hash is SHA-256(0x00 ‖ bytes): pinned so a silent encoding change fails here.
    assert_eq!(
        canonical::leaf_hash_of(&r).to_hex(),
        "131a65bea635532a36507210bb1372cf178777d1e564c0e52e833f436391af93"
    );
    let none = TransferRecord {
        transfer: Transfer {
            pending_id: None,
            kind: TransferKind::Single,
            ..r.transfer.clone()
        },
        ..r
    };
    assert_eq!(canonical::decode(&canonical::encode(&none)).unwrap(), none);
}

#[test]
fn canonical_decoding_refuses_anything_encode_would_not_write() {
    let good = canonical::encode(&sample_record());
    let mutate = |at: usize, v: u8| {
        let mut b = good.clone();
        b[at] = v;
        canonical::decode(&b)
    };
    assert_eq!(mutate(0, b'A'), Err(DecodeError::RecordType(b'A')));
    assert_eq!(mutate(1, 2), Err(DecodeError::Version(2)));
    assert_eq!(mutate(83, 9), Err(DecodeError::Kind(9)));
    assert_eq!(mutate(84, 3), Err(DecodeError::Flags(3)));
    assert!(matches!(mutate(78, b'X'), Err(DecodeError::Ledger(_))));
    assert_eq!(mutate(95, 0x07), Err(DecodeError::UserData));
    assert!(matches!(mutate(93, 27), Err(DecodeError::Length(_))));
    let mut zero_id = good.clone();
    zero_id[2..18].fill(0);
    assert_eq!(canonical::decode(&zero_id), Err(DecodeError::Id("id")));
    let mut longer = good.clone();
    longer.push(b'x');
    assert!(matches!(
        canonical::decode(&longer),
        Err(DecodeError::Length(_))
    ));
    assert!(matches!(
        canonical::decode(&good[..50]),
        Err(DecodeError::Length(_))
    ));
}

/// A small real ledger history: payments, a refund reserved and paid, a settlement.
fn history() -> Vec<TransferRecord> {
    let mut s = LedgerState::new();
    let mut records = Vec::new();
    let mut now = 1_777_600_000_000u64;
    for i in 0..30u32 {
        let tx = format!("42000000002026050100000{i:05}");
        let p = recipes::payment_success(&recipes::PaymentSuccess {
            transaction_id: &tx,
            mchid: "1900000109",
            channel_id: "wx-main",
            total: Money::cny_fen(1_000 + i64::from(i)),
            fee: Money::cny_fen(6),
            profit_sharing: false,
        })
        .unwrap();
        now += 1_000;
        records.extend(s.apply_posting(&p, now).unwrap().delta.created);
    }
    let refund = recipes::Refund {
        refund_id: "50300000012026050100000001",
        mchid: "1900000109",
        channel_id: "wx-main",
        amount: Money::cny_fen(500),
        fee_refund: Money::cny_fen(3),
        funds: recipes::RefundFunds::Pending,
        timeout_s: 0,
    };
    for p in [
        recipes::refund_requested(&refund).unwrap(),
        recipes::refund_succeeded(&refund).unwrap(),
    ] {
        now += 1_000;
        records.extend(s.apply_posting(&p, now).unwrap().delta.created);
    }
    let settle =
        recipes::settle("1900000109", "1900000109/2026-05-01", Money::cny_fen(5_000)).unwrap();
    records.extend(s.apply_posting(&settle, now + 1).unwrap().delta.created);
    s.check_invariants().unwrap();
    records
}

const ORIGIN: &str = "paygate.example/ledger";

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [9; 32]).unwrap()
}

fn verifier() -> CheckpointVerifier {
    CheckpointVerifier::new(ORIGIN, signer().verifier())
}

/// Entries of the history, and a checkpoint signed after the first `signed_at` of them.
fn signed_log(signed_at: usize) -> (Vec<JournalEntry>, String) {
    let records = history();
    let mut journal = Journal::new();
    let mut entries = journal.append_all(&records[..signed_at]);
    let signed = journal.signed_checkpoint(ORIGIN, &signer()).unwrap();
    entries.extend(journal.append_all(&records[signed_at..]));
    (entries, signed)
}

#[test]
fn the_store_path_and_the_in_memory_journal_agree() {
    let records = history();
    assert!(records.len() > 60);
    let mut head = CompactTree::new();
    let mut store_rows = Vec::new();
    // The store appends one fact's records per transaction.
    for chunk in records.chunks(3) {
        let json = serde_json::to_string(&head).unwrap();
        let mut loaded: CompactTree = serde_json::from_str(&json).unwrap();
        store_rows.extend(append_entries(&mut loaded, chunk));
        head = loaded;
    }
    let mut journal = Journal::new();
    let entries = journal.append_all(&records);
    assert_eq!(entries, store_rows);
    assert_eq!(head.root(), journal.root());
    // An inclusion proof for one transfer, against the signed checkpoint.
    let signed = journal.signed_checkpoint(ORIGIN, &signer()).unwrap();
    let cp = verifier().open(&signed).unwrap();
    let e = &entries[17];
    let proof = journal.inclusion_proof(e.index, cp.size).unwrap();
    verify_inclusion(&e.leaf_hash, e.index, cp.size, &proof, &cp.root).unwrap();
    // And the log only grew between two checkpoints.
    let old = journal.root_at(20).unwrap();
    let c = journal.consistency_proof(20, cp.size).unwrap();
    verify_consistency(20, cp.size, &c, &old, &cp.root).unwrap();
    // JSON rows round-trip (what the store may keep).
    let row: JournalEntry = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
    assert_eq!(&row, e);
}

#[test]
fn verify_log_passes_an_untouched_log_including_entries_after_the_checkpoint() {
    let (entries, signed) = signed_log(40);
    let report = verify_log(&entries, &signed, &verifier()).unwrap();
    assert_eq!(report.checkpoint.size, 40);
    assert_eq!(report.entries, entries.len() as u64);
    // The empty log against a checkpoint of size 0.
    let empty = Journal::new().signed_checkpoint(ORIGIN, &signer()).unwrap();
    assert!(verify_log(Vec::<JournalEntry>::new(), &empty, &verifier()).is_ok());
}

#[test]
fn verify_log_names_the_first_edited_entry() {
    let (entries, signed) = signed_log(40);
    let mut edited = entries.clone();
    edited[17].record.transfer.amount += 1;
    edited[31].record.transfer.user_data.push('x');
    let e = verify_log(&edited, &signed, &verifier()).unwrap_err();
    assert_eq!(e.bad_index(), Some(17));
    assert_eq!(
        e,
        AuditError::BadEntry {
            index: 17,
            reason: BadEntry::Edited {
                transfer_id: entries[17].record.transfer.id
            }
        }
    );
    assert_eq!(e.code(), "edited");
    // Every field counts, also after the checkpoint.
    let mut late = entries.clone();
    late[45].record.timestamp_ms += 1;
    assert_eq!(
        verify_log(&late, &signed, &verifier())
            .unwrap_err()
            .bad_index(),
        Some(45)
    );
    let mut code = entries.clone();
    code[3].record.transfer.code = 999;
    assert_eq!(
        verify_log(&code, &signed, &verifier())
            .unwrap_err()
            .bad_index(),
        Some(3)
    );
}

#[test]
fn verify_log_catches_rewritten_hashes_deleted_moved_and_missing_entries() {
    let (entries, signed) = signed_log(40);
    // Edited together with its recorded hash: the signed root no longer matches.
    let mut rewritten = entries.clone();
    rewritten[12].record.transfer.amount = 1;
    rewritten[12].leaf_hash = canonical::leaf_hash_of(&rewritten[12].record);
    assert_eq!(
        verify_log(&rewritten, &signed, &verifier()),
        Err(AuditError::RootMismatch { size: 40 })
    );
    // A deleted row.
    let mut deleted = entries.clone();
    deleted.remove(10);
    assert_eq!(
        verify_log(&deleted, &signed, &verifier()),
        Err(AuditError::BadEntry {
            index: 10,
            reason: BadEntry::OutOfSequence { found: 11 }
        })
    );
    // Two rows swapped, indexes and all: the order is part of the root.
    let mut swapped = entries.clone();
    swapped.swap(5, 6);
    swapped[5].index = 5;
    swapped[6].index = 6;
    assert_eq!(
        verify_log(&swapped, &signed, &verifier()),
        Err(AuditError::RootMismatch { size: 40 })
    );
    // Fewer rows than the checkpoint signed.
    assert_eq!(
        verify_log(&entries[..30], &signed, &verifier()),
        Err(AuditError::Truncated {
            entries: 30,
            checkpoint_size: 40
        })
    );
    // A tampered checkpoint.
    let forged = signed.replacen("\n40\n", "\n30\n", 1);
    assert!(matches!(
        verify_log(&entries, &forged, &verifier()),
        Err(AuditError::Checkpoint(_))
    ));
}
