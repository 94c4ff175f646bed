//! The RFC 6962 (RFC 9162 §2.1) Merkle tree over SHA-256: leaf = H(0x00 ‖ data), node =
//! H(0x01 ‖ left ‖ right), empty tree = H(""). The prefixes keep a leaf from passing for a
//! node (second preimages).
//!
//! - [`CompactTree`]: the O(log n) state that appends and gives the current root: the roots of
//!   the perfect subtrees the leaves form so far. This is what the store keeps beside the
//!   journal so an append never reads old leaves.
//! - [`MerkleTree`]: every leaf and every perfect subtree, for the root at any size and
//!   inclusion and consistency proofs (RFC 9162 §2.1.3.1 and §2.1.4.1), O(log n) hashes each.
//! - [`verify_inclusion`] and [`verify_consistency`]: RFC 9162 §2.1.3.2 and §2.1.4.2, with
//!   the edge cases of transparency-dev/merkle (whose test vectors `tests/` replays).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Most hashes in a proof: a tree of up to 2^64 leaves needs at most 64 (+1 for consistency).
pub const PROOF_HASHES_MAX: usize = 65;

/// A SHA-256 value. Serialized as base64 (the checkpoint's spelling).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Exactly 32 bytes, or `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        bytes.try_into().ok().map(Hash)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Hash> {
        hex::decode(s).ok().and_then(|b| Hash::from_slice(&b))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Standard base64 of exactly 32 bytes, canonical (re-encodes to the same text).
    pub fn from_base64(s: &str) -> Option<Hash> {
        let h = STANDARD.decode(s).ok().and_then(|b| Hash::from_slice(&b))?;
        (h.to_base64() == s).then_some(h)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Hash::from_base64(&s).ok_or_else(|| serde::de::Error::custom("not the base64 of 32 bytes"))
    }
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_children(&left.0, &right.0)
}

/// `SHA-256(0x01 ‖ left ‖ right)` over any bytes (RFC 6962's test vectors hash short strings).
pub fn hash_children(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    Hash(h.finalize().into())
}

/// Why a proof, a size or a root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexBeyondSize { index: u64, size: u64 },
    #[error("size {size} is beyond the tree's {tree_size} leaves")]
    SizeBeyondTree { size: u64, tree_size: u64 },
    #[error("the proof has {got} hashes, want {want}")]
    WrongProofSize { got: usize, want: usize },
    #[error("the proof has the wrong number of hashes for these sizes")]
    BadProofLength,
    #[error("the proof has more than {PROOF_HASHES_MAX} hashes")]
    ProofTooLong,
    #[error("the calculated root does not match")]
    RootMismatch,
    #[error("size2 {size2} is below size1 {size1}")]
    SizesReversed { size1: u64, size2: u64 },
    #[error("a consistency proof from the empty tree proves nothing")]
    FromEmptyTree,
    #[error("the sizes are equal, so the proof must be empty")]
    ProofNotEmpty,
    #[error("the proof is empty")]
    EmptyProof,
    #[error("the compact tree's peaks do not match its size")]
    BadCompactTree,
}

impl ProofError {
    pub const fn code(&self) -> &'static str {
        match self {
            ProofError::IndexBeyondSize { .. } => "index_beyond_size",
            ProofError::SizeBeyondTree { .. } => "size_beyond_tree",
            ProofError::WrongProofSize { .. } => "wrong_proof_size",
            ProofError::BadProofLength => "bad_proof_length",
            ProofError::ProofTooLong => "proof_too_long",
            ProofError::RootMismatch => "root_mismatch",
            ProofError::SizesReversed { .. } => "sizes_reversed",
            ProofError::FromEmptyTree => "from_empty_tree",
            ProofError::ProofNotEmpty => "proof_not_empty",
            ProofError::EmptyProof => "empty_proof",
            ProofError::BadCompactTree => "bad_compact_tree",
        }
    }
}

