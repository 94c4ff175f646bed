//! C2SP signed notes and checkpoints, byte for byte: the vectors of golang.org/x/mod/sumdb/note
//! and of the C2SP specs, then our checkpoints signed, opened and tampered with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use paygate_ledger::checkpoint::{Checkpoint, CheckpointError, CheckpointVerifier};
use paygate_ledger::merkle::Hash;
use paygate_ledger::note::{self, NoteError, NoteSigner, NoteVerifier};

const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

#[test]
fn go_note_vectors_sign_byte_exact_and_keys_round_trip() {
    let signer = NoteSigner::from_skey(PETER_SKEY).unwrap();
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.to_skey(), PETER_SKEY);
    assert_eq!(signer.verifier().to_vkey(), PETER_VKEY);
    assert_eq!(
        NoteVerifier::from_vkey(PETER_VKEY).unwrap(),
        signer.verifier()
    );
    let signed = signer.sign(TEXT).unwrap();
    assert_eq!(signed, format!("{TEXT}\n{PETER_SIG}"));
    // Ed25519 is deterministic: the same bytes every time.
    assert_eq!(signer.sign(TEXT).unwrap(), signed);
    assert!(
        !format!("{signer:?}").contains("AYEKFALV"),
        "Debug shows no secret"
    );
}

#[test]
fn go_note_open_verifies_known_keys_and_keeps_unknown_ones_aside() {
    let peter = NoteVerifier::from_vkey(PETER_VKEY).unwrap();
    let enoch = NoteVerifier::from_vkey(ENOCH_VKEY).unwrap();
    let msg = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let n = note::open(msg.as_bytes(), std::slice::from_ref(&peter)).unwrap();
    assert_eq!(n.text, TEXT);
    assert_eq!(n.verified.len(), 1);
    assert_eq!(n.verified[0].name, "PeterNeumann");
    assert_eq!(n.unverified.len(), 1);
    assert_eq!(n.unverified[0].key_id, 0xaf0cfe78);
    let both = note::open(msg.as_bytes(), &[peter.clone(), enoch.clone()]).unwrap();
    assert_eq!(both.verified.len(), 2);
    assert_eq!(
        note::open(msg.as_bytes(), std::slice::from_ref(&enoch))
            .unwrap()
            .verified[0]
            .name,
        "EnochRoot"
    );
    // A known key whose signature fails rejects the note.
    let bad = msg.replacen("x08go/ZJ", "x08go/ZK", 1);
    assert!(matches!(
        note::open(bad.as_bytes(), std::slice::from_ref(&peter)),
        Err(NoteError::InvalidSignature { .. })
    ));
    // A changed text fails.
    let edited = msg.replacen("problem,", "problem;", 1);
    assert!(note::open(edited.as_bytes(), std::slice::from_ref(&peter)).is_err());
    // No known key at all.
    let only_enoch = format!("{TEXT}\n{ENOCH_SIG}");
    assert_eq!(
        note::open(only_enoch.as_bytes(), &[peter]),
        Err(NoteError::Unverified)
    );
}

#[test]
fn c2sp_signed_note_example_verifies() {
    let v = NoteVerifier::from_vkey(
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    )
    .unwrap();
    let msg = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let n = note::open(msg.as_bytes(), &[v]).unwrap();
    assert_eq!(n.text, "This is an example message.\n");
}

#[test]
fn mangled_verifier_keys_are_refused() {
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i != 0 || j != b.len() {
                let part = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(NoteVerifier::from_vkey(part).is_err(), "{part}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(NoteVerifier::from_vkey(s).is_err(), "{s}");
        }
    }
    // Go's two extra cases: wrong key length, unknown algorithm (both with adjusted ids).
    assert!(
        NoteVerifier::from_vkey(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err()
    );
    assert!(
        NoteVerifier::from_vkey(
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        )
        .is_err()
    );
    let sb = PETER_SKEY.as_bytes();
    for i in 0..sb.len() {
        let mut m = sb.to_vec();
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(NoteSigner::from_skey(s).is_err(), "{s}");
        }
    }
}

#[test]
fn c2sp_checkpoint_example_body_round_trips_byte_exact() {
    let body =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = Checkpoint::parse_body(body).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);
    assert_eq!(cp.body().unwrap(), body);
    // Its signature is from a key we do not know: never trusted.
    let signed = format!(
        "{body}\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    );
    let ours = NoteSigner::from_seed("example.com/behind-the-sofa", [7; 32]).unwrap();
    let verifier = CheckpointVerifier::new("example.com/behind-the-sofa", ours.verifier());
    assert_eq!(
        verifier.open(&signed),
        Err(CheckpointError::Note(NoteError::Unverified))
    );
}

fn ledger_signer() -> NoteSigner {
    NoteSigner::from_seed("paygate.example/ledger", [42; 32]).unwrap()
}

