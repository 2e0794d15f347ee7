import CacheCore
import Foundation

/// Whether a simulation counts objects or bytes.
public enum SizeMode: String, Sendable, CaseIterable {
    /// Every object weighs 1; cache sizes are object counts.
    case objects
    /// Objects weigh their size; cache sizes are bytes.
    case bytes
}

/// The outcome of replaying one trace through one policy at one cache size.
public struct SimulationResult: Sendable, Hashable {
    /// The policy's registry name (with parameters, if any were given).
    public var policy: String
    /// The cache size in objects or bytes.
    public var cacheSize: Int64
    /// How sizes were counted.
    public var sizeMode: SizeMode
    /// Requests replayed (every request counts: no warm-up).
    public var requests: Int
    /// Requests that missed.
    public var misses: Int
    /// Bytes (or objects, in objects mode) requested.
    public var requestedBytes: Int64
    /// Bytes (or objects) that missed.
    public var missedBytes: Int64
    /// Wall-clock seconds the replay took.
    public var seconds: Double

    /// misses / requests.
    public var missRatio: Double { requests == 0 ? 0 : Double(misses) / Double(requests) }
    /// missed bytes / requested bytes.
    public var byteMissRatio: Double { requestedBytes == 0 ? 0 : Double(missedBytes) / Double(requestedBytes) }
    /// Requests per second of replay.
    public var requestsPerSecond: Double { seconds > 0 ? Double(requests) / seconds : 0 }
}

/// Simulator replays a trace through an ``EvictionPolicy``: the same policy objects the cache uses.
public enum Simulator {
    /// Replays `trace` through `policy`.
    /// - Parameters:
    ///   - nextAccess: next-access times (``Trace/nextAccessTimes()``), needed by Belady; nil for the others.
    ///   - progress: called now and then with the number of requests done.
    public static func run(
        _ trace: Trace, policy: any EvictionPolicy, label: String? = nil, mode: SizeMode, nextAccess: [Int64]? = nil,
        progress: ((Int) -> Void)? = nil
    ) -> SimulationResult {
        replay(trace, policy, label ?? policy.name, mode, nextAccess, progress)
    }

    private static func replay<P: EvictionPolicy>(
        _ trace: Trace, _ policy: P, _ label: String, _ mode: SizeMode, _ nextAccess: [Int64]?,
        _ progress: ((Int) -> Void)?
    ) -> SimulationResult {
        let start = ContinuousClock.now
        var misses = 0
        var requested: Int64 = 0
        var missed: Int64 = 0
        let bytesMode = mode == .bytes
        trace.ids.withUnsafeBufferPointer { ids in
            trace.sizes.withUnsafeBufferPointer { sizes in
                var i = 0
                let n = ids.count
                while i < n {
                    let chunkEnd = min(n, i + (1 << 20))
                    while i < chunkEnd {
                        let size: Int64 = bytesMode ? Int64(sizes[i]) : 1
                        let request = CacheRequest(id: ids[i], size: size, nextAccess: nextAccess?[i] ?? .max)
                        requested += size
                        if !policy.access(request) {
                            misses += 1
                            missed += size
                        }
                        i += 1
                    }
                    progress?(i)
                }
            }
        }
        let elapsed = ContinuousClock.now - start
        return SimulationResult(
            policy: label, cacheSize: policy.capacity, sizeMode: mode, requests: trace.count, misses: misses,
            requestedBytes: requested, missedBytes: missed,
            seconds: elapsed.inSeconds)
    }
}
