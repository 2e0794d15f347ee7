import CacheCore
import Foundation
import Logging
import NIOCore
import ObjectStorage
import StoreClient
import StreamModel
import Synchronization
import WireProtocol
import WriteBackQueue

/// Where and how a node writes its segments back to object storage.
public struct WriteBackConfiguration: Sendable {
    /// The object store (``FileObjectStore`` for `file://DIR`, ``S3ObjectStore`` for `s3://BUCKET/PREFIX`).
    public var objectStore: any ObjectStore
    /// The key prefix of every object (the `PREFIX` of `s3://BUCKET/PREFIX`; may be empty).
    public var prefix: String
    /// A partial tail block that saw no append for this long is flushed (as a bulk task).
    public var flushIdle: Duration = .seconds(30)
    /// How often each owned segment is compared with its manifest (new work, lost work after a node loss).
    public var scanInterval: Duration = .seconds(1)
    /// Flush workers.
    public var workers: Int = 4
    /// Keep at most this many bytes of each segment in the store (what is flushed beyond it is truncated).
    public var retainBytes: UInt64?
    /// Keep what was flushed less than this long ago in the store (older flushed bytes are truncated).
    public var retainSeconds: Duration?
    /// Backpressure, the last resort: appends to a segment with more unflushed bytes than this are refused with
    /// ``EddyError/Code/overloaded`` until flushing catches up. nil (the default): never refused.
    public var maximumFlushLag: UInt64?
    /// The broker's knobs (QoS weights, leases, retries, dead letters).
    public var queue = QueueConfiguration()
    /// The zstd level of block objects.
    public var compressionLevel: Int32 = 1

    /// A configuration writing to `objectStore` under `prefix`.
    public init(objectStore: any ObjectStore, prefix: String = "") {
        self.objectStore = objectStore
        self.prefix = prefix
    }
}

/// WriteBack flushes the segments a node owns to object storage through the node's ``WriteBackQueue``, serves
/// reads of what the store has dropped from there, and applies retention.
///
/// Each owned segment has at most one flush task queued at a time, for the range from its manifest's `flushed`
/// watermark to the end of that block (a full block: `standard`), or to the segment's end when it is sealed
/// (`critical`) or idle past ``WriteBackConfiguration/flushIdle`` (`bulk`). A worker reads the range from the
/// store, PUTs it create-only as a ``BlockObject`` and then advances the manifest; when the key already holds
/// an object (an earlier attempt, or a dead owner's, that wrote it but not the manifest) its bytes are compared
/// with the store's and it is adopted. So tasks are idempotent, at-least-once delivery is safe, and a new owner
/// re-derives any lost work from the manifest and the store's length.
final class WriteBack: Sendable {
    let configuration: WriteBackConfiguration
    let node: NodeConfiguration
    let store: Upstream
    let geometry: BlockGeometry
    /// The owner cache: a block to flush that is cached is not read from the store again.
    let cache: BlockCache
    let logger: Logger
    let queue = Mutex<WriteBackQueue?>(nil)
    let segments = Mutex<[SegmentID: FlushState]>([:])
    let flushedBytes = Atomic<Int>(0)
    let objectsWritten = Atomic<Int>(0)
    let objectsAdopted = Atomic<Int>(0)
    let coldReads = Atomic<Int>(0)
    let cachedFlushReads = Atomic<Int>(0)
    let truncations = Atomic<Int>(0)
    static let flushQueue = "flush"

    /// What the node knows of one segment's flushing.
    struct FlushState: Sendable {
        var manifest: SegmentManifest?
        var pending = false
        var length: UInt64 = 0
        var startOffset: UInt64 = 0
        var sealed = false
        var lastChange: Int64 = 0
        /// (flush time, event boundary reached) of recent flushes, for time-based retention.
        var history: [(at: Int64, boundary: UInt64)] = []
    }

    init(
        configuration: WriteBackConfiguration, node: NodeConfiguration, store: Upstream, geometry: BlockGeometry,
        cache: BlockCache
    ) {
        self.configuration = configuration
        self.node = node
        self.store = store
        self.geometry = geometry
        self.cache = cache
        self.logger = node.logger
    }

    var objects: any ObjectStore { configuration.objectStore }
    var prefix: String { configuration.prefix }

