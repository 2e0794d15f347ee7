import EddyTestSupport
import Foundation
import NIOCore
import NIOPosix
import SegmentStore
import StoreClient
import StoreServer
import Testing
import WireProtocol

@testable import StreamModel

#if canImport(Glibc)
    import Glibc
#endif

@Suite("StoreServer over TCP", .serialized)
struct StoreServerTests {
    let name = try! StreamName(parsing: "net/events")

    @Test("a client creates, appends, reads, seals, truncates and deletes over a real socket")
    func roundTrip() async throws {
        let h = try await Harness()
        let client = try await h.client()
        try await client.createStream(name, segments: 2)
        let segment = SegmentID(stream: name, number: 1)
        let ack = try await client.append(
            segment, frames: try frames(["one", "two"]), writerID: "w", firstEventNumber: 0)
        #expect(ack.firstOffset == 0 && ack.eventCount == 2 && !ack.duplicate)
        let again = try await client.append(
            segment, frames: try frames(["one", "two"]), writerID: "w", firstEventNumber: 0)
        #expect(again.duplicate && again.firstOffset == 0)
        #expect(try await client.lastEventNumber(segment, writerID: "w") == 1)
        let (info, data) = try await client.read(segment, from: 0)
        let events = try Array(data.readableBytesView).withBytes { (b) throws(EddyError) in try EventFrame.decodeAll(b)
        }
        #expect(events.map { String(decoding: $0.payload, as: UTF8.self) } == ["one", "two"])
        #expect(info.length == UInt64(data.readableBytes))
        #expect(try await client.listStreams().map(\.name) == [name])
        let truncated = try await client.truncate(
            segment, at: UInt64(EventFrame.frameSize(keyLength: 0, payloadLength: 3)))
        #expect(truncated.startOffset == 21)
        do {
            _ = try await client.read(segment, from: 0)
            Issue.record("a read below the truncation point succeeded")
        } catch {
            #expect(error.code == .truncated)
        }
        let sealed = try await client.seal(segment)
        #expect(sealed.sealed)
        let three = try frames(["three"])
        do {
            _ = try await client.append(segment, frames: three)
            Issue.record("append to a sealed segment succeeded")
        } catch {
            #expect(error.code == .segmentSealed)
        }
        do {
            _ = try await client.read(segment, from: info.length + 10)
            Issue.record("a read past the end succeeded")
        } catch {
            #expect(error.code == .offsetOutOfRange)
        }
        try await client.deleteStream(name)
        do {
            _ = try await client.info(name)
            Issue.record("info of a deleted stream succeeded")
        } catch {
            #expect(error.code == .streamNotFound)
        }
        await client.close()
        await h.shutdown()
    }

