import CacheCore
import Foundation

/// StreamGrid runs the `stream` policy against the generic ones on stream-reader traces made with many generator
/// settings, one changed at a time from the default and a few changed together, so a policy tuned to one
/// workload shows where it stops winning. `eddy sim --grid stream` prints it; docs/eviction.md records it.
public enum StreamGrid {
    /// One workload of the grid.
    public struct Point: Sendable {
        /// What differs from the default workload.
        public var name: String
        /// The generator's settings.
        public var workload: StreamWorkload
    }

    /// One cache size of one point: the `stream` policy's miss ratio and the best generic policy's.
    public struct Cell: Sendable {
        /// Cache size as a share of the trace's distinct blocks.
        public var fraction: Double
        /// `stream`'s miss ratio.
        public var stream: Double
        /// The generic policy with the fewest misses, and its miss ratio.
        public var best: (policy: String, missRatio: Double)
        /// Misses `stream` saves against the best generic policy, as a share of that policy's misses.
        public var lead: Double { best.missRatio == 0 ? 0 : (best.missRatio - stream) / best.missRatio }
    }

    /// One row: a point and its cells.
    public struct Row: Sendable {
        public var point: Point
        public var distinctBlocks: Int
        public var cells: [Cell]
    }

    /// The generic policies `stream` is compared with: every registered policy but `stream` and the oracle.
    public static let generic = PolicyKind.allCases.filter { $0 != .stream && $0 != .belady }

    /// The grid: the default workload, each setting changed alone, and two points with several changed.
    public static func points(requests: Int, seed: UInt64 = 42) -> [Point] {
        func point(_ name: String, _ change: (inout StreamWorkload) -> Void) -> Point {
            var w = StreamWorkload()
            w.requests = requests
            w.seed = seed
            change(&w)
            return Point(name: name, workload: w)
        }
        return [
            point("default (200 segments, 400 tail, 40 catch-up x4, depth 50-800)") { _ in },
            point("50 segments") { $0.segments = 50 },
            point("1000 segments") { $0.segments = 1000 },
            point("30 % of tail readers trail by 1-16 blocks") { $0.laggingShare = 0.3 },
            point("80 % of tail readers trail by 1-64 blocks") {
                $0.laggingShare = 0.8
                $0.maxLag = 64
            },
            point("catch-up as fast as tail (x1)") { $0.catchUpSpeed = 1 },
            point("catch-up x16") { $0.catchUpSpeed = 16 },
            point("shallow scans (depth 10-100)") { $0.catchUpDepth = 10...100 },
            point("deep scans (depth 500-4000)") { $0.catchUpDepth = 500...4000 },
            point("200 catch-up readers") { $0.catchUpReaders = 200 },
            point("flat popularity (Zipf 0.6)") { $0.alpha = 0.6 },
            point("1000 segments, 30 % trailing, x1, deep") {
                $0.segments = 1000
                $0.laggingShare = 0.3
                $0.catchUpSpeed = 1
                $0.catchUpDepth = 500...4000
            },
            point("50 segments, 200 catch-up x16, shallow") {
                $0.segments = 50
                $0.catchUpReaders = 200
                $0.catchUpSpeed = 16
                $0.catchUpDepth = 10...100
            },
        ]
    }

    /// Generates `point`'s trace and replays it through `stream` and every generic policy at each size.
    public static func run(_ point: Point, fractions: [Double]) -> Row {
        let trace = TraceGenerator.stream(point.workload)
        let distinct = trace.workingSet().objects
        let cells = fractions.map { f in
            let capacity = max(1, Int64(Double(distinct) * f))
            let stream = Simulator.run(trace, policy: PolicyKind.stream.make(capacity: capacity), mode: .objects)
            var best = (policy: "", missRatio: 2.0)
            for kind in generic {
                let r = Simulator.run(trace, policy: kind.make(capacity: capacity), mode: .objects)
                if r.missRatio < best.missRatio { best = (kind.rawValue, r.missRatio) }
            }
            return Cell(fraction: f, stream: stream.missRatio, best: best)
        }
        return Row(point: point, distinctBlocks: distinct, cells: cells)
    }

    /// The grid as a Markdown table: per size, stream's miss ratio, the best generic policy's, and the lead.
    public static func markdown(_ rows: [Row]) -> String {
        guard let first = rows.first else { return "" }
        var head = "| workload | blocks |"
        var rule = "|---|---|"
        for c in first.cells {
            let pct = String(format: "%g %%", c.fraction * 100)
            head += " stream @ \(pct) | best generic @ \(pct) | lead |"
            rule += "---|---|---|"
        }
        var out = head + "\n" + rule + "\n"
        for r in rows {
            out += "| \(r.point.name) | \(r.distinctBlocks) |"
            for c in r.cells {
                out += String(
                    format: " %.4f | %@ %.4f | %+.1f %% |", c.stream, c.best.policy, c.best.missRatio, c.lead * 100)
            }
            out += "\n"
        }
        return out
    }
}
