import Foundation
import StreamModel

/// CountingSketch is a counting Bloom filter read as a count-min sketch: k hashes over one array of counters,
/// every add increments all k, the estimate is the minimum, and `halve()` ages all counters. Sized like
/// libCacheSim's: counters = ceil(entries x -ln(error) / ln(2)^2), k = ceil(ln(2) x that ratio).
final class CountingSketch {
    private var counters: [UInt32]
    private let hashes: Int

    init(entries: Int, error: Double) {
        let perEntry = -log(error) / 0.480453013918201
        hashes = Int((0.693147180559945 * perEntry).rounded(.up))
        let count = max(Int((perEntry * Double(entries)).rounded(.up)), hashes * 2)
        counters = [UInt32](repeating: 0, count: count)
    }

    @inline(__always)
    private func positions(_ id: UInt64, _ body: (Int) -> Void) {
        let a = UInt32(truncatingIfNeeded: SeededRandom.mix(id &+ 0x9E37_79B9_7F4A_7C15))
        let b = UInt32(truncatingIfNeeded: SeededRandom.mix(id &+ 0xC2B2_AE3D_27D4_EB4F))
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
