//! The per-event checksum: CRC-32 over every stored column of an event row.
//!
//! Written by the writer, verified on every read and by `check`, so that a flipped bit inside a
//! payload (which SQLite's own page checks do not see) is reported instead of returned.
//!
//! Tags (schema v3) are summed only when an event has some, after the metadata's length, so
//! an untagged event's checksum is what it was before tags existed.

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
    tags: &[u8],
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
    if !tags.is_empty() {
        hasher.update(&(metadata.len() as u64).to_le_bytes());
        hasher.update(tags);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_payload_bit_changes_the_checksum() {
        let original = event_checksum(1, 2, 3, 4, &[0; 16], 5, b"payload", b"", b"");
        let flipped = event_checksum(1, 2, 3, 4, &[0; 16], 5, b"paylobd", b"", b"");
        assert_ne!(original, flipped);
    }

    #[test]
    fn data_and_metadata_boundaries_are_part_of_the_sum() {
        assert_ne!(
            event_checksum(1, 1, 1, 1, &[0; 16], 0, b"ab", b"c", b""),
            event_checksum(1, 1, 1, 1, &[0; 16], 0, b"a", b"bc", b"")
        );
    }

    #[test]
    fn tags_are_part_of_the_sum_and_their_boundary_with_metadata_too() {
        let untagged = event_checksum(1, 1, 1, 1, &[0; 16], 0, b"d", b"m", b"");
        let tagged = event_checksum(1, 1, 1, 1, &[0; 16], 0, b"d", b"m", b"\x01t");
        assert_ne!(untagged, tagged);
        assert_ne!(
            event_checksum(1, 1, 1, 1, &[0; 16], 0, b"d", b"m\x01", b"\x01t"),
            event_checksum(1, 1, 1, 1, &[0; 16], 0, b"d", b"m", b"\x01\x01\x01t")
        );
    }
}
