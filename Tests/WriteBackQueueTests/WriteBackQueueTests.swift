import EddyTestSupport
import Foundation
import Logging
import NIOCore
import ObjectStorage
import StoreClient
import StreamModel
import Synchronization
import Testing

@testable import WriteBackQueue

/// The broker running: journal writes and replay (in memory and on a real segment store), compaction and the
/// journal archive, workers, timeouts, the watchdog, periodic tasks, dead letters and redrive.
@Suite struct WriteBackQueueTests {
    final class ManualClock: Sendable {
        let now = Atomic<Int64>(1_000_000)
        func advance(_ ms: Int64) { now.add(ms, ordering: .relaxed) }
        var read: @Sendable () -> Int64 { { self.now.load(ordering: .relaxed) } }
    }

    static func quiet() -> Logger {
        var logger = Logger(label: "test.queue")
        logger.logLevel = .critical
        return logger
    }

    static func fastRetries(_ configuration: inout QueueConfiguration) {
        configuration.retryBase = .milliseconds(5)
        configuration.retryCap = .milliseconds(20)
    }

    @Test func enqueueLeaseAckAndReplay() async throws {
        let journal = MemoryJournalLog()
        let queue = try await WriteBackQueue.open(journal: journal, logger: Self.quiet())
        var ids: [MessageID] = []
        for i in 0..<10 {
            ids.append(try await queue.enqueue("flush", qos: .standard, payload: [UInt8(i)], attributes: ["i": "\(i)"]))
        }
        #expect(ids == Array(1...10))
        // Ack three, leave one leased (its consumer "dies" with the process), six untouched.
        for _ in 0..<3 {
            let lease = try await take(queue)
            try await lease.ack()
        }
        let abandoned = try await take(queue)
        let abandonedID = abandoned.message.id
        _ = consume abandoned
        #expect(queue.metrics().depth == 7)
        await queue.shutdown()

        let reopened = try await WriteBackQueue.open(journal: journal, logger: Self.quiet())
        #expect(reopened.metrics().depth == 7)
        var seen: [MessageID: QueueMessage] = [:]
        while let lease = await reopened.lease(wait: .milliseconds(200)) {
            seen[lease.message.id] = lease.message
            try await lease.ack()
        }
        #expect(Set(seen.keys) == Set(ids[3...]))
        #expect(seen[abandonedID]?.deliveries == 2, "the lease journaled before the crash counts")
        #expect(seen[ids[9]]?.attributes == ["i": "9"])
        // IDs continue after the replayed ones.
        #expect(try await reopened.enqueue("flush", payload: []) == 11)
        await reopened.shutdown()
    }

    @Test func workersRetryThenDeadLetterThenRedriveFinishes() async throws {
        var configuration = QueueConfiguration()
        Self.fastRetries(&configuration)
        configuration.maximumAttempts = 3
        let queue = try await WriteBackQueue.open(
            configuration: configuration, journal: MemoryJournalLog(), logger: Self.quiet())
        let broken = Atomic<Bool>(true)
        let attempts = Atomic<Int>(0)
        let done = Atomic<Int>(0)
        queue.handle("flush") { message in
            if message.payload == [0xEE] {
                attempts.add(1, ordering: .relaxed)
                if broken.load(ordering: .relaxed) {
                    throw ObjectStoreError.server(status: 503, code: "SlowDown", message: "")
                }
            }
            done.add(1, ordering: .relaxed)
        }
        queue.start(workers: 2)
        for i in 0..<20 { try await queue.enqueue("flush", payload: [UInt8(i)]) }
        let poison = try await queue.enqueue("flush", payload: [0xEE])
        try await waitUntil { queue.deadLetters().count == 1 && done.load(ordering: .relaxed) == 20 }
        #expect(attempts.load(ordering: .relaxed) == 3)
        let dead = try #require(queue.deadLetters(queue: "flush").first)
        #expect(dead.message.id == poison)
        #expect(dead.message.lastError.contains("3 attempts") && dead.message.lastError.contains("SlowDown"))
        #expect(queue.metrics().retries == 2)
        #expect(queue.metrics().totalDeadLetters == 1)
        // The fault is gone: redrive finishes the job with a fresh attempt count.
        broken.store(false, ordering: .relaxed)
        #expect(try await queue.redrive(queue: "flush") == 1)
        // The handler ran; the worker acks right after it.
        try await waitUntil { done.load(ordering: .relaxed) == 21 && queue.metrics().depth == 0 }
        #expect(queue.deadLetters().isEmpty)
        await queue.shutdown()
    }

