import EddyAuth
import EddyClient
import Foundation
import Logging
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

/// Settings of a ``Mirror`` (`eddy mirror`).
public struct MirrorConfiguration: Sendable {
    /// The cluster copied from (`--from`): its nodes (or a store), with the credentials and TLS to reach them.
    public var source: EddyClient.Configuration
    /// The cluster copied to (`--to`).
    public var target: EddyClient.Configuration
    /// Which streams (`--streams`): a pattern of `scope/stream` names where `*` matches any run of characters
    /// (`scope/*`, `*`). Streams of the internal scope `_eddy` are never mirrored.
    public var pattern: String
    /// A stream of the target cluster where the mirror records which source stream each target stream copies
    /// (`--checkpoint`); nil: none (deletions and re-creations are then followed only while the mirror runs).
    public var checkpoint: StreamName?
    /// How often the source's streams are listed: new streams, deletions, truncations and the lag are found at
    /// this pace; events themselves are pushed as they arrive.
    public var scanInterval: Duration = .seconds(1)
    /// The writer ID of the mirror's appends: a sequenced writer (`~`), whose event numbers are source offsets.
    public var writerID = "~mirror"
    /// How many bytes before a target segment's end are compared with the source when the mirror takes the
    /// segment up: a difference there means something else wrote to it.
    public var compareBytes: UInt64 = 64 << 10
    /// Where the mirror logs.
    public var logger = Logger(label: "eddy.mirror")

    /// A mirror of the streams `pattern` names from `source` to `target`.
    public init(source: EddyClient.Configuration, target: EddyClient.Configuration, pattern: String) {
        self.source = source
        self.target = target
        self.pattern = pattern
    }
}

/// Where one segment's copy stands (``MirrorStatus``).
public struct MirrorSegmentStatus: Sendable, Codable, Hashable {
    /// The segment number.
    public var number: UInt32
    /// The source segment's length as last seen.
    public var sourceLength: UInt64
    /// How far the target segment is copied.
    public var targetLength: UInt64
    /// `copying`, `sealed` (copied whole and sealed), `refused` (something else wrote to the target segment:
    /// the mirror does not touch it) or `waiting` (the last attempt failed; it is tried again).
    public var state: String
    /// Why it is refused or waiting.
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case number
        case sourceLength = "source_length"
        case targetLength = "target_length"
        case state, error
    }
}

/// Where one stream's copy stands (``MirrorStatus``).
public struct MirrorStreamStatus: Sendable, Codable, Hashable {
    /// `scope/stream`.
    public var stream: String
    /// Bytes of the source not yet in the target, over its segments.
    public var lagBytes: UInt64
    /// How long the target has been behind the source (0 when it is not): from the time of the last event
    /// copied, or from when the mirror saw the source grow, whichever is older.
    public var lagSeconds: Double
    /// Why the stream as a whole is not mirrored (nil: it is).
    public var error: String?
    /// Its segments.
    public var segments: [MirrorSegmentStatus]

    enum CodingKeys: String, CodingKey {
        case stream
        case lagBytes = "lag_bytes"
        case lagSeconds = "lag_seconds"
        case error, segments
    }
}

/// What `eddy mirror status` shows and the mirror's admin port serves at `/status`.
public struct MirrorStatus: Sendable, Codable, Hashable {
    /// The source cluster's seeds.
    public var from: [String]
    /// The target cluster's seeds.
    public var to: [String]
    /// The stream pattern.
    public var pattern: String
    /// Every stream mirrored, by name.
    public var streams: [MirrorStreamStatus]
    /// Events and bytes appended to the target since the mirror started.
    public var copiedEvents: UInt64
    /// See ``copiedEvents``.
    public var copiedBytes: UInt64
    /// Why the last listing of the streams failed (nil: it did not).
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case from, to, pattern, streams, error
        case copiedEvents = "copied_events"
        case copiedBytes = "copied_bytes"
    }
}

/// The reason a target segment (or stream) is not mirrored: something else wrote to it.
struct MirrorRefusal: Error {
    let message: String
}

