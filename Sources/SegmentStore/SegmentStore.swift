import CoreMetrics
import Foundation
import Logging
import StreamModel
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Settings of a ``SegmentStore``.
public struct StoreConfiguration: Sendable {
    /// The data directory; created when missing.
    public var dataDirectory: String
    /// The journal's I/O path. `auto` probes io_uring and falls back to pwrite + fdatasync.
    public var ioBackend: IOBackend = .auto
    /// Journal bytes after which the store checkpoints and starts a new journal file.
    public var checkpointBytes: UInt64 = 64 << 20
    /// The most segments a stream may have.
    public var maxSegments: UInt32 = 4096
    /// The most bytes one read returns.
    public var maxReadBytes: Int = 16 << 20
    /// The most appended bytes one group commit takes; later requests wait for the next turn.
    public var maxBatchBytes: Int = 32 << 20
    /// Where the store logs.
    public var logger: Logger
    /// Where the journal's sync latency histogram goes (`eddy_store_journal_sync_seconds`); nil: not recorded.
    public var metricsFactory: (any MetricsFactory)? = nil
    /// Whether ``SegmentStore/close()`` takes a checkpoint. Tests turn it off to leave a journal to replay,
    /// as a crash would.
    var checkpointOnClose = true
    /// Called on the checkpoint thread before each background checkpoint; returning false abandons it, as a
    /// crash would (tests).
    var checkpointHook: (@Sendable () -> Bool)? = nil

    /// Creates a configuration with defaults for everything but the data directory.
    public init(dataDirectory: String, logger: Logger = Logger(label: "eddy.store")) {
        self.dataDirectory = dataDirectory
        self.logger = logger
    }
}

/// What a read returns: bytes of one segment, and the segment's state at the time of the read.
public struct ReadResult: Sendable {
    /// The offset of the first byte of `data`.
    public let offset: UInt64
    /// The bytes read; may begin or end inside an event when the read did.
    public let data: [UInt8]
    /// The segment's state when the read was served.
    public let info: SegmentInfo

    /// Creates a read result.
    public init(offset: UInt64, data: [UInt8], info: SegmentInfo) {
        self.offset = offset
        self.data = data
        self.info = info
    }

    /// True when the read reached the end of a sealed segment: nothing more will ever come.
    public var endOfSegment: Bool { info.sealed && offset + UInt64(data.count) >= info.length }
}

/// Counters of the store's work since it opened.
public struct StoreStats: Sendable, Hashable {
    /// Journal batches written, each with one write and one sync.
    public var syncs: UInt64 = 0
    /// Journal records written (appends, creates, seals and so on).
    public var records: UInt64 = 0
    /// Events appended (duplicates not counted).
    public var events: UInt64 = 0
    /// Event bytes appended.
    public var bytes: UInt64 = 0
    /// Retried batches answered from the writer windows.
    public var duplicates: UInt64 = 0
    /// Checkpoints taken.
    public var checkpoints: UInt64 = 0
}

/// SegmentStore is the bundled stream segment store: streams of append-only segments of framed events, kept
/// durable by a journal with group commit and served from per-segment files.
///
/// Writes (create, append, seal, truncate, delete) go to one journal thread. It takes every request that
/// arrived since its last batch, writes their records to the journal with one write and one fdatasync
/// (io_uring when allowed), then writes the appended bytes to the segment files, publishes the new state
/// to readers, and answers. Many concurrent appenders therefore share one sync. Reads check the CRC32C of
/// every event they return, starting from a sparse index of event boundaries. Recovery loads the last
/// checkpoint and replays the journal after it, cutting off a torn tail.
public final class SegmentStore: Sendable {
    /// The resolved configuration.
    public let configuration: StoreConfiguration
    /// Which I/O path the journal uses.
    public let ioPath: IOPath
    let core: StoreCore
    private let journalThread: JournalThread
    private let lockFD: Int32