/// The roots of the perfect subtrees of the leaves so far, largest (leftmost) first:
/// one per set bit of `size`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactTree {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactTree {
    pub fn new() -> CompactTree {
        CompactTree::default()
    }

    /// Restores a stored state; the peak count must match the size's set bits.
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Result<CompactTree, ProofError> {
        if peaks.len() != size.count_ones() as usize {
            return Err(ProofError::BadCompactTree);
        }
        Ok(CompactTree { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash: merges equal-sized subtrees, like a binary counter's carry.
    pub fn append(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            match self.peaks.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break,
            }
            s >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The tree head: the peaks folded from the right.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, p| node_hash(p, &acc)),
        }
    }
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Every leaf hash and every perfect subtree root (`levels[k][i]` covers leaves
/// `i·2^k .. (i+1)·2^k`), about 2n hashes in all.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    pub fn new() -> MerkleTree {
        MerkleTree::default()
    }

    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> MerkleTree {
        let mut t = MerkleTree::new();
        for l in leaves {
            t.append(l);
        }
        t
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
    }

    /// Appends a leaf hash and returns its index; completes the subtrees it closes.
    pub fn append(&mut self, leaf: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let index = self.size();
        let mut h = leaf;
        let mut level = 0;
        loop {
            self.levels[level].push(h);
            let len = self.levels[level].len();
            if len % 2 == 1 {
                break;
            }
            h = node_hash(&self.levels[level][len - 2], &h);
            level += 1;
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
        }
        index
    }

    /// The root of the current tree.
    pub fn root(&self) -> Hash {
        self.range_hash(0, self.size())
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(self.range_hash(0, size))
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeBeyondTree {
                size,
                tree_size: self.size(),
            });
        }
        Ok(())
    }

    /// MTH(D[start:end]): a stored perfect subtree, or RFC 6962's split at the largest power
    /// of two. Within proofs every split lands on a stored subtree, so this is O(log n).
    fn range_hash(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start % n == 0 {
            let level = n.trailing_zeros() as usize;
            let stored = self
                .levels
                .get(level)
                .and_then(|l| usize::try_from(start >> level).ok().and_then(|i| l.get(i)));
            if let Some(h) = stored {
                return *h;
            }
        }
        if n == 1 {
            // Only reachable past the last leaf, which every caller's size check excludes.
            return empty_root();
        }
        let k = split_point(n);
        node_hash(
            &self.range_hash(start, start + k),
            &self.range_hash(start + k, end),
        )
    }

    /// The inclusion proof (audit path) of leaf `index` in the tree of size `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexBeyondSize { index, size });
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out);
        Ok(out)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        if end - start <= 1 {
            return;
        }
        let k = split_point(end - start);
        if m < start + k {
            self.path(m, start, start + k, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.path(m, start + k, end, out);
            out.push(self.range_hash(start, start + k));
        }
    }

    /// The consistency proof that the tree of `size1` leaves is a prefix of that of `size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size2)?;
        if size1 > size2 {
            return Err(ProofError::SizesReversed { size1, size2 });
        }
        if size1 == 0 {
            return Err(ProofError::FromEmptyTree);
        }
        let mut out = Vec::new();
        self.subproof(size1, 0, size2, true, &mut out);
        Ok(out)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.range_hash(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.range_hash(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range_hash(start, start + k));
        }
    }
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(ProofError::ProofTooLong);
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongProofSize {
            got: proof.len(),
            want,
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    Ok(r)
}

/// Hashes in the inclusion proof of `index` in a tree of `size`: the levels below the point
/// where the paths to `index` and `size - 1` part, plus one per left sibling above it.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    inner as usize + (index >> inner).count_ones() as usize
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if root_from_inclusion(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Checks that the tree of `size1` leaves with root `root1` is a prefix of the tree of
/// `size2` leaves with root `root2` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::SizesReversed { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::ProofNotEmpty);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::EmptyProof);
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(ProofError::ProofTooLong);
    }
    // A power-of-two first tree is a subtree of the second: its root starts the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::BadProofLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::BadProofLength);
    }
    if fr == *root1 && sr == *root2 {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_tree_matches_full_tree_at_every_size() {
        let mut c = CompactTree::new();
        let mut t = MerkleTree::new();
        assert_eq!(c.root(), empty_root());
        for i in 0u32..300 {
            let l = leaf_hash(&i.to_be_bytes());
            c.append(l);
            t.append(l);
            assert_eq!(c.root(), t.root(), "size {}", i + 1);
            assert_eq!(c.peaks().len(), c.size().count_ones() as usize);
            let restored = CompactTree::from_parts(c.size(), c.peaks().to_vec()).unwrap();
            assert_eq!(restored, c);
        }
        assert_eq!(
            CompactTree::from_parts(3, vec![empty_root()]),
            Err(ProofError::BadCompactTree)
        );
    }

    #[test]
    fn hash_base64_is_canonical_and_exactly_32_bytes() {
        let h = empty_root();
        assert_eq!(Hash::from_base64(&h.to_base64()), Some(h));
        assert_eq!(Hash::from_base64("ZG9uJ3QgY2FyZSAy"), None);
        // Same bytes, non-canonical trailing bits in the last character.
        assert_eq!(
            Hash::from_base64("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV="),
            None
        );
    }
}
