import CZstd
import Testing

@testable import CacheCore

@Suite("Zstd")
struct ZstdTests {
    /// Compresses `input` with ``Zstd`` and decompresses it with the plain zstd API.
    static func roundTrip(_ input: [UInt8], level: Int32) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = out.withUnsafeMutableBytes { o in input.withUnsafeBytes { Zstd.compress($0, into: o, level: level) } }
        guard let n else { return nil }
        var back = [UInt8](repeating: 0, count: input.count)
        let m = back.withUnsafeMutableBytes { b in
            out.withUnsafeBytes { ZSTD_decompress(b.baseAddress, b.count, $0.baseAddress, n) }
        }
        return ZSTD_isError(m) == 0 && m == input.count ? back : nil
    }

    @Test(
        "reused contexts give frames zstd reads back, at any level, from many tasks at once; too small a buffer is nil")
    func pooledContexts() async throws {
        let inputs: [[UInt8]] = (0..<24).map { i in
            var x = UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
            return (0..<(50_000 + i * 7_919)).map { j in
                x ^= x << 13
                x ^= x >> 7
                x ^= x << 17
                // Mostly repetitive text with some noise: compressible, different per input.
                return j % 5 == 0 ? UInt8(truncatingIfNeeded: x) : UInt8(ascii: "a") + UInt8(j % 7)
            }
        }
        let results = await withTaskGroup(of: (Int, Bool).self) { group in
            for (i, input) in inputs.enumerated() {
                group.addTask { (i, Self.roundTrip(input, level: Int32(i % 4) + 1) == input) }
            }
            var all: [Int: Bool] = [:]
            for await (i, ok) in group { all[i] = ok }
            return all
        }
        #expect(results.count == inputs.count)
        #expect(results.values.allSatisfy { $0 })
        #expect(Zstd.idle.withLock { $0.count } <= Zstd.poolLimit)
        #expect(Zstd.idle.withLock { $0.count } >= 1)

        let input = inputs[0]
        var tiny = [UInt8](repeating: 0, count: 8)
        let n = tiny.withUnsafeMutableBytes { o in input.withUnsafeBytes { Zstd.compress($0, into: o, level: 1) } }
        #expect(n == nil)
        // A failed call leaves the pool usable.
        #expect(Self.roundTrip(input, level: 1) == input)
    }
}