#[test]
fn our_checkpoint_is_the_c2sp_format_exactly() {
    let signer = ledger_signer();
    let root = Hash([0xab; 32]);
    let cp = Checkpoint::new("paygate.example/ledger", 1234, root);
    let signed = cp.sign(&signer).unwrap();
    let lines: Vec<&str> = signed.split('\n').collect();
    assert_eq!(lines[0], "paygate.example/ledger");
    assert_eq!(lines[1], "1234");
    assert_eq!(lines[2], root.to_base64());
    assert_eq!(lines[3], "");
    let sig_line = lines[4];
    assert!(
        sig_line.starts_with("\u{2014} paygate.example/ledger "),
        "{sig_line}"
    );
    assert_eq!(lines[5], "", "ends with one newline");
    assert_eq!(lines.len(), 6);
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig_line.rsplit(' ').next().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 4 + 64);
    assert_eq!(
        u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
        signer.key_id()
    );
    assert_eq!(
        signed,
        format!(
            "paygate.example/ledger\n1234\n{}\n\n{}",
            root.to_base64(),
            signer.signature_line(&cp.body().unwrap())
        )
    );
    let verifier = CheckpointVerifier::new("paygate.example/ledger", signer.verifier());
    assert_eq!(verifier.open(&signed).unwrap(), cp);
}

#[test]
fn tampered_checkpoints_are_refused() {
    let signer = ledger_signer();
    let cp = Checkpoint::new("paygate.example/ledger", 77, Hash([0x11; 32]));
    let signed = cp.sign(&signer).unwrap();
    let verifier = CheckpointVerifier::new("paygate.example/ledger", signer.verifier());
    assert!(verifier.open(&signed).is_ok());
    let bigger = signed.replacen("\n77\n", "\n78\n", 1);
    assert!(matches!(
        verifier.open(&bigger),
        Err(CheckpointError::Note(NoteError::InvalidSignature { .. }))
    ));
    let other_root = signed.replacen("ERER", "ERES", 1);
    assert!(verifier.open(&other_root).is_err());
    let unsigned = signed.split("\n\n").next().unwrap().to_owned() + "\n";
    assert!(verifier.open(&unsigned).is_err());
    let stranger = NoteSigner::from_seed("paygate.example/ledger", [43; 32]).unwrap();
    assert_eq!(
        verifier.open(&cp.sign(&stranger).unwrap()),
        Err(CheckpointError::Note(NoteError::Unverified))
    );
    let foreign = CheckpointVerifier::new("other.example/log", signer.verifier());
    assert!(matches!(
        foreign.open(&signed),
        Err(CheckpointError::WrongOrigin { .. })
    ));
    // An extra signature from an unknown key (a witness) is ignored, as the spec requires.
    let witness = NoteSigner::from_seed("witness.example", [5; 32]).unwrap();
    let cosigned = format!("{signed}{}", witness.signature_line(&cp.body().unwrap()));
    assert_eq!(verifier.open(&cosigned).unwrap(), cp);
    // A control character anywhere refuses the note.
    assert!(
        verifier
            .open(&signed.replacen("paygate", "pay\tgate", 1))
            .is_err()
    );
    // Too many signature lines.
    let many = format!(
        "{signed}{}",
        witness.signature_line(&cp.body().unwrap()).repeat(40)
    );
    assert_eq!(
        verifier.open(&many),
        Err(CheckpointError::Note(NoteError::TooManySignatures))
    );
}

#[test]
fn checkpoint_text_rules_are_enforced() {
    let root = Hash([1; 32]).to_base64();
    for bad in [
        format!("log\n012\n{root}\n"),
        format!("log\n-1\n{root}\n"),
        format!("log\n\n{root}\n"),
        format!("log\n12\n{root}"),
        format!("\n12\n{root}\n"),
        "log\n12\nZG9uJ3QgY2FyZSAy\n".to_owned(),
        format!("log\n12\n{root}\n\n"),
        format!("log\n18446744073709551616\n{root}\n"),
    ] {
        assert!(Checkpoint::parse_body(&bad).is_err(), "{bad:?}");
    }
    let ok = Checkpoint::parse_body(&format!("log\n0\n{root}\nextension\n")).unwrap();
    assert_eq!(ok.size, 0);
    assert_eq!(ok.extensions, vec!["extension".to_owned()]);
    assert_eq!(ok.body().unwrap(), format!("log\n0\n{root}\nextension\n"));
    let mut bad_origin = Checkpoint::new("a\nb", 1, Hash([1; 32]));
    assert!(bad_origin.body().is_err());
    bad_origin.origin = "x".repeat(300);
    assert!(bad_origin.body().is_err());
    assert!(NoteSigner::from_seed("has space", [1; 32]).is_err());
    assert!(NoteSigner::from_seed("has+plus", [1; 32]).is_err());
    assert!(ledger_signer().sign("no final newline").is_err());
}
