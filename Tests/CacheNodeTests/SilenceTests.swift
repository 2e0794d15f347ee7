import CacheNode
import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import Testing
import WireProtocol

@testable import StreamModel

/// A connection whose server went silent (a partition, a hung proxy: the socket stays open) is given up within
/// the client's silence limit, not after each request's own deadline; a server that is only slow is not.
/// A store, a relay in front of it that a test can cut, and a one-node ring reaching the store through it.
func nodeWithStoreBehindRelay() async throws -> (Harness, FaultRelay, CacheNode, ServerAddress) {
    let harness = try await Harness()
    let relay = try await FaultRelay.start(to: harness.address)
    let address = ServerAddress(host: "127.0.0.1", port: try freeLoopbackPort())
    var c = NodeConfiguration(listen: address, store: relay.address, members: [address])
    c.logger.logLevel = .critical
    c.whatIf = false
    return (harness, relay, try await CacheNode.start(configuration: c), address)
}

@Suite("silent servers")
struct SilenceTests {
    @Test("a request to a server cut off fails with connectionFailed within the silence limit")
    func cutServerFailsFast() async throws {
        let harness = try await Harness()
        let relay = try await FaultRelay.start(to: harness.address)
        let client = try await StoreClient.connect(to: relay.address, silenceLimit: .milliseconds(1500))
        _ = try await client.send(.listStreams, timeout: .seconds(5))
        relay.cut()
        let start = ContinuousClock.now
        let error = await #expect(throws: EddyError.self) {
            try await client.send(.listStreams, timeout: .seconds(20))
        }
        let took = ContinuousClock.now - start
        #expect(error?.code == .connectionFailed, "\(String(describing: error))")
        #expect(took < .seconds(5), "gave up after \(took)")
        #expect(!client.isActive)
        relay.heal()
        await relay.close()
        await harness.shutdown()
    }

    @Test("the store and a node answer a ping with ok, for any principal")
    func pingIsAnswered() async throws {
        let ring = try await NodeRing(count: 1)
        for address in [ring.harness.address, ring.addresses[0]] {
            let client = try await StoreClient.connect(to: address)
            #expect(try await client.send(.ping, timeout: .seconds(5)) == .ok)
            await client.close()
        }
        await ring.shutdown()
    }

    @Test("a tail read's wait is not silence: it ends with its wait, the connection kept")
    func tailWaitIsNotSilence() async throws {
        let harness = try await Harness()
        let name = try StreamName(parsing: "silence/tail")
        let client = try await StoreClient.connect(to: harness.address, silenceLimit: .milliseconds(600))
        try await client.createStream(name, segments: 1)
        let start = ContinuousClock.now
        let r = try await client.send(
            .read(segment: SegmentID(stream: name, number: 0), offset: 0, maxBytes: 1024, waitMilliseconds: 2500),
            timeout: .seconds(10))
        guard case .readResult(_, _, let data) = r else { Issue.record("answered \(r)"); return }
        #expect(data.readableBytes == 0)
        #expect(ContinuousClock.now - start >= .seconds(2))
        #expect(client.isActive)
        await client.close()
        await harness.shutdown()
    }

    @Test("a node that is alive but waits on a silent store answers pings: its client keeps the connection")
    func slowNodeIsNotSilent() async throws {
        let (harness, relay, node, address) = try await nodeWithStoreBehindRelay()
        // 2 s: under a loaded machine's stalls a ping's answer may take most of a second; still well under the
        // node's own 3 s limit on its store connection.
        let client = try await StoreClient.connect(to: address, silenceLimit: .seconds(2))
        _ = try await client.send(.listStreams, timeout: .seconds(5))
        relay.cut()
        let start = ContinuousClock.now
        let error = await #expect(throws: EddyError.self) {
            try await client.send(.listStreams, timeout: .seconds(20))
        }
        // The node's own connection to the store went silent (3 s by default, past this client's 2 s):
        // the node answers that the store is unreachable, over a connection its client kept.
        #expect(error?.code == .unavailable, "\(String(describing: error))")
        #expect(ContinuousClock.now - start >= .milliseconds(2500))
        #expect(client.isActive)
        relay.heal()
        _ = try await client.send(.listStreams, timeout: .seconds(10))
        await client.close()
        await node.close()
        await relay.close()
        await harness.shutdown()
    }

    @Test("an exactly-once append through a node that was cut off fails over to another node in time")
    func appendFailsOverFromCutNode() async throws {
        let ring = try await NodeRing(count: 2)
        let relay = try await FaultRelay.start(to: ring.addresses[0])
        let name = try StreamName(parsing: "silence/append")
        var configuration = EddyClient.Configuration(servers: [relay.address, ring.addresses[1]])
        configuration.inOrder = true
        configuration.requestTimeout = .seconds(8)
        let client = try await EddyClient.connect(configuration)
        try await client.createStream(name, segments: 2)
        let segment = SegmentID(stream: name, number: 0)
        let one = try await client.append(segment, frames: try frames(["a"]), writerID: "w", firstEventNumber: 0)
        #expect(client.server == relay.address)
        relay.cut()
        let start = ContinuousClock.now
        let two = try await client.appendInOrder(
            segment, frames: try frames(["b", "c"]), writerID: "w", firstEventNumber: 1
        ).value
        let took = ContinuousClock.now - start
        #expect(took < .seconds(6), "the append took \(took)")
        #expect(client.server == ring.addresses[1])
        #expect(!two.duplicate && two.firstOffset > one.firstOffset)
        relay.heal()
        // Exactly once: the segment holds a, b, c.
        let read = try await client.read(segment, from: 0, maxBytes: 1 << 16)
        var cursor = SegmentCursor(segment: segment, offset: 0)
        let events = try cursor.take(read.data)
        #expect(events.map { String(decoding: $0.event.payload, as: UTF8.self) } == ["a", "b", "c"])
        await client.close()
        await relay.close()
        await ring.shutdown()
    }
}

