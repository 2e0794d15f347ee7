import CacheNode
import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import ObjectStorage
import StoreClient
import StreamModel
import Testing
import WireProtocol
import WriteBack

/// Write-back with every component a real process: a store, three nodes flushing to a real SeaweedFS, and an
/// independent S3 client (boto3) reading the objects back.
@Suite("write-back to object storage as real processes", .serialized)
struct WriteBackTests {
    static let megabytes = Int(ProcessInfo.processInfo.environment["EDDY_WRITEBACK_MB"] ?? "256") ?? 256

    static var repository: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    @Test(
        "appended bytes end up in SeaweedFS byte-identical (read back with boto3); after truncation the same events come back from object storage"
    )
    func endToEnd() async throws {
        let seaweed = try await SeaweedFS.shared()
        let bucket = "eddy-wb-" + UUID().uuidString.lowercased().prefix(8)
        let objects = try await seaweed.makeStore(bucket: bucket)
        let environment = ["AWS_ACCESS_KEY_ID": seaweed.accessKey, "AWS_SECRET_ACCESS_KEY": seaweed.secretKey]
        let ring = try Ring(
            nodes: 3,
            nodeArguments: [
                "--object-store", "s3://\(bucket)/eddy", "--s3-endpoint", seaweed.endpoint, "--s3-path-style",
                "--flush-idle", "1",
            ], environment: environment)
        defer { ring.stopAll() }
        let store = try await RingTests.client([ring.storeAddress], timeout: .seconds(60))
        let name = try StreamName(scope: "wb", stream: "events")
        let segments: UInt32 = 4
        _ = try await store.send(.createStream(name, segments: segments))
        // Straight to the store: the nodes find the new bytes by their scan, as after writes that bypass them.
        let perSegment = Self.megabytes << 20 / Int(segments) / 1_040
        try await RingTests.fill(store, name, segments: segments, count: perSegment, size: 1_000)

        // Every segment flushed to its end: the manifests say so.
        let lengths = try await Self.lengths(store, name, segments: segments)
        let manifests = try await Self.waitUntilFlushed(
            objects, prefix: "eddy", name, lengths: lengths, within: .seconds(300), ring: ring)
        let check = try await Self.verifyWithBoto3(
            store, name, lengths: lengths, seaweed: seaweed, bucket: String(bucket), prefix: "eddy", ring: ring)
        #expect(check.status == 0, "boto3 check: \(check.stdout)\(check.stderr)")
        #expect((check.stdout + check.stderr).contains("OK"))

        // Everything read through a node, then the store truncated at each manifest's last event boundary.
        let node = try await RingTests.client([ring.nodeAddresses[0]], timeout: .seconds(60))
        let cursors = (0..<segments).map { SegmentCursor(segment: SegmentID(stream: name, number: $0), offset: 0) }
        var before: [String] = []
        for try await e in node.events(cursors, follow: false) {
            before.append(String(decoding: e.event.payload, as: UTF8.self))
        }
        #expect(before.count == perSegment * Int(segments))
        for s in 0..<segments {
            let segment = SegmentID(stream: name, number: s)
            let truncated = try await node.truncate(segment, at: manifests[s]!.eventBoundary)
            #expect(truncated.startOffset == manifests[s]!.eventBoundary)
            #expect(truncated.startOffset > lengths[s]! / 2)
        }
        // A truncation past what is flushed is refused.
        _ = try await store.append(
            SegmentID(stream: name, number: 0),
            frames: ByteBuffer(bytes: try EventFrame.encode(Event(timestamp: 0, payload: [1]))),
            writerID: "late", firstEventNumber: 0)
        await #expect(throws: EddyError.self) {
            try await node.truncate(SegmentID(stream: name, number: 0), at: lengths[0]! + 1)
        }
        // Through a fresh client on another node: the segments start at 0 again (cold reads).
        let other = try await RingTests.client([ring.nodeAddresses[1]], timeout: .seconds(60))
        let info = try await other.info(name)
        #expect(info.segments.allSatisfy { $0.startOffset == 0 })
        var after: [String] = []
        let fromStart = info.segments.map { SegmentCursor(segment: $0.segment, offset: $0.startOffset) }
        for try await e in other.events(fromStart, follow: false) {
            after.append(String(decoding: e.event.payload, as: UTF8.self))
        }
        #expect(after.count == before.count + 1)
        #expect(after.filter { $0 != "\u{1}" }.sorted() == before.sorted())
        var coldLoads = 0
        for address in ring.nodeAddresses {
            let c = try await RingTests.client([address])
            let stats = try await c.stats()
            if let data = stats.data(using: .utf8),
                let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            {
                coldLoads += json["cold_block_loads"] as? Int ?? 0
            }
            await c.close()
        }
        #expect(coldLoads > 0, "the cold bytes came from object storage")
        await node.close()
        await other.close()
        await store.close()
    }
}