/// One line of the checkpoint stream: the source stream a target stream copies (docs/regions.md).
struct MirrorRecord: Codable, Hashable {
    var stream: String
    var sourceIncarnation: UInt64
    var targetIncarnation: UInt64
    var segments: UInt32
    var deleted: Bool

    enum CodingKeys: String, CodingKey {
        case stream
        case sourceIncarnation = "source_incarnation"
        case targetIncarnation = "target_incarnation"
        case segments, deleted
    }
}

/// Mirror copies streams from one cluster to another, continuously, so that every event pointer means the same
/// event in both (`eddy mirror`; docs/regions.md).
///
/// Each source segment is followed (pushed by the source's nodes) and every batch of events is appended to the
/// same target segment, starting at the same offset: the target segment's length is where the copy resumes,
/// whatever happened before. The appends are a sequenced writer's (``MirrorConfiguration/writerID``) whose
/// event numbers are the source offsets of their batches, so an append retried, or sent again by a mirror that
/// was killed and started again, is answered as a duplicate or refused as a conflict, never written twice. A
/// target segment longer than the source, with bytes the mirror's writer did not write, with a tail that
/// differs from the source's, or where an append lands elsewhere than at its source offset, was written by
/// something else: it is refused (logged, shown in the status) and the others go on. Seals, truncations and
/// deletions of source streams are applied to the target; a source stream created again is created again.
public final class Mirror: Sendable {
    /// The settings.
    public let configuration: MirrorConfiguration
    private let source: EddyClient
    private let target: EddyClient
    private let state = Mutex(State())
    private let logger: Logger

    private struct SegmentProgress {
        var sourceLength: UInt64 = 0
        var targetLength: UInt64 = 0
        var done = false
        var refused: String?
        var failure: String?
        var behindSince: Date?
        var worker: Task<Void, Never>?
        var workerID = 0

        /// Takes in the lengths a listing showed (they only grow here); the target falling behind starts the lag
        /// clock.
        mutating func saw(source: UInt64, target: UInt64) {
            sourceLength = max(sourceLength, source)
            targetLength = max(targetLength, target)
            if sourceLength > targetLength, behindSince == nil, refused == nil { behindSince = Date() }
        }
    }

    private struct StreamProgress {
        var sourceIncarnation: UInt64
        var targetIncarnation: UInt64
        var segments: [SegmentProgress]
        var error: String?
    }

    private struct State {
        var streams: [StreamName: StreamProgress] = [:]
        var records: [StreamName: MirrorRecord] = [:]
        var nextWorkerID = 1
        var copiedEvents: UInt64 = 0
        var copiedBytes: UInt64 = 0
        var scanError: String?
        var closed = false
    }

    private init(configuration: MirrorConfiguration, source: EddyClient, target: EddyClient) {
        self.configuration = configuration
        self.source = source
        self.target = target
        logger = configuration.logger
    }

    /// Connects to both clusters and reads the checkpoint stream (created with one segment when missing).
    /// - Throws: ``EddyError/Code/connectionFailed`` when a cluster cannot be reached (the error of a cluster that
    ///   refuses the mirror's credentials as it is, `unauthorized`), ``EddyError/Code/invalidArgument``
    ///   for a pattern that names nothing or a checkpoint stream the pattern names.
    public static func start(_ configuration: MirrorConfiguration) async throws(EddyError) -> Mirror {
        guard !configuration.pattern.isEmpty else { throw EddyError(.invalidArgument, "--streams names no stream") }
        if let c = configuration.checkpoint, Grant(scope: configuration.pattern, roles: []).names(c.description) {
            throw EddyError(
                .invalidArgument,
                "the checkpoint stream \(c) is named by --streams \(configuration.pattern): it would be mirrored onto itself"
            )
        }
        let source: EddyClient
        do {
            source = try await EddyClient.connect(configuration.source)
        } catch {
            throw EddyError(error.code, "the source cluster (--from): \(error.message)")
        }
        let target: EddyClient
        do {
            target = try await EddyClient.connect(configuration.target)
        } catch {
            await source.close()
            throw EddyError(error.code, "the target cluster (--to): \(error.message)")
        }
        let mirror = Mirror(configuration: configuration, source: source, target: target)
        do {
            try await mirror.loadCheckpoint()
        } catch {
            await mirror.close()
            throw error
        }
        return mirror
    }