    /// The journal stream of this node's queue: `_eddy/queue-<node>` (the address with `:` as `-`).
    static func journalStream(node: String) throws(EddyError) -> StreamName {
        let name = "queue-" + String(node.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "-" })
        return try StreamName(scope: "_eddy", stream: String(name.prefix(StreamName.maxPartLength)))
    }

    /// Opens the queue (retrying while the store is unreachable), registers the flush handler and the periodic
    /// scan and retention tasks, and starts the workers.
    func run(core: NodeCore) async {
        let stream: StreamName
        do {
            stream = try Self.journalStream(node: node.name)
        } catch {
            logger.error("write-back disabled: \(error)")
            return
        }
        let address = node.store
        var attempt = 0
        while !Task.isCancelled {
            do {
                let journal = try await StoreJournalLog(stream: stream) {
                    try await StoreClient.connect(to: address)
                }
                let archive = ObjectKey.join(prefix, "_journal/\(stream.stream)")
                let opened = try await WriteBackQueue.open(
                    configuration: configuration.queue, journal: journal, archive: (objects, archive), logger: logger)
                // Tasks replayed from the journal are this node's pending flushes.
                let pending = opened.liveMessages(queue: Self.flushQueue).compactMap {
                    FlushTask(attributes: $0.attributes)
                }
                segments.withLock { s in
                    for task in pending { s[task.segment, default: FlushState()].pending = true }
                }
                opened.handle(Self.flushQueue) { [weak self] message in
                    guard let self, let task = FlushTask(attributes: message.attributes) else { return }
                    try await self.flush(task)
                }
                opened.every(configuration.scanInterval, name: "flush-scan") { [weak self, weak core] in
                    guard let self, let core else { return }
                    await self.scan(core: core)
                }
                opened.every(.seconds(5), name: "retention") { [weak self, weak core] in
                    guard let self, let core else { return }
                    await self.applyRetention(core: core)
                }
                opened.start(workers: configuration.workers)
                queue.withLock { $0 = opened }
                logger.info(
                    "write-back running",
                    metadata: ["objects": "\(objects.location)", "prefix": "\(prefix)", "journal": "\(stream)"])
                return
            } catch {
                attempt += 1
                if attempt == 1 || attempt % 30 == 0 {
                    logger.warning(
                        "write-back: cannot open the queue journal yet; retrying", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    func shutdown(finishWork: Duration = .zero) async {
        let current = queue.withLock { $0 }
        await current?.shutdown(finishWork: finishWork)
    }

    // MARK: - Planning

    /// An append landed at the owner: remember the segment's length and plan a flush when a block filled.
    func appended(_ segment: SegmentID, length: UInt64) {
        let now = WallClock.milliseconds()
        let plan = segments.withLock { s -> Bool in
            var state = s[segment, default: FlushState()]
            let before = state.length
            state.length = max(state.length, length)
            state.lastChange = now
            s[segment] = state
            return geometry.index(containing: max(before, 1) - 1) != geometry.index(containing: max(length, 1) - 1)
        }
        if plan { Task { await self.plan(segment) } }
    }

    /// Looks at every segment this node owns (the store's length against the manifest) and queues what is due.
    /// One `listStreams` gives every segment's state.
    func scan(core: NodeCore) async {
        let owned = core.ownedSegmentIDs().filter { $0.stream.scope != "_eddy" }
        guard !owned.isEmpty else { return }
        let infos: [SegmentID: SegmentInfo]
        do {
            guard case .streamList(let streams) = try await store.send(.listStreams, timeout: node.requestTimeout)
            else { return }
            infos = Dictionary(streams.flatMap(\.segments).map { ($0.segment, $0) }) { first, _ in first }
        } catch {
            logger.debug("flush scan: \(error)")
            return
        }
        let now = WallClock.milliseconds()
        for segment in owned {
            guard let info = infos[segment] else { continue }
            segments.withLock { s in
                var state = s[segment, default: FlushState()]
                if info.length != state.length || info.sealed != state.sealed || state.lastChange == 0 {
                    state.lastChange = now
                }
                state.length = info.length
                state.sealed = info.sealed
                state.startOffset = info.startOffset
                s[segment] = state
            }
            await plan(segment)
        }
    }

    /// Queues the next flush task of `segment` when none is queued and one is due.
    func plan(_ segment: SegmentID) async {
        guard let queue = queue.withLock({ $0 }) else { return }
        guard let manifest = try? await manifest(of: segment) else { return }
        let now = WallClock.milliseconds()
        let task = segments.withLock { s -> (FlushTask, QoSClass)? in
            guard var state = s[segment], !state.pending else { return nil }
            let from = manifest.flushed
            guard state.length > from else { return nil }
            let blockEnd = geometry.range(ofBlock: geometry.index(containing: from)).upperBound
            let choice: (UInt64, QoSClass)?
            if state.length >= blockEnd {
                choice = (blockEnd, .standard)
            } else if state.sealed {
                choice = (state.length, .critical)
            } else if now - state.lastChange >= Int64(configuration.flushIdle.inSeconds * 1000) {
                choice = (state.length, .bulk)
            } else {
                choice = nil
            }
            guard let (to, qos) = choice else { return nil }
            state.pending = true
            s[segment] = state
            return (FlushTask(segment: segment, from: from, to: to), qos)
        }
        guard let (flush, qos) = task else { return }
        do {
            try await queue.enqueue(
                Self.flushQueue, qos: qos, payload: [], attributes: flush.attributes, cost: Int(flush.to - flush.from))
        } catch {
            segments.withLock { $0[segment]?.pending = false }
            logger.warning("cannot queue a flush", metadata: ["segment": "\(segment)", "error": "\(error)"])
        }
    }

    /// The segment's manifest (read once, then kept up to date here).
    func manifest(of segment: SegmentID) async throws -> SegmentManifest {
        if let known = segments.withLock({ $0[segment]?.manifest }) { return known }
        var loaded = try await SegmentManifest.load(from: objects, prefix: prefix, segment: segment)
        if loaded.objects == 0,
            case .segmentInfo(let info) = try await store.send(
                .segmentInfo(segment), timeout: node.requestTimeout),
            loaded.flushed < info.startOffset
        {
            // The store dropped the segment's front before write-back began: flushing starts at its truncation
            // point (an event boundary).
            loaded.first = info.startOffset
            loaded.flushed = info.startOffset
            loaded.eventBoundary = info.startOffset
            loaded.nextFrame = info.startOffset
        }
        return segments.withLock { s in
            if let raced = s[segment]?.manifest, raced.flushed >= loaded.flushed { return raced }
            s[segment, default: FlushState()].manifest = loaded
            return loaded
        }
    }

    // MARK: - Flushing

    /// Runs one flush task: the object, then the manifest; then plans the next task of the segment.
    func flush(_ task: FlushTask) async throws {
        FlushCrashPoint.reach(.beforePut)
        try await flushRange(task)
        FlushCrashPoint.reach(.afterManifest)
        // Done: the segment may have its next task. (A failed task stays the segment's one task: the queue
        // retries it, or it waits in the dead letters for a redrive.)
        segments.withLock { $0[task.segment]?.pending = false }
        Task { await self.plan(task.segment) }
    }

    func flushRange(_ task: FlushTask) async throws {
        var manifest = try await manifest(of: task.segment)
        guard manifest.flushed == task.from else { return }  // done already, or stale: the scan plans anew
        let readFrom = min(task.from, manifest.nextFrame)
        var bytes = try await readSegment(task.segment, from: readFrom, to: task.to)
        var data = bytes.getSlice(at: bytes.readerIndex + Int(task.from - readFrom), length: Int(task.to - task.from))!
        let key = BlockObject.key(prefix: prefix, segment: task.segment, start: task.from)
        var end = task.to
        let object = BlockObject(segment: task.segment.number, start: task.from, bytes: data)
        switch try await object.create(in: objects, key: key, level: configuration.compressionLevel) {
        case .written: objectsWritten.add(1, ordering: .relaxed)
        case .alreadyPresent: objectsAdopted.add(1, ordering: .relaxed)
        case .differs(let existing):
            // An earlier attempt (maybe a dead owner's) wrote a different range at this start: adopt it if its
            // bytes are the store's.
            if existing.end > task.to {
                bytes = try await readSegment(task.segment, from: readFrom, to: existing.end)
            }
            data = bytes.getSlice(
                at: bytes.readerIndex + Int(task.from - readFrom), length: Int(existing.end - task.from))!
            guard existing.bytes == data else {
                throw EddyError(.corruptData, "object \(key) holds bytes that differ from the store's")
            }
            end = existing.end
            objectsAdopted.add(1, ordering: .relaxed)
        }
        FlushCrashPoint.reach(.afterPut)
        // Event boundaries up to `end`, from the first frame start at or after `readFrom`.
        var boundary = manifest.eventBoundary
        var next = manifest.nextFrame
        bytes.withUnsafeReadableBytes { raw in
            while next + 4 <= end, next >= readFrom {
                let at = Int(next - readFrom)
                guard at + 4 <= raw.count else { break }
                let body = UInt64(raw.loadUnaligned(fromByteOffset: at, as: UInt32.self).bigEndian)
                boundary = next
                next += 4 + body
            }
        }
        if next <= end { boundary = next }
        manifest.flushed = end
        manifest.eventBoundary = max(manifest.eventBoundary, min(boundary, end))
        manifest.nextFrame = next
        manifest.objects += 1
        let state = segments.withLock { $0[task.segment] }
        manifest.sealed = (state?.sealed ?? false) && end >= (state?.length ?? .max)
        manifest.updatedMilliseconds = WallClock.milliseconds()
        // Another node (the segment's next owner, or the one before) may have moved the manifest on meanwhile:
        // never move it back.
        let stored = try await SegmentManifest.load(from: objects, prefix: prefix, segment: task.segment)
        if stored.flushed >= manifest.flushed {
            segments.withLock { $0[task.segment, default: FlushState()].manifest = stored }
            return
        }
        try await manifest.save(to: objects, prefix: prefix, segment: task.segment)
        let saved = manifest
        segments.withLock { s in
            s[task.segment, default: FlushState()].manifest = saved
            s[task.segment]!.history.append((saved.updatedMilliseconds, saved.eventBoundary))
            if s[task.segment]!.history.count > 4096 { s[task.segment]!.history.removeFirst(1024) }
        }
        flushedBytes.add(Int(end - task.from), ordering: .relaxed)
    }

    /// Bytes [from, to) of a segment: whole blocks the owner cache holds from there (they were appended through
    /// this node), the rest from the store.
    func readSegment(_ segment: SegmentID, from: UInt64, to: UInt64) async throws -> ByteBuffer {
        // The usual task, one whole block the cache holds: its buffer itself, no copy.
        let first = geometry.index(containing: from)
        if geometry.range(ofBlock: first) == from..<to, let cached = try fullCachedBlock(segment, first) {
            return cached
        }
        var out = ByteBufferAllocator().buffer(capacity: Int(to - from))
        var offset = from
        while offset < to {
            let index = geometry.index(containing: offset)
            let block = geometry.range(ofBlock: index)
            if offset == block.lowerBound, to >= block.upperBound, let cached = try fullCachedBlock(segment, index) {
                out.writeImmutableBuffer(cached)
                offset = block.upperBound
                continue
            }
            let count = UInt32(min(to, block.upperBound) - offset)
            let r = try await store.send(
                .read(segment: segment, offset: offset, maxBytes: count, waitMilliseconds: 0),
                timeout: node.requestTimeout)
            guard case .readResult(_, _, var data) = r, data.readableBytes > 0 else {
                throw EddyError(.ioError, "the store returned no bytes of \(segment) at \(offset) (flushing to \(to))")
            }
            offset += UInt64(data.readableBytes)
            out.writeBuffer(&data)
        }
        return out
    }

    // MARK: - Cold reads

    /// Block `index` of `segment` from object storage: its objects, decoded, checked and joined. Returns the
    /// bytes from the block's start (all of the block when it was flushed whole).
    func coldBlock(_ segment: SegmentID, index: UInt64) async throws(EddyError) -> ByteBuffer {
        coldReads.add(1, ordering: .relaxed)
        let range = geometry.range(ofBlock: index)
        let folder = BlockObject.segmentFolder(prefix: prefix, segment: segment)
        do {
            let after =
                range.lowerBound == 0
                ? nil : BlockObject.key(prefix: prefix, segment: segment, start: range.lowerBound - 1)
            let listing = try await objects.list(prefix: folder, startAfter: after, continuation: nil, limit: 64)
            var out = ByteBufferAllocator().buffer(capacity: Int(geometry.blockSize))
            var at = range.lowerBound
            for info in listing.objects {
                guard let start = BlockObject.start(ofKey: info.key), start < range.upperBound else { break }
                guard start == at else {
                    throw EddyError(.corruptData, "objects of \(segment) skip from \(at) to \(start)")
                }
                let object = try BlockObject.decode(try await objects.get(info.key), key: info.key)
                var bytes = object.bytes
                out.writeBuffer(&bytes)
                at = object.end
            }
            guard at > range.lowerBound else {
                throw EddyError(
                    .truncated, "offset \(range.lowerBound) of \(segment) is neither in the store nor flushed")
            }
            return out
        } catch let error as EddyError {
            throw error
        } catch {
            throw EddyError(.unavailable, "object store: \(error)")
        }
    }

    // MARK: - Retention

    /// Truncates owned segments in the store to what retention allows: never past the manifest's last event
    /// boundary (what is flushed), and only as far as the byte or time limit asks.
    func applyRetention(core: NodeCore) async {
        guard configuration.retainBytes != nil || configuration.retainSeconds != nil else { return }
        let now = WallClock.milliseconds()
        for segment in core.ownedSegmentIDs() where segment.stream.scope != "_eddy" {
            guard let state = segments.withLock({ $0[segment] }), let manifest = state.manifest else { continue }
            var candidates = state.history.map(\.boundary) + [manifest.eventBoundary]
            var limit = manifest.eventBoundary
            if let bytes = configuration.retainBytes {
                let keepFrom = state.length > bytes ? state.length - bytes : 0
                limit = min(limit, keepFrom)
            }
            if let seconds = configuration.retainSeconds {
                let age = Int64(seconds.inSeconds * 1000)
                let old = state.history.filter { now - $0.at >= age }.map(\.boundary).max() ?? 0
                limit = min(limit, old)
            }
            candidates = candidates.filter { $0 <= limit }
            guard let point = candidates.max(), point > state.startOffset else { continue }
            let r = await core.handle(.truncate(segment, offset: point))
            if case .error(let error) = r {
                logger.warning("retention truncate failed", metadata: ["segment": "\(segment)", "error": "\(error)"])
            } else {
                truncations.add(1, ordering: .relaxed)
                segments.withLock { $0[segment]?.startOffset = point }
            }
        }
    }

    /// Refuses a truncation of `segment` past what is flushed: retention and `eddy truncate` drop only what object
    /// storage holds.
    func checkTruncation(_ segment: SegmentID, at offset: UInt64) async throws(EddyError) {
        let flushed: UInt64
        do {
            flushed = try await manifest(of: segment).flushed
        } catch {
            throw EddyError(.unavailable, "cannot read the flush manifest of \(segment): \(error)")
        }
        guard offset <= flushed else {
            throw EddyError(
                .invalidArgument,
                "cannot truncate \(segment) at \(offset): only \(flushed) bytes are flushed to object storage, and "
                    + "write-back never lets the store drop unflushed bytes")
        }
    }

    /// A store answer with each segment's start moved down to what object storage holds: reads below the store's
    /// start are served from there, so clients see the segment from its first flushed byte.
    func showingFlushedStarts(_ response: Response) async -> Response {
        switch response {
        case .segmentInfo(let info): return .segmentInfo(await flushedStart(info))
        case .streamInfo(let stream): return .streamInfo(await flushedStarts(stream))
        case .streamList(let streams):
            var out: [StreamInfo] = []
            for stream in streams { out.append(await flushedStarts(stream)) }
            return .streamList(out)
        default: return response
        }
    }

    func flushedStarts(_ stream: StreamInfo) async -> StreamInfo {
        var segments: [SegmentInfo] = []
        for info in stream.segments { segments.append(await flushedStart(info)) }
        return StreamInfo(name: stream.name, segments: segments)
    }

    func flushedStart(_ info: SegmentInfo) async -> SegmentInfo {
        guard info.startOffset > 0, info.segment.stream.scope != "_eddy",
            let manifest = try? await manifest(of: info.segment), manifest.objects > 0,
            manifest.first < info.startOffset
        else { return info }
        return SegmentInfo(segment: info.segment, startOffset: manifest.first, length: info.length, sealed: info.sealed)
    }

    /// The flushed watermark of `segment` as known here (nil when its manifest was never read).
    func flushed(_ segment: SegmentID) -> UInt64? { segments.withLock { $0[segment]?.manifest?.flushed } }

    /// Bytes appended but not yet flushed, summed over the segments this node tracks.
    var flushLag: Int {
        segments.withLock { s in
            s.values.reduce(0) { $0 + Int($1.length - min($1.length, $1.manifest?.flushed ?? 0)) }
        }
    }

    /// Block `index` of `segment` when the owner cache holds all of it (counted as a flush read from the cache).
    private func fullCachedBlock(_ segment: SegmentID, _ index: UInt64) throws -> ByteBuffer? {
        guard let cached = try cache.peek(BlockID(segment: segment, index: index)),
            cached.readableBytes == Int(geometry.blockSize)
        else { return nil }
        cachedFlushReads.add(1, ordering: .relaxed)
        return cached
    }

    /// Unflushed bytes per segment this node tracks.
    func lags() -> [SegmentID: UInt64] {
        segments.withLock { s in s.mapValues { $0.length - min($0.length, $0.manifest?.flushed ?? 0) } }
    }

    /// Unflushed bytes of one segment.
    func lag(_ segment: SegmentID) -> UInt64 {
        segments.withLock { s in
            guard let state = s[segment] else { return 0 }
            return state.length - min(state.length, state.manifest?.flushed ?? 0)
        }
    }

    func metrics() -> QueueMetrics? { queue.withLock { $0 }?.metrics() }
}

/// One flush task: a segment's range [from, to), carried in the message's attributes.
struct FlushTask: Sendable, Hashable {
    var segment: SegmentID
    var from: UInt64
    var to: UInt64

    var attributes: [String: String] { ["segment": segment.description, "from": "\(from)", "to": "\(to)"] }
}

extension FlushTask {
    /// The task a message's attributes carry; nil when they are not a flush task's.
    init?(attributes: [String: String]) {
        guard let text = attributes["segment"], let segment = try? SegmentID(parsing: text),
            let from = attributes["from"].flatMap(UInt64.init), let to = attributes["to"].flatMap(UInt64.init),
            to > from
        else { return nil }
        self.init(segment: segment, from: from, to: to)
    }
}

/// FlushCrashPoint is a test hook for crash tests of write-back: with `EDDY_TEST_CRASH_AT` set to a point's
/// name and `EDDY_TEST_CRASH_MARKER` to a file path, the first node process of a ring to reach that point of a
/// flush (after `EDDY_TEST_CRASH_SKIP` earlier passes, default 0) creates the marker and kills itself with
/// SIGKILL; the marker keeps the others (and the node that takes over) from doing the same. Unset, it costs one
/// check of a cached value.
enum FlushCrashPoint: String {
    /// A task was taken, nothing written yet.
    case beforePut = "before-put"
    /// The block object is written, the manifest not yet (and the task not acknowledged).
    case afterPut = "after-put"
    /// The manifest is written, the task not yet acknowledged.
    case afterManifest = "after-manifest"

    static let armed: (point: FlushCrashPoint, marker: String, skip: Int)? = {
        let environment = ProcessInfo.processInfo.environment
        guard let name = environment["EDDY_TEST_CRASH_AT"], let point = FlushCrashPoint(rawValue: name),
            let marker = environment["EDDY_TEST_CRASH_MARKER"]
        else { return nil }
        return (point, marker, Int(environment["EDDY_TEST_CRASH_SKIP"] ?? "") ?? 0)
    }()
    static let passes = Atomic<Int>(0)

    static func reach(_ point: FlushCrashPoint) {
        guard let armed, armed.point == point else { return }
        guard passes.add(1, ordering: .relaxed).newValue > armed.skip else { return }
        let fd = open(armed.marker, O_CREAT | O_EXCL | O_WRONLY, 0o644)
        guard fd >= 0 else { return }
        close(fd)
        kill(getpid(), SIGKILL)
    }
}