extension WriteBackTests {
    @Test(
        "a flush that keeps failing becomes a dead letter, shows in `eddy admin dlq list`, and redrive finishes it once the fault is gone"
    )
    func deadLetterAndRedrive() async throws {
        // The fault: a file where the stream's folder of objects must go, so every flush fails (the filesystem
        // backend refuses the key); removing the file removes the fault.
        let objectsFolder = temporaryPath("dlq-objects")
        try FileManager.default.createDirectory(atPath: objectsFolder, withIntermediateDirectories: true)
        try "in the way".write(toFile: objectsFolder + "/dlq", atomically: true, encoding: .utf8)
        let ring = try Ring(
            nodes: 1, nodeArguments: ["--object-store", "file://\(objectsFolder)", "--flush-idle", "1"])
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[0]
        #expect(try eddy(["create", "dlq/events", "--segments", "1", "--server", node]).status == 0)
        let lines = (0..<100).map { "event \($0)" }.joined(separator: "\n") + "\n"
        #expect(try eddy(["append", "dlq/events", "--server", node], input: lines).status == 0)
        // Five failed attempts with backoff, then the task is dead.
        let deadline = ContinuousClock.now + .seconds(120)
        var listed = ""
        while ContinuousClock.now < deadline {
            listed = try eddy(["admin", "dlq", "list", "--server", node]).stdout
            if listed.contains("flush") { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        #expect(listed.contains("flush") && listed.contains("attempts=5"), "dlq list: \(listed)")
        #expect(listed.contains("segment=dlq/events/00000000"))
        let stats = try eddy(["admin", "stats", "--server", node, "--format", "json"]).stdout
        #expect(stats.contains("\"dead_letters\":1"), "\(stats)")
        let id = try #require(listed.split(separator: " ").first.map(String.init))
        let shown = try eddy(["admin", "dlq", "show", id, "--server", node])
        #expect(shown.status == 0 && shown.stdout.contains("\"last_error\""), "\(shown.stderr)")
        #expect(try eddy(["admin", "dlq", "show", "999999", "--server", node]).status == 1)

        // The fault is gone. Redrive finishes the job.
        try FileManager.default.removeItem(atPath: objectsFolder + "/dlq")
        let objects = try FileObjectStore(root: objectsFolder)
        let redrive = try eddy(["admin", "dlq", "redrive", "--all", "--server", node])
        #expect(redrive.status == 0 && redrive.stdout.contains("redriven 1"), "\(redrive.stdout) \(redrive.stderr)")
        let segment = SegmentID(stream: try StreamName(scope: "dlq", stream: "events"), number: 0)
        let flushDeadline = ContinuousClock.now + .seconds(60)
        var manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        while manifest.flushed == 0 && ContinuousClock.now < flushDeadline {
            try await Task.sleep(for: .milliseconds(300))
            manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        }
        #expect(manifest.flushed > 0)
        #expect(try eddy(["admin", "dlq", "list", "--server", node]).stdout.contains("no dead letters"))
        // The journal is readable through the admin command, and `purge` and bad input answer clearly.
        #expect(try eddy(["admin", "queue", "journal", "--server", node]).status == 0)
        #expect(try eddy(["admin", "dlq", "purge", "--server", node]).status != 0)
        let store = try eddy(["admin", "dlq", "list", "--server", ring.storeAddress])
        #expect(store.status == 1 && store.stderr.contains("cache nodes"), "\(store.stderr)")
    }
}

extension WriteBackTests {
    @Test(
        "eddy export writes one object per event named by its pointer: the listing is the stream's order; again, only what is new"
    )
    func exportEvents() async throws {
        let ring = try Ring(nodes: 1)
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[0]
        #expect(try eddy(["create", "ex/events", "--segments", "2", "--server", node]).status == 0)
        let lines = (0..<60).map { "event \($0)" }
        let appended = try eddy(["append", "ex/events", "--server", node], input: lines.joined(separator: "\n") + "\n")
        #expect(appended.status == 0)
        let pointers = appended.stdout.split(separator: "\n").map(String.init)
        #expect(pointers.count == 60)
        let payloadOf = Dictionary(uniqueKeysWithValues: zip(pointers, lines))

        // To a folder.
        let folder = temporaryPath("export")
        let first = try eddy(["export", "ex/events", "--to", "file://\(folder)", "--server", node])
        #expect(
            first.status == 0 && first.stdout.contains("exported 60 events") && first.stdout.contains("60 written"),
            "\(first.stdout) \(first.stderr)")
        let files = try FileObjectStore(root: folder)
        let keys = try await files.listAll(prefix: "ex/events/").map(\.key)
        #expect(keys == pointers.sorted())
        for key in keys.prefix(5) {
            #expect(String(buffer: try await files.get(key)) == payloadOf[key])
        }
        let again = try eddy(["export", "ex/events", "--to", "file://\(folder)", "--server", node])
        #expect(again.stdout.contains("0 written, 60 already there"), "\(again.stdout)")

        // To SeaweedFS, after a pointer: only the later events of that segment.
        let seaweed = try await SeaweedFS.shared()
        let bucket = "eddy-export-" + UUID().uuidString.lowercased().prefix(8)
        let s3 = try await seaweed.makeStore(bucket: bucket)
        let bySegment = Dictionary(grouping: pointers) { $0.split(separator: "/")[2] }
        let segment0 = try #require(bySegment.values.max { $0.count < $1.count })
        try #require(segment0.count > 10)
        let after = try eddy(
            [
                "export", "ex/events", "--to", "s3://\(bucket)/exports", "--s3-endpoint", seaweed.endpoint,
                "--s3-path-style", "--from", segment0[9], "--server", node,
            ], environment: ["AWS_ACCESS_KEY_ID": seaweed.accessKey, "AWS_SECRET_ACCESS_KEY": seaweed.secretKey])
        #expect(after.status == 0, "\(after.stderr)")
        let exported = try await s3.listAll(prefix: "exports/ex/events/").map(\.key)
        #expect(exported == segment0.dropFirst(10).map { "exports/" + $0 })
        // Bad input answers clearly.
        let bad = try eddy(["export", "ex/events", "--to", "ftp://x", "--server", node])
        #expect(bad.status == 1 && bad.stderr.contains("file://DIR or s3://BUCKET/PREFIX"), "\(bad.stderr)")
    }
}

extension WriteBackTests {
    @Test("blocks appended through the owner are flushed from its cache, byte-identical to the store's")
    func flushFromTheOwnerCache() async throws {
        let folder = temporaryPath("cache-flush")
        let ring = try Ring(nodes: 1, nodeArguments: ["--object-store", "file://\(folder)", "--block-size", "64K"])
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[0]
        #expect(try eddy(["create", "cf/events", "--segments", "1", "--server", node]).status == 0)
        let lines = (0..<3000).map { "event \($0) " + String(repeating: "z", count: 100) }
        #expect(
            try eddy(["append", "cf/events", "--server", node], input: lines.joined(separator: "\n") + "\n").status == 0
        )
        let segment = SegmentID(stream: try StreamName(scope: "cf", stream: "events"), number: 0)
        let objects = try FileObjectStore(root: folder)
        let store = try await RingTests.client([ring.storeAddress])
        let length = try await store.info(segment).length
        let fullBlocks = length / (64 << 10)
        // The full blocks are flushed at once (the partial tail waits for --flush-idle).
        let deadline = ContinuousClock.now + .seconds(60)
        var manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        while manifest.flushed < fullBlocks * (64 << 10) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        }
        #expect(manifest.flushed == fullBlocks * (64 << 10))
        let stats = try await RingTests.client([node])
        let json = try JSONSerialization.jsonObject(with: Data(try await stats.stats().utf8)) as? [String: Any]
        #expect((json?["flush_blocks_from_cache"] as? Int ?? 0) > 0, "\(json ?? [:])")
        for info in try await objects.listAll(prefix: BlockObject.segmentFolder(prefix: "", segment: segment)) {
            let object = try BlockObject.decode(try await objects.get(info.key), key: info.key)
            let (_, bytes) = try await store.read(segment, from: object.start, maxBytes: Int(object.end - object.start))
            #expect(object.bytes == bytes, "\(info.key)")
        }
        await stats.close()
        await store.close()
    }

    @Test("blocks that piled up before the owner came go out as tasks of up to 8 blocks, one object per block")
    func severalBlocksPerTask() async throws {
        let folder = temporaryPath("multi-block")
        let (ring, store, name) = try await Self.smallBlockRing(folder, scope: "mb", running: 0)
        defer { ring.stopAll() }
        defer { Task { await store.close() } }
        try await RingTests.fill(store, name, segments: 1, count: 1_000, size: 1_000)  // about 16 blocks
        let segment = SegmentID(stream: name, number: 0)
        let fullEnd = try await store.info(segment).length / 65_536 * 65_536
        try #require(fullEnd >= 12 * 65_536)
        // Only now does the segment get an owner: its first scan finds every block full at once.
        try ring.addNode(0)
        let objects = try FileObjectStore(root: folder)
        // The partial tail waits for --flush-idle (30 s): the full blocks are what is flushed.
        let manifests = try await Self.waitUntilFlushed(
            objects, prefix: "", name, lengths: [0: fullEnd], within: .seconds(60), ring: ring)
        #expect(manifests[0]?.flushed == fullEnd)
        var starts: [UInt64] = []
        for info in try await objects.listAll(prefix: BlockObject.segmentFolder(prefix: "", segment: segment)) {
            let object = try BlockObject.decode(try await objects.get(info.key), key: info.key)
            #expect(object.start % 65_536 == 0 && object.end - object.start == 65_536, "one block: \(info.key)")
            let (_, bytes) = try await store.read(segment, from: object.start, maxBytes: 65_536)
            #expect(object.bytes == bytes, "\(info.key)")
            starts.append(object.start)
        }
        #expect(starts == Array(stride(from: 0, to: fullEnd, by: 65_536)))
        let stats = try await RingTests.stats(ring.nodeAddresses[0])
        let written = stats["objects_written"] as? Int ?? 0
        let enqueued = stats["queue_enqueued"] as? Int ?? 0
        #expect(written == Int(fullEnd / 65_536), "\(stats)")
        #expect(enqueued * 8 >= written && enqueued <= (written + 7) / 8, "8 blocks a task: \(stats)")
    }
}

