import HeapModule

/// BrokerState is the broker's state machine: messages, their schedule (deficit round robin for the ready
/// ones, a heap of the delayed), leases, the retry budget and dead letters. It does no I/O and reads no clock:
/// every call takes `now` (ms since 1970) and returns the journal records of what it changed, which the
/// caller writes in the same order. ``WriteBackQueue`` runs it under a lock; tests drive it with a fake clock.
struct BrokerState: Sendable {
    struct Lease: Sendable, Hashable {
        var token: UInt64
        var started: Int64
        var deadline: Int64
    }

    struct Entry: Sendable {
        var message: QueueMessage
        var availableAt: Int64
        /// Non-zero once the message is a dead letter: when it died.
        var deadAt: Int64 = 0
        /// Whether its enqueue record is durable; only durable messages are delivered.
        var durable: Bool
        var lease: Lease? = nil
        var isDead: Bool { deadAt != 0 }
    }

    struct Delayed: Comparable, Sendable {
        var at: Int64
        var id: MessageID
        static func < (a: Delayed, b: Delayed) -> Bool { (a.at, a.id) < (b.at, b.id) }
    }

    /// A delivery: the message and the token that proves the lease.
    struct Delivery: Sendable {
        var message: QueueMessage
        var token: UInt64
        var deadline: Int64
    }

    let configuration: QueueConfiguration
    var entries: [MessageID: Entry] = [:]
    var scheduler: DeficitRoundRobin<MessageID>
    var delayed = Heap<Delayed>()
    var leased: Set<MessageID> = []
    var nextID: MessageID = 1
    var nextToken: UInt64 = 1
    /// Retry budget tokens (a token bucket that may go into debt: a retry over budget waits for its token).
    var budgetTokens: Double
    var budgetUpdated: Int64 = 0
    var lastRetentionScan: Int64 = 0
    var random: @Sendable (Double) -> Double = { Double.random(in: 0...$0) }
    var counters = Counters()

    struct Counters: Sendable, Hashable {
        var enqueued = 0
        var acked = 0
        var retries = 0
        var expiries = 0
        var deadLettered = 0
        var redriven = 0
        var purged = 0
        /// Retries and dead letters per queue and class.
        var lanes: [QueueMetrics.LaneKey: QueueMetrics.LaneTotals] = [:]
    }

    init(configuration: QueueConfiguration) {
        self.configuration = configuration
        var quanta: [QoSClass: Int] = [:]
        var caps: [QoSClass: Int] = [:]
        for qos in QoSClass.allCases {
            quanta[qos] = configuration.weight(qos) * configuration.quantumBytesPerWeight
            caps[qos] = configuration.cap(qos)
        }
        scheduler = DeficitRoundRobin(quanta: quanta, caps: caps)
        budgetTokens = configuration.retryBudgetBurst
    }

    // MARK: - Enqueue

    /// Adds a message, not yet deliverable: ``markDurable(_:now:)`` schedules it once its record is durable.
    mutating func enqueue(
        queue: String, qos: QoSClass, payload: [UInt8], attributes: [String: String], cost: Int, delay: Duration,
        now: Int64
    ) throws(QueueError) -> (MessageID, JournalRecord) {
        try QueueError.validate(queue: queue)
        guard payload.count <= configuration.maximumPayloadBytes else {
            throw .payloadTooLarge(payload.count, configuration.maximumPayloadBytes)
        }
        guard entries.count < configuration.maximumMessages else { throw .full(entries.count) }
        let id = nextID
        nextID += 1
        let message = QueueMessage(
            id: id, queue: queue, qos: qos, payload: payload, attributes: attributes, cost: cost, enqueuedAt: now)
        let availableAt = now + max(0, delay.milliseconds)
        entries[id] = Entry(message: message, availableAt: availableAt, durable: false)
        counters.enqueued += 1
        return (id, .put(message, availableAt: availableAt, deadAt: 0))
    }

    /// The message's enqueue record is durable: it may be delivered.
    mutating func markDurable(_ id: MessageID, now: Int64) {
        guard entries[id] != nil, entries[id]!.durable == false else { return }
        entries[id]!.durable = true
        schedule(id, now: now)
    }

    /// Puts a live, unleased message where it belongs: ready (the scheduler) or delayed (the heap).
    mutating func schedule(_ id: MessageID, now: Int64) {
        guard let entry = entries[id], entry.durable, !entry.isDead, entry.lease == nil else { return }
        if entry.availableAt <= now {
            scheduler.push(id, qos: entry.message.qos, cost: entry.message.cost)
        } else {
            delayed.insert(Delayed(at: entry.availableAt, id: id))
        }
    }

