//! The hash chain of the audit log: how an entry's hash is computed, and the
//! pure check that a run of entries links up.
//!
//! An entry's `hash` is the lowercase hex SHA-256 of these UTF-8 bytes, with
//! no separators other than those shown:
//!
//! ```text
//! {prev_hash}\n{seq}\n{at_ms}\n{len(key_id)}:{key_id}\n{len(action)}:{action}\n{len(arguments)}:{arguments}
//! ```
//!
//! `seq` and `at_ms` are decimal integers (a leading `-` if negative), and
//! each `len(...)` is the decimal length of the following text in UTF-8 bytes.
//! The length prefixes keep a newline or colon inside a field from being read
//! as a separator. `prev_hash` is the `hash` of the entry before, or
//! [`AUDIT_GENESIS_HASH`] (64 zeros) for the first entry.

use sha2::{Digest, Sha256};

use crate::rows::AuditRow;

/// `prev_hash` of the first audit entry: 64 zeros.
pub const AUDIT_GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Computes the hash of one audit entry in the format of this module's docs.
pub fn audit_entry_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    key_id: &str,
    action: &str,
    arguments: &str,
) -> String {
    let message = format!(
        "{prev_hash}\n{seq}\n{at_ms}\n{}:{key_id}\n{}:{action}\n{}:{arguments}",
        key_id.len(),
        action.len(),
        arguments.len(),
    );
    hex::encode(Sha256::digest(message.as_bytes()))
}

/// Checks that `rows`, in seq order, form an unbroken chain that continues
/// from `previous_hash`. Each entry's `prev_hash` must be the hash of the
/// entry before (`previous_hash` for the first row), its `hash` must match
/// its fields, and its seq must be one more than the seq before.
///
/// Pass [`AUDIT_GENESIS_HASH`] when `rows` start at seq 1, or the `hash` of the
/// entry before the first row when checking one page of a longer log.
///
/// Returns `Err(seq)` with the seq of the first entry that breaks the chain.
pub fn verify_audit_chain(rows: &[AuditRow], previous_hash: &str) -> Result<(), i64> {
    let mut expected_prev = previous_hash;
    let mut expected_seq: Option<i64> = None;

    for row in rows {
        if expected_seq.is_some_and(|seq| seq != row.seq) || row.prev_hash != expected_prev {
            return Err(row.seq);
        }

        let hash = audit_entry_hash(
            &row.prev_hash,
            row.seq,
            row.at_ms,
            &row.key_id,
            &row.action,
            &row.arguments,
        );
        if hash != row.hash {
            return Err(row.seq);
        }

        expected_prev = &row.hash;
        expected_seq = Some(row.seq + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, prev_hash: &str, arguments: &str) -> AuditRow {
        let hash = audit_entry_hash(
            prev_hash,
            seq,
            1_000 + seq,
            "key-1",
            "CreateRoom",
            arguments,
        );
        AuditRow {
            seq,
            at_ms: 1_000 + seq,
            key_id: "key-1".to_owned(),
            action: "CreateRoom".to_owned(),
            arguments: arguments.to_owned(),
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }

    fn chain(len: i64) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = Vec::new();
        for seq in 1..=len {
            let prev = rows
                .last()
                .map_or(AUDIT_GENESIS_HASH, |r| r.hash.as_str())
                .to_owned();
            rows.push(entry(seq, &prev, &format!(r#"{{"n":{seq}}}"#)));
        }
        rows
    }

    #[test]
    fn hash_matches_documented_format() {
        // Computed outside Rust from the format in the module docs:
        // printf '%s\n1\n1000\n5:key-1\n10:CreateRoom\n2:{}' "$ZEROS" | sha256sum
        assert_eq!(
            audit_entry_hash(AUDIT_GENESIS_HASH, 1, 1_000, "key-1", "CreateRoom", "{}"),
            "128b789bd716b43aae213bf38b75752aad69ba753eabea870cee20a0c17a7621"
        );
    }

    #[test]
    fn length_prefix_separates_fields() {
        let a = audit_entry_hash(AUDIT_GENESIS_HASH, 1, 1, "a\n1:b", "c", "");
        let b = audit_entry_hash(AUDIT_GENESIS_HASH, 1, 1, "a", "b\n1:c", "");
        assert_ne!(a, b);
    }

    #[test]
    fn intact_chain_verifies() {
        let rows = chain(5);
        assert_eq!(verify_audit_chain(&rows, AUDIT_GENESIS_HASH), Ok(()));
        assert_eq!(verify_audit_chain(&rows[2..], &rows[1].hash), Ok(()));
        assert_eq!(verify_audit_chain(&[], AUDIT_GENESIS_HASH), Ok(()));
    }

    #[test]
    fn tampered_arguments_report_their_seq() {
        let mut rows = chain(5);
        rows[2].arguments = r#"{"n":99}"#.to_owned();
        assert_eq!(verify_audit_chain(&rows, AUDIT_GENESIS_HASH), Err(3));
    }

    #[test]
    fn rehashed_entry_breaks_the_next_link() {
        let mut rows = chain(5);
        rows[1] = entry(2, &rows[0].hash.clone(), r#"{"n":99}"#);
        assert_eq!(verify_audit_chain(&rows, AUDIT_GENESIS_HASH), Err(3));
    }

    #[test]
    fn deleted_entry_reports_the_gap() {
        let mut rows = chain(5);
        rows.remove(3);
        assert_eq!(verify_audit_chain(&rows, AUDIT_GENESIS_HASH), Err(5));
    }

    #[test]
    fn wrong_previous_hash_fails_first_row() {
        let rows = chain(3);
        assert_eq!(verify_audit_chain(&rows[1..], AUDIT_GENESIS_HASH), Err(2));
    }
}
