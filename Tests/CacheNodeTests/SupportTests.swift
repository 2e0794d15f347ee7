import CacheCore
import Coalescing
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import Synchronization
import Testing
import WireProtocol
import Workloads

@testable import CacheNode
@testable import StreamModel

@Suite("node building blocks")
struct SupportTests {
    struct Boom: Error {}

    @Test(
        "SingleFlight: one job for many callers; a failure reaches them all; when every waiter leaves, the job is cancelled"
    )
    func singleFlight() async throws {
        let flights = SingleFlight<Int, Int>()
        let runs = Counter()
        let results = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await flights.run(1) {
                        runs.bump()
                        try await Task.sleep(for: .milliseconds(100))
                        return 42
                    }
                }
            }
            var all: [(Int, Bool)] = []
            for try await r in group { all.append(r) }
            return all
        }
        #expect(runs.value == 1 && results.allSatisfy { $0.0 == 42 })
        #expect(results.filter { !$0.1 }.count == 1, "one caller started it, the others joined")

        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<5 {
                group.addTask {
                    do {
                        _ = try await flights.run(2) {
                            try await Task.sleep(for: .milliseconds(50))
                            throw Boom()
                        }
                        return false
                    } catch { return error is Boom }
                }
            }
            var n = 0
            for await failed in group where failed { n += 1 }
            return n
        }
        #expect(failures == 5, "every waiter got the load's error")

        let cancelled = Counter()
        let waiter = Task {
            try await flights.run(3) {
                do {
                    try await Task.sleep(for: .seconds(10))
                } catch {
                    cancelled.bump()
                    throw error
                }
                return 0
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        _ = await waiter.result
        try await Task.sleep(for: .milliseconds(100))
        #expect(cancelled.value == 1, "the job stopped when its only waiter left")
        #expect(!flights.isRunning(3))
    }

    @Test("an owner waits for its appends in flight instead of reading their bytes from the store")
    func appendsInFlight() async throws {
        let name = try StreamName(parsing: "unit/settle")
        let seg = OwnedSegment(id: SegmentID(stream: name, number: 0), geometry: try BlockGeometry(blockSize: 1024))
        _ = seg.learn(SegmentInfo(segment: seg.id, startOffset: 0, length: 10, sealed: false))
        // Nothing in flight: no wait, whatever the target.
        let idle = ContinuousClock.now
        await seg.awaitAppends(reaching: 100, until: .now + .seconds(5))
        #expect(ContinuousClock.now - idle < .seconds(4), "no wait (the deadline was 5 s away)")
        // An append in flight: the wait ends when its acknowledged bytes bring the length to the target.
        seg.appendSent()
        let done = Counter()
        let waiter = Task {
            await seg.awaitAppends(reaching: 20, until: .now + .seconds(30))
            done.bump()
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(done.value == 0, "returned while the append was in flight")
        var bytes = ByteBufferAllocator().buffer(capacity: 10)
        bytes.writeRepeatingByte(7, count: 10)
        seg.extend(at: 10, bytes).wake.fire()
        await waiter.value
        #expect(seg.info?.length == 20 && done.value == 1)
        // An append that fails (no bytes) ends the wait too: then the caller reads the store. (The deadline is
        // far beyond the polling below, so only the append landing can end it.)
        let failed = Task {
            await seg.awaitAppends(reaching: 30, until: .now + .seconds(600))
            done.bump()
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(done.value == 1, "returned while the append was in flight")
        seg.appendLanded()
        for _ in 0..<600 where done.value < 2 { try await Task.sleep(for: .milliseconds(100)) }
        #expect(done.value == 2, "the wait did not end when the last append in flight landed")
        failed.cancel()
        // A deadline bounds the wait.
        seg.appendSent()
        let start = ContinuousClock.now
        await seg.awaitAppends(reaching: 30, until: .now + .milliseconds(200))
        #expect(ContinuousClock.now - start >= .milliseconds(150))
        seg.appendLanded()
    }

    @Test("ByteBudget: requests past the cap queue in order and fail with overloaded after the timeout")
    func byteBudget() async throws {
        let budget = ByteBudget(limit: 100)
        try await budget.acquire(80, timeout: .seconds(1))
        let queued = Task { try await budget.acquire(50, timeout: .seconds(5)) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(budget.used == 80, "the second request waits")
        budget.release(80)
        try await queued.value
        #expect(budget.used == 50)
        do {
            try await budget.acquire(60, timeout: .milliseconds(100))
            Issue.record("no overload past the cap")
        } catch {
            #expect(error.code == .overloaded)
        }
        budget.release(50)
        try await budget.acquire(60, timeout: .milliseconds(100))
        #expect(budget.used == 60)
    }

    @Test("a node's --trace-out replays in eddy sim's block format, with reader and kind columns")
    func accessTrace() async throws {
        let path = NSTemporaryDirectory() + "eddy-trace-\(UUID().uuidString).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let ring = try await NodeRing(count: 1) { $0.traceOut = path }
        let c = try await ring.client(0)
        let name = try StreamName(parsing: "trace/t")
        try await c.createStream(name, segments: 2)
        for s in 0..<2 {
            let segment = SegmentID(stream: name, number: UInt32(s))
            _ = try await c.append(
                segment, frames: try frames((0..<500).map { "event \($0) " + String(repeating: "q", count: 300) }),
                writerID: "w", firstEventNumber: 0)
            var offset: UInt64 = 0
            let length = try await c.info(segment).length
            while offset < length { offset += UInt64(try await c.read(segment, from: offset).data.readableBytes) }
        }
        await c.close()
        await ring.shutdown()
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let lines = text.split(separator: "\n")
        #expect(lines.first == "time,segment,block,size,reader,kind")
        #expect(lines.count > 4)
        #expect(lines.dropFirst().allSatisfy { $0.split(separator: ",").count == 6 })
        let trace = try TraceReader.load(path: path, format: .block)
        #expect(trace.ids.count == lines.count - 1)
        #expect(Set(trace.ids.map { BlockKey(rawValue: $0).segment }) == [0, 1])
    }
}

/// A count shared by concurrent tasks of a test.
final class Counter: Sendable {
    private let n = Mutex(0)
    func bump() { add(1) }
    func add(_ k: Int) { n.withLock { $0 += k } }
    var value: Int { n.withLock { $0 } }
}

@Suite("store read ledger")
struct LedgerTests {
    @Test("distinct bytes count each byte once; re-reads show as amplification; the oldest blocks are forgotten")
    func ledger() throws {
        let geometry = try BlockGeometry(blockSize: 100)
        let segment = SegmentID(stream: try StreamName(parsing: "l/x"), number: 0)
        let ledger = StoreReadLedger(limit: 3)
        ledger.record(segment, from: 0, count: 250, geometry: geometry)  // blocks 0, 1, 2 (half)
        ledger.record(segment, from: 250, count: 50, geometry: geometry)  // the rest of block 2, incrementally
        var s = ledger.summary
        #expect(s.requests == 2 && s.bytes == 300 && s.blocks == 3 && s.distinctBytes == 300)
        ledger.record(segment, from: 100, count: 100, geometry: geometry)  // block 1 again: read twice
        s = ledger.summary
        #expect(s.bytes == 400 && s.distinctBytes == 300)
        ledger.record(segment, from: 300, count: 100, geometry: geometry)  // block 3: block 0 is forgotten
        ledger.record(segment, from: 0, count: 100, geometry: geometry)  // so block 0 counts as new again
        s = ledger.summary
        #expect(s.blocks == 5 && s.distinctBytes == 500)
    }
}
