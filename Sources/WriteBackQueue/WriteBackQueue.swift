import Logging
import NIOConcurrencyHelpers
import NIOCore
import ObjectStorage
import StreamModel
import Synchronization

/// WriteBackQueue is the broker inside each node that orchestrates write-back: named queues of messages with
/// QoS classes served by deficit round robin, leases with a visibility timeout (at-least-once), retries with
/// full-jitter backoff under a global retry budget, dead letters after ``QueueConfiguration/maximumAttempts``,
/// a durable journal (a stream of the segment store) replayed on restart and compacted, a scheduler of periodic
/// tasks, and workers with per-request timeouts and a watchdog.
///
/// Durability: ``enqueue(_:qos:payload:attributes:cost:delay:)`` returns only once the message's journal record
/// is durable, and only durable messages are delivered. Acks, nacks and leases are journaled in order but not
/// waited for: one lost in a crash makes the message come back (a duplicate, which at-least-once allows).
///
/// Consumers either register a handler per queue and ``start(workers:)`` the workers, or take leases
/// themselves with ``lease(wait:)``. A ``Lease`` is `~Copyable`: it is acked or nacked once, which the compiler
/// checks.
public final class WriteBackQueue: Sendable {
    /// A handler does a message's work; throwing fails the attempt (the message is retried or dead-lettered).
    public typealias Handler = @Sendable (QueueMessage) async throws -> Void

    /// The configuration it runs with.
    public let configuration: QueueConfiguration
    let state: Mutex<BrokerState>
    let pipe: JournalPipe
    let journal: any JournalLog
    let archive: (store: any ObjectStore, prefix: String)?
    let logger: Logger
    let clock: @Sendable () -> Int64
    let wakeup = Signal()
    let runtime = NIOLockedValueBox(Runtime())

    struct Runtime {
        var handlers: [String: Handler] = [:]
        var periodic: [String: PeriodicTask] = [:]
        var workers: [Int: WorkerSlot] = [:]
        var nextWorker = 0
        var background: [Task<Void, Never>] = []
        var writer: Task<Void, Never>?
        var stopped = false
        var workerRestarts = 0
        var journalStart: UInt64 = 0
        var bytesSinceSnapshot: UInt64 = 0
        var compacting = false
        var rolledSegments = 0
    }

    struct PeriodicTask {
        var interval: Duration
        var nextRun: Int64
        var running = false
        var body: @Sendable () async throws -> Void
    }

    struct WorkerSlot {
        var task: Task<Void, Never>
        var busySince: Int64?
        var working: String = ""
    }

    init(
        configuration: QueueConfiguration, journal: any JournalLog, archive: (any ObjectStore, String)?,
        logger: Logger, clock: @escaping @Sendable () -> Int64, state: BrokerState
    ) {
        self.configuration = configuration
        self.journal = journal
        self.archive = archive.map { (store: $0.0, prefix: $0.1) }
        self.logger = logger
        self.clock = clock
        self.state = Mutex(state)
        self.pipe = JournalPipe()
    }

    /// Opens a broker on `journal`: replays it (a snapshot and the records after it), then starts the journal
    /// writer and the timer. Workers start with ``start(workers:)``.
    /// - Parameters:
    ///   - configuration: the knobs.
    ///   - journal: where the journal lives.
    ///   - archive: where compacted journal ranges are rolled (object store and key prefix), or nil.
    ///   - logger: events (dead letters, watchdog restarts, journal rolls).
    ///   - clock: wall-clock milliseconds (tests move time by hand).
    /// - Throws: ``QueueError/corruptJournal(offset:reason:)`` when a record fails its check: the broker does not
    ///   start on a journal it cannot read whole (fail closed); ``QueueError/journal(_:)`` when it cannot be read.
    public static func open(
        configuration: QueueConfiguration = QueueConfiguration(), journal: any JournalLog,
        archive: (any ObjectStore, String)? = nil, logger: Logger = Logger(label: "eddy.queue"),
        clock: @escaping @Sendable () -> Int64 = { WallClock.milliseconds() }
    ) async throws -> WriteBackQueue {
        let (start, end) = try await journal.bounds()
        var entries: [MessageID: BrokerState.Entry] = [:]
        var nextID: MessageID = 1
        var shadow: [MessageID: BrokerState.Entry]? = nil
        var shadowNext: MessageID = 1
        var offset = start
        var records = 0
        while offset < end {
            let chunk = try await journal.read(from: offset, maxBytes: 1 << 20)
            if chunk.readableBytes == 0 {
                throw QueueError.corruptJournal(offset: offset, reason: "the journal ends before its length \(end)")
            }
            for (_, record) in try JournalFrames.decode(chunk, base: offset, journal: journal.name) {
                records += 1
                switch record {
                case .snapshotBegin(let next):
                    shadow = [:]
                    shadowNext = next
                case .snapshotEnd:
                    if let complete = shadow {
                        entries = complete
                        nextID = max(nextID, shadowNext)
                    }
                    shadow = nil
                default:
                    if shadow != nil {
                        BrokerState.apply(record, to: &shadow!, nextID: &shadowNext)
                    } else {
                        BrokerState.apply(record, to: &entries, nextID: &nextID)
                    }
                }
            }
            offset += UInt64(chunk.readableBytes)
        }
        var state = BrokerState(configuration: configuration)
        state.restore(entries: entries, nextID: nextID, now: clock())
        let queue = WriteBackQueue(
            configuration: configuration, journal: journal, archive: archive, logger: logger, clock: clock,
            state: state)
        queue.runtime.withLockedValue {
            $0.journalStart = start
            $0.bytesSinceSnapshot = end - start
        }
        if records > 0 {
            logger.info(
                "queue journal replayed",
                metadata: ["records": "\(records)", "messages": "\(entries.count)", "bytes": "\(end - start)"])
        }
        queue.startBackground()
        return queue
    }

