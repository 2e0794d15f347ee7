import ArgumentParser
import EddyClient
import Foundation
import Histogram
import NIOCore
import StreamModel
import Synchronization
import WireProtocol

/// Options shared by `bench read` and `bench fanout`.
struct BenchTarget: ParsableArguments {
    @Option(name: .long, help: "The nodes, HOST:PORT,HOST:PORT,... (readers are spread over them).")
    var servers: String = "127.0.0.1:9090,127.0.0.1:9091,127.0.0.1:9092"
    @Option(name: .long, help: "The stream (created and filled when missing).") var stream: String = "bench/read"
    @Option(name: .long, help: "Readers, each with its own connection.") var readers: Int = 64
    @Option(name: .long, help: "Seconds to measure.") var duration: Double = 10
    @Option(name: .long, help: "Segments of the stream when it is created.") var segments: UInt32 = 8
    @Option(name: .long, help: "MiB to append to a stream that is created.") var fillMib: Int = 64
    @Option(name: .long, help: "Payload bytes per event.") var size: Int = 1000
    @Flag(name: .long, help: "Print one JSON object (keys in docs/benchmarks.md).") var json = false
    @OptionGroup var credentials: ClientCredentials

    /// A client configuration for `servers` with the token and TLS of the command line.
    func configuration(_ servers: [ServerAddress]) throws -> EddyClient.Configuration {
        var c = EddyClient.Configuration(servers: servers)
        c.token = credentials.bearer
        c.tls = try credentials.tls()
        return c
    }

    func addresses() throws -> [ServerAddress] {
        try ServerAddress.list(parsing: servers)
    }

    /// A client whose first choice is server `i` (round robin), failing over to the others in order.
    func client(_ i: Int) async throws -> EddyClient {
        let all = try addresses()
        var c = try configuration(Array(all[(i % all.count)...] + all[..<(i % all.count)]))
        c.inOrder = true
        return try await EddyClient.connect(c)
    }

    /// The stream's info, after creating and filling it if it does not exist.
    func prepare(_ client: EddyClient) async throws -> StreamInfo {
        let name = try StreamName(parsing: stream)
        if let info = try? await client.info(name) { return info }
        try await client.createStream(name, segments: segments)
        let perSegment = fillMib << 20 / Int(segments)
        let batch = max(1, (256 << 10) / (size + 32))
        let payload = [UInt8](repeating: UInt8(ascii: "e"), count: size)
        var frames: [UInt8] = []
        for _ in 0..<batch { try EventFrame.encode(Event(timestamp: 0, payload: payload), into: &frames) }
        let buffer = ByteBuffer(bytes: frames)
        let batchBytes = frames.count
        try await withThrowingTaskGroup(of: Void.self) { group in
            for s in 0..<segments {
                group.addTask {
                    let segment = SegmentID(stream: name, number: s)
                    var written = 0
                    var n: Int64 = 0
                    while written < perSegment {
                        _ = try await client.append(
                            segment, frames: buffer, writerID: "bench-fill", firstEventNumber: n)
                        n += Int64(batch)
                        written += batchBytes
                    }
                }
            }
            try await group.waitForAll()
        }
        FileHandle.standardError.write(Data("filled \(name): \(fillMib) MiB in \(segments) segments\n".utf8))
        return try await client.info(name)
    }

    /// Stats of every node, by address.
    func nodeStats() async -> [String: [String: Any]] {
        var all: [String: [String: Any]] = [:]
        for a in (try? addresses()) ?? [] {
            guard let configuration = try? configuration([a]), let c = try? await EddyClient.connect(configuration)
            else { continue }
            if let text = try? await c.stats(),
                let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            {
                all[a.description] = object
            }
            await c.close()
        }
        return all
    }
}

/// Counts whole event frames in `bytes` by their length fields (no CRC: the store and the node checked).
func countFrames(_ bytes: ByteBuffer, carry: inout Int) -> Int {
    var n = 0
    var at = carry
    let count = bytes.readableBytes
    while at + 4 <= count {
        guard let length = bytes.getInteger(at: bytes.readerIndex + at, as: UInt32.self) else { break }
        at += 4 + Int(length)
        if at <= count { n += 1 }
    }
    carry = max(0, at - count)
    return n
}

