import EddyTLS
import Logging
import ObjectStorage
import StreamModel
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
