//! Which partition a record goes to when the producer does not say.
//!
//! Keyed records: `(murmur2(key) & 0x7fffffff) % partitions`, the same hash and
//! formula as Kafka's default partitioner, so a key lands on the same partition
//! number in Strata as with a Kafka client for the same partition count.
//! Adding partitions changes where keys go from then on, as in Kafka.
//! Keyless records: all records of one request go to one partition, chosen
//! round-robin per request (Kafka's "sticky" spreading, per request).

/// Kafka's murmur2 (seed 0x9747b28c), on the key bytes.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &b) in rest.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) as u32) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafka_murmur2_vectors() {
        // Vectors from Kafka's own tests of its murmur2.
        for (input, expected) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(input), expected, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn keys_spread_and_stay_in_range() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            let p = partition_for_key(format!("user-{i}").as_bytes(), 8);
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
        assert_eq!(partition_for_key(b"k", 1), 0);
    }
}
