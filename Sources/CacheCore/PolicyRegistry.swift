import StreamModel

/// PolicyKind is the one visible registry of eviction policies: each case is a name users type (in config and
/// on the command line) and a factory. Parameters default to the literature's values and can be overridden as
/// `name:key=value:key=value`, e.g. `s3fifo:small=0.2:threshold=1` or `wtinylfu:window=0.02` (colons, so a
/// comma-separated list of policies stays unambiguous).
public enum PolicyKind: String, CaseIterable, Sendable {
    case lru
    case fifo
    case clock
    case lfu
    case arc
    case twoQ = "2q"
    case lirs
    case s3fifo
    case sieve
    case wtinylfu
    /// Eddy's stream-aware policy (``StreamAware``).
    case stream
    /// The offline optimum; needs next-access times, so only the simulator offers it.
    case belady

    /// Parameters each policy accepts, with their defaults (for help text and validation).
    public var parameters: [(name: String, defaultValue: String, meaning: String)] {
        switch self {
        case .clock: return [("bits", "1", "counter bits (1 = classic CLOCK)")]
        case .twoQ: return [("in", "0.25", "A1in share"), ("out", "0.5", "A1out ghost share")]
        case .lirs: return [("hir", "0.01", "resident HIR share")]
        case .s3fifo:
            return [
                ("small", "0.1", "small queue share"), ("ghost", "0.9", "ghost queue share"),
                ("threshold", "2", "hits to move from small to main"),
            ]
        case .wtinylfu: return [("window", "0.01", "window LRU share")]
        case .stream:
            return [
                ("tail", "2", "blocks behind the head that count as tail"),
                ("cursors", "16", "scans tracked per segment"),
                ("sample", "16", "history blocks examined per eviction"),
            ]
        default: return []
        }
    }

    /// Parses `name` or `name:key=value:...`.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the unknown policy or parameter.
    public static func parse(_ text: String) throws(EddyError) -> (PolicyKind, [String: Double]) {
        let parts = text.split(separator: ":", maxSplits: 1)
        let items = parts.count == 2 ? parts[1].split(separator: ":") : []
        let name = parts.first.map(String.init)?.lowercased() ?? ""
        guard let kind = PolicyKind(rawValue: name) else {
            throw EddyError(
                .invalidArgument,
                "unknown policy '\(name)': choose from \(PolicyKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var values: [String: Double] = [:]
        if parts.count == 2 {
            let known = Set(kind.parameters.map(\.name))
            for item in items {
                let kv = item.split(separator: "=")
                guard kv.count == 2, let v = Double(kv[1]) else {
                    throw EddyError(.invalidArgument, "bad parameter '\(item)' for \(name): expected key=number")
                }
                guard known.contains(String(kv[0])) else {
                    throw EddyError(
                        .invalidArgument,
                        "policy \(name) has no parameter '\(kv[0])'"
                            + (known.isEmpty ? "" : " (it has: \(known.sorted().joined(separator: ", ")))"))
                }
                values[String(kv[0])] = v
            }
        }
        return (kind, values)
    }

    /// Makes a policy of this kind for `capacity`, with `parameters` overriding the defaults. `objectSize` is the
    /// typical weight of an object (1 when counting objects; the block size in a block cache): tables start sized
    /// for `capacity / objectSize` objects, and W-TinyLFU sizes its frequency sketch and ageing period by it.
    public func make(capacity: Int64, parameters: [String: Double] = [:], objectSize: Int64 = 1) -> any EvictionPolicy {
        func p(_ key: String, _ fallback: Double) -> Double { parameters[key] ?? fallback }
        switch self {
        case .lru: return LRU(capacity: capacity, objectSize: objectSize)
        case .fifo: return FIFO(capacity: capacity, objectSize: objectSize)
        case .clock:
            return Clock(
                capacity: capacity, maxFrequency: (Int32(1) << Int32(p("bits", 1))) - 1,
                objectSize: objectSize)
        case .lfu: return LFU(capacity: capacity, objectSize: objectSize)
        case .sieve: return Sieve(capacity: capacity, objectSize: objectSize)
        case .belady: return Belady(capacity: capacity, objectSize: objectSize)
        case .s3fifo:
            return S3FIFO(
                capacity: capacity, smallRatio: p("small", 0.1), ghostRatio: p("ghost", 0.9),
                moveToMainThreshold: Int32(p("threshold", 2)), objectSize: objectSize)
        case .arc: return ARC(capacity: capacity, objectSize: objectSize)
        case .twoQ:
            return TwoQ(capacity: capacity, inRatio: p("in", 0.25), outRatio: p("out", 0.5), objectSize: objectSize)
        case .lirs: return LIRS(capacity: capacity, hirRatio: p("hir", 0.01))
        case .wtinylfu: return WTinyLFU(capacity: capacity, windowRatio: p("window", 0.01), objectSize: objectSize)
        case .stream:
            return StreamAware(
                capacity: capacity, tailWindow: UInt64(p("tail", 2)), maxCursors: Int(p("cursors", 16)),
                sample: Int(p("sample", 16)), objectSize: objectSize)
        }
    }
}
