//! A SHA-256 whose running state can be saved and restored in the format Go's
//! `crypto/sha256` gives to `encoding.BinaryMarshaler`, which is what registry:2 stores in
//! `_uploads/<id>/hashstates/sha256/<offset>`. With it, any process (wharf or Distribution)
//! continues an upload another one started without rehashing what is already there.
//!
//! The `sha2` crate keeps its state private, so this drives its public block function.

use sha2::digest::generic_array::typenum::U64;
use sha2::digest::generic_array::GenericArray;
use wharf_oci::Digest;

const BLOCK: usize = 64;
const MAGIC: &[u8; 4] = b"sha\x03";
/// magic, eight state words, one block of pending input, the length.
pub const MARSHALED_LEN: usize = 4 + 32 + BLOCK + 8;
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Clone)]
pub struct Sha256State {
    h: [u32; 8],
    pending: [u8; BLOCK],
    pending_len: usize,
    len: u64,
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            h: IV,
            pending: [0; BLOCK],
            pending_len: 0,
            len: 0,
        }
    }
}

fn compress(h: &mut [u32; 8], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % BLOCK, 0);
    // SAFETY: GenericArray<u8, U64> is a transparent wrapper of [u8; 64] (alignment 1), and
    // `blocks` holds exactly len / 64 of them.
    let blocks: &[GenericArray<u8, U64>] =
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len() / BLOCK) };
    sha2::compress256(h, blocks);
}

impl Sha256State {
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK {
                return;
            }
            let block = self.pending;
            compress(&mut self.h, &block);
            self.pending_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        if whole > 0 {
            compress(&mut self.h, &data[..whole]);
        }
        let rest = &data[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        tail[self.pending_len] = 0x80;
        let total = if self.pending_len < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        tail[total - 8..total].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.h, &tail[..total]);
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for word in self.h {
            out.push_str(&format!("{word:08x}"));
        }
        out.parse().expect("a sha256 digest")
    }

    /// Go's `MarshalBinary` of a `sha256.digest`.
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MARSHALED_LEN);
        out.extend_from_slice(MAGIC);
        for word in self.h {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.pending[..self.pending_len]);
        out.resize(4 + 32 + BLOCK, 0);
        out.extend_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Go's `UnmarshalBinary`; None for anything that is not a SHA-256 state.
    pub fn unmarshal(bytes: &[u8]) -> Option<Sha256State> {
        if bytes.len() != MARSHALED_LEN || &bytes[..4] != MAGIC {
            return None;
        }
        let mut h = [0u32; 8];
        for (i, word) in h.iter_mut().enumerate() {
            let at = 4 + 4 * i;
            *word = u32::from_be_bytes(bytes[at..at + 4].try_into().ok()?);
        }
        let mut pending = [0u8; BLOCK];
        pending.copy_from_slice(&bytes[36..36 + BLOCK]);
        let len = u64::from_be_bytes(bytes[36 + BLOCK..].try_into().ok()?);
        Some(Sha256State {
            h,
            pending,
            pending_len: (len % BLOCK as u64) as usize,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha2_for_every_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for n in [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000] {
            let expected = Digest::sha256_of(&data[..n]);
            for split in [0, 1, 3, 64, n / 2, n] {
                let split = split.min(n);
                let mut s = Sha256State::default();
                s.update(&data[..split]);
                let s = Sha256State::unmarshal(&s.marshal()).expect("round trip");
                let mut s = s;
                s.update(&data[split..n]);
                assert_eq!(s.finish(), expected, "n={n} split={split}");
            }
        }
    }

    /// The bytes Go 1.21's `sha256.New()` marshals after writing "abc".
    #[test]
    fn marshals_as_go_does() {
        let mut s = Sha256State::default();
        s.update(b"abc");
        let m = s.marshal();
        assert_eq!(&m[..4], b"sha\x03");
        assert_eq!(&m[4..8], &0x6a09e667u32.to_be_bytes());
        assert_eq!(&m[36..39], b"abc");
        assert!(m[39..100].iter().all(|&b| b == 0));
        assert_eq!(&m[100..], &3u64.to_be_bytes());
        assert!(Sha256State::unmarshal(&m[..50]).is_none());
    }
}