    // MARK: - Producing

    /// Enqueues a message; returns once its journal record is durable.
    /// - Parameters:
    ///   - queue: the queue's name (letters, digits, `.`, `_`, `-`; at most 64).
    ///   - qos: its class.
    ///   - payload: the work's description, at most ``QueueConfiguration/maximumPayloadBytes``.
    ///   - attributes: free-form attributes.
    ///   - cost: bytes of work, for the scheduler's fair shares (a flush task: its block's size).
    ///   - delay: not delivered before this.
    /// - Returns: the message's ID.
    /// - Throws: ``QueueError``: a bad name, a payload over the limit, a full broker, a journal that cannot be
    ///   written, shutdown.
    @discardableResult
    public func enqueue(
        _ queue: String, qos: QoSClass = .standard, payload: [UInt8], attributes: [String: String] = [:],
        cost: Int = 1, delay: Duration = .zero
    ) async throws(QueueError) -> MessageID {
        if runtime.withLockedValue({ $0.stopped }) { throw .shutDown }
        let now = clock()
        let (id, sequence) = try state.withLock { (state) throws(QueueError) -> (MessageID, UInt64) in
            let (id, record) = try state.enqueue(
                queue: queue, qos: qos, payload: payload, attributes: attributes, cost: cost, delay: delay, now: now)
            return (id, pipe.push([record], enqueued: [id]))
        }
        try await pipe.waitDurable(sequence)
        return id
    }

    // MARK: - Consuming

    /// Takes the next message by deficit round robin, waiting up to `wait` for one.
    /// - Returns: a lease, or nil when nothing came in time.
    public func lease(wait: Duration = .zero) async -> Lease? {
        let deadline = ContinuousClock.now + wait
        while true {
            if runtime.withLockedValue({ $0.stopped }) { return nil }
            if let delivery = takeDelivery() {
                return Lease(
                    message: delivery.message, token: delivery.token, deadline: delivery.deadline, broker: self)
            }
            let left = deadline - ContinuousClock.now
            if left <= .zero { return nil }
            await wakeup.wait(upTo: min(left, .milliseconds(100)))
        }
    }

    func takeDelivery() -> BrokerState.Delivery? {
        let now = clock()
        return state.withLock { state in
            guard let (delivery, record) = state.lease(now: now) else { return nil }
            _ = pipe.push([record])
            return delivery
        }
    }

    func ack(_ id: MessageID, token: UInt64) throws(QueueError) {
        try state.withLock { (state) throws(QueueError) in
            _ = pipe.push([try state.ack(id, token: token)])
        }
        wakeup.signal()
    }

    func nack(_ id: MessageID, token: UInt64, error: String, delay: Duration?) throws(QueueError) {
        let now = clock()
        let records = try state.withLock { (state) throws(QueueError) -> [JournalRecord] in
            let records = try state.nack(id, token: token, error: error, delay: delay, now: now)
            _ = pipe.push(records)
            return records
        }
        for case .dead(let id, _, let reason) in records {
            logger.warning("message dead-lettered", metadata: ["id": "\(id)", "reason": "\(reason)"])
        }
        wakeup.signal()
    }

    func extend(_ id: MessageID, token: UInt64, by: Duration) throws(QueueError) -> Int64 {
        let now = clock()
        return try state.withLock { (state) throws(QueueError) -> Int64 in
            try state.extend(id, token: token, by: by, now: now)
        }
    }