    /// Opens (or creates) the store in `configuration.dataDirectory`, recovering from the journal.
    /// - Throws: ``EddyError`` with ``EddyError/Code/ioError`` when the directory is unusable or in use by
    ///   another store, ``EddyError/Code/corruptData`` naming the file and offset when recovery finds damage
    ///   that is not a torn tail.
    public init(configuration: StoreConfiguration) throws(EddyError) {
        self.configuration = configuration
        let data = configuration.dataDirectory
        try FileSystem.makeDirectories(data + "/journal")
        try FileSystem.makeDirectories(data + "/segments")
        lockFD = try FileSystem.open(data + "/LOCK", create: true)
        // A lock just released can still be held for a moment by a child process this process is starting: the
        // child holds copies of the descriptors until its exec closes them (O_CLOEXEC). So a held lock is tried
        // again for a second before the directory counts as another store's.
        var attempts = 0
        while flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
            attempts += 1
            guard attempts < 100 else {
                Glibc.close(lockFD)
                throw EddyError(.ioError, "data directory \(data) is in use by another store")
            }
            usleep(10_000)
        }
        let ring: IOUringRing?
        do throws(EddyError) {
            (ioPath, ring) = try IOPath.resolve(configuration.ioBackend)
            let recovered = try Recovery.run(configuration: configuration, ring: ring)
            core = StoreCore(catalog: recovered.catalog, files: recovered.files.files)
            journalThread = JournalThread(
                configuration: configuration, core: core, journal: recovered.journal, catalog: recovered.catalog,
                files: recovered.files, nextLSN: recovered.nextLSN)
            try journalThread.checkpoint()
        } catch {
            Glibc.close(lockFD)
            throw error
        }
        configuration.logger.info(
            "segment store open",
            metadata: ["data": "\(data)", "io": "\(ioPath)", "streams": "\(core.listStreams().count)"])
        journalThread.start()
    }

    /// Stops the journal thread after the requests already queued, takes a checkpoint and closes the files.
    /// Later requests fail with ``EddyError/Code/shuttingDown``. Safe to call more than once.
    public func close() {
        guard core.queue.stop() else { return }
        journalThread.join()
        core.wakeAllWaiters()
        Glibc.close(lockFD)
    }

    deinit { close() }

    // MARK: - Writes

    /// Creates a stream of `segments` segments.
    /// - Throws: ``EddyError/Code/streamExists``, ``EddyError/Code/invalidArgument`` for a segment count out of
    ///   `1...maxSegments`.
    public func createStream(_ name: StreamName, segments: UInt32) async throws(EddyError) {
        guard (1...configuration.maxSegments).contains(segments) else {
            throw EddyError(
                .invalidArgument, "segment count \(segments) is out of range 1...\(configuration.maxSegments)")
        }
        _ = try await submit { .createStream(name, segments: segments, $0) }
    }

    /// Deletes a stream and its segment files.
    public func deleteStream(_ name: StreamName) async throws(EddyError) {
        _ = try await submit { .deleteStream(name, $0) }
    }

    /// Appends a batch of framed events to one segment, durably.
    ///
    /// - Parameters:
    ///   - segment: the segment to write.
    ///   - frames: whole event frames (``EventFrame``); each is checked before anything is written.
    ///   - writerID: the writer's ID for exactly-once retries, or empty for none.
    ///   - firstEventNumber: the event number of the first event; the batch's events are numbered on from it.
    ///     A batch whose numbers the writer already wrote is answered with its original position.
    /// - Returns: where the batch landed, once it is on disk.
    public func append(_ segment: SegmentID, frames: [UInt8], writerID: String = "", firstEventNumber: Int64 = 0)
        async throws(EddyError) -> AppendAck
    {
        let result = await withCheckedContinuation { c in
            append(segment, frames: frames, writerID: writerID, firstEventNumber: firstEventNumber) {
                c.resume(returning: $0)
            }
        }
        return try result.get()
    }

    /// The callback form of ``append(_:frames:writerID:firstEventNumber:)``: `completion` runs on the journal
    /// thread once the batch is durable (or failed), and must return quickly.
    public func append(
        _ segment: SegmentID, frames: [UInt8], writerID: String = "", firstEventNumber: Int64 = 0,
        completion: @escaping @Sendable (Result<AppendAck, EddyError>) -> Void
    ) {
        let sizes: [Int]
        do throws(EddyError) {
            sizes = try frames.withBytes { (b) throws(EddyError) in try EventFrame.frameSizes(b) }
            guard !sizes.isEmpty else { throw EddyError(.invalidArgument, "an append needs at least one event") }
        } catch {
            return completion(.failure(error))
        }
        let record = AppendRecord(
            segment: segment, offset: 0, writerID: writerID, firstEventNumber: firstEventNumber, frames: frames,
            frameSizes: sizes)
        core.queue.push(.append(record, completion))
    }

    /// Seals a segment: later appends fail with ``EddyError/Code/segmentSealed``; tail readers see the end.
    @discardableResult
    public func seal(_ segment: SegmentID) async throws(EddyError) -> SegmentInfo {
        _ = try await submit { .seal(segment, $0) }
        return try info(segment)
    }

    /// Truncates a segment: bytes below `offset` are dropped and reads of them fail with
    /// ``EddyError/Code/truncated``. `offset` must be an event boundary at or below the segment's length.
    @discardableResult
    public func truncate(_ segment: SegmentID, at offset: UInt64) async throws(EddyError) -> SegmentInfo {
        let (state, file) = try core.snapshot(segment)
        if offset < state.start {
            throw EddyError(.truncated, "segment \(segment) is already truncated at \(state.start)")
        }
        if offset > state.length {
            throw EddyError(.offsetOutOfRange, "offset \(offset) is past the end of \(segment) (\(state.length))")
        }
        if offset < state.length {
            let boundary = state.boundary(atOrBelow: offset)
            let bytes = try file.readFrames(from: boundary, covering: offset + 1, limit: state.length)
            guard try Self.isBoundary(bytes, at: Int(offset - boundary)) else {
                throw EddyError(.notEventBoundary, "offset \(offset) of \(segment) is not where an event starts")
            }
        }
        _ = try await submit { .truncate(segment, offset: offset, $0) }
        return try info(segment)
    }

    private static func isBoundary(_ bytes: [UInt8], at target: Int) throws(EddyError) -> Bool {
        var at = 0
        while at < target {
            guard case .frame(let size) = bytes.withUnsafeBytes({ EventFrame.check($0, at: at) }) else { return false }
            at += size
        }
        return at == target
    }

    private func submit(_ make: (@escaping @Sendable (Result<Void, EddyError>) -> Void) -> Operation)
        async throws(EddyError)
    {
        let result: Result<Void, EddyError> = await withCheckedContinuation { c in
            core.queue.push(make { c.resume(returning: $0) })
        }
        try result.get()
    }

    // MARK: - Reads

    /// Names and segment states of every stream, in name order.
    public func listStreams() -> [StreamInfo] { core.listStreams() }

    /// One stream's state.
    public func info(_ name: StreamName) throws(EddyError) -> StreamInfo {
        try core.shared.withLock { (s) throws(EddyError) in try s.catalog.info(name) }
    }

    /// One segment's state.
    public func info(_ segment: SegmentID) throws(EddyError) -> SegmentInfo {
        try core.shared.withLock { (s) throws(EddyError) in try s.catalog.info(segment) }
    }

    /// The highest event number `writerID` has written to `segment`, or nil if it wrote none (or the segment
    /// forgot it). A writer that restarts continues from the number after it.
    public func lastEventNumber(_ segment: SegmentID, writerID: String) throws(EddyError) -> Int64? {
        try core.shared.withLock { (s) throws(EddyError) in
            try s.catalog.segment(segment).writers[writerID]?.lastEventNumber
        }
    }

    /// Reads up to `maxBytes` bytes of `segment` from `offset`, checking the CRC32C of every event they touch.
    ///
    /// A read at the end returns no bytes. The bytes may start or end inside an event.
    /// - Throws: ``EddyError/Code/truncated`` below the truncation point, ``EddyError/Code/offsetOutOfRange``
    ///   past the end, ``EddyError/Code/corruptData`` naming file and offset when the bytes on disk are bad.
    public func read(_ segment: SegmentID, from offset: UInt64, maxBytes: Int) throws(EddyError) -> ReadResult {
        let (state, file) = try core.snapshot(segment)
        let info = state.info(segment)
        guard offset >= state.start else {
            throw EddyError(
                .truncated, "offset \(offset) of \(segment) is below its truncation point \(state.start)")
        }
        guard offset <= state.length else {
            throw EddyError(.offsetOutOfRange, "offset \(offset) is past the end of \(segment) (\(state.length))")
        }
        let wanted = UInt64(max(0, min(maxBytes, configuration.maxReadBytes)))
        let end = min(state.length, offset + wanted)
        guard end > offset else { return ReadResult(offset: offset, data: [], info: info) }
        let boundary = state.boundary(atOrBelow: offset)
        let bytes = try file.readFrames(from: boundary, covering: end, limit: state.length)
        let data = Array(bytes[Int(offset - boundary)..<Int(end - boundary)])
        return ReadResult(offset: offset, data: data, info: info)
    }

    /// Reads like ``read(_:from:maxBytes:)``, but at the tail of an open segment waits up to `wait` for bytes
    /// to arrive and answers as soon as they do; an empty result means the wait timed out.
    public func read(_ segment: SegmentID, from offset: UInt64, maxBytes: Int, wait: Duration)
        async throws(EddyError) -> ReadResult
    {
        let result = await withCheckedContinuation { c in
            read(segment, from: offset, maxBytes: maxBytes, wait: wait) { c.resume(returning: $0) }
        }
        return try result.get()
    }

    /// The callback form of ``read(_:from:maxBytes:wait:)``.
    public func read(
        _ segment: SegmentID, from offset: UInt64, maxBytes: Int, wait: Duration,
        completion: @escaping @Sendable (Result<ReadResult, EddyError>) -> Void
    ) {
        let first: ReadResult
        do throws(EddyError) {
            first = try read(segment, from: offset, maxBytes: maxBytes)
        } catch {
            return completion(.failure(error))
        }
        guard first.data.isEmpty, !first.info.sealed, wait > .zero else { return completion(.success(first)) }
        let retry: @Sendable () -> Void = { [self] in
            completion(Result { () throws(EddyError) in try read(segment, from: offset, maxBytes: maxBytes) })
        }
        guard let id = core.addWaiter(segment, offset: offset, wake: retry) else { return retry() }
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(wait.inSeconds * 1e9))) { [core] in
            if core.removeWaiter(segment, id: id) { retry() }
        }
    }

    /// Counters since the store opened.
    public var stats: StoreStats { core.shared.withLock { $0.stats } }
}

