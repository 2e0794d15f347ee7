/// QoSClass is a message's quality-of-service class. Classes share the workers by deficit round robin in
/// proportion to their weights (``QueueConfiguration/weights``), so none starves.
public enum QoSClass: UInt8, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    /// Work that must not wait (a sealed segment's last block, journal rolls).
    case critical = 0
    /// Ordinary work (full blocks).
    case standard = 1
    /// Background work (backups, exports, idle blocks).
    case bulk = 2

    public var description: String {
        switch self {
        case .critical: "critical"
        case .standard: "standard"
        case .bulk: "bulk"
        }
    }

    /// The class named `name` (`critical`, `standard`, `bulk`), or nil.
    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = match
    }

    public static func < (a: QoSClass, b: QoSClass) -> Bool { a.rawValue < b.rawValue }
}

/// A message's identity, unique within one broker's journal.
public typealias MessageID = UInt64

/// QueueMessage is one unit of work: what a consumer receives with its lease.
public struct QueueMessage: Sendable, Hashable {
    /// The message's ID.
    public var id: MessageID
    /// The queue it was enqueued on.
    public var queue: String
    /// Its class.
    public var qos: QoSClass
    /// What the work is (a flush task's segment and range, say); at most ``QueueConfiguration/maximumPayloadBytes``.
    public var payload: [UInt8]
    /// Free-form attributes (sorted by key when journaled).
    public var attributes: [String: String]
    /// Its cost in bytes for the scheduler (a flush task's block size); at least 1.
    public var cost: Int
    /// When it was enqueued, milliseconds since 1970.
    public var enqueuedAt: Int64
    /// Failed attempts so far (nacks and handler timeouts; lease expiries are counted apart).
    public var attempts: Int
    /// Leases that expired because the consumer died or overran its visibility timeout.
    public var expiries: Int
    /// Deliveries so far, all causes.
    public var deliveries: Int
    /// The last failure's message, empty when none.
    public var lastError: String

    /// Creates a message.
    public init(
        id: MessageID, queue: String, qos: QoSClass, payload: [UInt8], attributes: [String: String] = [:],
        cost: Int = 1, enqueuedAt: Int64, attempts: Int = 0, expiries: Int = 0, deliveries: Int = 0,
        lastError: String = ""
    ) {
        self.id = id
        self.queue = queue
        self.qos = qos
        self.payload = payload
        self.attributes = attributes
        self.cost = max(1, cost)
        self.enqueuedAt = enqueuedAt
        self.attempts = attempts
        self.expiries = expiries
        self.deliveries = deliveries
        self.lastError = lastError
    }
}