extension WriteBackTests {
    /// Each segment's length in the store.
    /// A ring of one node (`running` of them started) writing to `folder` with 64 KiB blocks, a client of its store,
    /// and a stream `SCOPE/events` of one segment created in it.
    static func smallBlockRing(
        _ folder: String, scope: String, running: Int, _ arguments: [String] = []
    ) async throws -> (Ring, EddyClient, StreamName) {
        let ring = try Ring(
            nodes: 1, running: running,
            nodeArguments: ["--object-store", "file://\(folder)", "--block-size", "64K"] + arguments)
        do {
            let store = try await RingTests.client([ring.storeAddress], timeout: .seconds(60))
            let name = try StreamName(scope: scope, stream: "events")
            _ = try await store.send(.createStream(name, segments: 1))
            return (ring, store, name)
        } catch {
            ring.stopAll()
            throw error
        }
    }

    static func lengths(_ store: EddyClient, _ name: StreamName, segments: UInt32) async throws -> [UInt32: UInt64] {
        var lengths: [UInt32: UInt64] = [:]
        for s in 0..<segments {
            lengths[s] = try await store.info(SegmentID(stream: name, number: s)).length
        }
        return lengths
    }

    /// Waits until every segment's manifest says it is flushed to `lengths`; returns the manifests.
    static func waitUntilFlushed(
        _ objects: any ObjectStore, prefix: String, _ name: StreamName, lengths: [UInt32: UInt64],
        within limit: Duration, ring: Ring, while poll: () async throws -> Void = {}
    ) async throws -> [UInt32: SegmentManifest] {
        let deadline = ContinuousClock.now + limit
        var manifests: [UInt32: SegmentManifest] = [:]
        while manifests.count < lengths.count {
            for (s, length) in lengths where manifests[s] == nil {
                let m = try await SegmentManifest.load(
                    from: objects, prefix: prefix, segment: SegmentID(stream: name, number: s))
                if m.flushed == length { manifests[s] = m }
            }
            if ContinuousClock.now > deadline {
                throw CLIError(
                    "\(name) not flushed in \(limit): \(manifests.keys.sorted()); logs: "
                        + ring.nodes.map(\.log).joined())
            }
            try await poll()
            try await Task.sleep(for: .milliseconds(500))
        }
        return manifests
    }

