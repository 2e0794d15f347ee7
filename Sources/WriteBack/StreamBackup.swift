import Foundation
import NIOCore
import ObjectStorage
import StoreClient
import StreamModel
import Synchronization
import WriteBackQueue

/// StreamDescriptor names a backed-up stream and its segment count, at `<prefix>/<scope>/<stream>/stream.json`
/// beside the segments' manifests and block objects (the layout of write-back, so a write-back location restores
/// too). Keys: `stream`, `segments`, `updated_ms`.
public struct StreamDescriptor: Sendable, Hashable, Codable {
    /// The stream, as text (`scope/stream`).
    public var stream: String
    /// How many segments it has (fixed at creation).
    public var segments: Int
    /// When the backup that wrote it finished, ms since 1970.
    public var updatedMilliseconds: Int64

    package enum CodingKeys: String, CodingKey {
        case stream, segments
        case updatedMilliseconds = "updated_ms"
    }

    /// A descriptor of `stream` with `segments` segments.
    public init(stream: StreamName, segments: Int) {
        self.stream = stream.description
        self.segments = segments
        updatedMilliseconds = WallClock.milliseconds()
    }

    /// The descriptor's key.
    public static func key(prefix: String, stream: StreamName) -> String {
        ObjectKey.join(prefix, "\(stream.scope)/\(stream.stream)/stream.json")
    }

    /// Reads the descriptor of `stream`; nil when there is none.
    /// - Throws: the store's error, or ``EddyError/Code/corruptData`` when it does not parse.
    public static func load(from store: any ObjectStore, prefix: String, stream: StreamName) async throws
        -> StreamDescriptor?
    {
        let key = key(prefix: prefix, stream: stream)
        let body: ByteBuffer
        do {
            body = try await store.get(key)
        } catch ObjectStoreError.notFound(_) {
            return nil
        }
        do {
            return try JSONDecoder().decode(StreamDescriptor.self, from: Data(body.readableBytesView))
        } catch {
            throw EddyError(.corruptData, "stream descriptor \(key) does not parse: \(error)")
        }
    }

    /// Writes the descriptor (replacing an older one).
    public func save(to store: any ObjectStore, prefix: String) async throws {
        let name = try StreamName(parsing: stream)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        _ = try await store.put(
            Self.key(prefix: prefix, stream: name), body: ByteBuffer(bytes: try encoder.encode(self)),
            mode: .overwrite)
    }
}

/// StreamBackup copies streams to object storage and back, preserving segments, offsets and so event pointers.
///
/// A backup writes each segment as ``BlockObject``s (one per aligned MiB, create-only) and a
/// ``SegmentManifest`` whose `flushed` is how far the backup reached, then the ``StreamDescriptor``. It is
/// incremental: a second backup reads only from each manifest's `flushed` on. A restore creates the stream with
/// the same segment count and appends each segment's frames in order from offset 0, so every event lands at its
/// old offset; a segment whose backup starts above 0 (the store had dropped its front before it was backed up)
/// gets filler events below that offset, then is truncated there.
public enum StreamBackup {
    /// Bytes per block object of a backup, aligned (so objects line up with the default block geometry).
    public static let objectBytes: UInt64 = BlockGeometry.defaultBlockSize
    /// The writer ID prefix of restore appends.
    package static let restoreWriter = "eddy-restore"

    /// What one backup or restore did.
    public struct Report: Sendable, Hashable {
        /// Segments visited.
        public var segments = 0
        /// Bytes copied this time.
        public var bytes: UInt64 = 0
        /// Objects written this time (backup), or read (restore).
        public var objects = 0
        /// Objects a backup found in place already (an interrupted earlier run's).
        public var objectsPresent = 0
        /// Events appended (restore).
        public var events = 0
        /// Anything the user should know (a partial last frame left out, a filler that could not be truncated).
        public var warnings: [String] = []

        /// An empty report.
        public init() {}

        package mutating func add(_ other: Report) {
            segments += other.segments
            bytes += other.bytes
            objects += other.objects
            objectsPresent += other.objectsPresent
            events += other.events
            warnings += other.warnings
        }
    }

    // MARK: - Backup