    // MARK: - Leases

    /// The next message by deficit round robin, leased until `now` + the lease duration; nil when nothing is
    /// ready or every ready class is at its concurrency cap.
    mutating func lease(now: Int64) -> (Delivery, JournalRecord)? {
        while let (id, qos) = scheduler.pop() {
            guard var entry = entries[id], !entry.isDead, entry.lease == nil, entry.durable,
                entry.availableAt <= now
            else {
                scheduler.finished(qos)  // a stale entry (purged, dead, rescheduled): not a delivery
                continue
            }
            let token = nextToken
            nextToken += 1
            let lease = Lease(token: token, started: now, deadline: now + configuration.leaseDuration.milliseconds)
            entry.lease = lease
            entry.message.deliveries += 1
            entries[id] = entry
            leased.insert(id)
            return (Delivery(message: entry.message, token: token, deadline: lease.deadline), .lease(id))
        }
        return nil
    }

    /// The entry whose lease `token` is current, or ``QueueError/leaseLost(_:)``.
    func leasedEntry(_ id: MessageID, token: UInt64) throws(QueueError) -> Entry {
        guard let entry = entries[id], let lease = entry.lease, lease.token == token else { throw .leaseLost(id) }
        return entry
    }

    mutating func release(_ id: MessageID) {
        guard let qos = entries[id]?.message.qos, entries[id]?.lease != nil else { return }
        entries[id]!.lease = nil
        leased.remove(id)
        scheduler.finished(qos)
    }

    /// The work is done: the message is removed.
    mutating func ack(_ id: MessageID, token: UInt64) throws(QueueError) -> JournalRecord {
        _ = try leasedEntry(id, token: token)
        release(id)
        entries[id] = nil
        counters.acked += 1
        return .ack(id)
    }

    /// The attempt failed: the message is retried after `delay` (or full-jitter backoff, within the retry
    /// budget), or goes to the dead letters after ``QueueConfiguration/maximumAttempts``.
    mutating func nack(_ id: MessageID, token: UInt64, error: String, delay: Duration?, now: Int64) throws(QueueError)
        -> [JournalRecord]
    {
        var entry = try leasedEntry(id, token: token)
        release(id)
        entry = entries[id]!
        let attempts = entry.message.attempts + 1
        entries[id]!.message.attempts = attempts
        entries[id]!.message.lastError = error
        if attempts >= configuration.maximumAttempts {
            let reason = "failed \(attempts) attempts; last error: \(error)"
            return [.nack(id, attempts: attempts, availableAt: entry.availableAt, error: error), kill(id, reason, now)]
        }
        counters.retries += 1
        counters.lanes[QueueMetrics.LaneKey(of: entry.message), default: .init()].retries += 1
        var at = now + (delay?.milliseconds ?? backoff(attempts: attempts))
        at = max(at, budgetTime(now: now))
        entries[id]!.availableAt = at
        schedule(id, now: now)
        return [.nack(id, attempts: attempts, availableAt: at, error: error)]
    }

    /// Full jitter: uniform(0, min(cap, base x 2^(attempts - 1))) milliseconds.
    func backoff(attempts: Int) -> Int64 {
        let base = Double(configuration.retryBase.milliseconds)
        let cap = Double(configuration.retryCap.milliseconds)
        let ceiling = min(cap, base * Double(1 << min(max(attempts - 1, 0), 30)))
        return Int64(random(max(0, ceiling)))
    }

    /// Takes a retry token; returns when the retry may run (now, or later when the budget is in debt).
    mutating func budgetTime(now: Int64) -> Int64 {
        let rate = max(configuration.retryBudgetPerSecond, 0.001)
        if budgetUpdated != 0 {
            budgetTokens = min(
                configuration.retryBudgetBurst, budgetTokens + Double(max(0, now - budgetUpdated)) * rate / 1000)
        }
        budgetUpdated = now
        budgetTokens -= 1
        if budgetTokens >= 0 { return now }
        return now + Int64((-budgetTokens / rate) * 1000)
    }

    /// Extends a lease by `by` from now, up to the maximum lease duration from its start.
    mutating func extend(_ id: MessageID, token: UInt64, by: Duration, now: Int64) throws(QueueError) -> Int64 {
        let entry = try leasedEntry(id, token: token)
        let lease = entry.lease!
        let deadline = min(now + by.milliseconds, lease.started + configuration.maximumLeaseDuration.milliseconds)
        entries[id]!.lease!.deadline = max(lease.deadline, deadline)
        return entries[id]!.lease!.deadline
    }

