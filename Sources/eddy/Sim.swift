import ArgumentParser
import CacheCore
import Foundation
import StreamModel
import Workloads

struct Sim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a cache trace through eviction policies (the same code the cache runs), or generate one.",
        discussion: """
            eddy sim TRACE --format oracleGeneral|txt|csv|block --policies lru,s3fifo,stream --sizes 0.01,0.1
            A size below 1 is that fraction of the trace's working set; otherwise it is absolute (objects, or bytes
            with --bytes). Every request counts (no warm-up). Policy parameters: s3fifo:small=0.2:threshold=1.
            Policies: \(PolicyKind.allCases.map(\.rawValue).joined(separator: ", ")).

            eddy sim --generate stream --out stream.csv [--requests N --segments N --tail-readers N --catchup-readers N
                --lagging-share F --max-lag N --catchup-speed X --catchup-depth LOW-HIGH]
            eddy sim --generate zipf --out zipf.csv [--objects N --alpha A --requests N]
            eddy sim --grid stream [--requests N --sizes 0.02,0.1]
            Generated traces are in the block format (time,segment,block,size) and seeded (--seed).
            """)

    @Argument(help: "The trace file (plain, .gz or .zst).") var trace: String?
    @Option(name: .long, help: "oracleGeneral, txt, csv or block (default: from the file name).") var format: String?
    @Option(name: .long, help: "CSV columns, 1-based: time=N,id=N,size=N.") var csvColumns: String?
    @Option(name: .long, help: "Comma-separated policies.") var policies: String =
        "lru,fifo,clock,sieve,s3fifo,arc,2q,lirs,lfu,wtinylfu,stream,belady"
    @Option(name: .long, help: "Comma-separated cache sizes: fractions of the working set (< 1) or absolute.")
    var sizes: String = "0.01,0.05,0.1,0.2"
    @Flag(name: .long, help: "Weigh objects by their size; sizes are bytes.") var bytes = false
    @Option(
        name: .long,
        help: """
            The typical object weight that sizes the policies' tables (W-TinyLFU's sketch and ageing): 1 as in \
            libCacheSim; give a node's block size to replay its --trace-out as its what-if does.
            """)
    var objectSize: Int64 = 1
    @Option(name: .long, help: "Write the results as CSV (with --generate: the trace).") var out: String?
    @Option(name: .long, help: "Write an SVG miss-ratio curve.") var plot: String?
    @Option(name: .long, help: "Generate a trace: stream or zipf.") var generate: String?
    @Option(
        name: .long,
        help: "Run a grid of generated workloads: 'stream' compares the stream policy with the best generic one.")
    var grid: String?
    @Option(name: .long) var requests: Int = 1_000_000
    @Option(name: .long) var seed: UInt64 = 42
    @Option(name: .long) var segments: Int = 200
    @Option(name: .long) var tailReaders: Int = 400
    @Option(name: .long) var catchupReaders: Int = 40
    @Option(name: .long, help: "Share of tail readers that trail the head (stream generator).") var laggingShare = 0.0
    @Option(name: .long, help: "Largest lag of a trailing tail reader, in blocks.") var maxLag = 16
    @Option(name: .long, help: "How much faster catch-up readers read than tail readers.") var catchupSpeed = 4.0
    @Option(name: .long, help: "Blocks behind the head where scans start, LOW-HIGH.") var catchupDepth = "50-800"
    @Option(name: .long) var objects: Int = 100_000
    @Option(name: .long) var alpha: Double = 1.0
    @Option(name: .long) var blockSize: Int = 1 << 20

    func run() async throws {
        try await reportingErrors {
            if let generate { return try generateTrace(generate) }
            if let grid { return try await runGrid(grid) }
            guard let trace else { throw EddyError(.invalidArgument, "give a trace file, or --generate stream|zipf") }
            try await simulate(trace)
        }
    }

    private func generateTrace(_ kind: String) throws {
        guard let out else { throw EddyError(.invalidArgument, "--generate needs --out FILE") }
        guard requests > 0 else { throw EddyError(.invalidArgument, "--requests must be positive") }
        let t: Trace
        switch kind {
        case "stream":
            var w = StreamWorkload()
            w.requests = requests
            w.seed = seed
            w.segments = segments
            w.tailReaders = tailReaders
            w.catchUpReaders = catchupReaders
            w.alpha = alpha
            w.blockSize = blockSize
            w.laggingShare = laggingShare
            w.maxLag = maxLag
            w.catchUpSpeed = catchupSpeed
            let depth = catchupDepth.split(separator: "-").compactMap { Int($0) }
            guard depth.count == 2, depth[0] >= 0, depth[0] <= depth[1] else {
                throw EddyError(.invalidArgument, "--catchup-depth wants LOW-HIGH blocks, like 50-800")
            }
            w.catchUpDepth = depth[0]...depth[1]
            guard (0...1).contains(laggingShare), maxLag > 0, catchupSpeed > 0 else {
                throw EddyError(
                    .invalidArgument, "--lagging-share must be within 0-1, --max-lag and --catchup-speed positive")
            }
            guard w.segments > 0, w.tailReaders > 0, w.catchUpReaders > 0 else {
                throw EddyError(.invalidArgument, "--segments, --tail-readers and --catchup-readers must be positive")
            }
            t = TraceGenerator.stream(w)
        case "zipf":
            guard objects > 0 else { throw EddyError(.invalidArgument, "--objects must be positive") }
            t = TraceGenerator.zipf(
                objects: objects, alpha: alpha, requests: requests, blockSize: blockSize, seed: seed)
        default:
            throw EddyError(.invalidArgument, "unknown generator '\(kind)': use stream or zipf")
        }
        try TraceGenerator.writeBlockTrace(t, to: out)
        let ws = t.workingSet()
        FileHandle.standardError.write(
            Data("wrote \(t.count) requests over \(ws.objects) blocks to \(out)\n".utf8))
    }

    /// `--grid stream`: the stream policy against the best generic policy across generator settings, two points
    /// at a time, as a Markdown table (docs/eviction.md records it).
    private func runGrid(_ kind: String) async throws {
        guard kind == "stream" else { throw EddyError(.invalidArgument, "unknown grid '\(kind)': use stream") }
        guard requests > 0 else { throw EddyError(.invalidArgument, "--requests must be positive") }
        var fractions: [Double] = []
        for text in sizes.split(separator: ",") {
            guard let v = Double(text), v > 0, v < 1 else {
                throw EddyError(.invalidArgument, "bad size '\(text)' for --grid: a fraction of the blocks, below 1")
            }
            fractions.append(v)
        }
        let points = StreamGrid.points(requests: requests, seed: seed)
        let sizes = fractions
        let err = FileHandle.standardError
        var rows = [StreamGrid.Row?](repeating: nil, count: points.count)
        try await withThrowingTaskGroup(of: (Int, StreamGrid.Row).self) { group in
            var next = 0
            let limit = max(1, ProcessInfo.processInfo.activeProcessorCount)
            func launch() {
                let i = next
                next += 1
                group.addTask { (i, StreamGrid.run(points[i], fractions: sizes)) }
            }
            while next < min(limit, points.count) { launch() }
            var done = 0
            for try await (i, row) in group {
                rows[i] = row
                done += 1
                err.write(Data("  [\(done)/\(points.count)] \(row.point.name)\n".utf8))
                if next < points.count { launch() }
            }
        }
        print(StreamGrid.markdown(rows.compactMap { $0 }), terminator: "")
    }

    private func traceFormat(_ path: String) throws -> TraceFormat {
        if let format {
            guard let f = TraceFormat(rawValue: format) else {
                throw EddyError(
                    .invalidArgument,
                    "unknown --format '\(format)': use \(TraceFormat.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return f
        }
        let base = path.replacingOccurrences(of: ".gz", with: "").replacingOccurrences(of: ".zst", with: "")
        if base.hasSuffix(".bin") { return .oracleGeneral }
        if base.hasSuffix(".txt") || base.hasSuffix(".trace") { return .txt }
        if base.hasSuffix(".csv") { return .csv }
        throw EddyError(.invalidArgument, "cannot tell the format of \(path): give --format")
    }

    private func simulate(_ path: String) async throws {
        let format = try traceFormat(path)
        let columns = try csvColumns.map { try CSVColumns(parsing: $0) } ?? CSVColumns()
        let err = FileHandle.standardError
        err.write(Data("loading \(path) (\(format.rawValue))...\n".utf8))
        let t = try TraceReader.load(path: path, format: format, columns: columns)
        guard t.count > 0 else { throw EddyError(.invalidArgument, "\(path) holds no requests") }
        guard objectSize > 0 else { throw EddyError(.invalidArgument, "--object-size must be positive") }
        let mode: SizeMode = bytes ? .bytes : .objects
        let ws = t.workingSet()
        let wss = bytes ? ws.bytes : Int64(ws.objects)
        err.write(Data("\(t.count) requests, working set \(ws.objects) objects, \(ws.bytes) bytes\n".utf8))

        var kinds: [(String, PolicyKind, [String: Double])] = []
        for text in policies.split(separator: ",").map(String.init) {
            let (kind, parameters) = try PolicyKind.parse(text)
            kinds.append((text, kind, parameters))
        }
        var capacities: [Int64] = []
        for text in sizes.split(separator: ",") {
            guard let v = Double(text), v > 0 else {
                throw EddyError(.invalidArgument, "bad size '\(text)': a positive number (a fraction below 1)")
            }
            let c = v < 1 ? Int64((v * Double(wss)).rounded(.down)) : Int64(v)
            guard c > 0 else { throw EddyError(.invalidArgument, "size \(text) is 0 for a working set of \(wss)") }
            capacities.append(c)
        }
        let nextAccess = kinds.contains { $0.1 == .belady } ? t.nextAccessTimes() : nil
        let jobs = kinds.flatMap { k in capacities.map { (k, $0) } }
        let started = ContinuousClock.now
        let limit = max(1, ProcessInfo.processInfo.activeProcessorCount)
        var results: [Int: SimulationResult] = [:]
        try await withThrowingTaskGroup(of: (Int, SimulationResult).self) { group in
            var next = 0
            func launch() {
                let i = next
                let ((label, kind, parameters), capacity) = jobs[i]
                next += 1
                group.addTask {
                    let policy = kind.make(capacity: capacity, parameters: parameters, objectSize: objectSize)
                    // Long traces report progress every 10M requests.
                    var reported = 0
                    let progress: ((Int) -> Void)? =
                        t.count < 10_000_000
                        ? nil
                        : { done in
                            guard done / 10_000_000 > reported else { return }
                            reported = done / 10_000_000
                            FileHandle.standardError.write(
                                Data("  \(label) @ \(capacity): \(done) of \(t.count) requests\n".utf8))
                        }
                    return (
                        i,
                        Simulator.run(
                            t, policy: policy, label: label, mode: mode, nextAccess: nextAccess, progress: progress)
                    )
                }
            }
            while next < min(limit, jobs.count) { launch() }
            for try await (i, r) in group {
                results[i] = r
                err.write(
                    Data(
                        String(
                            format: "  %@ @ %lld: miss ratio %.4f (%.1f Mreq/s) [%d/%d]\n", r.policy, r.cacheSize,
                            r.missRatio, r.requestsPerSecond / 1e6, results.count, jobs.count
                        ).utf8))
                if next < jobs.count { launch() }
            }
        }
        let ordered = (0..<jobs.count).compactMap { results[$0] }
        print(Report.table(ordered), terminator: "")
        let elapsed = ContinuousClock.now - started
        let seconds = elapsed.inSeconds
        let total = ordered.reduce(0) { $0 + $1.requests }
        print(
            String(
                format: "%d simulations, %d requests in %.2f s: %.1f M requests/s overall", ordered.count, total,
                seconds, Double(total) / seconds / 1e6))
        if let out { try Report.write(Report.csv(ordered), to: out) }
        if let plot {
            try Report.write(Report.svg(ordered, title: "Miss ratio: \(t.name) (\(mode.rawValue))"), to: plot)
        }
    }
}