/// Latency and throughput figures of one run.
struct BenchFigures {
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
    var events = 0
    var bytes = 0

    mutating func add(_ other: BenchFigures) {
        histogram.add(other.histogram)
        events += other.events
        bytes += other.bytes
    }

    func ms(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) / 1000 }
}

final class Progress: Sendable {
    let events = Atomic<Int>(0)
    let bytes = Atomic<Int>(0)
    /// Readers that are in place (fan-out starts its writer when all are).
    let ready = Atomic<Int>(0)

    /// Prints a line each second until cancelled.
    func report(start: ContinuousClock.Instant) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let s = (ContinuousClock.now - start).inSeconds
                let e = events.load(ordering: .relaxed)
                let b = bytes.load(ordering: .relaxed)
                FileHandle.standardError.write(
                    Data(
                        String(
                            format: "... %.0f s: %d events, %.0f events/s, %.1f MB/s\n", s, e, Double(e) / s,
                            Double(b) / s / 1e6
                        ).utf8))
            }
        }
    }
}

struct BenchRead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read",
        abstract:
            "Many readers through the ring: events/s, MB/s, latency percentiles, hit ratio, store reads per block.",
        discussion: """
            Modes: catchup (each reader scans a segment from its start to its end, again and again), tail (each
            reader follows a segment's tail while a writer appends --rate events/s), mixed (half of each), hot
            (every reader reads the stream's first --hot-blocks blocks again and again: all from cache). Latency is
            per read request. Hit ratios and store reads per block come from the nodes' stats (differences over the
            run).
            """)

    @OptionGroup var target: BenchTarget
    @Option(name: .long, help: "tail, catchup, mixed or hot.") var mode: String = "catchup"
    @Option(name: .long, help: "Events per second the writer appends in tail and mixed modes.") var rate: Int = 2000
    @Option(name: .long, help: "Blocks per segment the hot mode reads.") var hotBlocks: Int = 4
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Count the bytes of each answer, not its events (as wrk treats an HTTP body); events are then 0.",
            discussion: "Measures the nodes without the readers' walk over every event's length field."))
    var bytesOnly = false

    func run() async throws {
        ClientMemory.reuseAnswerBuffers()
        guard ["tail", "catchup", "mixed", "hot"].contains(mode) else {
            throw ValidationError("unknown --mode '\(mode)': use tail, catchup, mixed or hot")
        }
        guard target.readers > 0, target.duration > 0 else {
            throw ValidationError("--readers and --duration must be positive")
        }
        try await reportingErrors {
            let admin = try await target.client(0)
            let info = try await target.prepare(admin)
            let before = await target.nodeStats()
            let progress = Progress()
            let start = ContinuousClock.now
            let end = start + .milliseconds(Int64(target.duration * 1000))
            let reporter = progress.report(start: start)
            let writer: Task<Void, Never>? =
                mode == "tail" || mode == "mixed"
                ? appendAtRate(admin, info, rate: rate, until: end, size: target.size) : nil
            let figures = try await withThrowingTaskGroup(of: BenchFigures.self) { group in
                for r in 0..<target.readers {
                    let tail = mode == "tail" || (mode == "mixed" && r % 2 == 0)
                    let segment = info.segments[r % info.segments.count]
                    group.addTask {
                        let c = try await target.client(r)
                        defer { Task { await c.close() } }
                        return try await readLoop(
                            c, segment, tail: tail, hot: mode == "hot", until: end, progress: progress)
                    }
                }
                var all = BenchFigures()
                for try await f in group { all.add(f) }
                return all
            }
            reporter.cancel()
            writer?.cancel()
            let elapsed = (ContinuousClock.now - start).inSeconds
            let after = await target.nodeStats()
            await admin.close()
            report(figures, elapsed: elapsed, before: before, after: after)
        }
    }

    func readLoop(
        _ c: EddyClient, _ segment: SegmentInfo, tail: Bool, hot: Bool, until end: ContinuousClock.Instant,
        progress: Progress
    ) async throws -> BenchFigures {
        var f = BenchFigures()
        let block = UInt64(1 << 20)
        var offset: UInt64 = tail ? try await c.info(segment.segment).length : segment.startOffset
        var carry = 0
        let hotEnd = min(segment.length, UInt64(hotBlocks) * block)
        while ContinuousClock.now < end {
            let t0 = ContinuousClock.now
            let (info, data) = try await c.read(
                segment.segment, from: offset, maxBytes: 1 << 20, wait: tail ? .seconds(1) : .zero)
            let micros = (ContinuousClock.now - t0).inSeconds * 1e6
            _ = f.histogram.record(UInt64(max(1, micros)))
            let n = bytesOnly ? 0 : countFrames(data, carry: &carry)
            f.events += n
            f.bytes += data.readableBytes
            progress.events.add(n, ordering: .relaxed)
            progress.bytes.add(data.readableBytes, ordering: .relaxed)
            offset += UInt64(data.readableBytes)
            if hot && offset >= hotEnd {
                offset = segment.startOffset
                carry = 0
            } else if !tail && offset >= info.length {
                offset = info.startOffset  // a catch-up reader starts its scan again
                carry = 0
            }
        }
        return f
    }

    func report(_ f: BenchFigures, elapsed: Double, before: [String: [String: Any]], after: [String: [String: Any]]) {
        func delta(_ node: String, _ key: String) -> Double {
            let a = (after[node]?[key] as? NSNumber)?.doubleValue ?? 0
            let b = (before[node]?[key] as? NSNumber)?.doubleValue ?? 0
            return a - b
        }
        var perNode: [String: Double] = [:]
        var hits = 0.0
        var lookups = 0.0
        var storeBytes = 0.0
        var distinct = 0.0
        for node in after.keys.sorted() {
            let h = delta(node, "hits") + delta(node, "near_cache_hits")
            let m = delta(node, "misses")
            perNode[node] = h + m == 0 ? 0 : h / (h + m)
            hits += h
            lookups += h + m
            storeBytes += delta(node, "store_read_bytes")
            distinct += delta(node, "distinct_bytes_read")
        }
        let result: [String: Any] = [
            "mode": mode, "readers": target.readers, "duration_s": elapsed,
            "events": f.events, "events_per_s": Double(f.events) / elapsed, "bytes_per_s": Double(f.bytes) / elapsed,
            "p50_ms": f.ms(50), "p99_ms": f.ms(99), "p999_ms": f.ms(99.9),
            "hit_ratio": lookups == 0 ? 0 : hits / lookups, "hit_ratio_per_node": perNode,
            "store_reads_per_block": distinct == 0 ? 0 : storeBytes / distinct,
            "store_read_bytes": storeBytes, "bytes_only": bytesOnly,
        ]
        if target.json {
            printJSON(result)
            return
        }
        print("bench read: mode \(mode), \(target.readers) readers, \(String(format: "%.1f", elapsed)) s")
        print(
            String(format: "  events/s: %.0f   MB/s: %.1f", Double(f.events) / elapsed, Double(f.bytes) / elapsed / 1e6)
        )
        print(String(format: "  read latency: p50 %.3f ms, p99 %.3f ms, p999 %.3f ms", f.ms(50), f.ms(99), f.ms(99.9)))
        print(String(format: "  hit ratio: %.4f overall", lookups == 0 ? 0 : hits / lookups))
        for (node, ratio) in perNode.sorted(by: { $0.key < $1.key }) {
            print(String(format: "    %@: %.4f", node, ratio))
        }
        print(
            String(
                format: "  store reads per block: %.3f (%.0f bytes read from the store)",
                distinct == 0 ? 0 : storeBytes / distinct, storeBytes))
    }
}