    /// Writes the store's bytes of each segment to a folder and has `scripts/verify-objects.py` (boto3) check the
    /// bucket's objects against them: its exit status and output.
    static func verifyWithBoto3(
        _ store: EddyClient, _ name: StreamName, lengths: [UInt32: UInt64], seaweed: SeaweedFS, bucket: String,
        prefix: String, ring: Ring
    ) async throws -> CommandResult {
        let expected = ring.folder + "/expected-\(name.scope)-\(name.stream)"
        try FileManager.default.createDirectory(atPath: expected, withIntermediateDirectories: true)
        for (s, length) in lengths {
            var bytes = Data()
            var offset: UInt64 = 0
            while offset < length {
                let (_, data) = try await store.read(
                    SegmentID(stream: name, number: s), from: offset, maxBytes: 4 << 20)
                bytes.append(contentsOf: data.readableBytesView)
                offset += UInt64(data.readableBytes)
            }
            try bytes.write(to: URL(fileURLWithPath: expected + "/\(ObjectKey.fixedWidth(s, 8)).bin"))
        }
        return try runProgram(
            "/usr/bin/env",
            [
                "python3", repository + "/scripts/verify-objects.py", "--endpoint", seaweed.endpoint, "--bucket",
                bucket, "--prefix", prefix, "--stream", name.description, "--expected", expected,
            ], environment: ["AWS_ACCESS_KEY_ID": seaweed.accessKey, "AWS_SECRET_ACCESS_KEY": seaweed.secretKey])
    }
}

