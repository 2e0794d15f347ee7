import Coalescing
import NIOCore
import StreamModel
import Synchronization

/// Settings of a ``BlockCache``.
public struct BlockCacheConfiguration: Sendable {
    /// The byte budget: block bytes as stored plus `entryOverhead` per block never exceed it.
    public var capacity: Int64
    /// The eviction policy, by registry name.
    public var policy: PolicyKind = .s3fifo
    /// Overrides of the policy's parameters.
    public var policyParameters: [String: Double] = [:]
    /// Independent shards, each with its own lock, policy and a share of the budget. Blocks of one segment
    /// share a shard, so a policy sees each segment's reads in order.
    public var shards: Int = 16
    /// Plain or zstd-compressed residency.
    public var residency: Residency = .plain
    /// Bytes of metadata charged per cached block (index entry, policy node, storage header).
    public var entryOverhead: Int64 = 256
    /// The typical block size, which sizes the policies' tables (``PolicyKind/make(capacity:parameters:objectSize:)``).
    public var blockSize: Int64 = Int64(BlockGeometry.defaultBlockSize)

    /// Creates a configuration.
    public init(capacity: Int64) { self.capacity = capacity }
}

/// Counters of a ``BlockCache``.
public struct CacheStats: Sendable, Hashable {
    /// Lookups that found the block.
    public var hits: Int = 0
    /// Lookups that did not.
    public var misses: Int = 0
    /// Block bytes served from the cache.
    public var byteHits: Int64 = 0
    /// Blocks stored.
    public var inserts: Int = 0
    /// Blocks the policy evicted.
    public var evictions: Int = 0
    /// Inserts refused (bigger than a shard, or the arena was full).
    public var rejected: Int = 0
    /// Loads started by ``BlockCache/getOrLoad(_:load:)``.
    public var loads: Int = 0
    /// Requests that joined a load already in progress instead of starting one.
    public var coalesced: Int = 0
    /// Blocks resident now.
    public var entries: Int = 0
    /// Bytes the resident blocks take in the arena (compressed size when compressed).
    public var storedBytes: Int64 = 0
    /// Bytes the resident blocks hold (before compression).
    public var logicalBytes: Int64 = 0

    /// Zero counters.
    public init() {}

    /// logical / stored: what compression gains.
    public var compressionRatio: Double { storedBytes == 0 ? 1 : Double(logicalBytes) / Double(storedBytes) }
}

/// BlockCache is the node's block cache: blocks of segments, a byte budget, a pluggable ``EvictionPolicy``
/// (the same objects `eddy sim` drives), and load coalescing.
///
/// Thread-safe: the cache is split into shards by segment (each with its own segment ordinals), each guarded by
/// a `Mutex` held only for the policy's bookkeeping, the index and the copy into the arena; decompression and copies out happen outside
/// the lock, on a reference that keeps the bytes alive even if the block is evicted meanwhile.
public final class BlockCache: Sendable {
    /// The configuration in use.
    public let configuration: BlockCacheConfiguration
    /// The arena the block bytes live in (its budget is ``BlockCacheConfiguration/capacity``).
    public let arena: BlockArena
    private let shards: [ShardBox]
    private let loads = SingleFlight<BlockID, [UInt8]>()

    final class ShardBox: Sendable {
        let state: Mutex<Shard>
        init(_ shard: sending Shard) { state = Mutex(shard) }
    }

    /// Collects the IDs a policy evicts during one call.
    final class EvictionSink {
        var ids: [UInt64] = []
    }

    struct Shard {
        let policy: any EvictionPolicy
        let sink: EvictionSink
        var entries: [UInt64: BlockStorage] = [:]
        var stats = CacheStats()
        /// Small numbers for this shard's segments, so a block's policy key fits 64 bits (``BlockKey``).
        var ordinals: [SegmentID: UInt32] = [:]

        /// The policy key of a block of this shard.
        mutating func key(_ block: BlockID) -> UInt64 {
            let ordinal: UInt32
            if let o = ordinals[block.segment] {
                ordinal = o
            } else {
                ordinal = UInt32(ordinals.count) & BlockKey.maxSegment
                ordinals[block.segment] = ordinal
            }
            return BlockKey(segment: ordinal, block: block.index & BlockKey.maxBlock).rawValue
        }
    }

    /// Creates a cache.
    /// - Throws: ``EddyError/Code/invalidArgument`` for a budget or shard count that cannot work.
    public init(configuration: BlockCacheConfiguration) throws(EddyError) {
        guard configuration.shards >= 1, configuration.shards <= 4096 else {
            throw EddyError(.invalidArgument, "shard count \(configuration.shards) is out of range 1...4096")
        }
        guard configuration.capacity >= Int64(configuration.shards) * (configuration.entryOverhead + 1) else {
            throw EddyError(
                .invalidArgument,
                "a cache of \(configuration.capacity) bytes is too small for \(configuration.shards) shards")
        }
        self.configuration = configuration
        arena = BlockArena(budget: configuration.capacity)
        let perShard = configuration.capacity / Int64(configuration.shards)
        shards = (0..<configuration.shards).map { _ in
            let sink = EvictionSink()
            let policy = configuration.policy.make(
                capacity: perShard, parameters: configuration.policyParameters, objectSize: configuration.blockSize)
            policy.evictionHandler = { sink.ids.append($0) }
            return ShardBox(Shard(policy: policy, sink: sink))
        }
    }

