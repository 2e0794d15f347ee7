import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import StreamModel
import Testing
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// The read path with every component a real process: a store and three cache nodes.
@Suite("ring of cache nodes as real processes", .serialized)
struct RingTests {
    static func client(_ servers: [String], timeout: Duration = .seconds(15)) async throws -> EddyClient {
        var c = EddyClient.Configuration(servers: try servers.map { try ServerAddress(parsing: $0) })
        c.requestTimeout = timeout
        return try await EddyClient.connect(c)
    }

    /// Appends `count` events to every segment, straight to the store (bypassing the ring): payload `s<seg>-<i>`.
    static func fill(_ store: EddyClient, _ name: StreamName, segments: UInt32, count: Int, size: Int = 180)
        async throws
    {
        for s in 0..<segments {
            var i = 0
            while i < count {
                var frames: [UInt8] = []
                let n = min(200, count - i)
                for k in i..<(i + n) {
                    let payload = "s\(s)-\(k)-" + String(repeating: "p", count: size)
                    try EventFrame.encode(
                        Event(routingKey: nil, timestamp: 0, payload: Array(payload.utf8)), into: &frames)
                }
                _ = try await store.append(
                    SegmentID(stream: name, number: s), frames: ByteBuffer(bytes: frames), writerID: "fill-\(s)",
                    firstEventNumber: Int64(i))
                i += n
            }
        }
    }

    /// `readers` concurrent readers, reader r reading segment r % `segments` from its start to its end through
    /// node r % (node count); each reader's payloads, by reader number.
    static func readAll(_ name: StreamName, readers: Int, segments: Int, through nodes: [String]) async throws
        -> [(Int, [String])]
    {
        try await withThrowingTaskGroup(of: (Int, [String]).self) { group in
            for r in 0..<readers {
                group.addTask {
                    let c = try await client([nodes[r % nodes.count]])
                    let segment = SegmentID(stream: name, number: UInt32(r % segments))
                    var got: [PointedEvent] = []
                    for try await e in c.events([SegmentCursor(segment: segment, offset: 0)], follow: false) {
                        got.append(e)
                    }
                    await c.close()
                    return (r, payloads(got))
                }
            }
            var all: [(Int, [String])] = []
            for try await x in group { all.append(x) }
            return all
        }
    }

    static func payloads(_ events: [PointedEvent]) -> [String] {
        events.map { String(decoding: $0.event.payload, as: UTF8.self) }
    }

    static func stats(_ server: String) async throws -> [String: Any] {
        let c = try await client([server])
        defer { Task { await c.close() } }
        return try JSONSerialization.jsonObject(with: Data(try await c.stats().utf8)) as! [String: Any]
    }

    @Test(
        "200 concurrent readers over 8 segments through 3 nodes read exactly what was appended; the store reads each byte once"
    )
    func fanOut() async throws {
        let ring = try Ring(nodeArguments: ["--block-size", "64K"])
        defer { ring.stopAll() }
        let name = try StreamName(parsing: "ring/fanout")
        let store = try await Self.client([ring.storeAddress])
        try await store.createStream(name, segments: 8)
        try await Self.fill(store, name, segments: 8, count: 2500)
        let info = try await store.info(name)
        let totalBytes = info.segments.reduce(UInt64(0)) { $0 + $1.length }
        #expect(totalBytes > 8 * 6 * 65536, "several blocks per segment")

        let results = try await Self.readAll(name, readers: 200, segments: 8, through: ring.nodeAddresses)
        #expect(results.count == 200)
        for (r, got) in results {
            let s = r % 8
            let expected = (0..<2500).map { "s\(s)-\($0)-" + String(repeating: "p", count: 180) }
            #expect(got == expected, "reader \(r) of segment \(s): \(got.count) events")
        }
        // From the store's side: every byte read once, no more.
        let storeStats = try await Self.stats(ring.storeAddress)
        #expect(storeStats["read_bytes"] as? Int == Int(totalBytes), "store stats: \(storeStats)")
        var distinctBlocks = 0
        for node in ring.nodeAddresses {
            let s = try await RingTests.stats(node)
            #expect((s["store_reads_per_block"] as? Double ?? 0) <= 1.0, "\(node): \(s)")
            distinctBlocks += s["distinct_blocks_read"] as? Int ?? 0
            #expect((s["members"] as? [String])?.count == 3)
        }
        let blocks = info.segments.reduce(0) { $0 + Int(($1.length + 65535) / 65536) }
        #expect(distinctBlocks == blocks, "each block read by one node (its owner)")
        await store.close()
    }