    /// Backs up `stream` from `source` (a node or the store) into `store` under `prefix`: what each segment's
    /// manifest there does not hold yet, up to the segment's length now.
    /// - Parameters:
    ///   - concurrency: segments copied at once.
    ///   - progress: called with the bytes copied so far, after each object.
    /// - Throws: ``EddyError`` (``EddyError/Code/truncated`` when the source dropped bytes the backup never got;
    ///   ``EddyError/Code/corruptData`` when the location holds different bytes at a key), or the object store's
    ///   error.
    public static func backup(
        _ stream: StreamName, from source: any RequestSender, to store: any ObjectStore, prefix: String,
        concurrency: Int = 4, progress: @escaping @Sendable (UInt64) -> Void = { _ in }
    ) async throws -> Report {
        let info = try await source.info(stream)
        let counter = ProgressCounter(progress)
        let report = try await forEach(info.segments, concurrency: concurrency) { segment in
            try await backupSegment(segment, from: source, to: store, prefix: prefix, counter: counter)
        }
        try await StreamDescriptor(stream: stream, segments: info.segments.count).save(to: store, prefix: prefix)
        return report
    }

    package static func backupSegment(
        _ info: SegmentInfo, from source: any RequestSender, to store: any ObjectStore, prefix: String,
        counter: ProgressCounter
    ) async throws -> Report {
        let segment = info.segment
        var manifest = try await SegmentManifest.load(from: store, prefix: prefix, segment: segment)
        if manifest.objects == 0 {
            manifest.first = info.startOffset
            manifest.flushed = info.startOffset
        } else if let earlier = manifest.incarnation, earlier != info.incarnation {
            // The stream was deleted and created again since the last backup: go on only if it holds the backed-up
            // bytes (a restore of this backup does), else the backup would mix two streams.
            guard try await holdsBackedUpBytes(manifest, info, from: source, in: store, prefix: prefix) else {
                throw EddyError(
                    .invalidArgument,
                    "the backup of \(segment) is of an earlier stream of that name (deleted and created again since, "
                        + "with other bytes): back up to a new location, or delete the old backup first")
            }
        } else if manifest.flushed < info.startOffset {
            throw EddyError(
                .truncated,
                "the backup of \(segment) reaches \(manifest.flushed), but the stream now starts at "
                    + "\(info.startOffset): the bytes between were dropped before they were backed up (back up to "
                    + "a new location)")
        } else if manifest.flushed > info.length {
            throw EddyError(
                .invalidArgument,
                "the backup of \(segment) holds \(manifest.flushed) bytes, more than the stream's \(info.length): "
                    + "it is the backup of another stream of that name")
        }
        var report = Report()
        report.segments = 1
        var at = manifest.flushed
        while at < info.length {
            let before = at
            let to = min(info.length, (at / objectBytes + 1) * objectBytes)
            let bytes = try await read(source, segment, from: at, to: to)
            let key = BlockObject.key(prefix: prefix, segment: segment, start: at)
            let object = BlockObject(segment: segment.number, start: at, bytes: bytes)
            switch try await object.create(in: store, key: key) {
            case .written:
                report.objects += 1
                at = to
            case .alreadyPresent:
                report.objectsPresent += 1
                at = to
            case .differs(let existing):
                // An interrupted backup wrote a shorter or longer range here: keep it if it is this stream's.
                let theirs =
                    existing.end <= to
                    ? bytes.getSlice(at: bytes.readerIndex, length: Int(existing.end - at))!
                    : try await read(source, segment, from: at, to: min(existing.end, info.length))
                guard existing.end <= info.length, existing.bytes == theirs else {
                    throw EddyError(
                        .corruptData, "object \(key) holds bytes that differ from \(segment)'s: another stream's backup"
                    )
                }
                report.objectsPresent += 1
                at = existing.end
            }
            report.bytes += at - before
            counter.add(at - before)
        }
        if at > manifest.flushed || manifest.sealed != info.sealed || manifest.updatedMilliseconds == 0
            || manifest.incarnation != info.incarnation
        {
            manifest.objects += report.objects + report.objectsPresent
            manifest.flushed = at
            manifest.eventBoundary = at
            manifest.nextFrame = at
            manifest.sealed = info.sealed
            manifest.incarnation = info.incarnation
            manifest.updatedMilliseconds = WallClock.milliseconds()
            try await manifest.save(to: store, prefix: prefix, segment: segment)
        }
        return report
    }