    /// Mirrors until the task is cancelled or ``close()`` is called: lists the source's streams every
    /// ``MirrorConfiguration/scanInterval`` and keeps one copying task per segment.
    public func run() async {
        while !Task.isCancelled, !state.withLock({ $0.closed }) {
            await scan()
            try? await Task.sleep(for: configuration.scanInterval)
        }
        stopAll()
    }

    /// Stops every copy and closes the connections. A copy stopped halfway resumes from the target's length
    /// when a mirror runs again.
    public func close() async {
        let workers = state.withLock { s -> [Task<Void, Never>] in
            s.closed = true
            return s.streams.values.flatMap { $0.segments.compactMap(\.worker) }
        }
        for w in workers { w.cancel() }
        for w in workers { await w.value }
        await source.close()
        await target.close()
    }

    private func stopAll() {
        let workers = state.withLock { s in s.streams.values.flatMap { $0.segments.compactMap(\.worker) } }
        for w in workers { w.cancel() }
    }

    // MARK: - Status

    /// Where every stream's copy stands.
    public func status() -> MirrorStatus {
        let now = Date()
        return state.withLock { s in
            let streams = s.streams.keys.sorted().map { name -> MirrorStreamStatus in
                let p = s.streams[name]!
                var lagBytes: UInt64 = 0
                var lagSeconds = 0.0
                let segments = p.segments.enumerated().map { (i, g) -> MirrorSegmentStatus in
                    let behind = g.sourceLength > g.targetLength ? g.sourceLength - g.targetLength : 0
                    lagBytes += behind
                    if behind > 0, let since = g.behindSince {
                        lagSeconds = max(lagSeconds, now.timeIntervalSince(since))
                    }
                    let state =
                        g.refused != nil ? "refused" : g.done ? "sealed" : g.failure != nil ? "waiting" : "copying"
                    return MirrorSegmentStatus(
                        number: UInt32(i), sourceLength: g.sourceLength, targetLength: g.targetLength, state: state,
                        error: g.refused ?? g.failure)
                }
                return MirrorStreamStatus(
                    stream: name.description, lagBytes: lagBytes, lagSeconds: max(0, lagSeconds), error: p.error,
                    segments: segments)
            }
            return MirrorStatus(
                from: configuration.source.servers.map(\.description),
                to: configuration.target.servers.map(\.description),
                pattern: configuration.pattern, streams: streams, copiedEvents: s.copiedEvents,
                copiedBytes: s.copiedBytes, error: s.scanError)
        }
    }

    /// The mirror's series for `/metrics`: lag per stream (`eddy_mirror_lag_bytes`, `eddy_mirror_lag_seconds`),
    /// refused segments, and what was copied.
    public func metrics() -> [MetricSample] {
        let status = status()
        var samples: [MetricSample] = []
        for s in status.streams {
            let labels = [("stream", s.stream)]
            samples.append(
                MetricSample(
                    "eddy_mirror_lag_bytes", .gauge, Double(s.lagBytes), labels: labels,
                    help: "Bytes of the source stream not yet in the target."))
            samples.append(
                MetricSample(
                    "eddy_mirror_lag_seconds", .gauge, s.lagSeconds, labels: labels,
                    help: "How long the target stream has been behind the source (0: it is not)."))
            samples.append(
                MetricSample(
                    "eddy_mirror_refused_segments", .gauge, Double(s.segments.filter { $0.state == "refused" }.count),
                    labels: labels, help: "Target segments not mirrored because something else wrote to them."))
        }
        samples.append(
            MetricSample(
                "eddy_mirror_copied_events_total", .counter, Double(status.copiedEvents),
                help: "Events appended to the target cluster."))
        samples.append(
            MetricSample(
                "eddy_mirror_copied_bytes_total", .counter, Double(status.copiedBytes),
                help: "Bytes appended to the target cluster."))
        samples.append(
            MetricSample(
                "eddy_mirror_streams", .gauge, Double(status.streams.count), help: "Streams the mirror copies."))
        return samples
    }

