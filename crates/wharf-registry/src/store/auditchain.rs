//! How audit records are chained, shared by every backend so that `wharf audit verify`
//! reads any of them the same way.
//!
//! A stored line is one JSON object: `{"seq":N,"prev":"<hash of line N-1>",<the entry>,
//! "hash":"<hex SHA-256>"}`, where the hash covers the line's bytes up to the `,"hash"`
//! field (with the closing brace). Verifying rehashes the bytes as stored, never a
//! re-serialization, so any edited byte shows. The first line's `prev` is 64 zeros.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::state::AuditEntry;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    seq: u64,
    prev: &'a str,
    #[serde(flatten)]
    entry: AuditEntry,
}

/// A stored record, read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub prev: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub hash: String,
}

/// `entry` as line `seq` after a line whose hash is `prev`: (line, its hash).
pub fn seal(seq: u64, prev: &str, entry: &AuditEntry) -> (String, String) {
    let body = serde_json::to_string(&Sealed {
        seq,
        prev,
        entry: entry.clone(),
    })
    .expect("strings serialize");
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    let line = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    (line, hash)
}

/// The hash a line claims, if it is shaped as [`seal`] writes it, and the bytes it covers.
fn split(line: &str) -> Option<(String, &str)> {
    const TAIL: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let cut = line.len().checked_sub(TAIL)?;
    let (body, tail) = (line.get(..cut)?, line.get(cut..)?);
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    Some((format!("{body}}}"), hash))
}

/// Parse a stored line (without checking its chain).
pub fn parse(line: &str) -> Result<AuditRecord, String> {
    serde_json::from_str(line).map_err(|e| format!("not an audit record: {e}"))
}

/// Where a chain breaks: the 1-based position of the first line that does not follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub position: u64,
    pub why: String,
}

/// Check every line against the one before it and the last against `head`; the number of
/// records when all hold.
pub fn verify(lines: &[String], head: Option<(u64, &str)>) -> Result<u64, Break> {
    let mut prev = GENESIS.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let position = i as u64 + 1;
        let broken = |why: String| Break { position, why };
        let (body, claimed) =
            split(line).ok_or_else(|| broken("the line is not a sealed record".into()))?;
        let actual = hex::encode(Sha256::digest(body.as_bytes()));
        if actual != claimed {
            return Err(broken(format!(
                "its content does not match its hash (edited): {actual} != {claimed}"
            )));
        }
        let record = parse(line).map_err(broken)?;
        if record.seq != position {
            return Err(broken(format!(
                "it is record {} where record {position} belongs (records removed or reordered)",
                record.seq
            )));
        }
        if record.prev != prev {
            return Err(broken(
                "it does not follow the record before it (records removed or reordered)".into(),
            ));
        }
        prev = record.hash;
    }
    let count = lines.len() as u64;
    // The head may lag the log (a crash before it was replaced), never lead it.
    if let Some((seq, hash)) = head {
        if seq > count {
            return Err(Break {
                position: count + 1,
                why: format!(
                    "the log holds {count} records but its head names record {seq} (records removed from the end)"
                ),
            });
        }
        let at = seq.checked_sub(1).map(|i| &lines[i as usize]);
        if at.is_some_and(|line| split(line).is_none_or(|(_, h)| h != hash)) {
            return Err(Break {
                position: seq,
                why: "it is not the record the head names (records replaced)".into(),
            });
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            time: "2026-01-01T00:00:00Z".into(),
            actor: "alice".into(),
            source: "127.0.0.1".into(),
            action: action.into(),
            target: "team/app:1".into(),
            outcome: "ok".into(),
        }
    }

    fn chain(n: usize) -> (Vec<String>, String) {
        let mut prev = GENESIS.to_owned();
        let mut lines = Vec::new();
        for i in 0..n {
            let (line, hash) = seal(i as u64 + 1, &prev, &entry(&format!("push{i}")));
            lines.push(line);
            prev = hash;
        }
        (lines, prev)
    }

    #[test]
    fn a_chain_verifies_and_every_kind_of_tampering_is_named() {
        let (lines, head) = chain(5);
        assert_eq!(verify(&lines, Some((5, &head))), Ok(5));
        assert_eq!(parse(&lines[0]).unwrap().entry, entry("push0"));

        let mut flipped = lines.clone();
        flipped[2] = flipped[2].replace("alice", "alicf");
        assert_eq!(verify(&flipped, None).unwrap_err().position, 3);

        let mut hash_edit = lines.clone();
        let n = hash_edit[1].len();
        hash_edit[1].replace_range(n - 3..n - 2, "x");
        assert_eq!(verify(&hash_edit, None).unwrap_err().position, 2);

        let mut removed = lines.clone();
        removed.remove(1);
        assert_eq!(verify(&removed, None).unwrap_err().position, 2);

        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert_eq!(verify(&swapped, None).unwrap_err().position, 3);

        let cut = &lines[..4];
        assert_eq!(verify(cut, Some((5, &head))).unwrap_err().position, 5);
        // A head behind the log (lost in a crash) is no break, if it names a record.
        let third = split(&lines[2]).unwrap().1.to_owned();
        assert_eq!(verify(&lines, Some((3, &third))), Ok(5));
        assert_eq!(verify(&lines, Some((3, &head))).unwrap_err().position, 3);
        assert_eq!(verify(&[], None), Ok(0));
    }
}