    /// The shard of a block: by segment, so one policy sees each segment's reads in order.
    /// A stable hash (FNV-1a of the stream name, mixed with the segment number), so shard placement is the same
    /// in every run.
    private func shard(_ block: BlockID) -> ShardBox {
        let h =
            (RoutingKey.fnv1a64(block.segment.stream.description) ^ UInt64(block.segment.number))
            &* 0x9E37_79B9_7F4A_7C15
        return shards[Int((h >> 32) % UInt64(shards.count))]
    }

    /// The cached bytes of `block`, or nil on a miss. A hit updates the policy.
    /// - Throws: ``EddyError/Code/corruptData`` if a compressed block fails to decompress.
    public func get(_ block: BlockID) throws(EddyError) -> [UInt8]? {
        try lookup(block)?.bytes()
    }

    /// The cached bytes of `block` as a buffer, or nil on a miss. A hit updates the policy. With plain
    /// residency the buffer is the cached one itself: slicing it and writing it to sockets copies nothing.
    /// - Throws: ``EddyError/Code/corruptData`` if a compressed block fails to decompress.
    public func buffer(_ block: BlockID) throws(EddyError) -> ByteBuffer? {
        try lookup(block)?.buffer()
    }

    /// The cached bytes of `block`, or nil, without counting a hit or a miss or touching the policy: for work that
    /// is not a reader's (write-back reading a block to flush it).
    /// - Throws: ``EddyError/Code/corruptData`` if a compressed block fails to decompress.
    public func peek(_ block: BlockID) throws(EddyError) -> ByteBuffer? {
        let storage = shard(block).state.withLock { s in s.entries[s.key(block)] }
        return try storage?.buffer()
    }

    /// Whether `block` is cached, without counting a hit or a miss or touching the policy.
    public func contains(_ block: BlockID) -> Bool {
        shard(block).state.withLock { s in s.entries[s.key(block)] != nil }
    }

    private func lookup(_ block: BlockID) -> BlockStorage? {
        shard(block).state.withLock { s -> BlockStorage? in
            let k = s.key(block)
            guard s.policy.lookup(CacheRequest(id: k)), let st = s.entries[k] else {
                s.stats.misses += 1
                return nil
            }
            s.stats.hits += 1
            s.stats.byteHits += Int64(st.length)
            return st
        }
    }

    /// Stores `bytes` as the content of `block`. A shorter copy of the block (a tail block that grew) is
    /// replaced; a longer or equal one is kept. May evict other blocks; may refuse the block.
    /// - Returns: whether the block is cached now.
    @discardableResult
    public func insert(_ block: BlockID, bytes: [UInt8]) -> Bool {
        insert(block, buffer: ByteBuffer(bytes: bytes))
    }

    /// Stores the readable bytes of `buffer` as the content of `block` (copied once into a buffer of exactly
    /// that size, or compressed); like ``insert(_:bytes:)`` otherwise.
    /// - Returns: whether the block is cached now.
    @discardableResult
    public func insert(_ block: BlockID, buffer: ByteBuffer) -> Bool {
        admit(block, buffer: buffer) != nil
    }

    /// Inserts like ``insert(_:buffer:)`` and returns the buffer to serve the block from: the cached one itself
    /// with plain residency (so a caller that read the block over the network can drop its receive buffer, and
    /// the block is held once), else `buffer`; nil when the block was not cached.
    public func admit(_ block: BlockID, buffer: ByteBuffer) -> ByteBuffer? {
        let payload = BlockStorage.prepare(buffer, residency: configuration.residency)
        let stored = shard(block).state.withLock { s in
            Self.store(&s, s.key(block), payload, self)
        }
        return stored ? payload.plain ?? buffer : nil
    }

