//! Inclusion and consistency proofs: for every size 1..=64 every proof verifies, equals the
//! RFC 6962 definition computed naively over the leaves, and any tampering is refused; then
//! random larger trees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use paygate_ledger::merkle::{
    CompactTree, Hash, MerkleTree, ProofError, empty_root, leaf_hash, node_hash,
    root_from_inclusion, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]) straight from RFC 6962 §2.1.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => d[0],
        n => {
            let k = k_of(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// PATH(m, D[n]), RFC 6962 §2.1.1.
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = k_of(d.len());
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// SUBPROOF(m, D[n], b), RFC 6962 §2.1.2.
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn flipped(h: &Hash, bit: usize) -> Hash {
    let mut x = *h;
    x.0[bit / 8] ^= 1 << (bit % 8);
    x
}

#[test]
fn every_inclusion_proof_up_to_64_verifies_matches_the_rfc_and_refuses_tampering() {
    let all = leaves(64);
    let tree = MerkleTree::from_leaf_hashes(all.iter().copied());
    let mut checked = 0u64;
    for size in 1..=64u64 {
        let d = &all[..size as usize];
        let root = tree.root_at(size).unwrap();
        assert_eq!(root, mth(d));
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).unwrap();
            assert_eq!(proof, path(index as usize, d), "PATH({index}, {size})");
            let leaf = all[index as usize];
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
            // Tampering: another leaf, another index, another size, each hash flipped,
            // one hash short, one extra, a wrong root.
            assert!(verify_inclusion(&flipped(&leaf, 7), index, size, &proof, &root).is_err());
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
            }
            // The same proof does not place the leaf in the next tree (whose root differs).
            if let Ok(next_root) = tree.root_at(size + 1) {
                assert!(verify_inclusion(&leaf, index, size + 1, &proof, &next_root).is_err());
            }
            assert!(verify_inclusion(&leaf, size, size, &proof, &root).is_err());
            for (i, h) in proof.iter().enumerate() {
                let mut bad = proof.clone();
                bad[i] = flipped(h, (i * 37) % 256);
                assert_eq!(
                    verify_inclusion(&leaf, index, size, &bad, &root),
                    Err(ProofError::RootMismatch)
                );
            }
            if !proof.is_empty() {
                assert!(
                    verify_inclusion(&leaf, index, size, &proof[..proof.len() - 1], &root).is_err()
                );
            }
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size, &proof, &flipped(&root, 0)).is_err());
            checked += 1;
        }
    }
    assert_eq!(checked, 64 * 65 / 2);
}

#[test]
fn every_consistency_proof_up_to_64_verifies_matches_the_rfc_and_refuses_tampering() {
    let all = leaves(64);
    let tree = MerkleTree::from_leaf_hashes(all.iter().copied());
    let mut checked = 0u64;
    for size2 in 1..=64u64 {
        let root2 = tree.root_at(size2).unwrap();
        for size1 in 1..=size2 {
            let root1 = tree.root_at(size1).unwrap();
            let proof = tree.consistency_proof(size1, size2).unwrap();
            assert_eq!(
                proof,
                subproof(size1 as usize, &all[..size2 as usize], true),
                "PROOF({size1}, {size2})"
            );
            verify_consistency(size1, size2, &proof, &root1, &root2).unwrap();
            assert!(verify_consistency(size1, size2, &proof, &flipped(&root1, 3), &root2).is_err());
            assert!(verify_consistency(size1, size2, &proof, &root1, &flipped(&root2, 3)).is_err());
            for (i, h) in proof.iter().enumerate() {
                let mut bad = proof.clone();
                bad[i] = flipped(h, (i * 53) % 256);
                assert!(verify_consistency(size1, size2, &bad, &root1, &root2).is_err());
            }
            if !proof.is_empty() {
                assert!(
                    verify_consistency(size1, size2, &proof[..proof.len() - 1], &root1, &root2)
                        .is_err()
                );
            }
            let mut longer = proof.clone();
            longer.insert(0, root1);
            assert!(verify_consistency(size1, size2, &longer, &root1, &root2).is_err());
            if size1 < size2 {
                assert!(verify_consistency(size1 + 1, size2, &proof, &root1, &root2).is_err());
                assert!(verify_consistency(size2, size1, &proof, &root2, &root1).is_err());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 64 * 65 / 2);
    assert_eq!(tree.consistency_proof(0, 5), Err(ProofError::FromEmptyTree));
    assert!(tree.consistency_proof(3, 65).is_err());
    assert!(tree.inclusion_proof(0, 65).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_trees_prove_inclusion_and_consistency(size in 1u64..3000, a in any::<u64>(), b in any::<u64>()) {
        let all = leaves(size);
        let tree = MerkleTree::from_leaf_hashes(all.iter().copied());
        let mut compact = CompactTree::new();
        for l in &all {
            compact.append(*l);
        }
        prop_assert_eq!(compact.root(), tree.root());
        let index = a % size;
        let root = tree.root();
        let proof = tree.inclusion_proof(index, size).unwrap();
        prop_assert!(proof.len() <= 64);
        prop_assert_eq!(root_from_inclusion(&all[index as usize], index, size, &proof).unwrap(), root);
        let size1 = 1 + b % size;
        let root1 = tree.root_at(size1).unwrap();
        let c = tree.consistency_proof(size1, size).unwrap();
        prop_assert!(verify_consistency(size1, size, &c, &root1, &root).is_ok());
        // The old tree's leaves are provably in the new tree too.
        let old_index = b % size1;
        let p = tree.inclusion_proof(old_index, size1).unwrap();
        prop_assert!(verify_inclusion(&all[old_index as usize], old_index, size1, &p, &root1).is_ok());
    }
}
