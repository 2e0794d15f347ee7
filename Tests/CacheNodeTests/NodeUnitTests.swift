import CacheNode
import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import Testing
import WireProtocol

@testable import StreamModel

/// A store and cache nodes in this process, on free loopback ports.
final class NodeRing {
    let harness: Harness
    let nodes: [CacheNode]
    let addresses: [ServerAddress]

    init(count: Int = 3, blockSize: UInt64 = 64 << 10, configure: (inout NodeConfiguration) -> Void = { _ in })
        async throws
    {
        harness = try await Harness()
        addresses = try (0..<count).map { _ in ServerAddress(host: "127.0.0.1", port: try freeLoopbackPort()) }
        var started: [CacheNode] = []
        for a in addresses {
            var c = NodeConfiguration(listen: a, store: harness.address, members: addresses)
            c.blockSize = blockSize
            c.cacheBytes = 64 << 20
            c.logger.logLevel = .warning
            // Nodes of one test process share its CPU, so the what-if's governor (a share of the process's CPU)
            // cannot hold any one node's shadows back, and a debug build replays them ten times slower: off here,
            // on where a test is about it (EddyAdminTests, WhatIfCLITests).
            c.whatIf = false
            configure(&c)
            started.append(try await CacheNode.start(configuration: c))
        }
        nodes = started
    }

    func client(_ i: Int) async throws -> StoreClient { try await StoreClient.connect(to: addresses[i]) }

    /// The index of the node that owns `segment`.
    func owner(of segment: SegmentID) async -> Int {
        let name = await nodes[0].core.owner(of: segment)
        return addresses.firstIndex { $0.description == name }!
    }

    func shutdown() async {
        for n in nodes { await n.close() }
        await harness.shutdown()
    }
}

@Suite("cache node", .serialized)
struct NodeTests {
    static let name = try! StreamName(parsing: "node/test")

    /// Each node's stats.
    static func nodeStats(_ ring: NodeRing) async throws -> [[String: Any]] {
        var out: [[String: Any]] = []
        for i in 0..<ring.addresses.count {
            let c = try await ring.client(i)
            out.append(
                try JSONSerialization.jsonObject(with: Data(try await c.send(.stats).statsJSON.utf8)) as! [String: Any])
            await c.close()
        }
        return out
    }

    /// Each node's count of ring changes.
    static func ringChanges(_ ring: NodeRing) async throws -> [Int] {
        try await nodeStats(ring).map { $0["ring_changes"] as? Int ?? -1 }
    }

