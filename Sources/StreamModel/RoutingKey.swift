/// RoutingKey maps a routing key to a segment with a stable, documented hash, so every event of one key
/// lands in the same segment and stays in order.
///
/// The mapping (docs/protocol.md, "Routing keys"):
/// 1. h = FNV-1a 64-bit of the key's UTF-8 bytes (offset basis 0xcbf29ce484222325, prime 0x100000001b3);
/// 2. segment = JumpConsistentHash(h, N) (Lamping and Veach, 2014), which moves only 1/N of the keys when
///    N grows by one, ready for when streams can scale.
/// Events without a key are spread round-robin by the writer.
public enum RoutingKey {
    /// FNV-1a 64-bit of `key`'s UTF-8 bytes.
    public static func fnv1a64(_ key: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    /// Jump consistent hash: a bucket in `0 ..< buckets` for `key`.
    /// - Precondition: `buckets > 0`.
    public static func jump(_ key: UInt64, buckets: Int32) -> Int32 {
        precondition(buckets > 0, "jump hash needs at least one bucket")
        var k = key
        var b: Int64 = -1
        var j: Int64 = 0
        while j < Int64(buckets) {
            b = j
            k = k &* 2_862_933_555_777_941_757 &+ 1
            j = Int64(Double(b + 1) * (Double(Int64(1) << 31) / Double((k >> 33) + 1)))
        }
        return Int32(b)
    }

    /// The segment number for `key` in a stream of `segmentCount` segments.
    public static func segment(for key: String, segmentCount: UInt32) -> UInt32 {
        UInt32(jump(fnv1a64(key), buckets: Int32(clamping: segmentCount)))
    }
}
