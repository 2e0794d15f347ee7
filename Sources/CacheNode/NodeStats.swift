import CacheCore
import Foundation
import StreamModel
import Synchronization

extension NodeCore {
    /// The node's stats document (`eddy admin stats`, `/stats`; docs/operations.md lists every key; the keys are
    /// stable).
    public func statsJSON() -> String {
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
            "tail_pushes": c.tailPushes.load(ordering: .relaxed),
            "subscriptions": c.subscriptions.load(ordering: .relaxed),
            "bytes_served": c.bytesServed.load(ordering: .relaxed),
            "evictions": owned.evictions + nearStats.evictions,
            "rejected_admissions": owned.rejected + nearStats.rejected,
            "cached_blocks": owned.entries,
            "near_cached_blocks": nearStats.entries,
            "memory_bytes": Int(cache.chargedBytes + (near?.chargedBytes ?? 0)),
            "bytes_in_flight": Int(budget.used),
            "connections": c.connections.load(ordering: .relaxed),
            "ring_epoch": Int(ring.epoch),
            "ring_changes": c.ringChanges.load(ordering: .relaxed),
            "members": ring.members,
        ]
        if configuration.isRegional {
            // A regional ring's node reads the home ring: what it read from there is what crossed the WAN.
            document["upstream"] = store.address.description
            document["upstream_ring"] = configuration.upstreamRing.map(\.description)
            document["upstream_read_bytes"] = Int(ledger.bytes)
            document["upstream_failovers"] = store.failovers.load(ordering: .relaxed)
            document["upstream_zone_returns"] = store.zoneReturns.load(ordering: .relaxed)
            document["upstream_subscriptions"] = c.upstreamSubscriptions.load(ordering: .relaxed)
            document["upstream_pushes"] = c.upstreamPushes.load(ordering: .relaxed)
        }
        if let writeBack {
            let queue = writeBack.metrics()
            document["flushed_bytes"] = writeBack.flushedBytes.load(ordering: .relaxed)
            document["flush_lag_bytes"] = writeBack.flushLag
            document["objects_written"] = writeBack.objectsWritten.load(ordering: .relaxed)
            document["objects_adopted"] = writeBack.objectsAdopted.load(ordering: .relaxed)
            document["cold_block_loads"] = writeBack.coldReads.load(ordering: .relaxed)
            document["cold_object_gets"] = writeBack.coldObjectGets.load(ordering: .relaxed)
            document["flush_blocks_from_cache"] = writeBack.cachedFlushReads.load(ordering: .relaxed)
            document["retention_truncations"] = writeBack.truncations.load(ordering: .relaxed)
            document["queue_depth"] = queue?.depth ?? 0
            document["queue_leased"] = queue?.leased ?? 0
            document["queue_retries"] = queue?.retries ?? 0
            document["queue_enqueued"] = queue?.enqueued ?? 0
            document["dead_letters"] = queue?.totalDeadLetters ?? 0
            document["object_store"] = writeBack.objects.location
        }
        let data =
            (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

extension NodeCore {
    /// Every configured member's stats document, asked over the protocol (`/cluster`, the dashboard's source):
    /// `{"node": ME, "members": {ADDRESS: STATS or {"error": MESSAGE}}}`. A member that does not answer within
    /// `timeout` shows its error; the others are unaffected.
    public func clusterJSON(timeout: Duration = .seconds(1)) async -> String {
        var members: [String: Any] = [:]
        await withTaskGroup(of: (String, String).self) { group in
            for name in Set(membership.knownMembers + ring.members) {
                group.addTask {
                    if name == self.me { return (name, self.statsJSON()) }
                    guard let peer = self.peers.upstream(name) else {
                        return (name, Self.json(["error": "not a HOST:PORT address"]))
                    }
                    do {
                        let response = try await peer.send(.stats, timeout: timeout)
                        guard case .stats(let json) = response else {
                            return (name, Self.json(["error": "\(response)"]))
                        }
                        return (name, json)
                    } catch {
                        return (name, Self.json(["error": "\(error)"]))
                    }
                }
            }
            for await (name, json) in group {
                members[name] =
                    (try? JSONSerialization.jsonObject(with: Data(json.utf8))) ?? ["error": "unreadable stats"]
            }
        }
        return Self.json(["node": me, "members": members])
    }

    /// The what-if table (`/whatif`, `eddy admin whatif`): under `rows`, one `{"policy", "cache_bytes",
    /// "hit_ratio", "byte_hit_ratio"}` per policy and size, with the sampling beside it (`sample_rate`,
    /// `requests`, `sampled_requests`, `dropped_requests`, `replay_seconds`, `restarts`) and the node's own policy and owner
    /// cache size (`policy`, `cache_bytes`) for comparison.
    /// - Throws: ``EddyError/Code/unavailable`` when the node runs without the what-if.
    public func whatIfJSON() throws(EddyError) -> String {
        guard let whatIf else {
            throw EddyError(.unavailable, "the what-if is off on \(me) (it was started with --no-whatif)")
        }
        whatIf.replay()
        let totals = whatIf.totals
        let rows = whatIf.rows().map { r -> [String: Any] in
            [
                "policy": r.policy, "cache_bytes": r.cacheBytes, "hit_ratio": r.hitRatio,
                "byte_hit_ratio": r.byteHitRatio,
            ]
        }
        return Self.json([
            "node": me, "policy": configuration.policy, "cache_bytes": Int(cache.configuration.capacity),
            "sample_rate": totals.rate, "requests": totals.requests, "sampled_requests": totals.sampled,
            "dropped_requests": totals.dropped, "replay_seconds": totals.replaySeconds, "restarts": totals.restarts,
            "rows": rows,
        ])
    }

    /// The ring as this node sees it (`/ring`): epoch, fingerprint, the members alive, the configured members,
    /// and how many segments each member owns.
    public func ringJSON() -> String {
        let ring = self.ring
        let loads = placement.withLock { $0.assignment.loads }
        var document: [String: Any] = [
            "node": me, "epoch": Int(ring.epoch), "fingerprint": String(ring.fingerprint, radix: 16),
            "members": ring.members, "configured_members": membership.knownMembers,
            "segments_owned": loads, "ring_changes": counters.ringChanges.load(ordering: .relaxed),
        ]
        for (key, value) in membership.summary { document[key] = value }
        return Self.json(document)
    }

    /// The store's streams (`/streams`): per segment its start, length, whether sealed, and its owner on this
    /// node's ring.
    /// - Throws: ``EddyError/Code/unavailable`` when the store does not answer.
    public func streamsJSON() async throws(EddyError) -> String {
        let response = try await store.send(.listStreams, timeout: configuration.requestTimeout)
        guard case .streamList(let streams) = response else {
            if case .error(let error) = response { throw error }
            throw EddyError(.malformedFrame, "the store answered a stream list with \(response)")
        }
        let owners = placement.withLock { $0.assignment }
        let lags = writeBack?.lags() ?? [:]
        let list = streams.sorted { $0.name.description < $1.name.description }.map { stream -> [String: Any] in
            [
                "name": stream.name.description,
                "segments": stream.segments.map { info -> [String: Any] in
                    var entry: [String: Any] = [
                        "segment": info.segment.description, "start": info.startOffset, "length": info.length,
                        "sealed": info.sealed,
                        "owner": owners[info.segment.description] ?? ring.candidate(for: info.segment.description)
                            ?? me,
                    ]
                    if let lag = lags[info.segment] { entry["flush_lag_bytes"] = lag }
                    return entry
                },
            ]
        }
        return Self.json(["node": me, "streams": list])
    }

    /// What the node reads from, in messages: `store`, or `upstream ring` for a regional ring's node.
    var upstreamName: String { configuration.isRegional ? "upstream ring" : "store" }

    /// Why the node is not ready to serve (empty when it is): draining, not in its own ring, or the store not
    /// answering within `timeout` (`/ready`).
    public func notReadyReasons(timeout: Duration = .seconds(2)) async -> [String] {
        var reasons: [String] = []
        if draining.load(ordering: .relaxed) { reasons.append("draining: the node is shutting down") }
        if let reason = membership.notReadyReason { reasons.append(reason) }
        do {
            let response = try await store.send(.listStreams, timeout: timeout)
            if case .error(let error) = response { reasons.append("\(upstreamName) \(store.address): \(error)") }
        } catch {
            reasons.append("\(upstreamName) \(store.address) unreachable: \(error.message)")
        }
        return reasons
    }

    /// The node's metrics now, from its counters (`/metrics`; docs/operations.md lists them). Every series has
    /// the label `node`; cache series also `policy` and `cache` (`owner` or `near`).
    public func metricSamples() -> [MetricSample] {
        let c = counters
        let node = ("node", me)
        let ledger = self.ledger.summary
        let ring = self.ring
        func load(_ counter: borrowing Atomic<Int>) -> Double { Double(counter.load(ordering: .relaxed)) }
        var out: [MetricSample] = []
        for (label, cache) in [("owner", Optional(self.cache)), ("near", near)] {
            guard let cache else { continue }
            let stats = cache.stats
            let policy = label == "owner" ? configuration.policy : "s3fifo"
            out += MetricSample.rows(
                [node, ("policy", policy), ("cache", label)],
                [
                    ("eddy_cache_lookup_hits_total", .counter, Double(stats.hits), "Block lookups that hit the cache."),
                    ("eddy_cache_lookup_misses_total", .counter, Double(stats.misses), "Block lookups that missed."),
                    (
                        "eddy_cache_hit_bytes_total", .counter, Double(stats.byteHits),
                        "Bytes of blocks found in the cache."
                    ),
                    ("eddy_cache_evictions_total", .counter, Double(stats.evictions), "Blocks evicted."),
                    ("eddy_cache_blocks", .gauge, Double(stats.entries), "Blocks in the cache."),
                    ("eddy_cache_memory_bytes", .gauge, Double(cache.chargedBytes), "Bytes the cached blocks hold."),
                    (
                        "eddy_cache_capacity_bytes", .gauge, Double(cache.configuration.capacity),
                        "The cache's budget in bytes."
                    ),
                ])
        }
        out += MetricSample.rows(
            [node],
            [
                ("eddy_cache_hits_total", .counter, load(c.hits), "Reads answered from cached blocks."),
                ("eddy_cache_misses_total", .counter, load(c.misses), "Reads that needed a load."),
                ("eddy_reads_total", .counter, load(c.reads), "Read requests served."),
                ("eddy_near_cache_hits_total", .counter, load(c.nearHits), "Reads answered from the near cache."),
                ("eddy_forwards_total", .counter, load(c.forwards), "Requests forwarded to the owner."),
                ("eddy_stale_forwards_total", .counter, load(c.staleForwards), "Forwards refused for a stale ring."),
                (
                    "eddy_coalesced_loads_total", .counter, load(c.coalesced),
                    "Block loads shared by concurrent readers."
                ),
                ("eddy_read_aheads_total", .counter, load(c.readAheads), "Blocks read ahead of sequential readers."),
                ("eddy_appends_total", .counter, load(c.appends), "Append requests."),
                ("eddy_served_bytes_total", .counter, load(c.bytesServed), "Event bytes sent to readers."),
                ("eddy_store_reads_total", .counter, Double(ledger.requests), "Reads the node sent to the store."),
                ("eddy_store_read_bytes_total", .counter, Double(ledger.bytes), "Bytes the node read from the store."),
                (
                    "eddy_upstream_read_bytes_total", .counter, configuration.isRegional ? Double(ledger.bytes) : 0,
                    "Bytes a regional ring's node read from its home ring (0 for a node of a store)."
                ),
                (
                    "eddy_store_read_distinct_bytes_total", .counter, Double(ledger.distinctBytes),
                    "Distinct bytes read from the store."
                ),
                (
                    "eddy_store_read_amplification", .gauge,
                    ledger.distinctBytes == 0 ? 0 : Double(ledger.bytes) / Double(ledger.distinctBytes),
                    "Store bytes read per distinct byte (1 = each byte read once)."
                ),
                ("eddy_tail_waiters", .gauge, Double(tailWaiters), "Readers waiting at a segment's tail."),
                ("eddy_subscriptions", .gauge, load(c.subscriptions), "Open subscriptions."),
                (
                    "eddy_upstream_subscriptions", .gauge, load(c.upstreamSubscriptions),
                    "A regional ring's node's subscriptions at its home ring (one per followed segment)."
                ),
                ("eddy_connections", .gauge, load(c.connections), "Open client and peer connections."),
                ("eddy_requests_in_flight", .gauge, load(c.inFlight), "Requests being answered."),
                ("eddy_bytes_in_flight", .gauge, Double(budget.used), "Bytes of answers and loads in flight."),
                ("eddy_ring_epoch", .gauge, Double(ring.epoch), "The ring's epoch."),
                ("eddy_ring_members", .gauge, Double(ring.members.count), "Members in the ring."),
                ("eddy_ring_changes_total", .counter, load(c.ringChanges), "Ring changes seen."),
            ])
        guard let writeBack else { return out }
        out += MetricSample.rows(
            [node],
            [
                (
                    "eddy_flushed_bytes_total", .counter, load(writeBack.flushedBytes),
                    "Bytes flushed to object storage."
                ),
                ("eddy_objects_written_total", .counter, load(writeBack.objectsWritten), "Block objects written."),
                (
                    "eddy_cold_block_loads_total", .counter, load(writeBack.coldReads),
                    "Blocks loaded from object storage."
                ),
                (
                    "eddy_cold_object_gets_total", .counter, load(writeBack.coldObjectGets),
                    "Objects fetched from object storage for cold reads."
                ),
                (
                    "eddy_retention_truncations_total", .counter, load(writeBack.truncations),
                    "Store truncations after flushes."
                ),
            ])
        for (segment, lag) in writeBack.lags().sorted(by: { $0.key.description < $1.key.description }) {
            out.append(
                MetricSample(
                    "eddy_flush_lag_bytes", .gauge, Double(lag), labels: [node, ("segment", segment.description)],
                    help: "Appended bytes not yet flushed to object storage, per segment."))
        }
        guard let metrics = writeBack.metrics() else { return out }
        for (key, lane) in metrics.lanes.sorted(by: { $0.key < $1.key }) {
            out += MetricSample.rows(
                [node, ("queue", key.queue), ("qos", key.qos.description)],
                [
                    ("eddy_queue_depth", .gauge, Double(lane.depth), "Live messages (ready, delayed, leased)."),
                    ("eddy_queue_leased", .gauge, Double(lane.leased), "Messages leased to a worker."),
                    (
                        "eddy_queue_oldest_age_seconds", .gauge, Double(lane.oldestAgeMilliseconds) / 1000,
                        "Age of the oldest live message."
                    ),
                ])
        }
        for (key, totals) in metrics.laneTotals.sorted(by: { $0.key < $1.key }) {
            out += MetricSample.rows(
                [node, ("queue", key.queue), ("qos", key.qos.description)],
                [
                    ("eddy_queue_retries_total", .counter, Double(totals.retries), "Retries after failed attempts."),
                    (
                        "eddy_queue_dead_lettered_total", .counter, Double(totals.deadLettered),
                        "Messages moved to the dead-letter queue."
                    ),
                ])
        }
        for (queue, count) in metrics.deadLetters.sorted(by: { $0.key < $1.key }) {
            out.append(
                MetricSample(
                    "eddy_queue_dead_letters", .gauge, Double(count), labels: [node, ("queue", queue)],
                    help: "Messages in the dead-letter queue."))
        }
        out += MetricSample.rows(
            [node],
            [
                ("eddy_queue_enqueued_total", .counter, Double(metrics.enqueued), "Messages enqueued."),
                ("eddy_queue_acked_total", .counter, Double(metrics.acked), "Messages acked."),
                ("eddy_queue_lease_expiries_total", .counter, Double(metrics.expiries), "Leases that expired."),
            ])
        return out
    }
}