extension WriteBackTests {
    @Test(
        "a stream deleted before its flush: the flush is dropped, not retried into the dead letters, and no lag is left"
    )
    func deletedStreamDropsItsFlush() async throws {
        let objectsFolder = temporaryPath("deleted-objects")
        let ring = try Ring(
            nodes: 1, nodeArguments: ["--object-store", "file://\(objectsFolder)", "--flush-idle", "1"])
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[0]
        #expect(try eddy(["create", "gone/events", "--segments", "1", "--server", node]).status == 0)
        let lines = (0..<100).map { "event \($0)" }.joined(separator: "\n") + "\n"
        #expect(try eddy(["append", "gone/events", "--server", node], input: lines).status == 0)
        #expect(try eddy(["delete", "gone/events", "--server", node]).status == 0)
        // The partial block would be flushed after a second idle; the stream is gone by then.
        let deadline = ContinuousClock.now + .seconds(30)
        var stats: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            let text = try eddy(["admin", "stats", "--server", node, "--format", "json"]).stdout
            stats = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
            if stats["flush_lag_bytes"] as? Int == 0 { break }
            try await Task.sleep(for: .milliseconds(300))
        }
        #expect(stats["flush_lag_bytes"] as? Int == 0, "\(stats)")
        // Long enough for five failed attempts with backoff, had the task been retried.
        try await Task.sleep(for: .seconds(3))
        let text = try eddy(["admin", "stats", "--server", node, "--format", "json"]).stdout
        #expect(text.contains("\"dead_letters\":0"), "\(text)")
        #expect(try eddy(["admin", "dlq", "list", "--server", node]).stdout.contains("no dead letters"))
    }
}