/// A connection keeps each writer's appends to a segment in order, without one writer's failure touching another
/// writer's (a connection between nodes carries many writers' forwarded appends).
@Suite("append lanes of a connection")
struct AppendLaneTests {
    @Test("a failed batch of one writer neither holds up nor fails the next batch of another or of itself")
    func lanesAreIndependent() async throws {
        let ring = try await NodeRing(count: 1)
        let name = try StreamName(parsing: "lanes/one")
        let client = try await ring.client(0)
        try await client.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)
        func append(_ writer: String, _ first: Int64, _ events: [String]) throws -> EventLoopFuture<Response> {
            client.submit(
                .append(segment: segment, writerID: writer, firstEventNumber: first, frames: try frames(events)),
                timeout: .seconds(10))
        }
        // Pipelined on one connection: writer a's batch past its next number fails (a gap), then the next
        // batches of writer b and of writer a itself go on to the store, which takes them.
        let gap = try append("a", 5, ["a5"])
        let other = try append("b", 0, ["b0"])
        let retry = try append("a", 0, ["a0"])
        await #expect {
            _ = try await StoreClient.answer(gap)
        } throws: { ($0 as? EddyError)?.code == .eventNumberGap }
        guard case .appendAck(let b) = try await StoreClient.answer(other),
            case .appendAck(let a) = try await StoreClient.answer(retry)
        else { Issue.record("not acknowledged"); return }
        #expect(!a.duplicate && !b.duplicate && a.firstOffset != b.firstOffset)
        await client.close()
        await ring.shutdown()
    }

    @Test("a writer's pipelined batches go to the store one after another without waiting for acknowledgements")
    func pipelinedInOrder() async throws {
        let (harness, relay, node, address) = try await nodeWithStoreBehindRelay()
        let client = try await StoreClient.connect(to: address)
        let name = try StreamName(parsing: "lanes/pipelined")
        try await client.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)
        _ = try await client.info(segment)  // the node knows the segment before the store goes silent
        relay.cut()
        // Four batches of about 8 KiB: with the store cut off, all four must reach the relay (each handed to the
        // store's connection as soon as the one before it was), not only the first (each waiting for an ack).
        let payload = String(repeating: "p", count: 8 << 10)
        var answers: [EventLoopFuture<Response>] = []
        for n in 0..<4 {
            answers.append(
                client.submit(
                    .append(
                        segment: segment, writerID: "w", firstEventNumber: Int64(n), frames: try frames([payload])),
                    timeout: .seconds(20)))
        }
        var waited = 0
        while relay.heldBytes < 4 * (8 << 10) && waited < 200 {
            try await Task.sleep(for: .milliseconds(25))
            waited += 1
        }
        #expect(relay.heldBytes >= 4 * (8 << 10), "held \(relay.heldBytes) bytes")
        relay.heal()
        var offsets: [UInt64] = []
        for a in answers {
            guard case .appendAck(let ack) = try await StoreClient.answer(a) else { continue }
            #expect(!ack.duplicate)
            offsets.append(ack.firstOffset)
        }
        #expect(offsets.count == 4 && offsets == offsets.sorted(), "\(offsets)")
        await client.close()
        await node.close()
        await relay.close()
        await harness.shutdown()
    }
}