    private static func store(_ s: inout Shard, _ k: UInt64, _ payload: BlockStorage.Payload, _ cache: BlockCache)
        -> Bool
    {
        if let existing = s.entries[k] {
            if existing.length >= payload.length { return true }
            s.policy.remove(k)
            s.entries.removeValue(forKey: k)
            s.stats.entries -= 1
            s.stats.storedBytes -= Int64(existing.storedCount)
            s.stats.logicalBytes -= Int64(existing.length)
        }
        // The charge is the stored size (compressed, if it is) plus the per-entry metadata.
        let before = s.policy.residentCount
        s.sink.ids.removeAll(keepingCapacity: true)
        s.policy.admit(
            CacheRequest(id: k, size: Int64(payload.storedCount) + cache.configuration.entryOverhead))
        for id in s.sink.ids {
            if let gone = s.entries.removeValue(forKey: id) {
                s.stats.evictions += 1
                s.stats.entries -= 1
                s.stats.storedBytes -= Int64(gone.storedCount)
                s.stats.logicalBytes -= Int64(gone.length)
            }
        }
        let admitted = s.policy.residentCount == before - s.sink.ids.count + 1
        guard admitted else {
            s.stats.rejected += 1
            return false
        }
        guard let storage = BlockStorage.make(payload, arena: cache.arena) else {
            // The arena is full of evicted blocks that readers still hold: give the slot back.
            s.policy.remove(k)
            s.stats.rejected += 1
            return false
        }
        s.entries[k] = storage
        s.stats.inserts += 1
        s.stats.entries += 1
        s.stats.storedBytes += Int64(storage.storedCount)
        s.stats.logicalBytes += Int64(storage.length)
        return true
    }

    /// Drops `block` from the cache.
    public func remove(_ block: BlockID) {
        shard(block).state.withLock { s in
            let k = s.key(block)
            s.policy.remove(k)
            if let gone = s.entries.removeValue(forKey: k) {
                s.stats.entries -= 1
                s.stats.storedBytes -= Int64(gone.storedCount)
                s.stats.logicalBytes -= Int64(gone.length)
            }
        }
    }

    /// Tells a reader-aware policy (``ReaderAware``) that `reader` is reading `block` (a tail reader when `tail`);
    /// other policies ignore it.
    public func readerMoved(_ reader: Int, to block: BlockID, tail: Bool) {
        shard(block).state.withLock { s in
            guard let policy = s.policy as? ReaderAware else { return }
            let key = BlockKey(rawValue: s.key(block))
            policy.readerMoved(reader, segment: key.segment, block: key.block, tail: tail)
        }
    }

    /// Tells reader-aware policies that `reader` is gone.
    public func readerLeft(_ reader: Int) {
        for box in shards {
            box.state.withLock { s in (s.policy as? ReaderAware)?.readerLeft(reader) }
        }
    }

    /// Drops every block of every segment of `stream` (a deleted stream: a new stream of the same name must
    /// not see its bytes).
    public func removeStream(_ stream: StreamName) {
        for box in shards {
            box.state.withLock { s in
                let ordinals = Set(s.ordinals.filter { $0.key.stream == stream }.map(\.value))
                guard !ordinals.isEmpty else { return }
                for k in s.entries.keys where ordinals.contains(BlockKey(rawValue: k).segment) {
                    s.policy.remove(k)
                    if let gone = s.entries.removeValue(forKey: k) {
                        s.stats.entries -= 1
                        s.stats.storedBytes -= Int64(gone.storedCount)
                        s.stats.logicalBytes -= Int64(gone.length)
                    }
                }
            }
        }
    }

    /// Returns `block` from the cache or loads it, once, however many callers miss on it at the same time
    /// (``SingleFlight``).
    ///
    /// The first caller to miss starts `load`; later callers wait for that load. Every waiter gets the bytes or
    /// the load's error; a waiter that is cancelled stops waiting (with `CancellationError`) without cancelling the
    /// load for the others (when the last waiter leaves, the load is cancelled). Loaded bytes are inserted before
    /// the load is finished, so a request that arrives after the load sees a hit.
    public func getOrLoad(_ block: BlockID, load: @escaping @Sendable () async throws -> [UInt8]) async throws
        -> [UInt8]
    {
        if let bytes = try get(block) { return bytes }
        let (bytes, joined) = try await loads.run(block) {
            if let storage = self.shard(block).state.withLock({ s in s.entries[s.key(block)] }) {
                return try storage.bytes()
            }
            self.shard(block).state.withLock { $0.stats.loads += 1 }
            let bytes = try await load()
            self.insert(block, bytes: bytes)
            return bytes
        }
        if joined { shard(block).state.withLock { $0.stats.coalesced += 1 } }
        return bytes
    }

    /// Counters summed over the shards.
    public var stats: CacheStats {
        shards.reduce(into: CacheStats()) { total, box in
            let s = box.state.withLock { $0.stats }
            total.hits += s.hits
            total.misses += s.misses
            total.byteHits += s.byteHits
            total.inserts += s.inserts
            total.evictions += s.evictions
            total.rejected += s.rejected
            total.loads += s.loads
            total.coalesced += s.coalesced
            total.entries += s.entries
            total.storedBytes += s.storedBytes
            total.logicalBytes += s.logicalBytes
        }
    }

    /// The bytes the policies account for (stored bytes plus per-entry overhead), summed over the shards;
    /// never above ``BlockCacheConfiguration/capacity``.
    public var chargedBytes: Int64 {
        shards.reduce(0) { $0 + $1.state.withLock { $0.policy.occupied } }
    }
}