    /// Whether the stream holds every backed-up byte of its segment, `[first, flushed)` of the backup's manifest,
    /// compared object by object.
    package static func holdsBackedUpBytes(
        _ manifest: SegmentManifest, _ info: SegmentInfo, from source: any RequestSender, in store: any ObjectStore,
        prefix: String
    ) async throws -> Bool {
        guard info.startOffset <= manifest.first, info.length >= manifest.flushed else { return false }
        var same = true
        _ = try await forEachObject(of: info.segment, manifest, in: store, prefix: prefix) { start, bytes in
            let stream = try await read(source, info.segment, from: start, to: start + UInt64(bytes.readableBytes))
            if stream != bytes { same = false }
            return same
        }
        return same
    }

    /// Calls `body` with the start and bytes of each backed-up object of `segment` from `manifest.first` on (cut at
    /// `flushed`), in offset order, until it returns false or `flushed` is reached.
    /// - Returns: the offset reached.
    /// - Throws: ``EddyError/Code/corruptData`` when the objects leave a gap.
    package static func forEachObject(
        of segment: SegmentID, _ manifest: SegmentManifest, in store: any ObjectStore, prefix: String,
        _ body: (UInt64, ByteBuffer) async throws -> Bool
    ) async throws -> UInt64 {
        let folder = BlockObject.segmentFolder(prefix: prefix, segment: segment)
        var at = manifest.first
        for info in try await store.listAll(prefix: folder) where at < manifest.flushed {
            guard let start = BlockObject.start(ofKey: info.key), start >= at else { continue }
            guard start == at else {
                throw EddyError(.corruptData, "the backup of \(segment) has no object for offsets \(at)..<\(start)")
            }
            let object = try BlockObject.decode(try await store.get(info.key), key: info.key)
            let end = min(object.end, manifest.flushed)
            guard try await body(start, object.bytes.getSlice(at: object.bytes.readerIndex, length: Int(end - start))!)
            else { return end }
            at = end
        }
        return at
    }

    /// Bytes [from, to) of a segment, in as many reads as it takes.
    package static func read(_ source: any RequestSender, _ segment: SegmentID, from: UInt64, to: UInt64) async throws
        -> ByteBuffer
    {
        var out = ByteBufferAllocator().buffer(capacity: Int(to - from))
        var at = from
        while at < to {
            var data = try await source.read(segment, from: at, maxBytes: Int(to - at)).data
            guard data.readableBytes > 0 else {
                throw EddyError(.ioError, "no bytes of \(segment) at \(at) (reading up to \(to))")
            }
            if data.readableBytes > Int(to - at) { data = data.getSlice(at: data.readerIndex, length: Int(to - at))! }
            at += UInt64(data.readableBytes)
            out.writeBuffer(&data)
        }
        return out
    }

    // MARK: - Restore

    /// The streams backed up under `prefix` (those with a descriptor), in name order.
    public static func backedUpStreams(in store: any ObjectStore, prefix: String) async throws -> [StreamName] {
        let base = ObjectKey.join(prefix, "")
        var names: [StreamName] = []
        for info in try await store.listAll(prefix: base) where info.key.hasSuffix("/stream.json") {
            let parts = info.key.dropFirst(base.count).split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 3, let name = try? StreamName(scope: String(parts[0]), stream: String(parts[1]))
            else { continue }
            names.append(name)
        }
        return names.sorted()
    }