    @Test("one connection pipelines many appends; every ack is distinct and the bytes are contiguous")
    func pipelining() async throws {
        let h = try await Harness()
        let client = try await h.client()
        try await client.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)
        let batch = try frames(["0123456789"])
        let acks = try await withThrowingTaskGroup(of: AppendAck.self) { group in
            for _ in 0..<500 { group.addTask { try await client.append(segment, frames: batch) } }
            var all: [AppendAck] = []
            for try await a in group { all.append(a) }
            return all
        }
        let offsets = acks.map(\.firstOffset).sorted()
        let size = UInt64(batch.readableBytes)
        #expect(offsets == (0..<500).map { UInt64($0) * size })
        #expect(h.store.stats.syncs < 500)
        await client.close()
        await h.shutdown()
    }

    @Test("a tail read over the network answers as soon as an append arrives")
    func tail() async throws {
        let h = try await Harness()
        let reader = try await h.client()
        let writer = try await h.client()
        try await writer.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)
        let start = ContinuousClock.now
        async let waited = reader.read(segment, from: 0, wait: .seconds(20))
        try await Task.sleep(for: .milliseconds(200))
        _ = try await writer.append(segment, frames: try frames(["tick"]))
        let (_, data) = try await waited
        #expect(data.readableBytes > 0)
        #expect(ContinuousClock.now - start < .seconds(10))
        await reader.close()
        await writer.close()
        await h.shutdown()
    }

    @Test("a cancelled request gives up at once; its late answer is dropped and the connection keeps serving")
    func cancelled() async throws {
        let h = try await Harness()
        let reader = try await h.client()
        let writer = try await h.client()
        try await writer.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)
        let waiting = Task { () -> EddyError? in
            do {
                _ = try await reader.read(segment, from: 0, wait: .seconds(20))
                return nil
            } catch {
                return error as? EddyError
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        let start = ContinuousClock.now
        waiting.cancel()
        let error = await waiting.value
        #expect(error?.code == .shuttingDown, "\(String(describing: error))")
        #expect(ContinuousClock.now - start < .seconds(10), "cancelled, not waited out (the wait is 20 s)")
        // The store answers the abandoned read when bytes arrive; the client drops that answer.
        _ = try await writer.append(segment, frames: try frames(["late"]))
        let (_, data) = try await reader.read(segment, from: 0)
        #expect(data == (try frames(["late"])))
        await reader.close()
        await writer.close()
        await h.shutdown()
    }

    @Test("bad input gets typed errors; the server keeps serving everyone else")
    func badInput() async throws {
        let h = try await Harness()
        let good = try await h.client()
        try await good.createStream(name, segments: 1)
        let segment = SegmentID(stream: name, number: 0)

        // No hello: an error, then the connection closes.
        let noHello = try RawConnection(port: h.server.port)
        noHello.send(MessageCodec.frame(.listStreams, id: 9))
        guard case .error(let e1)? = try noHello.response() else {
            Issue.record("no error for a missing hello"); return
        }
        #expect(e1.code == .malformedFrame)
        #expect(noHello.receive() == nil)
        noHello.close()

        // A version this server does not speak.
        let oldVersion = try RawConnection(port: h.server.port)
        oldVersion.send(MessageCodec.frame(.hello(version: 99), id: 1))
        guard case .error(let e2)? = try oldVersion.response() else { Issue.record("no error for version 99"); return }
        #expect(e2.code == .unsupportedVersion)
        oldVersion.close()

        // After a good hello: bad requests get errors and the connection goes on.
        let raw = try RawConnection(port: h.server.port)
        raw.send(MessageCodec.frame(.hello(version: protocolVersion), id: 1))
        guard case .helloOK? = try raw.response() else { Issue.record("hello refused"); return }
        raw.send(Frame(type: 0x55, requestID: 2, body: ByteBuffer()))
        let unknown = try #require(raw.receive())
        #expect(unknown.requestID == 2)
        guard case .error(let e3) = try MessageCodec.response(unknown) else { Issue.record("no error"); return }
        #expect(e3.code == .unknownMessageType)
        raw.send(Frame(type: MessageType.createStream.rawValue, requestID: 3, body: ByteBuffer(bytes: [0, 50, 1])))
        guard case .error(let e4)? = try raw.response() else { Issue.record("no error for a short body"); return }
        #expect(e4.code == .malformedFrame)
        raw.send(MessageCodec.frame(.streamInfo(try StreamName(parsing: "no/such")), id: 4))
        guard case .error(let e5)? = try raw.response() else { Issue.record("no error for an unknown stream"); return }
        #expect(e5.code == .streamNotFound)
        var corrupt = Array(try frames(["payload"]).readableBytesView)
        corrupt[corrupt.count - 1] ^= 1
        raw.send(
            MessageCodec.frame(
                .append(segment: segment, writerID: "", firstEventNumber: 0, frames: ByteBuffer(bytes: corrupt)), id: 5)
        )
        guard case .error(let e6)? = try raw.response() else { Issue.record("no error for a corrupt event"); return }
        #expect(e6.code == .malformedEvent)
        raw.send(MessageCodec.frame(.listStreams, id: 6))
        guard case .streamList(let streams)? = try raw.response() else {
            Issue.record("connection did not go on"); return
        }
        #expect(streams.count == 1)

        // An oversized frame: an error, then the connection closes.
        raw.send([0x7F, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 7])
        guard case .error(let e7)? = try raw.response() else { Issue.record("no error for an oversized frame"); return }
        #expect(e7.code == .frameTooLarge)
        #expect(raw.receive() == nil)
        raw.close()

        // Garbage bytes on another connection.
        let garbage = try RawConnection(port: h.server.port)
        garbage.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        _ = garbage.receive()
        garbage.close()

        // Everyone else was served throughout.
        let ack = try await good.append(segment, frames: try frames(["still here"]))
        #expect(ack.firstOffset == 0)
        #expect(try await good.info(segment).length > 0)
        await good.close()
        await h.shutdown()
    }
}

@Suite("loop timers")
struct LoopTimersTests {
    @Test("deadlines run at or after their time, cancelled ones never, thousands of them cheaply")
    func deadlines() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let start = NIODeadline.now()
        // Each action records when it ran; every other one is cancelled before its time.
        let ran = try await loop.submit { () -> EventLoopFuture<[Int: Int64]> in
            let timers = LoopTimers.current(on: loop)
            #expect(LoopTimers.current(on: loop) === timers, "one set of timers per loop")
            let done = loop.makePromise(of: [Int: Int64].self)
            let times = NIOLoopBoundBox([Int: Int64](), eventLoop: loop)
            var tokens: [LoopTimers.Token] = []
            for i in 0..<2000 {
                tokens.append(
                    timers.schedule(in: .milliseconds(Int64(20 + i % 50))) {
                        times.value[i] = (NIODeadline.now() - start).nanoseconds
                    })
            }
            for i in stride(from: 1, to: 2000, by: 2) { timers.cancel(tokens[i]) }
            #expect(timers.count == 1000)
            timers.schedule(in: .milliseconds(200)) { done.succeed(times.value) }
            return done.futureResult
        }.flatMap { $0 }.get()
        #expect(ran.count == 1000, "the cancelled half never ran")
        for (i, at) in ran {
            #expect(i % 2 == 0)
            #expect(at >= Int64(20 + i % 50) * 1_000_000, "action \(i) ran early, at \(at) ns")
        }
        let left = try await loop.submit { LoopTimers.current(on: loop).count }.get()
        #expect(left == 0)
        try await group.shutdownGracefully()
    }
}