    // MARK: - The checkpoint stream

    private func loadCheckpoint() async throws(EddyError) {
        guard let name = configuration.checkpoint else { return }
        do {
            try await target.createStream(name, segments: 1)
        } catch  where error.code == .streamExists {}
        let segment = SegmentID(stream: name, number: 0)
        let info = try await target.info(segment)
        var cursor = SegmentCursor(segment: segment, offset: info.startOffset)
        var records: [StreamName: MirrorRecord] = [:]
        while cursor.pendingOffset < info.length {
            let (_, events) = try await cursor.step(target, wait: .zero)
            for e in events {
                guard let r = try? JSONDecoder().decode(MirrorRecord.self, from: Data(e.event.payload)),
                    let stream = try? StreamName(parsing: r.stream)
                else {
                    throw EddyError(
                        .corruptData,
                        "the checkpoint stream \(name) has an event at \(e.pointer) that is not a mirror record")
                }
                records[stream] = r.deleted ? nil : r
            }
        }
        let loaded = records
        state.withLock { $0.records = loaded }
        logger.info("checkpoint read", metadata: ["stream": "\(name)", "streams": "\(loaded.count)"])
    }

    private func record(_ r: MirrorRecord, for name: StreamName) async {
        state.withLock { s in s.records[name] = r.deleted ? nil : r }
        guard let checkpoint = configuration.checkpoint else { return }
        do {
            let payload = try JSONEncoder().encode(r)
            let frame = try EventFrame.encode(
                Event(routingKey: r.stream, timestamp: Self.microseconds(Date()), payload: Array(payload)))
            _ = try await target.append(
                SegmentID(stream: checkpoint, number: 0), frames: ByteBuffer(bytes: frame))
        } catch {
            logger.warning(
                "cannot record in the checkpoint stream", metadata: ["stream": "\(name)", "error": "\(error)"])
        }
    }