    /// Moves a message to the dead letters.
    mutating func kill(_ id: MessageID, _ reason: String, _ now: Int64) -> JournalRecord {
        release(id)
        entries[id]!.deadAt = now
        entries[id]!.message.lastError = reason
        counters.deadLettered += 1
        counters.lanes[QueueMetrics.LaneKey(of: entries[id]!.message), default: .init()].deadLettered += 1
        return .dead(id, at: now, reason: reason)
    }

    // MARK: - Time

    /// Promotes delayed messages that are due, expires overdue leases, applies retention.
    mutating func tick(now: Int64) -> [JournalRecord] {
        var records: [JournalRecord] = []
        while let first = delayed.min, first.at <= now {
            delayed.removeMin()
            if let entry = entries[first.id], entry.availableAt == first.at { schedule(first.id, now: now) }
        }
        for id in leased where entries[id]!.lease!.deadline <= now {
            release(id)
            entries[id]!.message.expiries += 1
            counters.expiries += 1
            records.append(.expire(id))
            if entries[id]!.message.expiries >= configuration.maximumExpiries {
                let reason = "lease expired \(entries[id]!.message.expiries) times (consumers died or overran)"
                records.append(kill(id, reason, now))
            } else {
                entries[id]!.availableAt = now
                schedule(id, now: now)
            }
        }
        if now - lastRetentionScan >= 10_000 {
            lastRetentionScan = now
            records += applyRetention(now: now)
        }
        return records
    }

    mutating func applyRetention(now: Int64) -> [JournalRecord] {
        var records: [JournalRecord] = []
        let keep = configuration.retention.milliseconds
        let keepDead = configuration.deadLetterRetention.milliseconds
        for (id, entry) in entries {
            if entry.isDead {
                if now - entry.deadAt >= keepDead {
                    entries[id] = nil
                    counters.purged += 1
                    records.append(.purge(id))
                }
            } else if entry.lease == nil && entry.durable && now - entry.message.enqueuedAt >= keep {
                scheduler.removeAll { $0 == id }
                records.append(kill(id, "older than the queue's retention", now))
            }
        }
        return records
    }

    // MARK: - Dead letters

    /// Dead letters of `queue` (all queues when nil), oldest death first.
    func deadLetters(queue: String?) -> [(message: QueueMessage, deadAt: Int64)] {
        entries.values.filter { $0.isDead && (queue == nil || $0.message.queue == queue) }
            .sorted { ($0.deadAt, $0.message.id) < ($1.deadAt, $1.message.id) }
            .map { ($0.message, $0.deadAt) }
    }

    /// Sends a dead letter back to its queue with a fresh attempt count.
    mutating func redrive(_ id: MessageID, now: Int64) throws(QueueError) -> JournalRecord {
        guard let entry = entries[id], entry.isDead else { throw .notFound(id) }
        entries[id]!.deadAt = 0
        entries[id]!.message.attempts = 0
        entries[id]!.message.expiries = 0
        entries[id]!.availableAt = now
        counters.redriven += 1
        schedule(id, now: now)
        return .redrive(id, availableAt: now)
    }

    /// Deletes a dead letter.
    mutating func purge(_ id: MessageID) throws(QueueError) -> JournalRecord {
        guard let entry = entries[id], entry.isDead else { throw .notFound(id) }
        entries[id] = nil
        counters.purged += 1
        return .purge(id)
    }

    // MARK: - Journal

    /// The whole state as journal records: a snapshot that replaces everything before it.
    func snapshot() -> [JournalRecord] {
        var records: [JournalRecord] = [.snapshotBegin(nextID: nextID)]
        for id in entries.keys.sorted() {
            let entry = entries[id]!
            records.append(.put(entry.message, availableAt: entry.availableAt, deadAt: entry.deadAt))
        }
        records.append(.snapshotEnd)
        return records
    }

    /// Applies one replayed record to `entries` (a snapshot's records go to a shadow until its end).
    static func apply(_ record: JournalRecord, to entries: inout [MessageID: Entry], nextID: inout MessageID) {
        switch record {
        case .put(let message, let availableAt, let deadAt):
            entries[message.id] = Entry(message: message, availableAt: availableAt, deadAt: deadAt, durable: true)
            nextID = max(nextID, message.id + 1)
        case .lease(let id): entries[id]?.message.deliveries += 1
        case .ack(let id), .purge(let id): entries[id] = nil
        case .nack(let id, let attempts, let availableAt, let error):
            entries[id]?.message.attempts = attempts
            entries[id]?.availableAt = availableAt
            entries[id]?.message.lastError = error
        case .expire(let id):
            entries[id]?.message.expiries += 1
        case .dead(let id, let at, let reason):
            entries[id]?.deadAt = at
            entries[id]?.message.lastError = reason
        case .redrive(let id, let availableAt):
            entries[id]?.deadAt = 0
            entries[id]?.message.attempts = 0
            entries[id]?.message.expiries = 0
            entries[id]?.availableAt = availableAt
        case .snapshotBegin, .snapshotEnd: break
        }
    }