/// QueueConfiguration holds the broker's knobs; the defaults follow SQS, RabbitMQ quorum queues and NATS
/// JetStream where they have one.
public struct QueueConfiguration: Sendable {
    /// Each class's weight: its share of the work under saturation is weight / sum of weights.
    public var weights: [QoSClass: Int] = [.critical: 8, .standard: 4, .bulk: 1]
    /// Bytes of quantum per unit of weight (deficit round robin adds weight x this to a class's deficit per
    /// round). At least the largest cost, so every round serves each backlogged class.
    public var quantumBytesPerWeight: Int = 4 << 20
    /// Leases a class may hold at once.
    public var concurrencyCaps: [QoSClass: Int] = [.critical: 4, .standard: 4, .bulk: 2]
    /// The visibility timeout of a lease (SQS default 30 s).
    public var leaseDuration: Duration = .seconds(30)
    /// The longest a lease may be extended to, from its start (SQS: 12 h).
    public var maximumLeaseDuration: Duration = .seconds(12 * 3600)
    /// Failed attempts after which a message goes to the dead-letter queue (SQS redrive policy's maxReceiveCount).
    public var maximumAttempts: Int = 5
    /// Lease expiries after which a message is dead too (a poison message that kills its consumers).
    public var maximumExpiries: Int = 10
    /// Full-jitter backoff before a failed message is retried: uniform(0, min(cap, base x 2^attempts)).
    public var retryBase: Duration = .milliseconds(200)
    /// The backoff's cap.
    public var retryCap: Duration = .seconds(60)
    /// The global retry budget: retries per second across all queues (a token bucket), so an outage does not
    /// become a retry storm; a retry over budget waits for a token.
    public var retryBudgetPerSecond: Double = 50
    /// The retry budget's burst.
    public var retryBudgetBurst: Double = 100
    /// How long a message may stay in a queue before it is moved to the dead-letter queue (SQS: 4 days).
    public var retention: Duration = .seconds(4 * 24 * 3600)
    /// How long a dead letter is kept (SQS's maximum: 14 days), longer than the queue keeps messages.
    public var deadLetterRetention: Duration = .seconds(14 * 24 * 3600)
    /// The largest payload a message may carry.
    public var maximumPayloadBytes: Int = 256 << 10
    /// Messages ready, delayed and leased, over all queues, beyond which enqueue is refused (backpressure).
    public var maximumMessages: Int = 1_000_000
    /// How long a handler may run before its attempt fails (a storage call that hangs).
    public var handlerTimeout: Duration = .seconds(25)
    /// How long past the handler timeout a worker may go without progress before the watchdog replaces it.
    public var watchdogGrace: Duration = .seconds(5)
    /// Journal bytes since the last compaction after which the journal is compacted.
    public var compactionThresholdBytes: UInt64 = 64 << 20

    /// The defaults.
    public init() {}

    func weight(_ qos: QoSClass) -> Int { max(1, weights[qos] ?? 1) }
    func cap(_ qos: QoSClass) -> Int { max(1, concurrencyCaps[qos] ?? 1) }
}

/// QueueError is what the broker's calls throw.
public enum QueueError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A queue name that is empty, too long or has characters other than letters, digits, `.`, `_`, `-`.
    case invalidQueueName(String)
    /// The payload is over the limit: its size and the limit.
    case payloadTooLarge(Int, Int)
    /// The broker holds ``QueueConfiguration/maximumMessages`` messages; try later.
    case full(Int)
    /// The lease was lost (expired and given to another consumer, or the message was dead-lettered).
    case leaseLost(MessageID)
    /// No such message (or dead letter).
    case notFound(MessageID)
    /// The journal could not be written or read: the reason.
    case journal(String)
    /// The journal is corrupt at an offset: replay stops and the broker does not start (fail closed).
    case corruptJournal(offset: UInt64, reason: String)
    /// The broker was shut down.
    case shutDown
    /// A handler ran past its timeout (a storage call that hangs); the attempt failed.
    case handlerTimedOut(String)

    public var description: String {
        switch self {
        case .invalidQueueName(let name):
            "invalid queue name '\(name)': 1 to 64 letters, digits, '.', '_' or '-'"
        case .payloadTooLarge(let size, let limit): "message payload of \(size) bytes is over the \(limit)-byte limit"
        case .full(let count): "the queue broker holds \(count) messages, its limit; try again later"
        case .leaseLost(let id): "lease on message \(id) was lost (expired or dead-lettered)"
        case .notFound(let id): "no message \(id)"
        case .journal(let reason): "queue journal: \(reason)"
        case .corruptJournal(let offset, let reason):
            "queue journal corrupt at offset \(offset): \(reason); refusing to start (no acknowledged message is dropped)"
        case .shutDown: "the queue broker is shut down"
        case .handlerTimedOut(let what): "handler timed out: \(what)"
        }
    }

    /// Checks a queue name.
    static func validate(queue name: String) throws(QueueError) {
        let ok =
            !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E
                    || b == 0x5F || b == 0x2D
            }
        if !ok { throw .invalidQueueName(name) }
    }
}

extension Duration {
    /// Whole milliseconds (rounded down).
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