/// A request for the journal thread.
enum Operation {
    case createStream(StreamName, segments: UInt32, @Sendable (Result<Void, EddyError>) -> Void)
    case deleteStream(StreamName, @Sendable (Result<Void, EddyError>) -> Void)
    case append(AppendRecord, @Sendable (Result<AppendAck, EddyError>) -> Void)
    case seal(SegmentID, @Sendable (Result<Void, EddyError>) -> Void)
    case truncate(SegmentID, offset: UInt64, @Sendable (Result<Void, EddyError>) -> Void)

    func fail(_ error: EddyError) {
        switch self {
        case .createStream(_, _, let c), .deleteStream(_, let c), .seal(_, let c), .truncate(_, _, let c):
            c(.failure(error))
        case .append(_, let c):
            c(.failure(error))
        }
    }
}

/// OperationQueue hands requests from any thread to the journal thread.
final class OperationQueue: @unchecked Sendable {
    private let condition = NSCondition()  // protects pending and stopped
    private var pending: [Operation] = []
    private var stopped = false

    func push(_ op: Operation) {
        condition.lock()
        if stopped {
            condition.unlock()
            return op.fail(EddyError(.shuttingDown, "the store is closed"))
        }
        pending.append(op)
        condition.signal()
        condition.unlock()
    }