    @Test func redriveIsRateLimitedAndCancellable() async throws {
        var configuration = QueueConfiguration()
        configuration.maximumAttempts = 1
        let queue = try await WriteBackQueue.open(
            configuration: configuration, journal: MemoryJournalLog(), logger: Self.quiet())
        for _ in 0..<6 { try await queue.enqueue("q", payload: []) }
        for _ in 0..<6 {
            let lease = try await take(queue)
            try await lease.nack(error: "no")
        }
        #expect(queue.deadLetters().count == 6)
        let started = ContinuousClock.now
        #expect(try await queue.redrive(ids: queue.deadLetters().prefix(3).map(\.message.id), perSecond: 10) == 3)
        #expect(ContinuousClock.now - started >= .milliseconds(180), "3 at 10/s take at least 2 gaps")
        let task = Task { try await queue.redrive(queue: "q", perSecond: 2) }
        try await waitUntil { queue.deadLetters().count < 3 }
        task.cancel()
        let redriven = try await task.value
        #expect(redriven >= 1 && redriven < 3)
        #expect(queue.deadLetters().count == 3 - redriven)
        #expect(try await queue.purge(queue: "q") == 3 - redriven)
        #expect(queue.deadLetters().isEmpty)
        await queue.shutdown()
    }

    @Test func aHangingHandlerIsCutByItsTimeout() async throws {
        var configuration = QueueConfiguration()
        Self.fastRetries(&configuration)
        configuration.handlerTimeout = .milliseconds(200)
        configuration.maximumAttempts = 2
        let queue = try await WriteBackQueue.open(
            configuration: configuration, journal: MemoryJournalLog(), logger: Self.quiet())
        queue.handle("q") { _ in
            // Ignores cancellation, like a storage call that hangs (without holding a thread). It hangs far longer
            // than the test: a loaded test process can starve the 200 ms timer for seconds, and a handler that
            // came back in 5 s once beat it and was acked.
            await withUnsafeContinuation { continuation in
                DispatchQueue.global().asyncAfter(deadline: .now() + 600) { continuation.resume() }
            }
        }
        queue.start(workers: 1)
        try await queue.enqueue("q", payload: [])
        try await waitUntil { queue.deadLetters().count == 1 }
        #expect(queue.deadLetters().first?.message.lastError.contains("timed out") == true)
        await queue.shutdown()
    }

    @Test func theWatchdogReplacesAWorkerThatStopsMakingProgress() async throws {
        let clock = ManualClock()
        var configuration = QueueConfiguration()
        configuration.handlerTimeout = .seconds(10)
        configuration.watchdogGrace = .seconds(5)
        let queue = try await WriteBackQueue.open(
            configuration: configuration, journal: MemoryJournalLog(), logger: Self.quiet(), clock: clock.read)
        queue.start(workers: 2)
        // Worker 0 reports itself busy; 16 s later (past timeout and grace) it has not finished.
        queue.setBusy(0, "stuck")
        clock.advance(14_000)
        queue.checkWorkers()
        #expect(queue.workerRestarts == 0)
        clock.advance(2_000)
        queue.checkWorkers()
        #expect(queue.workerRestarts == 1)
        #expect(queue.runtime.withLockedValue { $0.workers.count } == 2, "a replacement was started")
        // The replacement works.
        let ran = Atomic<Bool>(false)
        queue.handle("q") { _ in ran.store(true, ordering: .relaxed) }
        try await queue.enqueue("q", payload: [])
        try await waitUntil { ran.load(ordering: .relaxed) }
        await queue.shutdown()
    }