extension WriteBackTests {
    @Test("--object-blocks 4: full blocks go out four to an object; cold reads after truncation fetch each object once")
    func objectsOfSeveralBlocks() async throws {
        let folder = temporaryPath("object-blocks")
        let block: UInt64 = 65_536
        let (ring, store, name) = try await Self.smallBlockRing(
            folder, scope: "ob", running: 1, ["--object-blocks", "4"])
        defer { ring.stopAll() }
        defer { Task { await store.close() } }
        try await RingTests.fill(store, name, segments: 1, count: 1_400, size: 1_000)  // about 22 blocks
        let segment = SegmentID(stream: name, number: 0)
        let length = try await store.info(segment).length
        let whole = length / (4 * block) * (4 * block)
        try #require(whole >= 16 * block && whole < length / block * block, "the test wants full blocks left over")
        // The whole objects go out at once; the full blocks after them wait for the fourth (or for --flush-idle,
        // 30 s).
        let objects = try FileObjectStore(root: folder)
        let deadline = ContinuousClock.now + .seconds(60)
        var manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        while manifest.flushed < whole && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        }
        #expect(manifest.flushed == whole, "flushed \(manifest.flushed) of \(length); \(ring.nodes[0].log)")
        var starts: [UInt64] = []
        for info in try await objects.listAll(prefix: BlockObject.segmentFolder(prefix: "", segment: segment)) {
            let object = try BlockObject.decode(try await objects.get(info.key), key: info.key)
            #expect(object.end - object.start == 4 * block, "four blocks: \(info.key)")
            let (_, bytes) = try await store.read(segment, from: object.start, maxBytes: Int(4 * block))
            #expect(object.bytes == bytes, "\(info.key)")
            starts.append(object.start)
        }
        #expect(starts == stride(from: 0, to: whole, by: Int(4 * block)).map { UInt64($0) })

        // The events from the store; then the store truncated at the flushed event boundary and the events read
        // through the node, whose cache never held the segment: the front comes back from the objects, each
        // fetched once for its four blocks.
        func events(_ client: EddyClient) async throws -> [String] {
            let from = try await client.info(segment).startOffset
            var out: [String] = []
            for try await e in client.events([SegmentCursor(segment: segment, offset: from)], follow: false) {
                out.append(String(decoding: e.event.payload, as: UTF8.self))
            }
            return out
        }
        let before = try await events(store)
        #expect(before.count == 1_400)
        let node = try await RingTests.client([ring.nodeAddresses[0]], timeout: .seconds(60))
        defer { Task { await node.close() } }
        _ = try await node.truncate(segment, at: manifest.eventBoundary)
        #expect(try await store.info(segment).startOffset == manifest.eventBoundary)
        let after = try await events(node)
        #expect(after == before)
        let stats = try await RingTests.stats(ring.nodeAddresses[0])
        let loads = stats["cold_block_loads"] as? Int ?? 0
        let gets = stats["cold_object_gets"] as? Int ?? 0
        #expect(loads >= Int(manifest.eventBoundary / block), "\(stats)")
        #expect(gets >= Int(manifest.eventBoundary / (4 * block)) && gets < loads, "\(stats)")
    }
}

