import Testing

@testable import WriteBackQueue

/// The broker's state machine with a hand-moved clock: leases, expiry, backoff, budget, dead letters.
@Suite struct BrokerStateTests {
    func makeState(_ change: (inout QueueConfiguration) -> Void = { _ in }) -> BrokerState {
        var configuration = QueueConfiguration()
        change(&configuration)
        return BrokerState(configuration: configuration)
    }

    func enqueue(_ state: inout BrokerState, _ queue: String = "q", qos: QoSClass = .standard, now: Int64) throws
        -> MessageID
    {
        let (id, _) = try state.enqueue(
            queue: queue, qos: qos, payload: [1, 2, 3], attributes: ["k": "v"], cost: 10, delay: .zero, now: now)
        state.markDurable(id, now: now)
        return id
    }

    struct NothingReady: Error {}

    func take(_ state: inout BrokerState, now: Int64) throws -> BrokerState.Delivery {
        guard let (delivery, record) = state.lease(now: now) else { throw NothingReady() }
        #expect(record == .lease(delivery.message.id))
        return delivery
    }

    @Test func onlyDurableMessagesAreDelivered() throws {
        var state = makeState()
        let (id, record) = try state.enqueue(
            queue: "q", qos: .standard, payload: [], attributes: [:], cost: 1, delay: .zero, now: 0)
        guard case .put(let message, 0, 0) = record else {
            Issue.record("enqueue journals a put, got \(record)")
            return
        }
        #expect(message.id == id)
        #expect(state.lease(now: 0) == nil)
        state.markDurable(id, now: 0)
        #expect(try take(&state, now: 0).message.id == id)
    }

    @Test func anExpiredLeaseIsDeliveredAgainWithoutCountingAnAttempt() throws {
        var state = makeState()
        let id = try enqueue(&state, now: 0)
        let first = try take(&state, now: 0)
        #expect(state.lease(now: 1) == nil)
        #expect(state.tick(now: 29_999).isEmpty)
        let records = state.tick(now: 30_000)
        #expect(records == [.expire(id)])
        let second = try take(&state, now: 30_001)
        #expect(second.message.id == id)
        #expect(second.message.attempts == 0)
        #expect(second.message.expiries == 1)
        #expect(second.message.deliveries == 2)
        // The first consumer's lease is gone: its ack is refused.
        #expect(throws: QueueError.leaseLost(id)) { try state.ack(id, token: first.token) }
        #expect(try state.ack(id, token: second.token) == .ack(id))
        #expect(state.entries.isEmpty)
    }

    @Test func extendKeepsTheLeaseUpToTheMaximum() throws {
        var state = makeState { $0.maximumLeaseDuration = .seconds(100) }
        _ = try enqueue(&state, now: 0)
        let delivery = try take(&state, now: 0)
        #expect(try state.extend(delivery.message.id, token: delivery.token, by: .seconds(60), now: 20_000) == 80_000)
        #expect(state.tick(now: 79_000).isEmpty)
        #expect(try state.extend(delivery.message.id, token: delivery.token, by: .seconds(60), now: 79_000) == 100_000)
        #expect(state.tick(now: 100_000) == [.expire(delivery.message.id)])
    }

    @Test func nackBacksOffWithFullJitterThenDeadLettersAfterMaxAttempts() throws {
        var state = makeState {
            $0.maximumAttempts = 5
            $0.retryBase = .milliseconds(100)
            $0.retryCap = .milliseconds(1000)
        }
        var draws: [Double] = []
        state.random = { ceiling in ceiling }  // the top of the jitter range, to check the ceiling
        let id = try enqueue(&state, now: 0)
        var now: Int64 = 0
        for attempt in 1...4 {
            let delivery = try take(&state, now: now)
            let records = try state.nack(id, token: delivery.token, error: "boom \(attempt)", delay: nil, now: now)
            guard case .nack(id, attempt, let at, "boom \(attempt)") = records.first else {
                Issue.record("nack record: \(records)")
                return
            }
            let ceiling = min(1000, 100 << (attempt - 1))
            #expect(at - now == Int64(ceiling))
            draws.append(Double(at - now))
            #expect(state.lease(now: at - 1) == nil, "not before its backoff")
            _ = state.tick(now: at)
            now = at
        }
        #expect(draws == [100, 200, 400, 800])
        let last = try take(&state, now: now)
        let records = try state.nack(id, token: last.token, error: "boom 5", delay: nil, now: now)
        #expect(records.count == 2)
        guard case .dead(id, now, let reason) = records.last else {
            Issue.record("expected a dead record, got \(records)")
            return
        }
        #expect(reason.contains("5 attempts") && reason.contains("boom 5"))
        #expect(state.deadLetters(queue: "q").map(\.message.id) == [id])
        #expect(state.lease(now: now + 100_000) == nil)
        // Redrive: a fresh attempt count, delivered again.
        #expect(try state.redrive(id, now: now) == .redrive(id, availableAt: now))
        let again = try take(&state, now: now)
        #expect(again.message.attempts == 0)
        #expect(state.deadLetters(queue: nil).isEmpty)
    }

    @Test func jitterIsUniformBelowTheCeiling() throws {
        var state = makeState {
            $0.retryBase = .milliseconds(100)
            $0.retryCap = .seconds(10)
            $0.retryBudgetBurst = 10_000
        }
        var delays: [Int64] = []
        for _ in 0..<400 {
            let id = try enqueue(&state, now: 0)
            let delivery = try take(&state, now: 0)
            #expect(delivery.message.id == id)
            guard
                case .nack(_, _, let at, _) = try state.nack(id, token: delivery.token, error: "e", delay: nil, now: 0)
                    .first
            else { return }
            delays.append(at)
            state.entries[id] = nil
            state.scheduler.removeAll { _ in true }
        }
        #expect(delays.allSatisfy { $0 >= 0 && $0 <= 100 })
        #expect(delays.filter { $0 < 50 }.count > 100 && delays.filter { $0 >= 50 }.count > 100)
    }

