import Foundation
import Testing

@testable import CacheCore
@testable import Workloads

/// The outside check: libCacheSim's miss counts on public traces (shared/reference/eviction-public.csv).
@Suite("Eviction policies against libCacheSim's reference numbers")
struct ReferenceTests {
    struct Row: Sendable, CustomStringConvertible {
        var trace: String
        var format: String
        var algorithm: String
        var cacheSize: Int64
        var mode: SizeMode
        var requests: Int
        var misses: Int
        var missRatio: Double
        var description: String { "\(algorithm) \(trace) \(cacheSize) \(mode.rawValue)" }
        /// A W-TinyLFU row of a cache under 100 objects: libCacheSim's window is zero-sized there and refuses
        /// everything (miss ratio 1.0), a quirk the reference README says to skip.
        var zeroWindowQuirk: Bool { algorithm == "WTinyLFU" && missRatio == 1.0 && cacheSize < 100 && mode == .objects }
    }

    static let shared: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<6 {
            dir.deleteLastPathComponent()
            let candidate = dir.appendingPathComponent("shared/reference/eviction-public.csv").path
            if FileManager.default.fileExists(atPath: candidate) { return dir.appendingPathComponent("shared").path }
            let sibling = dir.deletingLastPathComponent().appendingPathComponent("shared/reference/eviction-public.csv")
            if FileManager.default.fileExists(atPath: sibling.path) {
                return dir.deletingLastPathComponent().appendingPathComponent("shared").path
            }
        }
        return "../shared"
    }()

    static let rows: [Row] = {
        guard let text = try? String(contentsOfFile: shared + "/reference/eviction-public.csv", encoding: .utf8) else {
            return []
        }
        return text.replacingOccurrences(of: "\r", with: "").split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard f.count == 11, let size = Int64(f[3]), let mode = SizeMode(rawValue: f[4]), let requests = Int(f[7]),
                let misses = Int(f[8]), let ratio = Double(f[9])
            else { return nil }
            return Row(
                trace: f[0], format: f[1], algorithm: f[2], cacheSize: size, mode: mode, requests: requests,
                misses: misses, missRatio: ratio)
        }
    }()

    static let algorithms: [String: PolicyKind] = [
        "LRU": .lru, "FIFO": .fifo, "CLOCK": .clock, "LFU": .lfu, "ARC": .arc, "TwoQ": .twoQ, "LIRS": .lirs,
        "S3FIFO": .s3fifo, "SIEVE": .sieve, "WTinyLFU": .wtinylfu, "Belady": .belady,
    ]

    static let traces = TraceCache()

    final class TraceCache: @unchecked Sendable {
        private var loaded: [String: Trace] = [:]
        private let lock = NSLock()

        func get(_ row: Row) throws -> Trace {
            try lock.withLock {
                if let t = loaded[row.trace] { return t }
                let t: Trace
                if row.trace.hasPrefix("caffeine-lirs/") {
                    t = try TraceReader.load(
                        path: ReferenceTests.shared + "/traces/" + row.trace + ".trace.gz", format: .txt)
                } else {
                    t = try TraceReader.load(
                        path: ReferenceTests.shared + "/traces/" + row.trace, format: .oracleGeneral)
                }
                loaded[row.trace] = t
                return t
            }
        }
    }

    @Test("the reference file and traces are there")
    func present() {
        #expect(Self.rows.count == 162, "read \(Self.rows.count) rows from \(Self.shared)")
    }

    @Test("each policy reproduces libCacheSim's misses", arguments: rows)
    func reproduce(row: Row) async throws { try await onOwnThread { try Self.reproduce(row) } }

    static func reproduce(_ row: Row) throws {
        let kind = try #require(Self.algorithms[row.algorithm])
        // W-TinyLFU with a zero-sized window refuses everything in libCacheSim: a quirk the README says to skip.
        if row.zeroWindowQuirk { return }
        var trace = try Self.traces.get(row)
        if trace.count == row.requests + 1 {
            // libCacheSim's traceConv dropped the last request when it made the oracleGeneral copy Belady used.
            trace = Trace(ids: Array(trace.ids.dropLast()), sizes: Array(trace.sizes.dropLast()), name: trace.name)
        }
        #expect(trace.count == row.requests)
        let policy = kind.make(capacity: row.cacheSize)
        let result = Simulator.run(
            trace, policy: policy, mode: row.mode, nextAccess: kind == .belady ? trace.nextAccessTimes() : nil)
        if kind == .wtinylfu {
            // The sketch hashes as libCacheSim's does (XXH64, same seeds and indexing), which brought every row
            // within 0.0025 (from 0.0034 with a hash of our own). What is left is the older libCacheSim that made
            // the file: today's libCacheSim gives Eddy's answer on every request (LibCacheSimReplayTests).
            #expect(abs(result.missRatio - row.missRatio) <= 0.0025, "\(row): \(result.missRatio) vs \(row.missRatio)")
        } else {
            #expect(result.misses == row.misses, "\(row): \(result.misses) misses, libCacheSim \(row.misses)")
        }
        #expect(policy.occupied <= row.cacheSize)
    }
}