extension WriteBackTests {
    @Test(
        "a stream deleted and created again under its name: the earlier one's objects go, the new one's are flushed and come back after truncation"
    )
    func recreatedStream() async throws {
        let folder = temporaryPath("recreated")
        let (ring, store, name) = try await Self.smallBlockRing(folder, scope: "re", running: 1, ["--flush-idle", "1"])
        defer { ring.stopAll() }
        defer { Task { await store.close() } }
        let segment = SegmentID(stream: name, number: 0)
        let objects = try FileObjectStore(root: folder)
        try await RingTests.fill(store, name, segments: 1, count: 400, size: 500)  // about 3 blocks
        let earlier = try await store.info(segment)
        _ = try await Self.waitUntilFlushed(
            objects, prefix: "", name, lengths: [0: earlier.length], within: .seconds(60), ring: ring)

        // Deleted and created again at the store (the node hears of it only from the store), with fewer bytes.
        _ = try await store.send(.deleteStream(name))
        _ = try await store.send(.createStream(name, segments: 1))
        try await RingTests.fill(store, name, segments: 1, count: 150, size: 300)
        let now = try await store.info(segment)
        #expect(now.incarnation > earlier.incarnation && now.length < earlier.length)
        let manifests = try await Self.waitUntilFlushed(
            objects, prefix: "", name, lengths: [0: now.length], within: .seconds(60), ring: ring)
        let manifest = try #require(manifests[0])
        #expect(manifest.incarnation == now.incarnation)
        // Only the new stream's objects are left, and they hold its bytes.
        var covered: UInt64 = 0
        for info in try await objects.listAll(prefix: BlockObject.segmentFolder(prefix: "", segment: segment)) {
            let object = try BlockObject.decode(try await objects.get(info.key), key: info.key)
            #expect(object.start == covered, "\(info.key)")
            let (_, bytes) = try await store.read(segment, from: object.start, maxBytes: Int(object.end - object.start))
            #expect(object.bytes == bytes, "\(info.key)")
            covered = object.end
        }
        #expect(covered == now.length)
        #expect(ring.nodes[0].log.contains("removed an earlier stream's objects"), "\(ring.nodes[0].log)")

        // Truncated at the flushed boundary, the stream reads back through the node from the new objects.
        let node = try await RingTests.client([ring.nodeAddresses[0]], timeout: .seconds(60))
        defer { Task { await node.close() } }
        _ = try await node.truncate(segment, at: manifest.eventBoundary)
        var payloads: [String] = []
        for try await e in node.events([SegmentCursor(segment: segment, offset: 0)], follow: false) {
            payloads.append(String(decoding: e.event.payload, as: UTF8.self))
        }
        #expect(payloads == (0..<150).map { "s0-\($0)-" + String(repeating: "p", count: 300) })
    }

    @Test(
        "a stream created again with the earlier one's bytes (as a restore makes it) keeps its objects, compared as the bytes arrive"
    )
    func recreatedWithTheSameBytes() async throws {
        let folder = temporaryPath("recreated-same")
        let (ring, store, name) = try await Self.smallBlockRing(folder, scope: "rs", running: 1, ["--flush-idle", "1"])
        defer { ring.stopAll() }
        defer { Task { await store.close() } }
        let segment = SegmentID(stream: name, number: 0)
        let objects = try FileObjectStore(root: folder)
        // The events of RingTests.fill, `range` of them.
        func append(_ range: Range<Int>) async throws {
            var frames: [UInt8] = []
            for k in range {
                let payload = "s0-\(k)-" + String(repeating: "p", count: 500)
                try EventFrame.encode(Event(routingKey: nil, timestamp: 0, payload: Array(payload.utf8)), into: &frames)
            }
            _ = try await store.append(
                segment, frames: ByteBuffer(bytes: frames), writerID: "fill-0",
                firstEventNumber: Int64(range.lowerBound))
        }
        try await append(0..<400)  // about 3 blocks
        let earlier = try await store.info(segment)
        _ = try await Self.waitUntilFlushed(
            objects, prefix: "", name, lengths: [0: earlier.length], within: .seconds(60), ring: ring)
        let folderKey = BlockObject.segmentFolder(prefix: "", segment: segment)
        let keys = try await objects.listAll(prefix: folderKey).map(\.key)

        _ = try await store.send(.deleteStream(name))
        _ = try await store.send(.createStream(name, segments: 1))
        try await append(0..<200)
        // Half of the bytes are back: they match, the rest is not known yet; nothing is removed or flushed anew.
        try await Task.sleep(for: .seconds(4))
        var manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        #expect(manifest.incarnation == earlier.incarnation)
        #expect(try await objects.listAll(prefix: folderKey).map(\.key) == keys)
        try await append(200..<400)
        let now = try await store.info(segment)
        #expect(now.length == earlier.length && now.incarnation != earlier.incarnation)
        let deadline = ContinuousClock.now + .seconds(30)
        while manifest.incarnation != now.incarnation && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            manifest = try await SegmentManifest.load(from: objects, prefix: "", segment: segment)
        }
        #expect(manifest.incarnation == now.incarnation && manifest.flushed == now.length, "\(ring.nodes[0].log)")
        #expect(try await objects.listAll(prefix: folderKey).map(\.key) == keys)
        let log = ring.nodes[0].log
        #expect(
            log.contains("hold this stream's bytes") && !log.contains("removed an earlier stream's objects"), "\(log)")
    }
}