    /// A state rebuilt from replayed entries: every live message scheduled (leases are gone with the process).
    mutating func restore(entries restored: [MessageID: Entry], nextID restoredNext: MessageID, now: Int64) {
        entries = restored
        nextID = max(nextID, restoredNext)
        for id in entries.keys.sorted() { schedule(id, now: now) }
    }

    // MARK: - Metrics

    func metrics(now: Int64) -> QueueMetrics {
        var lanes: [QueueMetrics.LaneKey: QueueMetrics.Lane] = [:]
        var dead: [String: Int] = [:]
        for entry in entries.values {
            let message = entry.message
            if entry.isDead {
                dead[message.queue, default: 0] += 1
                continue
            }
            let key = QueueMetrics.LaneKey(of: message)
            var lane = lanes[key] ?? QueueMetrics.Lane()
            if entry.lease != nil {
                lane.leased += 1
            } else if entry.availableAt > now {
                lane.delayed += 1
            } else {
                lane.ready += 1
            }
            lane.oldestAgeMilliseconds = max(lane.oldestAgeMilliseconds, now - message.enqueuedAt)
            lanes[key] = lane
        }
        return QueueMetrics(lanes: lanes, deadLetters: dead, counters: counters)
    }
}

/// QueueMetrics is a snapshot of the broker: depth per queue and class, oldest age, leases, dead letters and
/// the lifetime counters.
public struct QueueMetrics: Sendable, Hashable {
    /// A queue and class.
    public struct LaneKey: Sendable, Hashable, Comparable {
        /// The queue's name.
        public var queue: String
        /// The class.
        public var qos: QoSClass
        public static func < (a: LaneKey, b: LaneKey) -> Bool { (a.queue, a.qos.rawValue) < (b.queue, b.qos.rawValue) }
    }

    /// One queue and class's figures.
    public struct Lane: Sendable, Hashable {
        /// Messages that may be delivered now.
        public var ready = 0
        /// Messages waiting for a delay or backoff.
        public var delayed = 0
        /// Messages leased to a consumer.
        public var leased = 0
        /// The age of the oldest live message, in milliseconds.
        public var oldestAgeMilliseconds: Int64 = 0
        /// Ready, delayed and leased.
        public var depth: Int { ready + delayed + leased }
    }

    /// Lifetime counters of one queue and class.
    public struct LaneTotals: Sendable, Hashable {
        /// Retries scheduled after a failed attempt.
        public var retries = 0
        /// Messages moved to the dead-letter queue.
        public var deadLettered = 0
    }

    /// Figures per queue and class (only those with live messages).
    public var lanes: [LaneKey: Lane]
    /// Retries and dead letters per queue and class, since the process started.
    public var laneTotals: [LaneKey: LaneTotals]
    /// Dead letters per queue.
    public var deadLetters: [String: Int]
    /// Lifetime counters (since the process started).
    public var enqueued: Int
    /// Messages acked.
    public var acked: Int
    /// Retries scheduled after a failed attempt.
    public var retries: Int
    /// Leases that expired.
    public var expiries: Int
    /// Messages moved to a dead-letter queue.
    public var deadLettered: Int

    init(lanes: [LaneKey: Lane], deadLetters: [String: Int], counters: BrokerState.Counters) {
        self.lanes = lanes
        self.deadLetters = deadLetters
        laneTotals = counters.lanes
        enqueued = counters.enqueued
        acked = counters.acked
        retries = counters.retries
        expiries = counters.expiries
        deadLettered = counters.deadLettered
    }

    /// Live messages over all queues.
    public var depth: Int { lanes.values.reduce(0) { $0 + $1.depth } }
    /// Leases in flight over all queues.
    public var leased: Int { lanes.values.reduce(0) { $0 + $1.leased } }
    /// Dead letters over all queues.
    public var totalDeadLetters: Int { deadLetters.values.reduce(0, +) }
}

extension QueueMetrics.LaneKey {
    /// The lane of `message`.
    init(of message: QueueMessage) { self.init(queue: message.queue, qos: message.qos) }
}