    private static func microseconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1_000_000) }

    // MARK: - The scan

    private func scan() async {
        let listed: [StreamInfo]
        let targets: [StreamName: StreamInfo]
        do {
            listed = try await source.listStreams()
        } catch {
            state.withLock { $0.scanError = "cannot list the source's streams: \(error.message)" }
            return
        }
        // What the source holds is the lag's one half, known even while the target cannot be reached.
        state.withLock { s in
            for info in listed {
                guard let p = s.streams[info.name], p.segments.count == info.segments.count else { continue }
                for (i, segment) in info.segments.enumerated() {
                    s.streams[info.name]!.segments[i].saw(source: segment.length, target: 0)
                }
            }
        }
        do {
            targets = Dictionary(try await target.listStreams().map { ($0.name, $0) }) { a, _ in a }
        } catch {
            state.withLock { $0.scanError = "cannot list the target's streams: \(error.message)" }
            return
        }
        state.withLock { $0.scanError = nil }
        let pattern = Grant(scope: configuration.pattern, roles: [])
        for info in listed
        where info.name.scope != StreamName.internalScope && info.name != configuration.checkpoint
            && pattern.names(info.name.description)
        {
            if Task.isCancelled { return }
            do {
                try await reconcile(info, targets[info.name])
            } catch {
                state.withLock { s in
                    if s.streams[info.name] == nil {
                        s.streams[info.name] = StreamProgress(
                            sourceIncarnation: info.segments.first?.incarnation ?? 0, targetIncarnation: .max,
                            segments: [])
                    }
                    s.streams[info.name]!.error = error.message
                }
                logger.warning(
                    "stream not mirrored", metadata: ["stream": "\(info.name)", "error": "\(error.message)"])
            }
        }
        // Streams the mirror copied whose source is gone: deleted at the source, deleted at the target.
        let present = Set(listed.map(\.name))
        let gone = state.withLock { s in
            Set(s.records.keys).union(s.streams.keys).subtracting(present)
        }
        for name in gone.sorted() { await removed(name, target: targets[name]) }
    }

    /// Makes the target stream match the source stream `info` (created, created again, truncated) and keeps a
    /// copying task on each of its segments that is not done.
    private func reconcile(_ info: StreamInfo, _ existing: StreamInfo?) async throws(EddyError) {
        let name = info.name
        let incarnation = info.segments.first?.incarnation ?? 0
        var existing = existing
        let (known, progress) = state.withLock { s in (s.records[name], s.streams[name]) }
        let recorded = known?.sourceIncarnation ?? progress?.sourceIncarnation
        if let recorded, recorded != incarnation, recorded != 0, incarnation != 0 {
            // The source stream was deleted and created again: so is the target stream the mirror made.
            await stop(name)
            let made = known?.targetIncarnation ?? progress?.targetIncarnation
            if let t = existing, t.segments.first?.incarnation == made {
                do {
                    try await target.deleteStream(name)
                } catch  where error.code == .streamNotFound {}
                logger.notice("source stream created again: target stream deleted", metadata: ["stream": "\(name)"])
            }
            existing = nil
        }
        let t: StreamInfo
        if let existing {
            t = existing
        } else {
            do {
                try await target.createStream(name, segments: UInt32(info.segments.count))
                logger.notice(
                    "target stream created", metadata: ["stream": "\(name)", "segments": "\(info.segments.count)"])
            } catch  where error.code == .streamExists {}
            t = try await target.info(name)
        }
        guard t.segments.count == info.segments.count else {
            throw EddyError(
                .invalidArgument,
                "target stream \(name) has \(t.segments.count) segment(s), the source \(info.segments.count): not mirrored"
            )
        }
        let targetIncarnation = t.segments.first?.incarnation ?? 0
        if known?.sourceIncarnation != incarnation || known?.targetIncarnation != targetIncarnation {
            await record(
                MirrorRecord(
                    stream: name.description, sourceIncarnation: incarnation, targetIncarnation: targetIncarnation,
                    segments: UInt32(info.segments.count), deleted: false), for: name)
        }
        var start: [Int] = []
        state.withLock { s in
            if s.streams[name] == nil || s.streams[name]!.sourceIncarnation != incarnation
                || s.streams[name]!.segments.count != info.segments.count
            {
                s.streams[name] = StreamProgress(
                    sourceIncarnation: incarnation, targetIncarnation: targetIncarnation,
                    segments: Array(repeating: SegmentProgress(), count: info.segments.count))
            }
            s.streams[name]!.error = nil
            s.streams[name]!.targetIncarnation = targetIncarnation
            for (i, segment) in info.segments.enumerated() {
                var g = s.streams[name]!.segments[i]
                g.saw(source: segment.length, target: t.segments[i].length)
                if g.worker == nil, !g.done, g.refused == nil, !s.closed { start.append(i) }
                s.streams[name]!.segments[i] = g
            }
        }
        for i in start { launch(SegmentID(stream: name, number: UInt32(i)), incarnation: incarnation) }
        // Truncations: a target segment is truncated where its source is once it holds that far.
        for (i, segment) in info.segments.enumerated() {
            let mine = t.segments[i]
            let refused = state.withLock { $0.streams[name]?.segments[i].refused != nil }
            if !refused, segment.startOffset > mine.startOffset, mine.length >= segment.startOffset {
                _ = try await target.truncate(mine.segment, at: segment.startOffset)
                logger.info(
                    "target segment truncated",
                    metadata: ["segment": "\(mine.segment)", "at": "\(segment.startOffset)"])
            }
        }
    }

    /// A source stream the mirror copied is gone: its copying stops and the target stream is deleted, if it is
    /// the one the mirror made.
    private func removed(_ name: StreamName, target existing: StreamInfo?) async {
        let (known, progress) = state.withLock { s in (s.records[name], s.streams[name]) }
        await stop(name)
        let made = known?.targetIncarnation ?? progress?.targetIncarnation
        if let existing, existing.segments.first?.incarnation == made {
            do {
                try await target.deleteStream(name)
                logger.notice("source stream deleted: target stream deleted", metadata: ["stream": "\(name)"])
            } catch  where error.code == .streamNotFound {
            } catch {
                logger.warning("cannot delete the target stream", metadata: ["stream": "\(name)", "error": "\(error)"])
                return
            }
        }
        state.withLock { $0.streams[name] = nil }
        if let known {
            var r = known
            r.deleted = true
            await record(r, for: name)
        }
    }

    private func stop(_ name: StreamName) async {
        let workers = state.withLock { s -> [Task<Void, Never>] in
            let w = s.streams[name]?.segments.compactMap(\.worker) ?? []
            s.streams[name] = nil
            return w
        }
        for w in workers { w.cancel() }
        for w in workers { await w.value }
    }

    // MARK: - Copying a segment

    /// Starts the copying task of a segment. The task is made under the lock, so it cannot end (and clear its
    /// slot) before the slot holds it.
    private func launch(_ segment: SegmentID, incarnation: UInt64) {
        state.withLock { s in
            guard let p = s.streams[segment.stream], Int(segment.number) < p.segments.count else { return }
            let id = s.nextWorkerID
            s.nextWorkerID += 1
            s.streams[segment.stream]!.segments[Int(segment.number)].workerID = id
            s.streams[segment.stream]!.segments[Int(segment.number)].worker = Task {
                await self.copy(segment, incarnation: incarnation, worker: id)
            }
        }
    }

    private func update(_ segment: SegmentID, worker: Int, _ change: (inout SegmentProgress) -> Void) {
        state.withLock { s in
            guard let p = s.streams[segment.stream], Int(segment.number) < p.segments.count,
                p.segments[Int(segment.number)].workerID == worker
            else { return }
            change(&s.streams[segment.stream]!.segments[Int(segment.number)])
        }
    }

    /// Copies one segment until its sealed end, retrying after failures, until it is refused or cancelled.
    private func copy(_ segment: SegmentID, incarnation: UInt64, worker: Int) async {
        var pause = Duration.milliseconds(50)
        defer { update(segment, worker: worker) { $0.worker = nil } }
        while !Task.isCancelled {
            do {
                try await copyOnce(segment, incarnation: incarnation, worker: worker)
                update(segment, worker: worker) { g in
                    g.done = true
                    g.failure = nil
                    g.behindSince = nil
                }
                logger.info("segment copied whole and sealed", metadata: ["segment": "\(segment)"])
                return
            } catch let refusal as MirrorRefusal {
                update(segment, worker: worker) { $0.refused = refusal.message }
                logger.error(
                    "target segment refused: something else wrote to it",
                    metadata: ["segment": "\(segment)", "why": "\(refusal.message)"])
                return
            } catch is CancellationError {
                return
            } catch is SourceChanged {
                // The source stream was deleted and created again: the next scan starts over.
                update(segment, worker: worker) { $0.failure = "the source stream was created again" }
                return
            } catch let error as EddyError where error.code == .streamNotFound || error.code == .segmentNotFound {
                // Deleted on one side: the next scan decides what to do.
                update(segment, worker: worker) { $0.failure = error.message }
                return
            } catch {
                let message = (error as? TargetFailure)?.error.message ?? (error as? EddyError)?.message ?? "\(error)"
                update(segment, worker: worker) { $0.failure = message }
                logger.warning("segment copy interrupted", metadata: ["segment": "\(segment)", "error": "\(message)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    private struct SourceChanged: Error {}

    /// A failed request to the target while following the source: wrapped, so that the follow does not take it
    /// for a failure of the source (and move on past events that were not copied); the copy starts again from
    /// the target's length.
    private struct TargetFailure: Error {
        let error: EddyError
    }

    /// One attempt: checks the target segment, fills a truncated gap, follows the source from the target's length
    /// and appends what arrives, then seals.
    private func copyOnce(_ segment: SegmentID, incarnation: UInt64, worker: Int) async throws {
        let mine = try await target.info(segment)
        let theirs = try await source.info(segment)
        if theirs.incarnation != incarnation, incarnation != 0, theirs.incarnation != 0 { throw SourceChanged() }
        try await checkUntouched(mine, against: theirs)
        var position = mine.length
        if mine.sealed {
            guard theirs.sealed, position == theirs.length else {
                throw MirrorRefusal(
                    message: "target segment \(segment) is sealed at \(position) while the source "
                        + (theirs.sealed ? "ends at \(theirs.length)" : "is open"))
            }
            return
        }
        if position < theirs.startOffset {
            try await pad(segment, from: position, to: theirs.startOffset, worker: worker)
            position = theirs.startOffset
            if mine.startOffset < position { _ = try await target.truncate(segment, at: position) }
        }
        update(segment, worker: worker) { g in
            g.targetLength = position
            g.sourceLength = max(g.sourceLength, theirs.length)
            g.failure = nil
        }
        if !(theirs.sealed && position == theirs.length) {
            // The follow puts each push in the backlog; the appender appends all that waits there as one batch,
            // one batch in flight at a time.
            let backlog = Backlog(limit: 4 << 20)
            let start = position
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var next = start
                    do {
                        while let (info, events) = await backlog.take(maxBytes: 1 << 20) {
                            next = try await self.copy(events, of: segment, at: next, info: info, worker: worker)
                        }
                    } catch {
                        backlog.fail(error)
                        throw error
                    }
                }
                group.addTask {
                    // Ended however (the sealed end, a failure, a cancellation): the appender appends what
                    // came before it, then ends too.
                    defer { backlog.close() }
                    _ = try await self.source.follow(SegmentCursor(segment: segment, offset: start)) {
                        info, events in
                        if info.incarnation != incarnation, incarnation != 0, info.incarnation != 0 {
                            throw SourceChanged()
                        }
                        try await backlog.put(events, info: info)
                        return true
                    }
                }
                try await group.waitForAll()
            }
        }
        try await sealTarget(segment)
    }

    private func sealTarget(_ segment: SegmentID) async throws(EddyError) {
        do {
            _ = try await target.seal(segment)
        } catch  where error.code == .segmentSealed {}
    }

    /// Appends a batch the source pushed to the target segment at `position` (where the batch must start), and
    /// returns the position after it.
    private func copy(
        _ events: [PointedEvent], of segment: SegmentID, at position: UInt64, info: SegmentInfo, worker: Int
    )
        async throws -> UInt64
    {
        guard let first = events.first else {
            update(segment, worker: worker) { g in
                g.sourceLength = max(g.sourceLength, info.length)
                if g.sourceLength <= position { g.behindSince = nil }
            }
            return position
        }
        guard first.pointer.offset == position else {
            throw TargetFailure(
                error: EddyError(
                    .invalidArgument, "events of \(segment) from \(first.pointer.offset) where \(position) was next"))
        }
        var frames = ByteBufferAllocator().buffer(capacity: events.reduce(0) { $0 + Int($1.pointer.length) })
        for e in events {
            let bytes = try EventFrame.encode(e.event)
            guard bytes.count == Int(e.pointer.length) else {
                throw EddyError(
                    .internalError, "the event at \(e.pointer) encodes to \(bytes.count) bytes, not \(e.pointer.length)"
                )
            }
            frames.writeBytes(bytes)
        }
        let count = frames.readableBytes
        let ack: AppendAck
        do {
            ack = try await target.append(
                segment, frames: frames, writerID: configuration.writerID, firstEventNumber: Int64(first.pointer.offset)
            )
        } catch {
            throw TargetFailure(error: error)
        }
        guard ack.firstOffset == first.pointer.offset else {
            throw MirrorRefusal(
                message: "the events of \(segment) from source offset \(first.pointer.offset) landed at "
                    + "target offset \(ack.firstOffset): something else appends to the target segment")
        }
        let reached = first.pointer.offset + UInt64(count)
        let last = events[events.count - 1].event.timestamp
        state.withLock { s in
            if !ack.duplicate {
                s.copiedEvents += UInt64(events.count)
                s.copiedBytes += UInt64(count)
            }
        }
        update(segment, worker: worker) { g in
            g.targetLength = reached
            g.sourceLength = max(g.sourceLength, info.length)
            g.failure = nil
            if g.sourceLength > reached {
                let copied = Date(timeIntervalSince1970: Double(last) / 1_000_000)
                g.behindSince = min(g.behindSince ?? copied, copied)
            } else {
                g.behindSince = nil
            }
        }
        return reached
    }

    /// Something else wrote to the target segment if it is longer than the source, if the mirror's writer did
    /// not write its last bytes, or if its last bytes differ from the source's.
    private func checkUntouched(_ mine: SegmentInfo, against theirs: SegmentInfo) async throws {
        let length = mine.length
        guard length > 0 else { return }
        let segment = mine.segment
        if length > theirs.length {
            throw MirrorRefusal(
                message: "target segment \(segment) holds \(length) bytes, more than the source's \(theirs.length)")
        }
        guard let last = try await target.lastEventNumber(segment, writerID: configuration.writerID),
            last >= 0, UInt64(last) < length
        else {
            throw MirrorRefusal(message: "target segment \(segment) holds \(length) bytes the mirror did not write")
        }
        let from = max(
            length > configuration.compareBytes ? length - configuration.compareBytes : 0,
            mine.startOffset, theirs.startOffset)
        guard from < length else { return }
        let a = try await bytes(of: segment, from: from, to: length, on: target)
        let b = try await bytes(of: segment, from: from, to: length, on: source)
        guard a == b else {
            let at = from + UInt64(zip(a, b).prefix { $0 == $1 }.count)
            throw MirrorRefusal(
                message: "target segment \(segment) differs from the source at offset \(at): something else wrote to it"
            )
        }
    }

    private func bytes(of segment: SegmentID, from: UInt64, to end: UInt64, on client: EddyClient)
        async throws(EddyError) -> [UInt8]
    {
        var out: [UInt8] = []
        var offset = from
        while offset < end {
            let (_, data) = try await client.read(segment, from: offset, maxBytes: Int(min(end - offset, 1 << 20)))
            guard data.readableBytes > 0 else {
                throw EddyError(.offsetOutOfRange, "\(segment) ended at \(offset) before \(end)")
            }
            out.append(contentsOf: data.readableBytesView.prefix(Int(end - offset)))
            offset += UInt64(data.readableBytes)
        }
        return out
    }

    /// Bytes below the source's truncation point that the target never got (a mirror that started, or caught
    /// up, after the source was truncated) are filled with padding events, so that later offsets match; the
    /// target is then truncated there too, and nobody reads them.
    private func pad(_ segment: SegmentID, from: UInt64, to end: UInt64, worker: Int) async throws {
        var offset = from
        let largest = UInt64(1 << 20)
        let smallest = UInt64(EventFrame.headerSize)
        while offset < end {
            var size = min(end - offset, largest)
            if end - offset - size > 0 && end - offset - size < smallest { size -= smallest }
            let frame = try EventFrame.encode(
                Event(timestamp: 0, payload: [UInt8](repeating: 0, count: Int(size - smallest))))
            let ack = try await target.append(
                segment, frames: ByteBuffer(bytes: frame), writerID: configuration.writerID,
                firstEventNumber: Int64(offset))
            guard ack.firstOffset == offset else {
                throw MirrorRefusal(
                    message:
                        "padding of \(segment) at \(offset) landed at \(ack.firstOffset): something else appends to it")
            }
            offset += size
            let reached = offset
            update(segment, worker: worker) { $0.targetLength = reached }
        }
        logger.info(
            "target segment padded below the source's truncation point",
            metadata: ["segment": "\(segment)", "from": "\(from)", "to": "\(end)"])
    }
}