    @Test func periodicTasksRunOnTheWorkers() async throws {
        let queue = try await WriteBackQueue.open(journal: MemoryJournalLog(), logger: Self.quiet())
        let runs = Atomic<Int>(0)
        queue.every(.milliseconds(30), name: "flush-timer") { runs.add(1, ordering: .relaxed) }
        queue.start(workers: 1)
        try await waitUntil { runs.load(ordering: .relaxed) >= 3 }
        await queue.shutdown()
    }

    @Test func qosSharesUnderLoadThroughTheWorkers() async throws {
        var configuration = QueueConfiguration()
        configuration.quantumBytesPerWeight = 64 << 10
        let queue = try await WriteBackQueue.open(
            configuration: configuration, journal: MemoryJournalLog(), logger: Self.quiet())
        let served = Mutex<[QoSClass: Int]>([:])
        let total = Atomic<Int>(0)
        for qos in QoSClass.allCases {
            for _ in 0..<500 { try await queue.enqueue("q", qos: qos, payload: [qos.rawValue], cost: 8 << 10) }
        }
        queue.handle("q") { message in
            guard total.add(1, ordering: .relaxed).newValue <= 416 else { return }
            served.withLock { $0[message.qos, default: 0] += 1 }
        }
        queue.start(workers: 1)
        try await waitUntil { total.load(ordering: .relaxed) >= 416 }
        await queue.shutdown()
        let counts = served.withLock { $0 }
        // Weights 8:4:1, quanta of 64, 32 and 8 items of equal cost: 4 rounds of 104 items are 256, 128 and 32;
        // bulk is served though critical is backlogged.
        #expect(abs(Double(counts[.critical] ?? 0) / 256 - 1) < 0.1, "\(counts)")
        #expect(abs(Double(counts[.standard] ?? 0) / 128 - 1) < 0.1, "\(counts)")
        #expect(abs(Double(counts[.bulk] ?? 0) / 32 - 1) < 0.1, "\(counts)")
    }