    @Test func theRetryBudgetSpreadsRetriesOut() throws {
        var state = makeState {
            $0.retryBudgetPerSecond = 10
            $0.retryBudgetBurst = 5
            $0.retryBase = .milliseconds(1)
            $0.retryCap = .milliseconds(1)
        }
        state.random = { _ in 0 }
        var ids: [MessageID] = []
        for _ in 0..<25 { ids.append(try enqueue(&state, now: 0)) }
        var availableAt: [Int64] = []
        for _ in 0..<25 {
            let delivery = try take(&state, now: 0)
            if case .nack(_, _, let at, _) = try state.nack(
                delivery.message.id, token: delivery.token, error: "outage", delay: nil, now: 0
            ).first {
                availableAt.append(at)
            }
        }
        // 5 retries at once (the burst), then 10 a second: the 25th waits about 2 s.
        #expect(availableAt.filter { $0 == 0 }.count == 5)
        #expect(availableAt.sorted().last! >= 1_900 && availableAt.sorted().last! <= 2_100)
    }

    @Test func aPoisonMessageThatKillsItsConsumersDiesAfterMaxExpiries() throws {
        var state = makeState { $0.maximumExpiries = 3 }
        let id = try enqueue(&state, now: 0)
        var now: Int64 = 0
        for _ in 0..<3 {
            _ = try take(&state, now: now)
            now += 30_000
            _ = state.tick(now: now)
        }
        #expect(state.deadLetters(queue: nil).first?.message.id == id)
        #expect(state.deadLetters(queue: nil).first?.message.lastError.contains("expired 3 times") == true)
    }

    @Test func retentionMovesOldMessagesToTheDeadLettersWhichAreKeptLonger() throws {
        var state = makeState {
            $0.retention = .seconds(100)
            $0.deadLetterRetention = .seconds(1000)
        }
        let id = try enqueue(&state, now: 0)
        _ = state.tick(now: 50_000)
        #expect(state.deadLetters(queue: nil).isEmpty)
        let records = state.tick(now: 100_000)
        #expect(records.contains(.dead(id, at: 100_000, reason: "older than the queue's retention")))
        #expect(state.lease(now: 100_000) == nil)
        _ = state.tick(now: 1_000_000)
        #expect(state.entries[id] != nil, "dead letters outlive the queue's retention")
        #expect(state.tick(now: 1_100_000) == [.purge(id)])
    }

    @Test func limitsAndNames() throws {
        var state = makeState {
            $0.maximumPayloadBytes = 10
            $0.maximumMessages = 2
        }
        #expect(throws: QueueError.invalidQueueName("a b")) {
            _ = try state.enqueue(queue: "a b", qos: .bulk, payload: [], attributes: [:], cost: 1, delay: .zero, now: 0)
        }
        #expect(throws: QueueError.payloadTooLarge(11, 10)) {
            _ = try state.enqueue(
                queue: "q", qos: .bulk, payload: Array(repeating: 0, count: 11), attributes: [:], cost: 1,
                delay: .zero, now: 0)
        }
        _ = try enqueue(&state, now: 0)
        _ = try enqueue(&state, now: 0)
        #expect(throws: QueueError.full(2)) { _ = try enqueue(&state, now: 0) }
    }

    @Test func metricsPerQueueAndClass() throws {
        var state = makeState()
        _ = try enqueue(&state, "flush", qos: .critical, now: 0)
        _ = try enqueue(&state, "flush", qos: .bulk, now: 500)
        _ = try enqueue(&state, "backup", qos: .bulk, now: 1000)
        _ = try take(&state, now: 2000)
        let metrics = state.metrics(now: 2000)
        #expect(metrics.depth == 3)
        #expect(metrics.leased == 1)
        #expect(metrics.lanes[.init(queue: "flush", qos: .critical)]?.leased == 1)
        #expect(metrics.lanes[.init(queue: "flush", qos: .bulk)]?.oldestAgeMilliseconds == 1500)
        #expect(metrics.lanes[.init(queue: "backup", qos: .bulk)]?.ready == 1)
        #expect(metrics.enqueued == 3)
    }

    @Test func journalRecordsRoundTrip() throws {
        let message = QueueMessage(
            id: 42, queue: "flush", qos: .bulk, payload: [0, 255, 7], attributes: ["b": "2", "a": "1"], cost: 4 << 20,
            enqueuedAt: 1_700_000_000_000, attempts: 3, expiries: 1, deliveries: 5, lastError: "503 SlowDown")
        let records: [JournalRecord] = [
            .put(message, availableAt: 99, deadAt: 0), .put(message, availableAt: -1, deadAt: 12), .lease(1), .ack(2),
            .nack(3, attempts: 4, availableAt: 5, error: "é"), .expire(6), .dead(7, at: 8, reason: "r"),
            .redrive(9, availableAt: 10), .purge(11), .snapshotBegin(nextID: 12), .snapshotEnd,
        ]
        for record in records {
            #expect(try JournalRecord.decode(record.encoded()) == record)
        }
        #expect(throws: JournalDecodeError.self) { try JournalRecord.decode([77]) }
        #expect(throws: JournalDecodeError.self) { try JournalRecord.decode(Array(records[0].encoded().dropLast())) }
        #expect(throws: JournalDecodeError.self) { try JournalRecord.decode(records[3].encoded() + [0]) }
    }
}
