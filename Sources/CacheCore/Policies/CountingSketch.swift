import Foundation
import StreamModel

/// CountingSketch is a counting Bloom filter read as a count-min sketch: k hashes over one array of counters,
/// every add increments all k, the estimate is the minimum, and `halve()` ages all counters. Sized and indexed like
/// libCacheSim's `minimalIncrementCBF` (which, despite its name, increments every counter): counters =
/// ceil(entries x -ln(error) / ln(2)^2) (twice the hashes when that is fewer than the hashes), k = ceil(ln(2) x
/// that ratio), and counter i of an id at (a + i x b) mod counters in 32-bit arithmetic, a and b the low 32 bits of
/// XXH64 of the id's 8 little-endian bytes with seeds 0x12345678 and 0x12344321, so its collisions are
/// libCacheSim's (W-TinyLFU gives libCacheSim's answer on every request; docs/eviction.md).
final class CountingSketch {
    private var counters: [UInt32]
    private let hashes: Int

    init(entries: Int, error: Double) {
        let perEntry = -log(error) / 0.480453013918201
        hashes = Int((0.693147180559945 * perEntry).rounded(.up))
        let count = Int(min((perEntry * Double(entries)).rounded(.up), Double(Int32.max)))
        counters = [UInt32](repeating: 0, count: count < hashes ? hashes * 2 : count)
    }

    @inline(__always)
    private func positions(_ id: UInt64, _ body: (Int) -> Void) {
        let a = UInt32(truncatingIfNeeded: XXH64.hash(id, seed: 0x1234_5678))
        let b = UInt32(truncatingIfNeeded: XXH64.hash(id, seed: 0x1234_4321))
        let n = UInt32(counters.count)
        for i in 0..<UInt32(hashes) { body(Int((a &+ i &* b) % n)) }
    }

    func add(_ id: UInt64) {
        positions(id) { counters[$0] &+= 1 }
    }

    func estimate(_ id: UInt64) -> UInt32 {
        var m = UInt32.max
        positions(id) { m = min(m, counters[$0]) }
        return m
    }

    func halve() {
        for i in counters.indices { counters[i] >>= 1 }
    }
}

/// XXH64 (Yann Collet's xxHash, 64-bit) of one 64-bit value taken as its 8 little-endian bytes: the hash
/// libCacheSim's sketches use.
enum XXH64 {
    static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always)
    static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    /// The hash of `value`'s 8 bytes with `seed` (inputs under 32 bytes: no stripes, one 8-byte lane).
    @inline(__always)
    static func hash(_ value: UInt64, seed: UInt64) -> UInt64 {
        var h = seed &+ prime5 &+ 8
        var k = value &* prime2
        k = rotl(k, 31) &* prime1
        h ^= k
        h = rotl(h, 27) &* prime1 &+ prime4
        h ^= h >> 33
        h = h &* prime2
        h ^= h >> 29
        h = h &* prime3
        h ^= h >> 32
        return h
    }
}
