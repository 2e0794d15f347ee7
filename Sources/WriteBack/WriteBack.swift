import CacheCore
import EddyTLS
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
    /// Full blocks per object: full blocks wait until this many are full (at most ``flushIdle``, and not when the
    /// segment is sealed or idle) and go out as one object. 1 writes every block as it fills; more means fewer
    /// requests, which is what object storage charges and spends its CPU on (SeaweedFS spends about 2 ms of its
    /// CPU on an object of one 1 MiB block here, and about 5 ms on one of four: `scripts/bench-writeback.sh`),
    /// for a flush lag of up to this many blocks per segment. At most ``maximumObjectBlocks``.
    public var objectBlocks: Int = 1
    /// The most blocks one object may hold: a cold read looks this far back for the object holding a block.
    public static let maximumObjectBlocks = 16
    /// A flush task covers at most this many objects of a segment: a segment appended faster than it is flushed
    /// gets one queue message for the objects it filled meanwhile, not one per object.
    public var objectsPerTask: Int = 8
    /// A segment's manifest is saved at most once per this interval: a flush that finishes sooner after the last
    /// save advances it in memory, and one save within the interval records every flush since (the first flush of
    /// a segment saves at once). Retention and truncation only go as far as the saved manifest, and a new owner
    /// re-flushes from the saved watermark (finding the objects already there), so nothing depends on the unsaved
    /// part. Each save is two fsyncs on the file backend, or a GET and a PUT on S3.
    public var manifestInterval: Duration = .milliseconds(200)

    /// A configuration writing to `objectStore` under `prefix`.
    public init(objectStore: any ObjectStore, prefix: String = "") {
        self.objectStore = objectStore
        self.prefix = prefix
    }

    /// ``objectBlocks`` within 1...``maximumObjectBlocks``.
    package var clampedObjectBlocks: Int { min(max(objectBlocks, 1), Self.maximumObjectBlocks) }
}

/// WriteBackEnvironment is what write-back needs of the node it runs in, besides the caches it reads.
package struct WriteBackEnvironment: Sendable {
    /// The node's name (its listen address), which names its queue's journal stream.
    package var node: String
    /// The store, which the queue's journal connects to.
    package var store: ServerAddress
    /// The node's service token (empty: none) and TLS for connecting out (nil: plain TCP).
    package var serviceToken: String
    package var tls: ClientTLS?
    /// The deadline of a request to the store.
    package var requestTimeout: Duration
    package var logger: Logger

    package init(
        node: String, store: ServerAddress, serviceToken: String, tls: ClientTLS?, requestTimeout: Duration,
        logger: Logger
    ) {
        self.node = node
        self.store = store
        self.serviceToken = serviceToken
        self.tls = tls
        self.requestTimeout = requestTimeout
        self.logger = logger
    }
}

/// WriteBackHost is the node write-back runs in, as write-back sees it: which segments it owns now, and its own
/// way of running a request as their owner (retention truncates through it, so the node's cache and its peers
/// hear of the truncation as of any other).
package protocol WriteBackHost: AnyObject, Sendable {
    /// The segments this node owns now.
    func ownedSegmentIDs() -> [SegmentID]
    /// Runs `request` through the node, as a client's request would be.
    func handleAsClient(_ request: Request) async -> Response
}

