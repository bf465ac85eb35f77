//! The per-event checksum: CRC-32 over every stored column of an event row.
//!
//! Written by the writer, verified on every read and by `check`, so that a flipped bit inside a
//! payload (which SQLite's own page checks do not see) is reported instead of returned.

/// CRC-32 of an event row as stored (keys, not names, since the row holds keys).
#[allow(clippy::too_many_arguments)]
pub fn event_checksum(
    position: u64,
    stream_key: i64,
    version: u64,
    type_key: i64,
    event_id: &[u8],
    recorded_at: i64,
    data: &[u8],
    metadata: &[u8],
) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&position.to_le_bytes());
    hasher.update(&stream_key.to_le_bytes());
    hasher.update(&version.to_le_bytes());
    hasher.update(&type_key.to_le_bytes());
    hasher.update(event_id);
    hasher.update(&recorded_at.to_le_bytes());
    hasher.update(&(data.len() as u64).to_le_bytes());
    hasher.update(data);
    hasher.update(metadata);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_payload_bit_changes_the_checksum() {
        let original = event_checksum(1, 2, 3, 4, &[0; 16], 5, b"payload", b"");
        let flipped = event_checksum(1, 2, 3, 4, &[0; 16], 5, b"paylobd", b"");
        assert_ne!(original, flipped);
    }

    #[test]
    fn data_and_metadata_boundaries_are_part_of_the_sum() {
        assert_ne!(
            event_checksum(1, 1, 1, 1, &[0; 16], 0, b"ab", b"c"),
            event_checksum(1, 1, 1, 1, &[0; 16], 0, b"a", b"bc")
        );
    }
}