    @Test("appends through any node reach tail readers on every node: waiting reads answer as bytes arrive")
    func tailFanOut() async throws {
        let ring = try await NodeRing()
        let setup = try await ring.client(0)
        try await setup.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        // Tail readers on every node, waiting at offset 0.
        let addresses = ring.addresses
        var ringChanges: [Int] = []
        let readers = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            for i in 0..<3 {
                for _ in 0..<5 {
                    group.addTask {
                        let c = try await StoreClient.connect(to: addresses[i])
                        let (_, data) = try await c.read(segment, from: 0, wait: .seconds(10))
                        await c.close()
                        return data
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            ringChanges = try await Self.ringChanges(ring)
            let writer = try await ring.client(2)
            let ack = try await writer.append(
                segment, frames: try frames(["one", "two"]), writerID: "w", firstEventNumber: 0)
            #expect(ack.firstOffset == 0 && !ack.duplicate)
            await writer.close()
            var all: [ByteBuffer] = []
            for try await d in group { all.append(d) }
            return all
        }
        #expect(readers.count == 15)
        let expected = try frames(["one", "two"])
        for d in readers { #expect(d == expected) }
        // The owner learned the bytes from the append itself: no node read them from the store. That holds while
        // the nodes' rings stay as they were: a loaded machine can delay heartbeats past the failure timeout, a
        // member leaves some node's ring for a moment, that node's append then reaches the store directly and the
        // owner learns of it from the store (correct, and not what this asserts).
        #expect(ring.harness.store.stats.events == 2)
        let after = try await Self.nodeStats(ring)
        if after.map({ $0["ring_changes"] as? Int ?? -1 }) == ringChanges {
            for (i, s) in after.enumerated() {
                #expect(s["store_read_bytes"] as? Int == 0, "node \(i) read from the store: \(s)")
            }
        } else {
            FileHandle.standardError.write(
                Data("tailFanOut: a ring changed during the append; store reads not checked\n".utf8))
        }
        let stats =
            try JSONSerialization.jsonObject(with: Data(try await setup.send(.stats).statsJSON.utf8)) as! [String: Any]
        #expect(stats["role"] as? String == "node")
        await setup.close()
        await ring.shutdown()
    }

    @Test("sealed and truncated segments answer at once, through the owner and the others")
    func sealedAndTruncated() async throws {
        let ring = try await NodeRing()
        let c0 = try await ring.client(0)
        try await c0.createStream(Self.name, segments: 2)
        let segment = SegmentID(stream: Self.name, number: 1)
        let ack = try await c0.append(segment, frames: try frames(["a", "b", "c"]), writerID: "w", firstEventNumber: 0)
        let info = try await c0.info(segment)
        for i in 0..<3 {
            let c = try await ring.client(i)
            // A tail reader waiting at the end is released by the seal with end-of-segment.
            let started = ContinuousClock.now
            async let waiting = c.read(segment, from: info.length, wait: .seconds(20))
            try await Task.sleep(for: .milliseconds(200))
            if i == 0 { try await c0.seal(segment) }
            let (after, data) = try await waiting
            #expect(after.sealed && data.readableBytes == 0)
            #expect(ContinuousClock.now - started < .seconds(12), "no stall on a sealed segment (the wait is 20 s)")
            await c.close()
        }
        // Truncate before the second event: below it is gone, at once, everywhere.
        let second = ack.firstOffset + UInt64(try frames(["a"]).readableBytes)
        try await c0.truncate(segment, at: second)
        for i in 0..<3 {
            let c = try await ring.client(i)
            do {
                _ = try await c.read(segment, from: 0)
                Issue.record("read below the truncation point succeeded on node \(i)")
            } catch {
                #expect(error.code == .truncated, "node \(i): \(error)")
            }
            let (_, rest) = try await c.read(segment, from: second)
            #expect(rest == (try frames(["b", "c"])))
            await c.close()
        }
        await c0.close()
        await ring.shutdown()
    }

    @Test("a segment truncated behind the node's back reads from the truncation point, whole blocks or not")
    func truncatedAtTheStore() async throws {
        let ring = try await NodeRing(count: 1, blockSize: 4096)
        let direct = try await ring.harness.client()
        try await direct.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        let payloads = (0..<100).map { "event \($0) " + String(repeating: "t", count: 90) }
        _ = try await direct.append(segment, frames: try frames(payloads), writerID: "w", firstEventNumber: 0)
        let cut = UInt64(try frames(Array(payloads.prefix(30))).readableBytes)  // inside block 0
        try await direct.truncate(segment, at: cut)
        let c = try await ring.client(0)
        var offset = cut
        var bytes = ByteBuffer()
        let length = try await c.info(segment).length
        while offset < length {
            var (_, data) = try await c.read(segment, from: offset)
            #expect(data.readableBytes > 0)
            offset += UInt64(data.readableBytes)
            bytes.writeBuffer(&data)
        }
        #expect(bytes == (try frames(Array(payloads.dropFirst(30)))))
        await direct.close()
        await c.close()
        await ring.shutdown()
    }

    @Test("bad input: unknown streams, a forward with another ring view, garbage frames, a client that never reads")
    func badInput() async throws {
        let ring = try await NodeRing(count: 2)
        let c = try await ring.client(0)
        await #expect(throws: EddyError.self) { try await c.read(SegmentID(stream: Self.name, number: 0), from: 0) }
        do {
            _ = try await c.read(SegmentID(stream: try StreamName(parsing: "no/such"), number: 0), from: 0)
        } catch {
            #expect(error.code == .streamNotFound)
        }
        try await c.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        _ = try await c.append(segment, frames: try frames(["x"]), writerID: "w", firstEventNumber: 0)
        // A forward carrying a view this node does not share: a typed answer at once, never a wait.
        let stale = RingView(from: "127.0.0.1:1", epoch: 99, fingerprint: 12345)
        do {
            _ = try await c.send(
                .forwarded(stale, .read(segment: segment, offset: 0, maxBytes: 100, waitMilliseconds: 5000)))
            Issue.record("a stale forward was served")
        } catch {
            #expect(error.code == .staleEpoch)
        }
        // Garbage: an error frame, the connection closes; others are served.
        let raw = try RawConnection(port: ring.addresses[0].port)
        raw.send([0, 0, 0, 1, 9])
        let answer = try raw.response()
        if case .error(let e)? = answer {
            #expect(e.code == .malformedFrame)
        } else {
            Issue.record("\(String(describing: answer))")
        }
        #expect(raw.receive() == nil, "closed after a bad frame")
        raw.close()
        // A client that sends reads and never reads the answers: the node stops reading it, others go on.
        let hog = try RawConnection(port: ring.addresses[0].port)
        hog.send(MessageCodec.frame(.hello(version: protocolVersion), id: 1))
        for id in 2..<3000 {
            hog.send(
                MessageCodec.frame(
                    .read(segment: segment, offset: 0, maxBytes: 65536, waitMilliseconds: 0), id: UInt32(id)))
        }
        let (_, data) = try await c.read(segment, from: 0)
        #expect(data == (try frames(["x"])))
        hog.close()
        await c.close()
        await ring.shutdown()
    }

    @Test("many readers missing the same block at once: one store read, every reader served")
    func coalescing() async throws {
        let ring = try await NodeRing(count: 1)
        let c = try await ring.client(0)
        try await c.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        let payloads = (0..<2000).map { "event-\($0)-" + String(repeating: "z", count: 100) }
        // Written straight to the store, so the node has never seen these bytes.
        let direct = try await ring.harness.client()
        _ = try await direct.append(segment, frames: try frames(payloads), writerID: "w", firstEventNumber: 0)
        let address = ring.addresses[0]
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    let r = try await StoreClient.connect(to: address)
                    let (_, d) = try await r.read(segment, from: 0, maxBytes: 65536)
                    await r.close()
                    return d.readableBytes
                }
            }
            var all: [Int] = []
            for try await n in group { all.append(n) }
            return all
        }
        #expect(results.allSatisfy { $0 == 65536 })
        let stats =
            try JSONSerialization.jsonObject(with: Data(try await c.send(.stats).statsJSON.utf8)) as! [String: Any]
        #expect(stats["store_read_requests"] as? Int == 1, "\(stats)")
        #expect(stats["hits"] as? Int ?? 0 >= 1 || stats["coalesced_loads"] as? Int ?? 0 >= 1)
        await direct.close()
        await c.close()
        await ring.shutdown()
    }
}