/// WriteBack flushes the segments a node owns to object storage through the node's ``WriteBackQueue``, serves
/// reads of what the store has dropped from there, and applies retention.
///
/// Each owned segment has at most one flush task queued at a time, for the range from its manifest's `flushed`
/// watermark: full blocks (`standard`) once ``WriteBackConfiguration/objectBlocks`` of them are full or the first
/// waited ``WriteBackConfiguration/flushIdle``, whole objects of that many blocks, up to
/// ``WriteBackConfiguration/objectsPerTask`` objects; or to the segment's end when it is sealed (`critical`) or
/// idle past ``WriteBackConfiguration/flushIdle`` (`bulk`). A worker reads the range from the
/// store, PUTs it create-only as a ``BlockObject`` and then advances the manifest; when the key already holds
/// an object (an earlier attempt, or a dead owner's, that wrote it but not the manifest) its bytes are compared
/// with the store's and it is adopted. So tasks are idempotent, at-least-once delivery is safe, and a new owner
/// re-derives any lost work from the manifest and the store's length.
package final class WriteBack: Sendable {
    package let configuration: WriteBackConfiguration
    package let node: WriteBackEnvironment
    package let store: Upstream
    package let geometry: BlockGeometry
    /// The owner cache: a block to flush that is cached is not read from the store again.
    package let cache: BlockCache
    package let logger: Logger
    package let queue = Mutex<WriteBackQueue?>(nil)
    package let segments = Mutex<[SegmentID: FlushState]>([:])
    package let flushedBytes = Atomic<Int>(0)
    package let objectsWritten = Atomic<Int>(0)
    package let objectsAdopted = Atomic<Int>(0)
    package let coldReads = Atomic<Int>(0)
    package let coldObjectGets = Atomic<Int>(0)
    package let cachedFlushReads = Atomic<Int>(0)
    package let truncations = Atomic<Int>(0)
    /// Manifest loads under way (``manifest(of:)``).
    package let manifestLoads = Mutex<[SegmentID: Task<SegmentManifest, any Error>]>([:])
    /// Objects fetched for cold reads lately (``coldObject(_:)``).
    package let coldObjects = Mutex<[(key: String, at: Int64, fetch: Task<BlockObject, any Error>)]>([])
    package static let flushQueue = "flush"

    /// What the node knows of one segment's flushing.
    package struct FlushState: Sendable {
        /// The manifest as flushing advanced it (every object it counts is written).
        package var manifest: SegmentManifest?
        /// The manifest as last saved to (or read from) object storage: what retention and truncation go by.
        package var saved: SegmentManifest?
        /// When `saved` was written (0: not by this node yet).
        package var savedAt: Int64 = 0
        /// A save is running, or one is due within the interval.
        package var saving = false
        package var saveScheduled = false
        /// Bytes flushed since the last save (counted in `flushedBytes` once saved).
        package var unsavedBytes = 0
        package var pending = false
        /// The store's ``SegmentInfo/incarnation`` of the segment, as the last scan saw it.
        package var incarnation: UInt64 = 0
        /// How far the objects of an earlier stream of the name were found to hold this one's bytes.
        package var matchedTo: UInt64 = 0
        package var length: UInt64 = 0
        package var startOffset: UInt64 = 0
        package var sealed = false
        package var lastChange: Int64 = 0
        /// When the planner first saw a full block waiting for the rest of its object (0: none waits).
        package var fullSince: Int64 = 0
        /// (flush time, event boundary reached) of recent flushes, for time-based retention.
        package var history: [(at: Int64, boundary: UInt64)] = []
    }

    package init(
        configuration: WriteBackConfiguration, node: WriteBackEnvironment, store: Upstream, geometry: BlockGeometry,
        cache: BlockCache
    ) {
        self.configuration = configuration
        self.node = node
        self.store = store
        self.geometry = geometry
        self.cache = cache
        self.logger = node.logger
    }

    package var objects: any ObjectStore { configuration.objectStore }
    package var prefix: String { configuration.prefix }

    /// The journal stream of this node's queue: `_eddy/queue-<node>` (the address with `:` as `-`).
    package static func journalStream(node: String) throws(EddyError) -> StreamName {
        let name = "queue-" + String(node.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "-" })
        return try StreamName(scope: StreamName.internalScope, stream: String(name.prefix(StreamName.maxPartLength)))
    }

    /// Opens the queue (retrying while the store is unreachable), registers the flush handler and the periodic
    /// scan and retention tasks, and starts the workers.
    package func run(core: any WriteBackHost) async {
        let stream: StreamName
        do {
            stream = try Self.journalStream(node: node.node)
        } catch {
            logger.error("write-back disabled: \(error)")
            return
        }
        let address = node.store
        var attempt = 0
        while !Task.isCancelled {
            do {
                let token = node.serviceToken
                let tls = node.tls
                let journal = try await StoreJournalLog(stream: stream) {
                    try await StoreClient.connect(to: address, token: token, tls: tls)
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

    package func shutdown(finishWork: Duration = .zero) async {
        let current = queue.withLock { $0 }
        await current?.shutdown(finishWork: finishWork)
        await saveAllManifests()
    }

    // MARK: - Planning

    /// An append landed at the owner: remember the segment's length and plan a flush when a block filled.
    package func appended(_ segment: SegmentID, length: UInt64) {
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
    package func scan(core: any WriteBackHost) async {
        let owned = core.ownedSegmentIDs().filter { $0.stream.scope != StreamName.internalScope }
        guard !owned.isEmpty || !segments.withLock({ $0.isEmpty }) else { return }
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
        // Segments of deleted streams have nothing left to flush (and no lag to report).
        let listed = Set(infos.keys.map(\.stream))
        segments.withLock { s in
            for (segment, state) in s where !state.pending && !state.saving && !listed.contains(segment.stream) {
                s[segment] = nil
            }
        }
        for segment in owned {
            guard let info = infos[segment] else { continue }
            let recreated = segments.withLock { s -> Bool in
                var state = s[segment, default: FlushState()]
                if info.length != state.length || info.sealed != state.sealed || state.lastChange == 0 {
                    state.lastChange = now
                }
                let recreated = state.incarnation != 0 && state.incarnation != info.incarnation
                if recreated { state.matchedTo = 0 }  // a comparison under way was with another stream
                state.incarnation = info.incarnation
                if let known = state.manifest?.incarnation ?? state.saved?.incarnation, known != info.incarnation,
                    !state.pending, !state.saving
                {
                    // The stream was deleted and created again under its name: what this node knew of its flushing
                    // was the earlier stream's. The next manifest load compares the earlier objects with the new
                    // stream's bytes (loadManifest).
                    state = FlushState(incarnation: info.incarnation, lastChange: now)
                }
                state.length = info.length
                state.sealed = info.sealed
                state.startOffset = info.startOffset
                s[segment] = state
                return recreated
            }
            // Blocks cached of the earlier stream (a delete straight at the store tells no node) must not be flushed
            // or compared as the new one's.
            if recreated { cache.removeStream(segment.stream) }
            await plan(segment)
            // A deferred manifest save that failed is tried again here.
            try? await persistManifest(segment)
        }
    }

    /// Queues the next flush task of `segment` when none is queued and one is due.
    package func plan(_ segment: SegmentID) async {
        guard let queue = queue.withLock({ $0 }) else { return }
        guard let manifest = try? await manifest(of: segment) else { return }
        let now = WallClock.milliseconds()
        let task = segments.withLock { s -> (FlushTask, QoSClass)? in
            // Not on an earlier stream's manifest: the scan has seen the stream created again and drops it.
            guard var state = s[segment], !state.pending,
                state.incarnation == 0 || manifest.incarnation == state.incarnation
            else { return nil }
            let from = manifest.flushed
            guard state.length > from else { return nil }
            let blockEnd = geometry.range(ofBlock: geometry.index(containing: from)).upperBound
            let idle = Int64(configuration.flushIdle.inSeconds * 1000)
            let choice: (UInt64, QoSClass)?
            if state.length >= blockEnd {
                let objectBytes = UInt64(configuration.clampedObjectBlocks) * geometry.blockSize
                // The first object ends where its last block does (`from` may be inside a block, after a flushed
                // tail); the full blocks end where the tail block starts.
                let firstObjectEnd = blockEnd + objectBytes - geometry.blockSize
                let fullEnd = max(
                    blockEnd, geometry.range(ofBlock: geometry.index(containing: state.length)).lowerBound)
                let cap = firstObjectEnd + UInt64(max(configuration.objectsPerTask, 1) - 1) * objectBytes
                if state.fullSince == 0 { state.fullSince = now }
                if fullEnd >= firstObjectEnd {
                    // Whole objects only, up to objectsPerTask: a segment that filled blocks faster than they were
                    // flushed sends one message for them, not one each.
                    let whole = firstObjectEnd + (fullEnd - firstObjectEnd) / objectBytes * objectBytes
                    choice = (min(whole, cap), .standard)
                } else if state.sealed || now - state.fullSince >= idle || now - state.lastChange >= idle {
                    // The rest of the object is not coming soon: what is full goes now.
                    choice = (min(fullEnd, cap), .standard)
                } else {
                    choice = nil
                }
                if let (to, _) = choice { state.fullSince = to >= fullEnd ? 0 : now }
                s[segment] = state
            } else if state.sealed {
                choice = (state.length, .critical)
            } else if now - state.lastChange >= idle {
                choice = (state.length, .bulk)
            } else {
                choice = nil
            }
            guard let (to, qos) = choice else { return nil }
            state.pending = true
            s[segment] = state
            return (FlushTask(segment: segment, from: from, to: to, incarnation: state.incarnation), qos)
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

    /// The segment's manifest (read once, then kept up to date here). Concurrent first calls share one load.
    package func manifest(of segment: SegmentID) async throws -> SegmentManifest {
        if let known = segments.withLock({ $0[segment]?.manifest }) { return known }
        let load = manifestLoads.withLock { loads in
            if let running = loads[segment] { return running }
            let load = Task { try await self.loadManifest(segment) }
            loads[segment] = load
            return load
        }
        defer { manifestLoads.withLock { loads in if loads[segment] == load { loads[segment] = nil } } }
        return try await load.value
    }

    /// Reads the segment's manifest from object storage and makes it this node's.
    ///
    /// A manifest of another ``SegmentInfo/incarnation`` is of an earlier stream of the same name, deleted since.
    /// Its objects are compared with the new stream's bytes (as far as the stream reaches; a later load goes on
    /// from there): the same bytes (a restore from these objects) keep them, with the manifest; any difference
    /// removes them, and the new stream is flushed from scratch under their keys. Until the comparison is done the
    /// load fails, so nothing is flushed or truncated by the earlier stream's manifest.
    private func loadManifest(_ segment: SegmentID) async throws -> SegmentManifest {
        if let known = segments.withLock({ $0[segment]?.manifest }) { return known }
        var loaded = try await SegmentManifest.load(from: objects, prefix: prefix, segment: segment)
        guard case .segmentInfo(let info) = try await store.send(.segmentInfo(segment), timeout: node.requestTimeout)
        else { throw EddyError(.internalError, "the store answered segmentInfo of \(segment) with another response") }
        if let earlier = loaded.incarnation, earlier != info.incarnation {
            switch try await compareEarlierStream(segment, loaded, info) {
            case true?:
                loaded.incarnation = info.incarnation
                try await loaded.save(to: objects, prefix: prefix, segment: segment)
                logger.info(
                    "an earlier stream's objects hold this stream's bytes (a restore?): kept",
                    metadata: ["segment": "\(segment)", "earlier": "\(earlier)", "incarnation": "\(info.incarnation)"])
            case false?:
                try await removeEarlierStream(segment, earlier: earlier, now: info.incarnation)
                loaded = SegmentManifest(segment: segment)
            case nil:
                throw EddyError(
                    .unavailable,
                    "\(segment): the objects of an earlier stream of its name match this one's bytes up to "
                        + "\(segments.withLock { $0[segment]?.matchedTo ?? 0 }) of \(loaded.flushed) so far")
            }
        }
        loaded.incarnation = info.incarnation
        if loaded.objects == 0, loaded.flushed < info.startOffset {
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
            s[segment]!.saved = loaded
            return loaded
        }
    }

    /// The segment's manifest as saved in object storage (read once, then kept up to date here).
    package func savedManifest(of segment: SegmentID) async throws -> SegmentManifest {
        if let saved = segments.withLock({ $0[segment]?.saved }) { return saved }
        _ = try await manifest(of: segment)
        if let saved = segments.withLock({ $0[segment]?.saved }) { return saved }
        return try await SegmentManifest.load(from: objects, prefix: prefix, segment: segment)
    }

    // MARK: - Flushing

    /// Runs one flush task: the object, then the manifest; then plans the next task of the segment.
    package func flush(_ task: FlushTask) async throws {
        let recreated = "flush dropped: the stream was deleted and created again"
        do {
            if try await isOfEarlierStream(task) {
                logger.info("\(recreated)", metadata: ["segment": "\(task.segment)"])
            } else {
                try await flushRange(task)
            }
        } catch let error as EddyError where error.code == .streamNotFound || error.code == .segmentNotFound {
            // The stream was deleted meanwhile: nothing is left to flush, and a retry would only fail again.
            logger.info("flush dropped: the stream is deleted", metadata: ["segment": "\(task.segment)"])
            segments.withLock { $0[task.segment] = nil }
            return
        } catch {
            // A flush of the earlier stream of a name fails against the new one's bytes: drop it, not retry it.
            guard (try? await isOfEarlierStream(task, askingTheStore: true)) == true else { throw error }
            logger.info("\(recreated)", metadata: ["segment": "\(task.segment)"])
        }
        // Done (or dropped): the segment may have its next task. (A failed task stays the segment's one task: the
        // queue retries it, or it waits in the dead letters for a redrive.)
        segments.withLock { $0[task.segment]?.pending = false }
        Task { await self.plan(task.segment) }
    }

    /// Whether `task` was planned for an earlier stream of its segment's name (one since deleted and created again):
    /// by the last scan's view of the store, or by asking the store now. A task from before incarnations were
    /// recorded (0) is never stale.
    package func isOfEarlierStream(_ task: FlushTask, askingTheStore ask: Bool = false) async throws -> Bool {
        guard task.incarnation != 0 else { return false }
        if ask {
            guard
                case .segmentInfo(let info) = try await store.send(
                    .segmentInfo(task.segment), timeout: node.requestTimeout)
            else { return false }
            return info.incarnation != task.incarnation
        }
        let current = segments.withLock { $0[task.segment]?.incarnation ?? 0 }
        return current != 0 && current != task.incarnation
    }

    /// Compares the objects of an earlier stream of `segment`'s name (`manifest`'s) with the stream's bytes now,
    /// from where the last comparison got to: true when all of them match, false at a difference (or when the
    /// stream no longer holds bytes the objects do), nil when they match as far as the stream reaches yet.
    package func compareEarlierStream(_ segment: SegmentID, _ manifest: SegmentManifest, _ info: SegmentInfo)
        async throws
        -> Bool?
    {
        var at = max(manifest.first, segments.withLock { $0[segment]?.matchedTo ?? 0 })
        guard info.startOffset <= at else { return false }
        let end = min(manifest.flushed, info.length)
        while at < end {
            let index = geometry.index(containing: at)
            let upTo = min(end, geometry.range(ofBlock: index).upperBound)
            let held: ByteBuffer
            do {
                held = try await coldBlock(segment, index: index)
            } catch {
                // An object store that does not answer: compare later. Else the earlier stream's objects do not hold
                // what its manifest says.
                if error.code == .unavailable { throw error }
                return false
            }
            let skip = Int(at - geometry.range(ofBlock: index).lowerBound)
            guard let objectBytes = held.getSlice(at: held.readerIndex + skip, length: Int(upTo - at)),
                objectBytes == (try await readSegment(segment, from: at, to: upTo))
            else { return false }
            at = upTo
            segments.withLock { $0[segment, default: FlushState()].matchedTo = at }
        }
        return at >= manifest.flushed ? true : nil
    }

    /// Removes the block objects and the manifest of an earlier stream of `segment`'s name, before this one's
    /// flushes take their keys; cold reads forget what they kept of them.
    package func removeEarlierStream(_ segment: SegmentID, earlier: UInt64, now: UInt64) async throws {
        let folder = BlockObject.segmentFolder(prefix: prefix, segment: segment)
        let keys = try await objects.listAll(prefix: folder).map(\.key)
        for key in keys { try await objects.delete(key) }
        try await objects.delete(SegmentManifest.key(prefix: prefix, segment: segment))
        coldObjects.withLock { kept in kept.removeAll { $0.key.hasPrefix(folder) } }
        logger.warning(
            "removed an earlier stream's objects: the stream was deleted and created again under its name",
            metadata: [
                "segment": "\(segment)", "objects": "\(keys.count)", "earlier": "\(earlier)", "incarnation": "\(now)",
            ])
    }

    /// Flushes a task's range one object at a time (up to ``WriteBackConfiguration/objectBlocks`` blocks each; a
    /// task may span several objects), advancing the manifest after each; a retry resumes at the manifest's
    /// watermark when an earlier attempt got part way.
    package func flushRange(_ task: FlushTask) async throws {
        var from = task.from
        let reached = try await manifest(of: task.segment).flushed
        if reached > task.from && reached < task.to { from = reached }
        let rest = UInt64(configuration.clampedObjectBlocks - 1) * geometry.blockSize
        while true {
            let end = min(task.to, geometry.range(ofBlock: geometry.index(containing: from)).upperBound + rest)
            try await flushObject(FlushTask(segment: task.segment, from: from, to: end))
            let next = try await manifest(of: task.segment).flushed
            guard next > from, next < task.to else { return }
            from = next
        }
    }

    /// Writes one block object (the range of `task`, within one block, or to the end of an object an earlier
    /// attempt wrote at the same start) and advances the manifest past it.
    package func flushObject(_ task: FlushTask) async throws {
        FlushCrashPoint.reach(.beforePut)
        var manifest = try await manifest(of: task.segment)
        guard manifest.flushed == task.from else {
            // Done already (a retry after its manifest failed to save: save it now), or stale: the scan plans anew.
            try await persistManifest(task.segment, now: true)
            return
        }
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
        let advanced = manifest
        let last = segments.withLock { s -> Bool in
            s[task.segment, default: FlushState()].manifest = advanced
            s[task.segment]!.unsavedBytes += Int(end - task.from)
            return s[task.segment]!.sealed && end >= s[task.segment]!.length
        }
        // A sealed segment's last flush is saved at once (so is a segment's first: no save to wait after).
        try await persistManifest(task.segment, now: last)
        FlushCrashPoint.reach(.afterManifest)
    }

    /// Saves `segment`'s manifest if it moved since the last save: at once when the last save is at least
    /// ``WriteBackConfiguration/manifestInterval`` old (or `now` is set), else once that interval has passed, by a
    /// deferred save that takes every flush of the meantime along. Saves of one segment never overlap. A failed
    /// save throws (the flush is retried); a deferred one is tried again by the next flush or the shutdown.
    package func persistManifest(_ segment: SegmentID, now force: Bool = false) async throws {
        let interval = Int64(configuration.manifestInterval.inSeconds * 1000)
        let now = WallClock.milliseconds()
        enum Step { case nothing, save, later(Int64) }
        let step = segments.withLock { s -> Step in
            guard var state = s[segment], let manifest = state.manifest, manifest != state.saved else {
                return .nothing
            }
            if state.saving { return .nothing }  // the running save looks again when it ends
            let wait = state.savedAt + interval - now
            if force || wait <= 0 {
                state.saving = true
                state.saveScheduled = false
                s[segment] = state
                return .save
            }
            if state.saveScheduled { return .nothing }
            state.saveScheduled = true
            s[segment] = state
            return .later(wait)
        }
        switch step {
        case .nothing: return
        case .later(let wait):
            Task {
                try? await Task.sleep(for: .milliseconds(wait))
                // Due now: if a save is running meanwhile, it schedules the next one when it ends.
                self.segments.withLock { $0[segment]?.saveScheduled = false }
                do {
                    try await self.persistManifest(segment, now: true)
                } catch {
                    self.logger.warning(
                        "cannot save a flush manifest", metadata: ["segment": "\(segment)", "error": "\(error)"])
                }
            }
        case .save:
            do {
                try await saveManifest(segment)
            } catch {
                segments.withLock { $0[segment]?.saving = false }
                throw error
            }
            segments.withLock { $0[segment]?.saving = false }
            // Flushes that finished during the save are saved by the next one.
            try await persistManifest(segment)
        }
    }

    /// Writes the manifest as flushing advanced it, unless another node moved the stored one further (then that
    /// one is adopted): a manifest never moves back.
    private func saveManifest(_ segment: SegmentID) async throws {
        guard let state = segments.withLock({ $0[segment] }), var manifest = state.manifest else { return }
        let unsaved = state.unsavedBytes
        manifest.sealed = state.sealed && manifest.flushed >= state.length
        manifest.updatedMilliseconds = WallClock.milliseconds()
        let stored = try await SegmentManifest.load(from: objects, prefix: prefix, segment: segment)
        if stored.flushed >= manifest.flushed {
            segments.withLock { s in
                s[segment, default: FlushState()].manifest = stored
                s[segment]!.saved = stored
                s[segment]!.unsavedBytes = 0
            }
            return
        }
        try await manifest.save(to: objects, prefix: prefix, segment: segment)
        let saved = manifest
        segments.withLock { s in
            var state = s[segment, default: FlushState()]
            if let current = state.manifest, current.flushed <= saved.flushed { state.manifest = saved }
            state.saved = saved
            state.savedAt = WallClock.milliseconds()
            state.unsavedBytes -= unsaved
            state.history.append((saved.updatedMilliseconds, saved.eventBoundary))
            if state.history.count > 4096 { state.history.removeFirst(1024) }
            s[segment] = state
        }
        flushedBytes.add(unsaved, ordering: .relaxed)
    }

    /// Saves every manifest with flushes not saved yet (at shutdown).
    package func saveAllManifests() async {
        let dirty = segments.withLock { s in s.filter { $0.value.manifest != $0.value.saved }.map(\.key) }
        for segment in dirty {
            do {
                try await persistManifest(segment, now: true)
            } catch {
                logger.warning(
                    "cannot save a flush manifest at shutdown",
                    metadata: ["segment": "\(segment)", "error": "\(error)"])
            }
        }
    }

    /// Bytes [from, to) of a segment: whole blocks the owner cache holds from there (they were appended through
    /// this node), the rest from the store.
    package func readSegment(_ segment: SegmentID, from: UInt64, to: UInt64) async throws -> ByteBuffer {
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

    /// Block `index` of `segment` from object storage: the bytes of its objects, decoded, checked and joined.
    /// Returns the bytes from the block's start (all of the block when it was flushed whole).
    ///
    /// An object holds at most ``WriteBackConfiguration/maximumObjectBlocks`` blocks, so the one holding the
    /// block's first byte starts less than that many blocks before it: one listing from there finds it and the
    /// objects after it. Decoded objects are kept for a few seconds (``coldObject(_:)``), so reading the blocks of
    /// one object in turn fetches it once.
    package func coldBlock(_ segment: SegmentID, index: UInt64) async throws(EddyError) -> ByteBuffer {
        coldReads.add(1, ordering: .relaxed)
        let range = geometry.range(ofBlock: index)
        let folder = BlockObject.segmentFolder(prefix: prefix, segment: segment)
        let window = UInt64(WriteBackConfiguration.maximumObjectBlocks) * geometry.blockSize
        do {
            // The last object starting at or before the block, then those starting inside it.
            var holding: [String] = []
            var after =
                range.lowerBound < window
                ? nil : BlockObject.key(prefix: prefix, segment: segment, start: range.lowerBound - window)
            listing: while true {
                let page = try await objects.list(prefix: folder, startAfter: after, continuation: nil, limit: 1000)
                for info in page.objects {
                    guard let start = BlockObject.start(ofKey: info.key) else { continue }
                    if start >= range.upperBound { break listing }
                    if start <= range.lowerBound { holding.removeAll() }
                    holding.append(info.key)
                }
                guard page.continuation != nil, let last = page.objects.last?.key else { break }
                after = last
            }
            var out = ByteBufferAllocator().buffer(capacity: Int(geometry.blockSize))
            var at = range.lowerBound
            for key in holding {
                let object = try await coldObject(key)
                if object.end <= at { continue }  // ends before the block (the next one shows whether a gap follows)
                guard object.start <= at else {
                    throw EddyError(.corruptData, "objects of \(segment) skip from \(at) to \(object.start)")
                }
                let upTo = min(object.end, range.upperBound)
                out.writeImmutableBuffer(
                    object.bytes.getSlice(
                        at: object.bytes.readerIndex + Int(at - object.start), length: Int(upTo - at))!)
                at = upTo
                if at == range.upperBound { break }
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

    /// How long a decoded object is kept for the cold reads of its other blocks.
    package static let coldObjectLifetime: Int64 = 5_000
    /// At most this many decoded objects are kept.
    package static let coldObjectLimit = 4

    /// The object under `key`, decoded and checked: fetched once for concurrent and close-following cold reads of
    /// its blocks (read-ahead asks for the next blocks at once), kept ``coldObjectLifetime`` milliseconds.
    package func coldObject(_ key: String) async throws -> BlockObject {
        let now = WallClock.milliseconds()
        let fetch = coldObjects.withLock { kept -> Task<BlockObject, any Error> in
            kept.removeAll { now - $0.at > Self.coldObjectLifetime }
            if let found = kept.first(where: { $0.key == key }) { return found.fetch }
            let objects = self.objects
            coldObjectGets.add(1, ordering: .relaxed)
            let fetch = Task { try BlockObject.decode(try await objects.get(key), key: key) }
            kept.append((key, now, fetch))
            if kept.count > Self.coldObjectLimit { kept.removeFirst() }
            return fetch
        }
        do {
            return try await fetch.value
        } catch {
            coldObjects.withLock { kept in kept.removeAll { $0.key == key } }
            throw error
        }
    }

    // MARK: - Retention

    /// Truncates owned segments in the store to what retention allows: never past the manifest's last event
    /// boundary (what is flushed), and only as far as the byte or time limit asks.
    package func applyRetention(core: any WriteBackHost) async {
        guard configuration.retainBytes != nil || configuration.retainSeconds != nil else { return }
        let now = WallClock.milliseconds()
        for segment in core.ownedSegmentIDs() where segment.stream.scope != StreamName.internalScope {
            guard let state = segments.withLock({ $0[segment] }), let manifest = state.saved else { continue }
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
            let r = await core.handleAsClient(.truncate(segment, offset: point))
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
    package func checkTruncation(_ segment: SegmentID, at offset: UInt64) async throws(EddyError) {
        let flushed: UInt64
        do {
            flushed = try await savedManifest(of: segment).flushed
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
    package func showingFlushedStarts(_ response: Response) async -> Response {
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

    package func flushedStarts(_ stream: StreamInfo) async -> StreamInfo {
        var segments: [SegmentInfo] = []
        for info in stream.segments { segments.append(await flushedStart(info)) }
        return StreamInfo(name: stream.name, segments: segments)
    }

    package func flushedStart(_ info: SegmentInfo) async -> SegmentInfo {
        guard info.startOffset > 0, info.segment.stream.scope != StreamName.internalScope,
            let manifest = try? await manifest(of: info.segment), manifest.objects > 0,
            manifest.first < info.startOffset
        else { return info }
        return SegmentInfo(
            segment: info.segment, startOffset: manifest.first, length: info.length, sealed: info.sealed,
            incarnation: info.incarnation)
    }

    /// The flushed watermark of `segment` as known here (nil when its manifest was never read).
    package func flushed(_ segment: SegmentID) -> UInt64? { segments.withLock { $0[segment]?.manifest?.flushed } }

    /// Bytes appended but not yet flushed, summed over the segments this node tracks.
    package var flushLag: Int {
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
    package func lags() -> [SegmentID: UInt64] {
        segments.withLock { s in s.mapValues { $0.length - min($0.length, $0.manifest?.flushed ?? 0) } }
    }

    /// Unflushed bytes of one segment.
    package func lag(_ segment: SegmentID) -> UInt64 {
        segments.withLock { s in
            guard let state = s[segment] else { return 0 }
            return state.length - min(state.length, state.manifest?.flushed ?? 0)
        }
    }

    package func metrics() -> QueueMetrics? { queue.withLock { $0 }?.metrics() }
}

/// One flush task: a segment's range [from, to), carried in the message's attributes.
package struct FlushTask: Sendable, Hashable {
    package var segment: SegmentID
    package var from: UInt64
    package var to: UInt64
    /// The segment's ``SegmentInfo/incarnation`` when the task was planned (0: unknown).
    package var incarnation: UInt64 = 0

    package init(segment: SegmentID, from: UInt64, to: UInt64, incarnation: UInt64 = 0) {
        self.segment = segment
        self.from = from
        self.to = to
        self.incarnation = incarnation
    }

    package var attributes: [String: String] {
        ["segment": segment.description, "from": "\(from)", "to": "\(to)", "incarnation": "\(incarnation)"]
    }
}

extension FlushTask {
    /// The task a message's attributes carry; nil when they are not a flush task's.
    package init?(attributes: [String: String]) {
        guard let text = attributes["segment"], let segment = try? SegmentID(parsing: text),
            let from = attributes["from"].flatMap(UInt64.init), let to = attributes["to"].flatMap(UInt64.init),
            to > from
        else { return nil }
        self.init(
            segment: segment, from: from, to: to, incarnation: attributes["incarnation"].flatMap(UInt64.init) ?? 0)
    }
}

/// FlushCrashPoint is a test hook for crash tests of write-back: with `EDDY_TEST_CRASH_AT` set to a point's
/// name and `EDDY_TEST_CRASH_MARKER` to a file path, the first node process of a ring to reach that point of a
/// flush (after `EDDY_TEST_CRASH_SKIP` earlier passes, default 0) creates the marker and kills itself with
/// SIGKILL; the marker keeps the others (and the node that takes over) from doing the same. Unset, it costs one
/// check of a cached value.
package enum FlushCrashPoint: String {
    /// A block object is about to be written (its task taken and not acknowledged; in a task of several blocks,
    /// the blocks before it are flushed).
    case beforePut = "before-put"
    /// The block object is written, the manifest not yet (and the task not acknowledged).
    case afterPut = "after-put"
    /// The manifest is advanced (and saved: at once for a segment's first flush, else within
    /// ``WriteBackConfiguration/manifestInterval``), the task not yet acknowledged.
    case afterManifest = "after-manifest"

    package static let armed: (point: FlushCrashPoint, marker: String, skip: Int)? = {
        let environment = ProcessInfo.processInfo.environment
        guard let name = environment["EDDY_TEST_CRASH_AT"], let point = FlushCrashPoint(rawValue: name),
            let marker = environment["EDDY_TEST_CRASH_MARKER"]
        else { return nil }
        return (point, marker, Int(environment["EDDY_TEST_CRASH_SKIP"] ?? "") ?? 0)
    }()
    package static let passes = Atomic<Int>(0)

    package static func reach(_ point: FlushCrashPoint) {
        guard let armed, armed.point == point else { return }
        guard passes.add(1, ordering: .relaxed).newValue > armed.skip else { return }
        let fd = open(armed.marker, O_CREAT | O_EXCL | O_WRONLY, 0o644)
        guard fd >= 0 else { return }
        close(fd)
        kill(getpid(), SIGKILL)
    }
}