    // MARK: - Workers

    /// Registers the handler of `queue`'s messages, run by the workers.
    public func handle(_ queue: String, _ handler: @escaping Handler) {
        runtime.withLockedValue { $0.handlers[queue] = handler }
    }

    /// Registers a periodic task (flush timers, retention, journal roll), run by the same workers every
    /// `interval` (the next run starts `interval` after the previous one ended).
    public func every(_ interval: Duration, name: String, _ body: @escaping @Sendable () async throws -> Void) {
        let next = clock() + interval.milliseconds
        runtime.withLockedValue { $0.periodic[name] = PeriodicTask(interval: interval, nextRun: next, body: body) }
    }

    /// Starts `workers` worker tasks and their watchdog.
    public func start(workers: Int) {
        for _ in 0..<max(1, workers) { addWorker() }
        let watchdog = Task { [weak self] in
            while let self, !Task.isCancelled, !self.runtime.withLockedValue({ $0.stopped }) {
                self.checkWorkers()
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        runtime.withLockedValue { $0.background.append(watchdog) }
    }

    func addWorker() {
        runtime.withLockedValue { runtime in
            let number = runtime.nextWorker
            runtime.nextWorker += 1
            let task = Task { [weak self] () -> Void in await self?.workerLoop(number) }
            runtime.workers[number] = WorkerSlot(task: task)
        }
    }

    /// Replaces workers busy for longer than the handler timeout and the grace: a worker stuck in a call that
    /// ignores cancellation. Its message's lease expires and it is delivered again.
    func checkWorkers() {
        let now = clock()
        let limit = (configuration.handlerTimeout + configuration.watchdogGrace).milliseconds
        let stuck: [(Int, String)] = runtime.withLockedValue { runtime in
            var stuck: [(Int, String)] = []
            for (number, slot) in runtime.workers {
                if let since = slot.busySince, now - since > limit {
                    slot.task.cancel()
                    runtime.workers[number] = nil
                    runtime.workerRestarts += 1
                    stuck.append((number, slot.working))
                }
            }
            return stuck
        }
        for (number, working) in stuck {
            logger.error(
                "watchdog: worker made no progress, replaced", metadata: ["worker": "\(number)", "on": "\(working)"])
            addWorker()
        }
    }

    func setBusy(_ number: Int, _ what: String?) {
        let now = clock()
        runtime.withLockedValue {
            $0.workers[number]?.busySince = what == nil ? nil : now
            $0.workers[number]?.working = what ?? ""
        }
    }

    func workerLoop(_ number: Int) async {
        while !Task.isCancelled, !runtime.withLockedValue({ $0.stopped || $0.workers[number] == nil }) {
            if let (name, body) = duePeriodic() {
                setBusy(number, "periodic \(name)")
                let outcome = await runBounded { try await body() }
                if case .failure(let error) = outcome {
                    logger.warning("periodic task failed", metadata: ["task": "\(name)", "error": "\(error)"])
                }
                finishPeriodic(name)
                setBusy(number, nil)
                continue
            }
            guard let lease = await lease(wait: .milliseconds(50)) else { continue }
            let queueName = lease.message.queue
            let handler = runtime.withLockedValue { $0.handlers[queueName] }
            guard let handler else {
                try? await lease.nack(error: "no handler for queue '\(queueName)'", retryAfter: .seconds(1))
                continue
            }
            setBusy(number, "message \(lease.message.id) of \(lease.message.queue)")
            let message = lease.message
            let outcome = await runBounded { try await handler(message) }
            setBusy(number, nil)
            switch outcome {
            case .success: try? await lease.ack()
            case .failure(let error): try? await lease.nack(error: "\(error)")
            }
        }
    }

    /// Runs `body` with the handler timeout. On timeout the body's task is cancelled and abandoned (it may
    /// ignore cancellation; the worker does not wait for it).
    func runBounded(_ body: @escaping @Sendable () async throws -> Void) async -> Result<Void, any Error> {
        let timeout = configuration.handlerTimeout
        let outcome = await withAbandoningTimeout(timeout) { () -> Result<Void, any Error> in
            do {
                try await body()
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        return outcome ?? .failure(QueueError.handlerTimedOut("ran over \(timeout)"))
    }

    func duePeriodic() -> (String, @Sendable () async throws -> Void)? {
        let now = clock()
        return runtime.withLockedValue { runtime in
            for (name, task) in runtime.periodic.sorted(by: { $0.key < $1.key })
            where !task.running && task.nextRun <= now {
                runtime.periodic[name]!.running = true
                return (name, task.body)
            }
            return nil
        }
    }

    func finishPeriodic(_ name: String) {
        let now = clock()
        runtime.withLockedValue {
            guard let interval = $0.periodic[name]?.interval else { return }
            $0.periodic[name]!.running = false
            $0.periodic[name]!.nextRun = now + interval.milliseconds
        }
    }

    /// The live (not dead) messages of `queue`, by ID: what is queued, delayed or leased.
    public func liveMessages(queue: String) -> [QueueMessage] {
        state.withLock { state in
            state.entries.values.filter { !$0.isDead && $0.message.queue == queue }.map(\.message).sorted {
                $0.id < $1.id
            }
        }
    }

    // MARK: - Dead letters

    /// The dead letters of `queue` (every queue when nil), oldest first, with when each died.
    public func deadLetters(queue: String? = nil) -> [(message: QueueMessage, deadAt: Int64)] {
        state.withLock { $0.deadLetters(queue: queue) }
    }

    /// Sends dead letters back to their queues with a fresh attempt count, at most `perSecond` a second; stops
    /// early when the calling task is cancelled.
    /// - Parameters:
    ///   - ids: the dead letters to redrive; nil for all of `queue`'s (or every queue's).
    ///   - queue: which queue's dead letters, when `ids` is nil.
    ///   - perSecond: the rate limit.
    /// - Returns: how many were redriven.
    @discardableResult
    public func redrive(ids: [MessageID]? = nil, queue: String? = nil, perSecond: Double = 100) async throws(QueueError)
        -> Int
    {
        let targets = ids ?? deadLetters(queue: queue).map(\.message.id)
        var done = 0
        let gap = Duration.nanoseconds(Int64(1e9 / max(perSecond, 0.001)))
        for id in targets {
            if Task.isCancelled { break }
            let now = clock()
            let sequence = try state.withLock { (state) throws(QueueError) -> UInt64 in
                pipe.push([try state.redrive(id, now: now)])
            }
            try await pipe.waitDurable(sequence)
            wakeup.signal()
            done += 1
            if done < targets.count { try? await Task.sleep(for: gap) }
        }
        if done > 0 { logger.info("dead letters redriven", metadata: ["count": "\(done)"]) }
        return done
    }

    /// Deletes dead letters (`ids`, or all of `queue`'s, or all). Returns how many.
    @discardableResult
    public func purge(ids: [MessageID]? = nil, queue: String? = nil) async throws(QueueError) -> Int {
        let targets = ids ?? deadLetters(queue: queue).map(\.message.id)
        var sequence: UInt64 = 0
        for id in targets {
            sequence = try state.withLock { (state) throws(QueueError) -> UInt64 in pipe.push([try state.purge(id)]) }
        }
        if !targets.isEmpty { try await pipe.waitDurable(sequence) }
        return targets.count
    }

    // MARK: - Metrics

    /// Depth per queue and class, oldest ages, leases, dead letters and counters, now.
    public func metrics() -> QueueMetrics {
        let now = clock()
        return state.withLock { $0.metrics(now: now) }
    }

    /// Workers the watchdog replaced since start.
    public var workerRestarts: Int { runtime.withLockedValue { $0.workerRestarts } }

    /// Journal ranges rolled to the archive since start.
    public var rolledJournalSegments: Int { runtime.withLockedValue { $0.rolledSegments } }

}

/// Lease is one delivery of a message: ack it when the work is done, nack it when it failed. It is
/// `~Copyable`, so it is acked or nacked once; dropping it without either leaves the message to come back when
/// the visibility timeout ends.
public struct Lease: ~Copyable, Sendable {
    /// The message.
    public let message: QueueMessage
    let token: UInt64
    /// When the lease ends unless extended, ms since 1970.
    public private(set) var deadline: Int64
    let broker: WriteBackQueue

    init(message: QueueMessage, token: UInt64, deadline: Int64, broker: WriteBackQueue) {
        self.message = message
        self.token = token
        self.deadline = deadline
        self.broker = broker
    }

    /// The work is done: the message is removed.
    /// - Throws: ``QueueError/leaseLost(_:)`` when the lease expired meanwhile (the work may be done twice).
    public consuming func ack() async throws(QueueError) {
        try broker.ack(message.id, token: token)
    }

    /// The attempt failed: the message is retried after `retryAfter` (or backoff), or dead-lettered.
    public consuming func nack(error: String, retryAfter: Duration? = nil) async throws(QueueError) {
        try broker.nack(message.id, token: token, error: error, delay: retryAfter)
    }

    /// Extends the lease to `by` from now (up to the maximum lease duration from its start).
    public mutating func extend(by: Duration) async throws(QueueError) {
        deadline = try broker.extend(message.id, token: token, by: by)
    }
}