    @Test func compactionSnapshotsRollsToTheArchiveAndTruncates() async throws {
        var configuration = QueueConfiguration()
        configuration.compactionThresholdBytes = 4 << 10
        let journal = MemoryJournalLog()
        let archive = try FileObjectStore(root: NSTemporaryDirectory() + "eddy-archive-" + UUID().uuidString)
        let queue = try await WriteBackQueue.open(
            configuration: configuration, journal: journal, archive: (archive, "journal/node-a"), logger: Self.quiet())
        for i in 0..<200 {
            try await queue.enqueue("flush", payload: Array(repeating: UInt8(i & 255), count: 40))
            if i % 4 != 0 {
                let lease = try await take(queue)
                try await lease.ack()
            }
        }
        // Rolled to the archive, then truncated.
        try await waitUntil {
            guard queue.rolledJournalSegments >= 1 else { return false }
            return ((try? await journal.bounds().start) ?? 0) > 0
        }
        let (start, end) = try await journal.bounds()
        let rolled = try await archive.listAll(prefix: "journal/node-a/")
        #expect(!rolled.isEmpty)
        #expect(
            rolled.allSatisfy { $0.key.hasSuffix(".jnl") && $0.key.utf8.count == "journal/node-a/".utf8.count + 24 })
        // The archived ranges decode as journal records.
        let first = try await archive.get(rolled[0].key)
        #expect(try JournalFrames.decode(first, base: 0).isEmpty == false)
        let live = queue.metrics().depth
        await queue.shutdown()
        #expect(end > start)
        let reopened = try await WriteBackQueue.open(journal: journal, logger: Self.quiet())
        #expect(reopened.metrics().depth == live)
        var count = 0
        while let lease = await reopened.lease(wait: .milliseconds(100)) {
            count += 1
            try await lease.ack()
        }
        #expect(count == live)
        await reopened.shutdown()
    }

    @Test func aSnapshotCutShortByACrashIsIgnored() async throws {
        let journal = MemoryJournalLog()
        let message = QueueMessage(id: 1, queue: "q", qos: .standard, payload: [], enqueuedAt: 0)
        _ = try await journal.append([JournalRecord.put(message, availableAt: 0, deadAt: 0).encoded()])
        // A snapshot that lost its end claims the state is empty: it must not replace the state.
        _ = try await journal.append([JournalRecord.snapshotBegin(nextID: 5).encoded()])
        let queue = try await WriteBackQueue.open(journal: journal, logger: Self.quiet())
        #expect(queue.metrics().depth == 1)
        await queue.shutdown()
    }

    @Test(arguments: ["bit flip", "cut tail"]) func aDamagedJournalFailsClosed(damage: String) async throws {
        let journal = MemoryJournalLog()
        let queue = try await WriteBackQueue.open(journal: journal, logger: Self.quiet())
        for i in 0..<20 { try await queue.enqueue("q", payload: [UInt8(i)]) }
        await queue.shutdown()
        var bytes = journal.bytes
        if damage == "bit flip" {
            bytes[bytes.count - 10] ^= 0x04
        } else {
            bytes.removeLast(7)
        }
        journal.bytes = bytes
        do {
            _ = try await WriteBackQueue.open(journal: journal, logger: Self.quiet())
            Issue.record("a broker opened on a damaged journal")
        } catch let error as QueueError {
            guard case .corruptJournal(let offset, _) = error else {
                Issue.record("expected corruptJournal, got \(error)")
                return
            }
            #expect(offset > 0 && offset < UInt64(bytes.count))
            #expect(error.description.contains("refusing to start"))
            #expect(error.description.contains("MemoryJournalLog: "), "the journal is named: \(error)")
        }
    }

    @Test func theJournalOnARealSegmentStore() async throws {
        let harness = try await Harness()
        let address = harness.address
        let stream = try StreamName(scope: "_eddy", stream: "queue-node-a")
        let connect: @Sendable () async throws -> StoreClient = { try await StoreClient.connect(to: address) }
        var configuration = QueueConfiguration()
        configuration.compactionThresholdBytes = 8 << 10
        let journal = try await StoreJournalLog(stream: stream, connect: connect)
        let queue = try await WriteBackQueue.open(configuration: configuration, journal: journal, logger: Self.quiet())
        var kept: Set<MessageID> = []
        for i in 0..<300 {
            let id = try await queue.enqueue(
                "flush", qos: i % 2 == 0 ? .standard : .bulk, payload: Array(repeating: 1, count: 64))
            let lease = try await take(queue)
            if i % 3 == 0 {
                kept.insert(lease.message.id)
                try await lease.nack(error: "kept for the test", retryAfter: .seconds(3600))
            } else {
                try await lease.ack()
            }
            _ = id
        }
        try await waitUntil { (try? await journal.bounds().start) ?? 0 > 0 }
        await queue.shutdown()
        // A new broker (a restarted node, or the node inheriting the segment) reads the same stream.
        let takeover = try await StoreJournalLog(stream: stream, connect: connect)
        let reopened = try await WriteBackQueue.open(
            configuration: configuration, journal: takeover, logger: Self.quiet())
        let metrics = reopened.metrics()
        #expect(metrics.depth == kept.count)
        #expect(metrics.lanes.values.allSatisfy { $0.delayed == $0.depth }, "the nacks' delays survive")
        let id = try await reopened.enqueue("flush", payload: [])
        #expect(id == 301)
        await reopened.shutdown()
        await harness.shutdown()
    }
}

/// The next lease of `queue` within a second, or a failure.
func take(_ queue: WriteBackQueue) async throws -> Lease {
    guard let lease = await queue.lease(wait: .seconds(1)) else { throw NoLease() }
    return lease
}

struct NoLease: Error {}

/// Polls `condition` until it holds, or fails after `timeout` (generous: a loaded `make test` starves the
/// cooperative pool for tens of seconds while the CPU-bound reference tests run).
func waitUntil(timeout: Duration = .seconds(120), _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !(await condition()) {
        if ContinuousClock.now > deadline { throw TimedOut() }
        try await Task.sleep(for: .milliseconds(10))
    }
}

struct TimedOut: Error {}