    /// How many segments the backup of `stream` has: its descriptor's count, or (a write-back location, which has
    /// no descriptor) one past the highest segment with a manifest.
    /// - Throws: ``EddyError/Code/streamNotFound`` when the location holds nothing of `stream`.
    public static func segmentCount(of stream: StreamName, in store: any ObjectStore, prefix: String) async throws
        -> Int
    {
        if let descriptor = try await StreamDescriptor.load(from: store, prefix: prefix, stream: stream) {
            return descriptor.segments
        }
        let folder = ObjectKey.join(prefix, "\(stream.scope)/\(stream.stream)/")
        var highest = -1
        for info in try await store.listAll(prefix: folder) where info.key.hasSuffix(".manifest") {
            let name = info.key.dropFirst(folder.count).dropLast(".manifest".count)
            if name.count == 8, !name.contains("/"), let number = Int(name) { highest = max(highest, number) }
        }
        guard highest >= 0 else {
            throw EddyError(.streamNotFound, "no backup of \(stream) at \(store.location) under '\(prefix)'")
        }
        return highest + 1
    }

    /// Restores the backup of `stream` into a new stream `target` through `sink` (a node or the store): the same
    /// segments, every event at its old offset, sealed segments sealed.
    /// - Throws: ``EddyError/Code/streamExists`` when `target` exists; ``EddyError/Code/corruptData`` for a
    ///   backup with a gap or a damaged object; the sink's and the object store's errors.
    public static func restore(
        _ stream: StreamName, from store: any ObjectStore, prefix: String, as target: StreamName,
        into sink: any RequestSender, concurrency: Int = 4, progress: @escaping @Sendable (UInt64) -> Void = { _ in }
    ) async throws -> Report {
        let count = try await segmentCount(of: stream, in: store, prefix: prefix)
        try await createNew(target, segments: count, in: sink)
        let counter = ProgressCounter(progress)
        let writer = restoreWriter + "-" + UUID().uuidString.prefix(8).lowercased()
        return try await forEach(Array(0..<count), concurrency: concurrency) { number in
            try await restoreSegment(
                from: SegmentID(stream: stream, number: UInt32(number)),
                to: SegmentID(stream: target, number: UInt32(number)), store: store, prefix: prefix, sink: sink,
                writer: writer, counter: counter)
        }
    }

    /// Creates `target`, which must not exist yet.
    package static func createNew(_ target: StreamName, segments: Int, in sink: any RequestSender)
        async throws(EddyError)
    {
        do {
            try await sink.createStream(target, segments: UInt32(segments))
        } catch {
            guard error.code == .streamExists else { throw error }
            throw EddyError(
                .streamExists, "\(target) exists: delete it first, or restore it under another name with --as")
        }
    }

    package static func restoreSegment(
        from source: SegmentID, to target: SegmentID, store: any ObjectStore, prefix: String,
        sink: any RequestSender, writer: String, counter: ProgressCounter
    ) async throws -> Report {
        let manifest = try await SegmentManifest.load(from: store, prefix: prefix, segment: source)
        var report = Report()
        report.segments = 1
        var appender = FrameAppender(segment: target, sink: sink, writer: writer)
        if manifest.first > 0 {
            try await appender.fill(upTo: manifest.first)
        }
        let at = try await forEachObject(of: source, manifest, in: store, prefix: prefix) { _, bytes in
            try await appender.add(bytes)
            report.objects += 1
            report.bytes += UInt64(bytes.readableBytes)
            counter.add(UInt64(bytes.readableBytes))
            return true
        }
        guard at >= manifest.flushed else {
            throw EddyError(
                .corruptData,
                "the backup of \(source) ends at \(at), but its manifest says \(manifest.flushed) bytes were written")
        }
        let leftover = try await appender.finish()
        report.events = appender.events
        if leftover > 0 {
            report.warnings.append(
                "\(source): the last \(leftover) bytes are the start of an event whose end was never flushed; "
                    + "left out")
        }
        if manifest.first > 0, let warning = await truncateFiller(target, at: manifest.first, sink: sink) {
            report.warnings.append(warning)
        }
        if manifest.sealed {
            try await sink.seal(target)
        }
        return report
    }

