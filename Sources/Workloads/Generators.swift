import CacheCore
import Foundation
import StreamModel

/// ZipfSampler draws ranks 0..<n with probability proportional to 1 / (rank + 1)^alpha (inverse CDF table).
public struct ZipfSampler: Sendable {
    private let cdf: [Double]

    /// Creates a sampler over `n` ranks.
    public init(n: Int, alpha: Double) {
        var c = [Double](repeating: 0, count: max(1, n))
        var sum = 0.0
        for i in 0..<c.count {
            sum += 1 / pow(Double(i + 1), alpha)
            c[i] = sum
        }
        for i in 0..<c.count { c[i] /= sum }
        cdf = c
    }

    /// One rank.
    public func sample(_ rng: inout SeededRandom) -> Int {
        let u = rng.unit()
        var lo = 0
        var hi = cdf.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}

/// Settings of the stream-reader workload: tail readers following the heads of append-only segments plus
/// catch-up readers scanning history, the access pattern Eddy's cache serves.
public struct StreamWorkload: Sendable {
    /// Append-only segments.
    public var segments = 200
    /// Readers that follow a segment's head; hot segments (Zipf) get more of them.
    public var tailReaders = 400
    /// Readers that scan a segment's history block by block up to its head, then start on another.
    public var catchUpReaders = 40
    /// Requests to generate.
    public var requests = 1_000_000
    /// Block size in bytes (the size column).
    public var blockSize = 1 << 20
    /// Chance that a step is an append that moves some segment's head on by one block.
    public var appendProbability = 0.02
    /// How much faster a catch-up reader reads than a tail reader.
    public var catchUpSpeed = 4.0
    /// Zipf skew of segment popularity (for tail readers, appends and scans).
    public var alpha = 1.0
    /// Blocks behind the head where a catch-up reader starts: uniform in this range.
    public var catchUpDepth = 50...800
    /// Share of tail readers that trail the head by a fixed lag (consumers that fell behind and stay behind).
    public var laggingShare = 0.0
    /// The lag of a trailing tail reader, in blocks: uniform in 1...maxLag.
    public var maxLag = 16
    /// The seed.
    public var seed: UInt64 = 42

    /// Creates the default workload.
    public init() {}
}

/// Trace generators for `eddy sim --generate`: they write Eddy's block format (`time,segment,block,size`).
public enum TraceGenerator {
    /// The stream-reader workload as a trace in memory (IDs are ``BlockKey``s).
    public static func stream(_ w: StreamWorkload) -> Trace {
        var rng = SeededRandom(seed: w.seed)
        let popularity = ZipfSampler(n: w.segments, alpha: w.alpha)
        var head = (0..<w.segments).map { _ in UInt64(200 + Int(rng.next() % 1800)) }
        let tailSegment = (0..<w.tailReaders).map { _ in popularity.sample(&rng) }
        // Drawn only when asked for, so traces without trailing readers stay what they were.
        let tailLag: [UInt64] =
            w.laggingShare > 0
            ? (0..<w.tailReaders).map { _ in
                rng.unit() < w.laggingShare ? 1 + rng.next() % UInt64(max(1, w.maxLag)) : 0
            } : []
        var scanSegment = [Int](repeating: 0, count: w.catchUpReaders)
        var scanPosition = [UInt64](repeating: 0, count: w.catchUpReaders)
        func restart(_ r: Int, _ rng: inout SeededRandom) {
            let s = popularity.sample(&rng)
            let depth = UInt64(w.catchUpDepth.lowerBound + Int(rng.next() % UInt64(w.catchUpDepth.count)))
            scanSegment[r] = s
            scanPosition[r] = head[s] > depth ? head[s] - depth : 0
        }
        for r in 0..<w.catchUpReaders { restart(r, &rng) }
        let tailWeight = Double(w.tailReaders)
        let scanWeight = Double(w.catchUpReaders) * w.catchUpSpeed
        var ids: [UInt64] = []
        ids.reserveCapacity(w.requests)
        while ids.count < w.requests {
            if rng.unit() < w.appendProbability {
                head[popularity.sample(&rng)] += 1
                continue
            }
            if rng.unit() * (tailWeight + scanWeight) < tailWeight {
                let r = Int(rng.next() % UInt64(w.tailReaders))
                let s = tailSegment[r]
                // Most tail readers are at the head; some lag a block behind; trailing readers stay further behind.
                var lag: UInt64 = rng.next() % 4 == 0 ? 1 : 0
                if !tailLag.isEmpty { lag += tailLag[r] }
                ids.append(BlockKey(segment: UInt32(s), block: head[s] - min(lag, head[s])).rawValue)
            } else {
                let r = Int(rng.next() % UInt64(w.catchUpReaders))
                let s = scanSegment[r]
                ids.append(BlockKey(segment: UInt32(s), block: scanPosition[r]).rawValue)
                scanPosition[r] += 1
                if scanPosition[r] > head[s] { restart(r, &rng) }
            }
        }
        return Trace(ids: ids, sizes: [UInt32](repeating: UInt32(w.blockSize), count: ids.count), name: "stream")
    }

