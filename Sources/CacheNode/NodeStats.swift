import CacheCore
import Foundation

extension NodeCore {
    /// The node's stats document (`eddy admin stats`, docs/operations.md lists every key; the keys are stable).
    func statsJSON() -> String {
        let c = counters
        let ledger = self.ledger.summary
        let owned = cache.stats
        let nearStats = near?.stats ?? CacheStats()
        let ring = self.ring
        let hits = c.hits.load(ordering: .relaxed)
        let misses = c.misses.load(ordering: .relaxed)
        let served = owned.byteHits + nearStats.byteHits
        var document: [String: Any] = [
            "role": "node",
            "node": me,
            "zone": configuration.zone,
            "policy": configuration.policy,
            "block_size": Int(configuration.blockSize),
            "cache_bytes": Int(configuration.cacheBytes),
            "reads": c.reads.load(ordering: .relaxed),
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses),
            "byte_hit_ratio": owned.byteHits + nearStats.byteHits + Int64(ledger.bytes) == 0
                ? 0 : Double(served) / Double(served + ledger.bytes),
            "near_cache_hits": c.nearHits.load(ordering: .relaxed),
            "forwards": c.forwards.load(ordering: .relaxed),
            "coalesced_loads": c.coalesced.load(ordering: .relaxed),
            "coalesced_forwards": c.coalescedForwards.load(ordering: .relaxed),
            "read_aheads": c.readAheads.load(ordering: .relaxed),
            "appends": c.appends.load(ordering: .relaxed),
            "stale_forwards": c.staleForwards.load(ordering: .relaxed),
            "store_read_requests": ledger.requests,
            "store_read_bytes": Int(ledger.bytes),
            "distinct_blocks_read": ledger.blocks,
            "distinct_bytes_read": Int(ledger.distinctBytes),
            "store_reads_per_block": ledger.distinctBytes == 0
                ? 0 : Double(ledger.bytes) / Double(ledger.distinctBytes),
            "tail_waiters": tailWaiters,
            "parked_reads": c.parkedReads.load(ordering: .relaxed),
            "subscriptions": c.subscriptions.load(ordering: .relaxed),
            "bytes_served": c.bytesServed.load(ordering: .relaxed),
            "evictions": owned.evictions + nearStats.evictions,
            "cached_blocks": owned.entries,
            "near_cached_blocks": nearStats.entries,
            "memory_bytes": Int(cache.chargedBytes + (near?.chargedBytes ?? 0)),
            "bytes_in_flight": Int(budget.used),
            "connections": c.connections.load(ordering: .relaxed),
            "ring_epoch": Int(ring.epoch),
            "ring_changes": c.ringChanges.load(ordering: .relaxed),
            "members": ring.members,
        ]
        if let writeBack {
            let queue = writeBack.metrics()
            document["flushed_bytes"] = writeBack.flushedBytes.load(ordering: .relaxed)
            document["flush_lag_bytes"] = writeBack.flushLag
            document["objects_written"] = writeBack.objectsWritten.load(ordering: .relaxed)
            document["objects_adopted"] = writeBack.objectsAdopted.load(ordering: .relaxed)
            document["cold_block_loads"] = writeBack.coldReads.load(ordering: .relaxed)
            document["flush_blocks_from_cache"] = writeBack.cachedFlushReads.load(ordering: .relaxed)
            document["retention_truncations"] = writeBack.truncations.load(ordering: .relaxed)
            document["queue_depth"] = queue?.depth ?? 0
            document["queue_leased"] = queue?.leased ?? 0
            document["queue_retries"] = queue?.retries ?? 0
            document["dead_letters"] = queue?.totalDeadLetters ?? 0
            document["object_store"] = writeBack.objects.location
        }
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