    /// Waits for requests and takes those that arrived, in order, up to `maxBytes` of appended frames
    /// (at least one request); returns an empty array once stopped and drained.
    func takeBatch(maxBytes: Int) -> [Operation] {
        condition.lock()
        defer { condition.unlock() }
        while pending.isEmpty && !stopped { condition.wait() }
        var bytes = 0
        var count = 0
        for op in pending {
            if case .append(let record, _) = op { bytes += record.frames.count }
            count += 1
            if bytes >= maxBytes { break }
        }
        let ops = Array(pending[..<count])
        pending.removeFirst(count)
        return ops
    }

    /// Stops the queue; returns false if it was stopped already.
    func stop() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !stopped else { return false }
        stopped = true
        condition.signal()
        return true
    }
}

/// StoreCore is the state readers share with the journal thread.
final class StoreCore: Sendable {
    struct Waiter {
        let offset: UInt64
        let wake: @Sendable () -> Void
    }

    struct Shared {
        /// The published catalog: only what is durable.
        var catalog: Catalog
        var files: [SegmentID: SegmentFile]
        var waiters: [SegmentID: [Int: Waiter]] = [:]
        var nextWaiterID = 0
        var stats = StoreStats()
    }

    let shared: Mutex<Shared>
    let queue = OperationQueue()