/// Appends events of `size` bytes at `rate` per second until `end`: every 10 ms, one append request per segment
/// with that tick's events, without waiting for earlier ticks (at most 100 ticks in flight). Each event's
/// timestamp is its send time (microseconds since the epoch), for append-to-delivery latency. The writer has no
/// writer ID: a benchmark does not retry.
func appendAtRate(_ client: EddyClient, _ info: StreamInfo, rate: Int, until end: ContinuousClock.Instant, size: Int)
    -> Task<Void, Never>
{
    Task {
        let payload = [UInt8](repeating: UInt8(ascii: "t"), count: size)
        let tick = Duration.milliseconds(10)
        var owed = 0.0
        var next = ContinuousClock.now
        var inFlight: [Task<Void, Never>] = []
        var s = 0
        while ContinuousClock.now < end && !Task.isCancelled {
            owed += Double(rate) / 100
            var perSegment = [Int](repeating: 0, count: info.segments.count)
            while owed >= 1 {
                perSegment[s % perSegment.count] += 1
                s += 1
                owed -= 1
            }
            let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
            for (i, n) in perSegment.enumerated() where n > 0 {
                var frames: [UInt8] = []
                for _ in 0..<n { try? EventFrame.encode(Event(timestamp: now, payload: payload), into: &frames) }
                let segment = info.segments[i].segment
                let buffer = ByteBuffer(bytes: frames)
                inFlight.append(
                    Task { _ = try? await client.append(segment, frames: buffer, writerID: "", firstEventNumber: 0) })
            }
            if inFlight.count > 100 * info.segments.count { await inFlight.removeFirst().value }
            next += tick
            try? await Task.sleep(until: next, clock: .continuous)
        }
        for t in inFlight { await t.value }
    }
}

