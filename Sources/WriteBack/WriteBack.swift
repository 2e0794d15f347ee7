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