    /// Independent requests over `objects` objects with Zipf(`alpha`) popularity; object i is block i of
    /// segment 0. Ranks are shuffled over IDs so popularity does not follow ID order.
    public static func zipf(objects: Int, alpha: Double, requests: Int, blockSize: Int, seed: UInt64) -> Trace {
        var rng = SeededRandom(seed: seed)
        let sampler = ZipfSampler(n: objects, alpha: alpha)
        var permutation = Array(0..<UInt64(objects))
        permutation.shuffle(using: &rng)
        let ids = (0..<requests).map { _ in BlockKey(segment: 0, block: permutation[sampler.sample(&rng)]).rawValue }
        return Trace(ids: ids, sizes: [UInt32](repeating: UInt32(blockSize), count: requests), name: "zipf")
    }

    /// Independent requests over objects 1...`objects` with Zipf(`alpha`) popularity and log-normal sizes: each
    /// object keeps one size, exp(N(`logMean`, `logSigma`²)) bytes rounded down (at least 1). The variable-size
    /// workload on which LIRS is compared with libCacheSim request for request. Ranks are shuffled over IDs.
    public static func zipfLogNormal(
        objects: Int, alpha: Double, requests: Int, logMean: Double, logSigma: Double, seed: UInt64
    ) -> Trace {
        var rng = SeededRandom(seed: seed)
        let sampler = ZipfSampler(n: objects, alpha: alpha)
        var permutation = Array(1...UInt64(max(1, objects)))
        permutation.shuffle(using: &rng)
        let objectSizes: [UInt32] = (0..<max(1, objects)).map { _ in
            // Box-Muller: one standard normal from two uniforms (1 - u keeps the logarithm finite).
            let normal = (-2 * log(1 - rng.unit())).squareRoot() * cos(2 * Double.pi * rng.unit())
            return UInt32(min(Double(UInt32.max), max(1, exp(logMean + logSigma * normal))))
        }
        var ids: [UInt64] = []
        var sizes: [UInt32] = []
        ids.reserveCapacity(requests)
        sizes.reserveCapacity(requests)
        for _ in 0..<requests {
            let rank = sampler.sample(&rng)
            ids.append(permutation[rank])
            sizes.append(objectSizes[rank])
        }
        return Trace(ids: ids, sizes: sizes, name: "zipf-lognormal")
    }

    /// Writes `trace` in libCacheSim's oracleGeneral format (24-byte little-endian records: time = the request's
    /// index, ID, size, and -1 for the next access), which libCacheSim's tools and ``TraceFormat/oracleGeneral``
    /// read.
    public static func writeOracleGeneral(_ trace: Trace, to path: String) throws(EddyError) {
        var data = Data(capacity: trace.count * 24)
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) }
        }
        for i in 0..<trace.count {
            put(UInt32(truncatingIfNeeded: i))
            put(trace.ids[i])
            put(trace.sizes[i])
            put(Int64(-1))
        }
        do {
            try data.write(to: URL(fileURLWithPath: path))
        } catch {
            throw EddyError(.ioError, "cannot write \(path): \(error.localizedDescription)")
        }
    }

    /// Writes `trace` (whose IDs are ``BlockKey``s) in the block format.
    public static func writeBlockTrace(_ trace: Trace, to path: String) throws(EddyError) {
        var out = "time,segment,block,size\n"
        out.reserveCapacity(trace.count * 24)
        for i in 0..<trace.count {
            let key = BlockKey(rawValue: trace.ids[i])
            out += "\(i),\(key.segment),\(key.block),\(trace.sizes[i])\n"
        }
        do {
            try Data(out.utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw EddyError(.ioError, "cannot write \(path): \(error.localizedDescription)")
        }
    }
}