struct BenchFanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "One writer, N tail readers through the ring: append-to-delivery latency percentiles.",
        discussion: """
            The writer appends --rate events per second through the ring, each stamped with its send time; every
            reader follows every segment (a subscription: the node pushes new bytes) and records, per event, the
            time from send to delivery.
            """)

    @OptionGroup var target: BenchTarget
    @Option(name: .long, help: "Events per second.") var rate: Int = 1000
    @Option(
        name: .long,
        help:
            "Measure Redis Streams at HOST:PORT instead (XADD and XREAD BLOCK, same readers, rate and client runtime).")
    var redis: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Process IDs whose CPU time over the run to report, P,Q,... (the servers: nodes and store, or redis-server).",
            discussion: "Adds server_cpu_s and deliveries_per_server_cpu_s to the figures."))
    var serverPids: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Readers sharing one client (its connections), as many readers of one process would (default 1).",
            discussion:
                "Their subscriptions share the connection: a node writes the pushes of one append to all of them together."
        ))
    var readersPerConnection: Int = 1
    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Read through the nodes' HTTP gateways instead: each reader a Server-Sent Events response (docs/http.md).",
            discussion: "The gateways are --http-servers, or each --servers address's port + 200 (eddy up's)."))
    var http = false
    @Option(name: .long, help: "The HTTP gateways for --http, HOST:PORT,... (readers are spread over them).")
    var httpServers: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The writer appends through these servers instead of --servers, HOST:PORT,...",
            discussion:
                "For example a home ring's nodes while the readers follow a regional ring: delivery then includes the home ring's push to the regional ring."
        ))
    var writeServers: String?

    func run() async throws {
        ClientMemory.reuseAnswerBuffers()
        guard target.readers > 0, target.duration > 0 else {
            throw ValidationError("--readers and --duration must be positive")
        }
        guard readersPerConnection > 0 else { throw ValidationError("--readers-per-connection must be positive") }
        let pids = try CPUMeter.parsePIDs(serverPids)
        _ = try CPUMeter(pids: pids)  // every PID readable now, or a clear error before anything starts
        let meter = CPUMeterBox(pids: pids)
        if let redis {
            let address = try ServerAddress(parsing: redis)
            let started = ContinuousClock.now
            let f = try await redisFanout(
                host: address.host, port: address.port, readers: target.readers, rate: rate, seconds: target.duration,
                size: target.size, started: { meter.start() })
            report(f, elapsed: (ContinuousClock.now - started).inSeconds, peer: "redis", cpu: meter.read())
            return
        }
        try await reportingErrors {
            let admin = try await target.client(0)
            let name = try StreamName(parsing: target.stream)
            if (try? await admin.info(name)) == nil { try await admin.createStream(name, segments: target.segments) }
            let info = try await admin.info(name)
            var writing: EddyClient?
            if let list = writeServers {
                let servers = try ServerAddress.list(parsing: list)
                writing = try await EddyClient.connect(target.configuration(servers))
            }
            let progress = Progress()
            let start = ContinuousClock.now
            // The --duration of appending counts from when every reader is ready (connecting a thousand readers on
            // a loaded machine takes a good part of a short run).
            let duration = Duration.milliseconds(Int64(target.duration * 1000))
            let deadline = Deadline()
            // One client per group of --readers-per-connection readers, connected side by side.
            let groups = (target.readers + readersPerConnection - 1) / readersPerConnection
            let clients = try await withThrowingTaskGroup(of: (Int, EddyClient).self) { connecting in
                for g in 0..<groups { connecting.addTask { (g, try await target.client(g)) } }
                var all: [Int: EddyClient] = [:]
                for try await (g, c) in connecting { all[g] = c }
                return (0..<groups).map { all[$0]! }
            }
            if http {
                for c in clients { await c.close() }
                let figures = try await httpReaders(
                    writing ?? admin, info, progress: progress, meter: meter, duration: duration)
                let elapsed = (ContinuousClock.now - start).inSeconds
                await writing?.close()
                await admin.close()
                report(figures, elapsed: elapsed, peer: "eddy-http", cpu: meter.read())
                return
            }
            let perConnection = readersPerConnection
            let figures = try await withThrowingTaskGroup(of: BenchFigures.self) { group in
                for r in 0..<target.readers {
                    group.addTask {
                        let c = clients[r / perConnection]
                        var cursors: [SegmentCursor] = []
                        for s in info.segments {
                            cursors.append(
                                SegmentCursor(segment: s.segment, offset: try await c.info(s.segment).length))
                        }
                        progress.ready.add(1, ordering: .relaxed)
                        return try await withThrowingTaskGroup(of: BenchFigures.self) { inner in
                            for cursor in cursors {
                                inner.addTask {
                                    var f = BenchFigures()
                                    _ = try await c.follow(cursor, heartbeat: .milliseconds(500)) { _, events in
                                        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                                        for e in events {
                                            _ = f.histogram.record(UInt64(max(1, now - e.event.timestamp)))
                                            f.events += 1
                                            f.bytes += Int(e.pointer.length)
                                        }
                                        progress.events.add(events.count, ordering: .relaxed)
                                        return !deadline.passed
                                    }
                                    return f
                                }
                            }
                            var all = BenchFigures()
                            for try await f in inner { all.add(f) }
                            return all
                        }
                    }
                }
                while progress.ready.load(ordering: .relaxed) < target.readers {
                    try await Task.sleep(for: .milliseconds(20))
                }
                let reporter = progress.report(start: ContinuousClock.now)
                meter.start()
                let writer = appendAtRate(
                    writing ?? admin, info, rate: rate, until: deadline.start(in: duration), size: target.size)
                var all = BenchFigures()
                for try await f in group { all.add(f) }
                reporter.cancel()
                writer.cancel()
                return all
            }
            let elapsed = (ContinuousClock.now - start).inSeconds
            let cpu = meter.read()
            for c in clients { await c.close() }
            await writing?.close()
            await admin.close()
            report(figures, elapsed: elapsed, peer: "eddy", cpu: cpu)
        }
    }

    /// `--http`: the readers are Server-Sent Events responses of the gateways; the writer starts once all are open.
    func httpReaders(
        _ writer: EddyClient, _ info: StreamInfo, progress: Progress, meter: CPUMeterBox, duration: Duration
    ) async throws -> BenchFigures {
        let gateways =
            try httpServers.map { try ServerAddress.list(parsing: $0) }
            ?? HTTPFanout.gateways(
                try ServerAddress.list(parsing: target.servers))
        let token = target.credentials.bearer
        let stream = target.stream
        let readers = try await withThrowingTaskGroup(of: SSEReader.self) { group in
            for r in 0..<target.readers {
                group.addTask {
                    try await HTTPFanout.open(
                        gateways[r % gateways.count], stream: stream, token: token, progress: progress)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let reporter = progress.report(start: ContinuousClock.now)
        meter.start()
        let end = ContinuousClock.now + duration
        let appending = appendAtRate(writer, info, rate: rate, until: end, size: target.size)
        try? await Task.sleep(until: end + .milliseconds(300))
        appending.cancel()
        reporter.cancel()
        var all = BenchFigures()
        for r in readers { all.add(await r.finish()) }
        return all
    }

    func report(_ figures: BenchFigures, elapsed: Double, peer: String, cpu: CPUMeter.Reading?) {
        var result: [String: Any] = [
            "system": peer, "readers": target.readers, "rate": rate, "duration_s": elapsed,
            "deliveries": figures.events, "events_per_s": Double(figures.events) / elapsed,
            "bytes_per_s": Double(figures.bytes) / elapsed, "p50_ms": figures.ms(50), "p99_ms": figures.ms(99),
            "p999_ms": figures.ms(99.9),
        ]
        // The bench's own readers decode every delivery: their CPU time is the client library's cost, and when
        // it takes what the servers leave, the client rather than the server was the limit.
        let perClientSecond = cpu.map { Double(figures.events) / max($0.clientSeconds, 1e-9) } ?? 0
        let perServerSecond = cpu?.serverSeconds.map { Double(figures.events) / max($0, 1e-9) }
        if let cpu {
            result["client_cpu_s"] = cpu.clientSeconds
            result["client_events_per_cpu_s"] = perClientSecond
            result["client_cpu_share"] = cpu.clientShare
            result["client_cpu_share_of_rest"] = cpu.clientShareOfRest
            result["client_saturated"] = cpu.clientSaturated
            if let server = cpu.serverSeconds, let perServerSecond {
                result["server_cpu_s"] = server
                result["deliveries_per_server_cpu_s"] = perServerSecond
                if !cpu.vanished.isEmpty { result["server_pids_gone"] = cpu.vanished.map(Int.init) }
            }
        }
        if target.json {
            printJSON(result)
            return
        }
        print(
            "bench fanout (\(peer)): \(target.readers) readers, \(rate) events/s, \(String(format: "%.1f", elapsed)) s")
        print("  deliveries: \(figures.events) (\(String(format: "%.0f", Double(figures.events) / elapsed))/s)")
        print(
            String(
                format: "  append-to-delivery: p50 %.3f ms, p99 %.3f ms, p999 %.3f ms", figures.ms(50),
                figures.ms(99), figures.ms(99.9)))
        guard let cpu else { return }
        if let server = cpu.serverSeconds, let perServerSecond {
            print(String(format: "  server CPU: %.2f s, %.0f deliveries per CPU second", server, perServerSecond))
        }
        let verdict = cpu.clientSaturated ? ": the readers were the bottleneck, not the server" : ""
        print(
            String(
                format:
                    "  client CPU: %.2f s, %.0f events decoded per CPU second, %.0f %% of %d cores, %.0f %% of what the servers left",
                cpu.clientSeconds, perClientSecond, cpu.clientShare * 100,
                cpu.cores, cpu.clientShareOfRest * 100) + verdict)
    }
}

/// When a bench's appending ends: not before ``start(in:)``, so that its readers' setup does not count.
final class Deadline: Sendable {
    private let end = Mutex<ContinuousClock.Instant?>(nil)

    /// Starts the clock: the deadline is `duration` from now, which it returns.
    func start(in duration: Duration) -> ContinuousClock.Instant {
        let at = ContinuousClock.now + duration
        end.withLock { $0 = at }
        return at
    }

    /// Whether the deadline has started and passed.
    var passed: Bool { end.withLock { $0 }.map { ContinuousClock.now >= $0 } ?? false }
}