extension Response {
    var statsJSON: String {
        if case .stats(let s) = self { return s }
        return "{}"
    }
}

@Suite("parked tail reads", .serialized)
struct ParkedReadTests {
    static let name = try! StreamName(parsing: "node/parked")

    static func stats(_ c: StoreClient) async throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(try await c.send(.stats).statsJSON.utf8)) as! [String: Any]
    }

    @Test("tail readers on the owner and on another node park; one append wakes all with its bytes, one forward")
    func parkedFanOut() async throws {
        let ring = try await NodeRing(count: 2)
        let setup = try await ring.client(0)
        try await setup.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        let owner = await ring.owner(of: segment)
        let other = 1 - owner
        let first = try frames(["first"])
        _ = try await setup.append(segment, frames: first, writerID: "w", firstEventNumber: 0)
        let end = UInt64(first.readableBytes)
        // A read through each node makes both place the new segment (each refreshes its catalog), and teaches the
        // other node the segment's length (its hint).
        let atOwner = try await ring.client(owner)
        _ = try await atOwner.read(segment, from: 0)
        await atOwner.close()
        let probe = try await ring.client(other)
        _ = try await probe.read(segment, from: 0)
        let before = try await Self.stats(probe)
        let addresses = ring.addresses
        let second = try frames(["second", "third"])
        let answers = try await withThrowingTaskGroup(of: ByteBuffer.self) { group in
            for i in 0..<2 {
                for _ in 0..<20 {
                    group.addTask {
                        let c = try await StoreClient.connect(to: addresses[i])
                        let (_, data) = try await c.read(segment, from: end, wait: .seconds(10))
                        await c.close()
                        return data
                    }
                }
            }
            // A reader that leaves while parked must not disturb the others.
            let leaver = try await StoreClient.connect(to: addresses[owner])
            let gone = Task { try? await leaver.read(segment, from: end, wait: .seconds(10)) }
            // Wait until every reader waits (each node counts its own readers; the owner also the shared forward).
            let watchers = [try await ring.client(owner), try await ring.client(other)]
            for _ in 0..<200 {
                let waiting = [
                    try await Self.stats(watchers[0])["tail_waiters"] as? Int ?? 0,
                    try await Self.stats(watchers[1])["tail_waiters"] as? Int ?? 0,
                ]
                if waiting[0] >= 22 && waiting[1] >= 20 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            for w in watchers { await w.close() }
            await leaver.close()
            _ = await gone.value
            _ = try await setup.append(segment, frames: second, writerID: "w", firstEventNumber: 1)
            var all: [ByteBuffer] = []
            for try await d in group { all.append(d) }
            return all
        }
        #expect(answers.count == 40)
        for a in answers { #expect(a == second) }
        let ownerStats = try await Self.stats(try await ring.client(owner))
        let otherStats = try await Self.stats(probe)
        #expect(ownerStats["parked_reads"] as? Int ?? 0 >= 20, "\(ownerStats)")
        #expect(otherStats["parked_reads"] as? Int ?? 0 >= 20, "\(otherStats)")
        // The other node's 20 readers shared their forwards (one per wait round, not one per reader).
        let forwards = (otherStats["forwards"] as? Int ?? 0) - (before["forwards"] as? Int ?? 0)
        #expect(forwards >= 1 && forwards <= 3, "forwards: \(forwards)")
        #expect(ownerStats["store_read_bytes"] as? Int == 0, "the owner read appended bytes from the store")
        await probe.close()
        await setup.close()
        await ring.shutdown()
    }

    @Test("a parked read with nothing to read answers empty at its deadline, not before")
    func parkedTimeout() async throws {
        let ring = try await NodeRing(count: 2)
        let c = try await ring.client(0)
        try await c.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        _ = try await c.append(segment, frames: try frames(["x"]), writerID: "w", firstEventNumber: 0)
        for i in 0..<2 {
            let r = try await ring.client(i)
            let (info, _) = try await r.read(segment, from: 0)
            // Twice: the first may take the full path (it starts the node's watch); the second parks.
            for _ in 0..<2 {
                let started = ContinuousClock.now
                let (_, data) = try await r.read(segment, from: info.length, wait: .milliseconds(300))
                let took = ContinuousClock.now - started
                #expect(data.readableBytes == 0)
                #expect(took >= .milliseconds(280) && took < .seconds(10), "node \(i) answered after \(took)")
            }
            let s = try await ParkedReadTests.stats(r)
            #expect(s["parked_reads"] as? Int ?? 0 >= 1, "node \(i): \(s)")
            #expect(s["tail_waiters"] as? Int == 0, "node \(i): \(s)")
            await r.close()
        }
        await c.close()
        await ring.shutdown()
    }
}