    @Test("eddy bench fanout --server-pids reports the servers' CPU time and deliveries per server CPU second")
    func benchCPUFigures() async throws {
        let ring = try Ring(nodes: 2)
        defer { ring.stopAll() }
        let pids = ([ring.store] + ring.nodes).map { String($0.pid) }.joined(separator: ",")
        let r = try await eddyAsync([
            "bench", "fanout", "--servers", ring.nodeAddresses.joined(separator: ","), "--stream", "ring/cpu",
            "--segments", "1", "--readers", "4", "--rate", "200", "--duration", "2", "--server-pids", pids, "--json",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        let d = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        let deliveries = d["deliveries"] as? Int ?? 0
        let server = d["server_cpu_s"] as? Double ?? 0
        let client = d["client_cpu_s"] as? Double ?? 0
        #expect(deliveries > 0 && server > 0 && client > 0, "\(d)")
        let perServer = d["deliveries_per_server_cpu_s"] as? Double ?? 0
        #expect(abs(perServer - Double(deliveries) / server) <= perServer * 1e-6, "\(d)")
        #expect((d["client_events_per_cpu_s"] as? Double ?? 0) > 0 && d["client_saturated"] is Bool, "\(d)")
        // The share of what the servers left: the client's time over all the cores' time (client / share) less
        // the servers'.
        let share = d["client_cpu_share"] as? Double ?? -1
        let ofRest = d["client_cpu_share_of_rest"] as? Double ?? -1
        let expected = client / (client / share - server)
        #expect(share > 0 && abs(ofRest - expected) <= expected * 1e-6 && ofRest > share, "\(d)")
        // Readers sharing one client: they get their pushes over the one client's connections.
        let shared = try await eddyAsync([
            "bench", "fanout", "--servers", ring.nodeAddresses.joined(separator: ","), "--stream", "ring/cpu",
            "--segments", "1", "--readers", "4", "--readers-per-connection", "4", "--rate", "200", "--duration", "1",
            "--json",
        ])
        #expect(shared.status == 0, "\(shared.stderr)")
        let sd = try JSONSerialization.jsonObject(with: Data(shared.stdout.utf8)) as? [String: Any] ?? [:]
        let sharedDeliveries = sd["deliveries"] as? Int ?? 0
        #expect(sharedDeliveries > 0 && (sd["p99_ms"] as? Double ?? 0) > 0, "\(sd)")
        let zero = try await eddyAsync([
            "bench", "fanout", "--servers", ring.nodeAddresses[0], "--readers-per-connection", "0",
        ])
        #expect(zero.status != 0 && zero.stderr.contains("--readers-per-connection must be positive"), "\(zero.stderr)")
        // A PID that is no process: a clear error before anything runs.
        let bad = try await eddyAsync([
            "bench", "fanout", "--servers", ring.nodeAddresses[0], "--server-pids", "\(Int32.max)", "--json",
        ])
        #expect(bad.status != 0 && bad.stderr.contains("--server-pids: no process \(Int32.max)"), "\(bad.stderr)")
    }

    @Test("eddy bench read --bytes-only counts the bytes and no events; eddy bench nio --sendfile streams the block")
    func benchBytesOnlyAndSendfile() async throws {
        let ring = try Ring(nodes: 2)
        defer { ring.stopAll() }
        func hot(_ extra: [String]) async throws -> [String: Any] {
            let r = try await eddyAsync(
                [
                    "bench", "read", "--servers", ring.nodeAddresses.joined(separator: ","), "--stream", "ring/hot",
                    "--readers", "2", "--mode", "hot", "--hot-blocks", "1", "--duration", "1", "--fill-mib", "2",
                    "--json",
                ] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        }
        let counted = try await hot([])
        #expect((counted["events"] as? Int ?? 0) > 0 && counted["bytes_only"] as? Bool == false, "\(counted)")
        let bytes = try await hot(["--bytes-only"])
        #expect(bytes["events"] as? Int == 0 && bytes["bytes_only"] as? Bool == true, "\(bytes)")
        #expect((bytes["bytes_per_s"] as? Double ?? 0) > 0, "\(bytes)")
        // The bare NIO server sending its block from shared memory with sendfile: the readers get bytes.
        let port = try freePort()
        let server = try ServerProcess(
            ["bench", "nio", "--serve", "127.0.0.1:\(port)", "--sendfile", "--block-size", "65536"],
            log: ring.folder + "/nio.log", marker: "(sendfile)")
        defer { server.stop() }
        let r = try await eddyAsync([
            "bench", "nio", "--server", "127.0.0.1:\(port)", "--readers", "2", "--duration", "0.5", "--json",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        let d = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        #expect((d["bytes_per_s"] as? Double ?? 0) > 0, "\(d)")
        let misplaced = try await eddyAsync(["bench", "nio", "--server", "127.0.0.1:\(port)", "--sendfile"])
        #expect(
            misplaced.status != 0 && misplaced.stderr.contains("--sendfile goes with --serve"), "\(misplaced.stderr)")
    }

    @Test("SIGKILL a node under tail readers: they fail over within a second, with no gap and no duplicate")
    func killNode() async throws {
        let ring = try Ring(nodeArguments: ["--block-size", "64K"])
        defer { ring.stopAll() }
        let name = try StreamName(parsing: "ring/kill")
        let store = try await Self.client([ring.storeAddress])
        try await store.createStream(name, segments: 4)
        let tailer = try await Self.client(ring.nodeAddresses)
        let victim = ring.nodeAddresses.firstIndex(of: tailer.server.description)!
        let total = 400
        let received = Locked<[(String, Date)]>([])
        let cursors = (0..<4).map { SegmentCursor(segment: SegmentID(stream: name, number: $0), offset: 0) }
        let reading = Task {
            for try await e in tailer.events(cursors, follow: true, poll: .seconds(5)) {
                var list = received.get()
                list.append((String(decoding: e.event.payload, as: UTF8.self), Date()))
                received.set(list)
                if list.count == total { return }
            }
        }
        var killedAt = Date.distantFuture
        for i in 0..<total {
            let segment = SegmentID(stream: name, number: UInt32(i % 4))
            var frames: [UInt8] = []
            try EventFrame.encode(Event(routingKey: nil, timestamp: 0, payload: Array("e\(i)".utf8)), into: &frames)
            _ = try await store.append(
                segment, frames: ByteBuffer(bytes: frames), writerID: "w\(i % 4)", firstEventNumber: Int64(i / 4))
            if i == total / 2 {
                ring.nodes[victim].kill()
                killedAt = Date()
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        let deadline = Date().addingTimeInterval(20)
        while received.get().count < total && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        reading.cancel()
        let got = received.get()
        #expect(got.count == total, "received \(got.count) of \(total)")
        #expect(Set(got.map(\.0)).count == got.count, "no duplicate")
        for s in 0..<4 {
            let mine = got.map(\.0).filter { Int($0.dropFirst())! % 4 == s }
            #expect(mine == (0..<total).filter { $0 % 4 == s }.map { "e\($0)" }, "segment \(s) in order, no gap")
        }
        // The first event appended after the kill arrives within a second of being appended.
        if let firstAfter = got.first(where: { $0.1 > killedAt }) {
            #expect(
                firstAfter.1.timeIntervalSince(killedAt) < 1.5,
                "failover took \(firstAfter.1.timeIntervalSince(killedAt)) s")
        }
        #expect(tailer.failovers >= 1)
        await tailer.close()
        await store.close()
    }

    @Test("the store stopped under readers: typed errors within the timeout, reads work again once it is back")
    func storeRestart() async throws {
        let ring = try Ring(nodes: 2, nodeArguments: ["--block-size", "64K"])
        defer { ring.stopAll() }
        let name = try StreamName(parsing: "ring/restart")
        let store = try await Self.client([ring.storeAddress])
        try await store.createStream(name, segments: 1)
        try await Self.fill(store, name, segments: 1, count: 100)
        await store.close()
        ring.store.stop()
        let raw = try await StoreClient.connect(to: try ServerAddress(parsing: ring.nodeAddresses[0]))
        let started = ContinuousClock.now
        await #expect(throws: EddyError.self) {
            _ = try await raw.read(SegmentID(stream: name, number: 0), from: 0)
        }
        do {
            _ = try await raw.send(.streamInfo(name))
            Issue.record("no error with the store down")
        } catch {
            #expect(error.code == .unavailable || error.code == .timedOut, "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(12), "errors come within the request timeout")
        try ring.restartStore()
        let deadline = ContinuousClock.now + .seconds(15)
        var events = 0
        while ContinuousClock.now < deadline {
            if let (_, data) = try? await raw.read(SegmentID(stream: name, number: 0), from: 0), data.readableBytes > 0
            {
                events = data.readableBytes
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(events > 0, "the node reconnected to the store by itself")
        await raw.close()
    }
}

/// Storms, small caches and ring changes, with real processes.
@Suite("ring under stress", .serialized)
struct RingStressTests {
    /// Reads a segment's bytes up to `end` through `client`, comparing them with `expected` when given.
    /// - Returns: the bytes read (the number), and the chunks that differed from `expected`.
    @discardableResult
    static func scan(_ client: EddyClient, _ segment: SegmentID, to end: UInt64, expected: ByteBuffer? = nil)
        async throws -> (count: Int, mismatches: Int)
    {
        var offset: UInt64 = 0
        var mismatches = 0
        while offset < end {
            let (_, data) = try await client.read(segment, from: offset, maxBytes: 1 << 20)
            guard data.readableBytes > 0 else { throw EddyError(.internalError, "no progress at \(offset)") }
            if let expected, expected.getSlice(at: Int(offset), length: data.readableBytes) != data { mismatches += 1 }
            offset += UInt64(data.readableBytes)
        }
        return (Int(offset), mismatches)
    }

    /// The whole segment, straight from the store.
    static func contents(_ store: EddyClient, _ segment: SegmentID, length: UInt64) async throws -> ByteBuffer {
        var all = ByteBuffer()
        while UInt64(all.readableBytes) < length {
            var (_, data) = try await store.read(segment, from: UInt64(all.readableBytes), maxBytes: 1 << 20)
            all.writeBuffer(&data)
        }
        return all
    }

    static func stat(_ server: String, _ key: String) async throws -> Double {
        let s = try await RingTests.stats(server)
        return (s[key] as? NSNumber)?.doubleValue ?? -1
    }

    @Test(
        "catch-up storm: 200 readers go back to the start of one large segment at once; each block read from the store once"
    )
    func catchUpStorm() async throws {
        // Two shards of the owner cache (about 7 MB each): the segment's blocks, all in one shard, fit.
        let ring = try Ring(nodeArguments: ["--block-size", "64K", "--cache-bytes", "16M", "--cache-shards", "2"])
        defer { ring.stopAll() }
        let name = try StreamName(parsing: "storm/big")
        let store = try await RingTests.client([ring.storeAddress])
        try await store.createStream(name, segments: 1)
        try await RingTests.fill(store, name, segments: 1, count: 12_000)  // about 2.3 MiB: 36 blocks
        let segment = SegmentID(stream: name, number: 0)
        let length = try await store.info(segment).length
        let before = try await Self.stat(ring.storeAddress, "read_bytes")
        let expected = try await Self.contents(store, segment, length: length)
        let nodes = ring.nodeAddresses
        var ringChanges: [Double] = []
        for node in nodes { ringChanges.append(try await Self.stat(node, "ring_changes")) }
        let results = try await withThrowingTaskGroup(of: (count: Int, mismatches: Int).self) { group in
            for r in 0..<200 {
                group.addTask {
                    let c = try await RingTests.client([nodes[r % 3]])
                    defer { Task { await c.close() } }
                    return try await Self.scan(c, segment, to: length, expected: expected)
                }
            }
            var all: [(count: Int, mismatches: Int)] = []
            for try await x in group { all.append(x) }
            return all
        }
        #expect(results.count == 200)
        #expect(
            results.allSatisfy { $0.count == Int(length) && $0.mismatches == 0 },
            "every reader read every byte, the bytes the store has")
        // The test's own read of the segment counts once; the ring adds one read of each byte.
        let storeRead = try await Self.stat(ring.storeAddress, "read_bytes") - before - Double(length)
        var ringChangesAfter: [Double] = []
        for node in nodes { ringChangesAfter.append(try await Self.stat(node, "ring_changes")) }
        var perNode: [String] = []
        for node in nodes {
            let s = try await RingTests.stats(node)
            let keys = ["store_read_requests", "store_read_bytes", "read_aheads", "coalesced_loads", "evictions"]
            perNode.append(
                "\(node): "
                    + (keys + ["rejected_admissions", "cached_blocks"]).map { "\($0) \(s[$0] ?? "-")" }.joined(
                        separator: ", "))
        }
        let changes = "ring changes per node \(ringChanges) -> \(ringChangesAfter); \(perNode.joined(separator: "; "))"
        #expect(storeRead == Double(length), "the store served each byte once: \(storeRead) of \(length); \(changes)")
        for node in nodes {
            let memory = try await Self.stat(node, "memory_bytes")
            #expect(memory >= 0 && memory <= 16 * 1_048_576, "\(node) holds \(memory) bytes")
        }
        await store.close()
    }

    @Test("a cache of 1 % of the data: every reader progresses and reads exactly the events appended")
    func tinyCache() async throws {
        // 64 KiB of cache (four 16 KiB blocks) against about 6 MiB of data.
        let ring = try Ring(nodeArguments: ["--block-size", "16K", "--cache-bytes", "64K"])
        defer { ring.stopAll() }
        let name = try StreamName(parsing: "tiny/cache")
        let store = try await RingTests.client([ring.storeAddress])
        try await store.createStream(name, segments: 2)
        try await RingTests.fill(store, name, segments: 2, count: 15_000)
        let info = try await store.info(name)
        let total = info.segments.reduce(0) { $0 + Int($1.length) }
        #expect(total > 90 * 65536)
        let results = try await RingTests.readAll(name, readers: 12, segments: 2, through: ring.nodeAddresses)
        for (r, got) in results {
            let s = r % 2
            #expect(got == (0..<15_000).map { "s\(s)-\($0)-" + String(repeating: "p", count: 180) }, "reader \(r)")
        }
        // Without a promote/evict loop each reader costs at most one store read of each block it reads.
        let storeRead = try await Self.stat(ring.storeAddress, "read_bytes")
        #expect(storeRead <= Double(12 * total / 2), "store read \(storeRead) bytes for \(total) bytes of data")
        await store.close()
    }

    @Test(
        "ring change under load: a node joins and one leaves while readers and writers run; nothing stalls or is lost")
    func ringChange() async throws {
        let ring = try Ring(nodes: 4, running: 3, nodeArguments: ["--block-size", "64K"])
        defer { ring.stopAll() }
        let name = try StreamName(parsing: "ring/change")
        let admin = try await RingTests.client([ring.nodeAddresses[0]])
        try await admin.createStream(name, segments: 4)
        let seeds = Array(ring.nodeAddresses.prefix(3))
        // Give the ring time to drop the member that never started.
        try await Task.sleep(for: .seconds(3))
        let perWriter = 300
        let writers = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<4 {
                    group.addTask {
                        let c = try await RingTests.client(seeds, timeout: .seconds(20))
                        let segment = SegmentID(stream: name, number: UInt32(w))
                        for i in 0..<perWriter {
                            var frames: [UInt8] = []
                            try EventFrame.encode(
                                Event(routingKey: nil, timestamp: 0, payload: Array("w\(w)-\(i)".utf8)), into: &frames)
                            let t0 = ContinuousClock.now
                            _ = try await c.append(
                                segment, frames: ByteBuffer(bytes: frames), writerID: "writer-\(w)",
                                firstEventNumber: Int64(i))
                            #expect(ContinuousClock.now - t0 < .seconds(20), "an append ended within its deadline")
                            try await Task.sleep(for: .milliseconds(15))
                        }
                        await c.close()
                    }
                }
                try await group.waitForAll()
            }
        }
        let reader = try await RingTests.client(Array(seeds.suffix(2)), timeout: .seconds(20))
        let cursors = (0..<4).map { SegmentCursor(segment: SegmentID(stream: name, number: UInt32($0)), offset: 0) }
        let received = Locked<[String]>([])
        let reading = Task {
            for try await e in reader.events(cursors, follow: true, poll: .seconds(2)) {
                var list = received.get()
                list.append(String(decoding: e.event.payload, as: UTF8.self))
                received.set(list)
                if list.count == 4 * perWriter { return }
            }
        }
        try await Task.sleep(for: .seconds(1))
        try ring.addNode(3)  // a member joins
        try await Task.sleep(for: .seconds(2))
        ring.nodes[0].stop()  // a member leaves
        try await writers.value
        let deadline = Date().addingTimeInterval(30)
        while received.get().count < 4 * perWriter && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        reading.cancel()
        let got = received.get()
        #expect(got.count == 4 * perWriter, "received \(got.count)")
        for w in 0..<4 {
            #expect(got.filter { $0.hasPrefix("w\(w)-") } == (0..<perWriter).map { "w\(w)-\($0)" }, "writer \(w)")
        }
        // Steady state: once the ring is settled, reading everything twice makes no second store read.
        try await Task.sleep(for: .seconds(3))
        let live = Array(ring.nodeAddresses.suffix(3))
        for pass in 0..<2 {
            let before = try await Self.stat(ring.storeAddress, "read_bytes")
            for node in live {
                let c = try await RingTests.client([node])
                for s in 0..<4 {
                    let segment = SegmentID(stream: name, number: UInt32(s))
                    _ = try await Self.scan(c, segment, to: try await c.info(segment).length)
                }
                await c.close()
            }
            let read = try await Self.stat(ring.storeAddress, "read_bytes") - before
            if pass == 1 { #expect(read == 0, "second pass read \(read) bytes from the store") }
        }
        await reader.close()
        await admin.close()
    }
}