    init(catalog: Catalog, files: [SegmentID: SegmentFile]) {
        shared = Mutex(Shared(catalog: catalog, files: files))
    }

    func snapshot(_ segment: SegmentID) throws(EddyError) -> (SegmentState, SegmentFile) {
        try shared.withLock { (s) throws(EddyError) in
            let state = try s.catalog.segment(segment)
            guard let file = s.files[segment] else {
                throw EddyError(.internalError, "segment \(segment) has no open file")
            }
            return (state, file)
        }
    }

    func listStreams() -> [StreamInfo] {
        shared.withLock { s in s.catalog.streams.keys.sorted().compactMap { try? s.catalog.info($0) } }
    }

    /// Registers a tail waiter unless bytes past `offset` (or a seal) arrived meanwhile; nil means read now.
    func addWaiter(_ segment: SegmentID, offset: UInt64, wake: @escaping @Sendable () -> Void) -> Int? {
        shared.withLock { s in
            guard let state = try? s.catalog.segment(segment), state.length <= offset, !state.sealed else {
                return nil
            }
            let id = s.nextWaiterID
            s.nextWaiterID += 1
            s.waiters[segment, default: [:]][id] = Waiter(offset: offset, wake: wake)
            return id
        }
    }

    /// Removes a waiter; false when it was woken already.
    func removeWaiter(_ segment: SegmentID, id: Int) -> Bool {
        shared.withLock { s in s.waiters[segment]?.removeValue(forKey: id) != nil }
    }

    /// Takes the waiters of `segment` that the new state satisfies (under the lock, from `publish`).
    static func takeSatisfied(_ s: inout Shared, _ segment: SegmentID) -> [Waiter] {
        guard var waiting = s.waiters[segment], !waiting.isEmpty else { return [] }
        let state = try? s.catalog.segment(segment)
        var woken: [Waiter] = []
        for (id, w) in waiting where state == nil || state!.sealed || state!.length > w.offset {
            woken.append(w)
            waiting.removeValue(forKey: id)
        }
        s.waiters[segment] = waiting.isEmpty ? nil : waiting
        return woken
    }

    /// Wakes every tail waiter (at close): each answers with what there is now.
    func wakeAllWaiters() {
        let all = shared.withLock { s in
            defer { s.waiters = [:] }
            return s.waiters.values.flatMap { $0.values }
        }
        for w in all { DispatchQueue.global().async(execute: w.wake) }
    }
}