    /// Drops the filler below `offset`, waiting (up to a minute) for a node with write-back, which refuses to
    /// truncate what it has not flushed yet; a warning when it could not.
    package static func truncateFiller(_ segment: SegmentID, at offset: UInt64, sink: any RequestSender) async
        -> String?
    {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            do {
                try await sink.truncate(segment, at: offset)
                return nil
            } catch {
                if ContinuousClock.now > deadline || error.code != .invalidArgument {
                    return "\(segment): filler events below \(offset) could not be truncated (\(error)); run "
                        + "`eddy truncate --segment \(segment.number) --offset \(offset)` later"
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Runs `body` for each item, at most `concurrency` at once, and sums the reports.
    package static func forEach<T: Sendable>(
        _ items: [T], concurrency: Int, _ body: @escaping @Sendable (T) async throws -> Report
    ) async throws -> Report {
        try await withThrowingTaskGroup(of: Report.self) { group in
            var total = Report()
            var next = 0
            var finished = 0
            while finished < items.count {
                while next < items.count, next - finished < max(1, concurrency) {
                    let item = items[next]
                    group.addTask { try await body(item) }
                    next += 1
                }
                if let report = try await group.next() { total.add(report) }
                finished += 1
            }
            return total
        }
    }
}

/// FrameAppender appends a restored segment's bytes as whole event frames, in batches, checking that each lands
/// at the offset it had.
package struct FrameAppender {
    package let segment: SegmentID
    package let sink: any RequestSender
    package let writer: String
    /// Bytes not appended yet (the next starts at ``offset``).
    package var pending = ByteBuffer()
    /// Where the next append must land.
    package var offset: UInt64 = 0
    /// Events appended (the writer's next event number).
    package var events = 0
    package static var batchBytes: Int { 1 << 20 }

    package init(segment: SegmentID, sink: any RequestSender, writer: String) {
        self.segment = segment
        self.sink = sink
        self.writer = writer
    }

    /// Appends filler events that cover [0, offset) exactly (pieces of at most 1 MiB, each at least a frame's
    /// header long).
    package mutating func fill(upTo end: UInt64) async throws {
        let pieces = max(1, Int((end + UInt64(Self.batchBytes) - 1) / UInt64(Self.batchBytes)))
        var left = Int(end)
        for index in 0..<pieces {
            let size = left / (pieces - index)
            left -= size
            let filler = Event(timestamp: 0, payload: [UInt8](repeating: 0, count: size - EventFrame.headerSize))
            try await add(ByteBuffer(bytes: try EventFrame.encode(filler)))
        }
        _ = try await flush(all: true)
    }

    /// Takes bytes of the segment, in order; appends the whole frames among them in batches.
    package mutating func add(_ bytes: ByteBuffer) async throws {
        var bytes = bytes
        pending.writeBuffer(&bytes)
        if pending.readableBytes >= Self.batchBytes { _ = try await flush(all: false) }
    }

    /// Appends what is pending; returns the bytes of a partial frame left at the end.
    package mutating func finish() async throws -> Int { try await flush(all: true) }

    /// Appends the whole frames pending (all of them, or once at least a batch is there).
    package mutating func flush(all: Bool) async throws -> Int {
        while pending.readableBytes > 0 {
            var length = 0
            var count = 0
            while length + 4 <= pending.readableBytes, length < Self.batchBytes || count == 0 {
                let body = Int(pending.getInteger(at: pending.readerIndex + length, as: UInt32.self)!)
                guard length + 4 + body <= pending.readableBytes else { break }
                length += 4 + body
                count += 1
            }
            guard count > 0, all || length >= Self.batchBytes else { break }
            let frames = pending.readSlice(length: length)!
            let ack = try await sink.append(
                segment, frames: frames, writerID: writer, firstEventNumber: Int64(events))
            guard ack.firstOffset == offset else {
                throw EddyError(
                    .offsetOutOfRange,
                    "restored events of \(segment) landed at \(ack.firstOffset), not \(offset): something else "
                        + "appends to it")
            }
            offset += UInt64(length)
            events += count
        }
        pending.discardReadBytes()
        return pending.readableBytes
    }
}

/// Adds up bytes from concurrent tasks and reports the total.
package final class ProgressCounter: Sendable {
    package let total = Mutex<UInt64>(0)
    package let report: @Sendable (UInt64) -> Void

    package init(_ report: @escaping @Sendable (UInt64) -> Void) { self.report = report }

    package func add(_ bytes: UInt64) {
        let now = total.withLock {
            $0 += bytes
            return $0
        }
        report(now)
    }
}
