import CacheCore
import Coalescing
import Foundation
import HashRing
import Logging
import Membership
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol
import WriteBack

/// NodeCore is a cache node without its network front: it routes each request to the segment's owner (itself or
/// a peer), serves owned segments from its block cache and tail assemblies, loads what is missing from the store
/// once however many requests wait, and keeps a near cache of full blocks it does not own.
///
/// Only the owner of a segment reads it from the store. Requests forwarded to this node are served here whatever
/// this node's own view says (after the epoch check), so a forward is never forwarded again.
public final class NodeCore: Sendable {
    /// The configuration in use.
    public let configuration: NodeConfiguration
    let geometry: BlockGeometry
    let cache: BlockCache
    let near: BlockCache?
    let store: Upstream
    let peers: PeerSet
    let membership: any RingMembership
    let counters = NodeCounters()
    /// Latency per request type, when a metrics factory is configured.
    let timers: RequestTimers?
    /// Set when a drain starts: `/ready` answers not ready.
    let draining = Atomic<Bool>(false)
    let ledger = StoreReadLedger()
    let budget: ByteBudget
    let trace: AccessTrace?
    /// The what-if's shadow policies, when on.
    public let whatIf: WhatIf?
    /// Small numbers for segments in the access trace and the what-if's block keys, in order of first request.
    private let ordinals = SegmentOrdinals()
    /// Write-back to object storage, when configured.
    let writeBack: WriteBack?

    private let segments = Mutex<[SegmentID: OwnedSegment]>([:])
    /// The last state seen of segments owned elsewhere (from forwarded answers), to know which blocks are full.
    private let hints = Mutex<[SegmentID: SegmentInfo]>([:])
    /// Segment names the store has, for the bounded-load assignment; and that assignment on the current ring.
    let placement: Mutex<Placement>
    private let catalogRefresh = SingleFlight<Int, Set<String>>()
    private let blockLoads = SingleFlight<BlockID, ByteBuffer>()
    /// Store reads by (segment, start offset); a read that completes a block gives the cached block.
    private let storeReads = SingleFlight<RangeKey, ByteBuffer?>()
    private let forwards = SingleFlight<ForwardKey, Response>()
    /// Tail reads parked on a shared forward, by forward.
    private let parkedForwards = Mutex<[ForwardKey: [ParkedRead]]>([:])
    private let infoRefresh = SingleFlight<SegmentID, SegmentInfo>()

    struct Placement {
        var ring: HashRing
        var catalog: Set<String> = []
        var assignment: HashRing.Assignment {
            didSet { owners.removeAll(keepingCapacity: true) }
        }
        /// Owners looked up so far by segment, so a request does not format the segment's name (cleared with
        /// every new assignment).
        var owners: [SegmentID: String] = [:]
    }

    struct RangeKey: Hashable, Sendable {
        var segment: SegmentID
        var from: UInt64
    }

    struct ForwardKey: Hashable, Sendable {
        var owner: String
        var segment: SegmentID
        var offset: UInt64
        var maxBytes: UInt32
        var waitMilliseconds: UInt32
    }

    /// Creates the core; ``CacheNode`` starts its background work.
    /// - Throws: ``EddyError/Code/invalidArgument`` for bad settings.
    public init(configuration: NodeConfiguration, group: EventLoopGroup) throws(EddyError) {
        try configuration.validate()
        self.configuration = configuration
        self.me = configuration.name
        geometry = try BlockGeometry(blockSize: configuration.blockSize)
        let (kind, parameters) = try PolicyKind.parse(configuration.policy)
        let nearBytes = configuration.cacheBytes - configuration.ownerCacheBytes
        var owned = BlockCacheConfiguration(capacity: configuration.ownerCacheBytes)
        owned.policy = kind
        owned.policyParameters = parameters
        owned.shards = configuration.ownerCacheShards
        owned.blockSize = Int64(configuration.blockSize)
        cache = try BlockCache(configuration: owned)
        if nearBytes >= Int64(configuration.blockSize) * 2 {
            var n = BlockCacheConfiguration(capacity: nearBytes)
            n.policy = .s3fifo
            n.shards = 2
            n.blockSize = Int64(configuration.blockSize)
            near = try BlockCache(configuration: n)
        } else {
            near = nil
        }
        budget = ByteBudget(limit: configuration.maxBytesInFlight)
        timers = configuration.metricsFactory.map { RequestTimers(factory: $0, node: configuration.name) }
        trace = try configuration.traceOut.map { (path) throws(EddyError) in try AccessTrace(path: path) }
        whatIf =
            configuration.whatIf
            ? try WhatIf(configuration.whatIfConfiguration(ownerCacheBytes: configuration.ownerCacheBytes)) : nil
        store = Upstream(
            address: configuration.store, group: group, connectTimeout: configuration.requestTimeout,
            token: configuration.serviceToken, tls: configuration.tls?.outgoing)
        let peers = PeerSet(
            group: group, connectTimeout: configuration.requestTimeout, token: configuration.serviceToken,
            tls: configuration.tls?.outgoing)
        self.peers = peers
        let storeUpstream = store
        let blockGeometry = geometry
        let ownerCache = cache
        let environment = WriteBackEnvironment(
            node: configuration.name, store: configuration.store, serviceToken: configuration.serviceToken,
            tls: configuration.tls?.outgoing, requestTimeout: configuration.requestTimeout,
            logger: configuration.logger)
        writeBack = configuration.writeBack.map {
            WriteBack(
                configuration: $0, node: environment, store: storeUpstream, geometry: blockGeometry, cache: ownerCache)
        }
        let box = PlacementBox()
        let onChange: @Sendable (HashRing) -> Void = { ring in box.core?.ringChanged(ring) }
        if let etcd = configuration.etcd {
            membership = EtcdMembership(configuration: configuration.membership, etcd: etcd, onChange: onChange)
        } else {
            membership = StaticMembership(
                configuration: configuration.membership, upstreams: peers, onChange: onChange)
        }
        let ring = membership.ring
        placement = Mutex(Placement(ring: ring, assignment: ring.assign([String]())))
        box.core = self
    }

    /// Lets the membership callback reach the core created after it.
    private final class PlacementBox: @unchecked Sendable {
        weak var core: NodeCore?
    }

    /// This node's name in the ring (formatted once: it is compared on every routed request).
    let me: String

    // MARK: - Placement

    func ringChanged(_ ring: HashRing) {
        placement.withLock { p in
            p.ring = ring
            p.assignment = ring.assign(p.catalog)
        }
        counters.ringChanges.add(1, ordering: .relaxed)
        // Drop the connections to members no longer known (with etcd they come and go; a static list keeps all).
        let keep = Set(membership.knownMembers + ring.members)
        let peers = self.peers
        Task { await peers.prune(keeping: keep) }
    }

    /// Refreshes the list of segments from the store (shared by concurrent callers).
    func refreshCatalog() async {
        let store = self.store
        let timeout = configuration.requestTimeout
        guard
            let (names, _) = try? await catalogRefresh.run(
                0,
                {
                    let r = try await store.send(.listStreams, timeout: timeout)
                    guard case .streamList(let streams) = r else { return [] }
                    return Set(streams.flatMap { $0.segments.map(\.segment.description) })
                })
        else { return }
        placement.withLock { p in
            guard names != p.catalog else { return }
            p.catalog = names
            p.assignment = p.ring.assign(names)
        }
    }

    /// The member that owns `segment` on the current ring, by name (refreshing the catalog once for a segment it
    /// does not list).
    public func owner(of segment: SegmentID) async -> String {
        if let known = knownOwner(of: segment) { return known }
        await refreshCatalog()
        let key = segment.description
        return placement.withLock { p in p.assignment[key] ?? p.ring.candidate(for: key) ?? me }
    }

    /// The owner of `segment` when the current assignment places it (without asking the store).
    func knownOwner(of segment: SegmentID) -> String? {
        placement.withLock { p -> String? in
            if let o = p.owners[segment] { return o }
            guard let o = p.assignment[segment.description] else { return nil }
            p.owners[segment] = o
            return o
        }
    }

    /// The ring in use.
    public var ring: HashRing { placement.withLock { $0.ring } }

    /// The segments of the store's catalog this node owns on the current ring.
    package func ownedSegmentIDs() -> [SegmentID] {
        placement.withLock { p in
            p.catalog.filter { p.assignment[$0] == me }.sorted().compactMap { try? SegmentID(parsing: $0) }
        }
    }

    // MARK: - Requests

    /// Answers one request from a client or a peer. Reads answer through ``read(_:offset:maxBytes:wait:reader:)``.
    func handle(_ request: Request, forwardedBy view: RingView? = nil) async -> Response {
        do throws(EddyError) {
            return try await answer(request, forwardedBy: view)
        } catch {
            return .error(error)
        }
    }

    private func answer(_ request: Request, forwardedBy view: RingView?) async throws(EddyError) -> Response {
        let timeout = configuration.requestTimeout
        switch request {
        case .hello:
            throw EddyError(.malformedFrame, "hello sent twice")
        case .stats:
            return .stats(statsJSON())
        case .admin(let command, let arguments):
            guard view == nil else { throw EddyError(.invalidArgument, "admin commands cannot be forwarded") }
            return .stats(try await admin(command, arguments: arguments))
        case .subscribe, .credit, .unsubscribe:
            // A connection handles its own subscriptions; they never travel between nodes.
            throw EddyError(.invalidArgument, "\(request.type) cannot be forwarded")
        case .heartbeat(let peerView):
            membership.heard(peerView.from, view: peerView)
            return .heartbeatAck(membership.view(withMembers: true))
        case .forwarded(let peerView, let inner):
            try checkView(peerView)
            if case .deleteStream(let name) = inner {
                // A peer deleted the stream at the store: drop what this node holds of it.
                purge(name)
                return .ok
            }
            return try await answer(inner, forwardedBy: peerView)
        case .listStreams, .streamInfo, .writerState, .segmentInfo:
            let r = try await store.send(request, timeout: timeout)
            guard let writeBack else { return r }
            return await writeBack.showingFlushedStarts(r)
        case .createStream:
            let r = try await store.send(request, timeout: timeout)
            await refreshCatalog()
            return r
        case .deleteStream(let name):
            let r = try await store.send(request, timeout: timeout)
            purge(name)
            await tellPeers(.deleteStream(name))
            await refreshCatalog()
            return r
        case .append(let segment, _, _, let frames):
            return try await routed(segment, request, forwardedBy: view) { () throws(EddyError) in
                if let writeBack = self.writeBack, let limit = writeBack.configuration.maximumFlushLag,
                    writeBack.lag(segment) > limit
                {
                    throw EddyError(
                        .overloaded,
                        "\(segment) has \(writeBack.lag(segment)) bytes not yet flushed to object storage, over the "
                            + "\(limit)-byte limit; try again when flushing catches up")
                }
                let seg = self.ownedSegment(segment)
                seg.appendSent()
                defer { seg.appendLanded() }
                let r = try await self.store.send(request, timeout: timeout)
                if case .appendAck(let ack) = r, !ack.duplicate {
                    self.counters.appends.add(1, ordering: .relaxed)
                    self.absorb(seg.extend(at: ack.firstOffset, frames), segment)
                    self.writeBack?.appended(segment, length: ack.firstOffset + UInt64(frames.readableBytes))
                }
                return r
            }
        case .seal(let segment), .truncate(let segment, _):
            return try await routed(segment, request, forwardedBy: view) { () throws(EddyError) in
                if case .truncate(_, let offset) = request, let writeBack = self.writeBack {
                    try await writeBack.checkTruncation(segment, at: offset)
                }
                let r = try await self.store.send(request, timeout: timeout)
                if case .segmentInfo(let info) = r {
                    self.ownedSegment(segment).learn(info).fire()
                }
                return r
            }
        case .read(let segment, let offset, let maxBytes, let waitMilliseconds):
            let a = try await read(
                segment, offset: offset, maxBytes: Int(maxBytes), wait: .milliseconds(Int64(waitMilliseconds)),
                reader: nil, forwardedBy: view)
            var joined = ByteBufferAllocator().buffer(capacity: a.count)
            for s in a.slices { joined.writeImmutableBuffer(s) }
            return .readResult(offset: a.offset, info: a.info, data: joined)
        }
    }

    /// A forward's view must have this node's member list; equal lists with different epochs agree on the
    /// higher epoch.
    private func checkView(_ view: RingView) throws(EddyError) {
        let ring = membership.ring
        guard view.fingerprint == ring.fingerprint else {
            counters.staleForwards.add(1, ordering: .relaxed)
            throw EddyError(
                .staleEpoch,
                "ring view differs: \(view.from) is at epoch \(view.epoch), \(me) at epoch \(ring.epoch) with members "
                    + ring.members.joined(separator: ","))
        }
        membership.adopt(view)
    }

    /// Runs `local` when this node owns `segment` (or the request was forwarded to it, so it is served here), else
    /// `remote` with the owner; on a ring disagreement or an unreachable owner it refreshes its view once and
    /// routes again.
    private func viaOwner<T>(
        _ segment: SegmentID, forwardedBy view: RingView?, local: () async throws(EddyError) -> T,
        remote: (String) async throws(EddyError) -> T
    ) async throws(EddyError) -> T {
        if view != nil { return try await local() }
        var owner = await self.owner(of: segment)
        for attempt in 0..<2 {
            if owner == me { return try await local() }
            do {
                return try await remote(owner)
            } catch  where attempt == 0 && (error.code == .staleEpoch || error.code == .unavailable) {
                await membership.probe()
                owner = await self.owner(of: segment)
            }
        }
        throw EddyError(.unavailable, "no owner of \(segment) could be reached")
    }

    /// A request that changes a segment, run by its owner.
    private func routed(
        _ segment: SegmentID, _ request: Request, forwardedBy view: RingView?,
        _ local: () async throws(EddyError) -> Response
    ) async throws(EddyError) -> Response {
        try await viaOwner(segment, forwardedBy: view, local: local) { (owner) throws(EddyError) in
            counters.forwards.add(1, ordering: .relaxed)
            return try await forward(request, to: owner, timeout: configuration.requestTimeout)
        }
    }

    private func forward(_ request: Request, to owner: String, timeout: Duration) async throws(EddyError) -> Response {
        guard let peer = peers.upstream(owner) else {
            throw EddyError(.internalError, "\(owner) is in the ring but is not a HOST:PORT address")
        }
        return try await peer.send(.forwarded(membership.view(), request), timeout: timeout)
    }

    private func tellPeers(_ request: Request) async {
        let view = membership.view()
        let timeout = configuration.requestTimeout
        await withTaskGroup(of: Void.self) { group in
            for name in membership.knownMembers where name != me {
                guard let peer = peers.upstream(name) else { continue }
                group.addTask { _ = try? await peer.send(.forwarded(view, request), timeout: timeout) }
            }
        }
    }

    // MARK: - Reads

    /// Reads up to `maxBytes` of `segment` from `offset` (within one block), waiting up to `wait` at the tail.
    public func read(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?,
        forwardedBy view: RingView? = nil
    ) async throws(EddyError) -> ReadAnswer {
        counters.reads.add(1, ordering: .relaxed)
        let wait = min(wait, configuration.maxWait)
        let maxBytes = max(0, min(maxBytes, Int(geometry.blockSize)))
        return try await viaOwner(
            segment, forwardedBy: view,
            local: { () throws(EddyError) in
                try await ownerRead(segment, offset: offset, maxBytes: maxBytes, wait: wait, reader: reader)
            },
            remote: { (owner) throws(EddyError) in
                try await nonOwnerRead(segment, owner: owner, offset: offset, maxBytes: maxBytes, wait: wait)
            })
    }

    /// Serves a read a peer forwarded: checks its ring view, then reads as the owner.
    func readForwarded(
        _ view: RingView, _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?
    ) async throws(EddyError) -> ReadAnswer {
        try checkView(view)
        return try await read(
            segment, offset: offset, maxBytes: maxBytes, wait: wait, reader: reader, forwardedBy: view)
    }

    /// Parks a tail read on `eventLoop` instead of running a task for it, when it is one: a read with a wait at
    /// the known end of a segment this node owns (answered from the tail assembly when bytes arrive, or empty at
    /// its deadline), or at the end a non-owner knows of (joined to one shared forward per owner, offset and
    /// wait). A fan-out then costs one hop per event loop, not a task per reader.
    /// - Returns: false when the read is not such a read (run it through ``read(_:offset:maxBytes:wait:reader:forwardedBy:)``);
    ///   true when `respond` will be called on `eventLoop`, exactly once: with the answer, an error, or
    ///   ``ParkedRead/Outcome/changed`` (the segment changed in a way a parked read does not handle: run the read
    ///   through the full path).
    func parkRead(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?,
        forwardedBy view: RingView?, on eventLoop: any EventLoop,
        _ respond: @escaping @Sendable (ParkedRead.Outcome) -> Void
    ) -> Bool {
        let wait = min(wait, configuration.maxWait)
        guard wait > .zero else { return false }
        let maxBytes = max(0, min(maxBytes, Int(geometry.blockSize)))
        if let view {
            do throws(EddyError) {
                try checkView(view)
            } catch {
                counters.reads.add(1, ordering: .relaxed)
                eventLoop.execute { respond(.failed(error)) }
                return true
            }
        }
        guard let owner = view == nil ? knownOwner(of: segment) : me else { return false }
        if owner == me {
            return parkOwned(
                segment, offset: offset, maxBytes: maxBytes, wait: wait, reader: reader, on: eventLoop, respond)
        }
        return parkForward(
            segment, owner: owner, offset: offset, maxBytes: maxBytes, wait: wait, on: eventLoop, respond)
    }

    private func parkOwned(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?,
        on eventLoop: any EventLoop, _ respond: @escaping @Sendable (ParkedRead.Outcome) -> Void
    ) -> Bool {
        guard let seg = segments.withLock({ $0[segment] }), let info = seg.info, offset >= info.startOffset else {
            return false
        }
        // Parking runs on the connection's event loop, and so do the wake and the deadline.
        let timers = NIOLoopBound(LoopTimers.current(on: eventLoop), eventLoop: eventLoop)
        let timer = NIOLoopBoundBox<LoopTimers.Token?>(nil, eventLoop: eventLoop)
        let parked = ParkedRead(eventLoop: eventLoop) { _ in
            if let t = timer.value { timers.value.cancel(t) }
            guard let a = seg.tailSlices(from: offset, maxBytes: maxBytes) else { return respond(.changed) }
            self.noteLookup(
                segment, block: self.geometry.index(containing: offset), info: a.info, reader: reader, tail: true,
                first: true)
            self.countLookup(hit: true)
            respond(.answer(a))
        }
        guard let id = seg.park(at: offset, parked) else { return false }
        counters.reads.add(1, ordering: .relaxed)
        counters.tailWaits.add(1, ordering: .relaxed)
        counters.parkedReads.add(1, ordering: .relaxed)
        // The length wait against the store hears of writes that bypass the ring, and of seals.
        watch(seg)
        timer.value = timers.value.schedule(in: TimeAmount(wait)) {
            guard seg.unpark(id) else { return }
            respond(.answer(ReadAnswer(info: seg.info ?? info, offset: offset, slices: [])))
        }
        return true
    }

    private func parkForward(
        _ segment: SegmentID, owner: String, offset: UInt64, maxBytes: Int, wait: Duration,
        on eventLoop: any EventLoop, _ respond: @escaping @Sendable (ParkedRead.Outcome) -> Void
    ) -> Bool {
        guard let hint = hints.withLock({ $0[segment] }), offset >= hint.length, offset >= hint.startOffset,
            !hint.sealed
        else { return false }
        let key = ForwardKey(
            owner: owner, segment: segment, offset: offset, maxBytes: UInt32(maxBytes),
            waitMilliseconds: UInt32(clamping: Int64(wait.inSeconds * 1000)))
        let parked = ParkedRead(eventLoop: eventLoop, wake: respond)
        let first = parkedForwards.withLock { p -> Bool in
            if p[key] != nil {
                p[key]!.append(parked)
                return false
            }
            p[key] = [parked]
            return true
        }
        counters.reads.add(1, ordering: .relaxed)
        counters.parkedReads.add(1, ordering: .relaxed)
        guard first else {
            counters.coalescedForwards.add(1, ordering: .relaxed)
            return true
        }
        Task {
            let outcome: ParkedRead.Outcome
            do throws(EddyError) {
                outcome = .answer(try await self.forwardRead(key))
            } catch  where error.code == .staleEpoch || error.code == .unavailable {
                outcome = .changed  // the full path refreshes the ring view and routes again
            } catch {
                outcome = .failed(error)
            }
            ParkedRead.wake(self.parkedForwards.withLock { $0.removeValue(forKey: key) ?? [] }, outcome)
        }
        return true
    }

    func ownedSegment(_ id: SegmentID) -> OwnedSegment {
        segments.withLock { s in
            if let o = s[id] { return o }
            let o = OwnedSegment(id: id, geometry: geometry)
            s[id] = o
            return o
        }
    }

    /// Inserts blocks that filled up and wakes the tail readers they satisfy.
    private func absorb(_ result: (full: [(UInt64, ByteBuffer)], wake: Wakeup), _ segment: SegmentID) {
        for (index, bytes) in result.full { cache.insert(BlockID(segment: segment, index: index), buffer: bytes) }
        result.wake.fire()
    }

    private func ownerRead(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?
    ) async throws(EddyError) -> ReadAnswer {
        let seg = ownedSegment(segment)
        let deadline = ContinuousClock.now + wait
        var askedStore = false
        var missed = false
        while true {
            let info: SegmentInfo
            if let known = seg.info { info = known } else { info = try await refreshInfo(seg) }
            guard offset >= info.startOffset else {
                guard let writeBack else {
                    throw EddyError(
                        .truncated, "offset \(offset) of \(segment) is below its truncation point \(info.startOffset)")
                }
                return try await coldRead(seg, writeBack, offset: offset, maxBytes: maxBytes, info: info)
            }
            if offset < info.length {
                let index = geometry.index(containing: offset)
                let full = geometry.isFull(block: index, segmentLength: info.length)
                noteLookup(segment, block: index, info: info, reader: reader, tail: wait > .zero, first: !missed)
                if let a = seg.tailSlices(from: offset, maxBytes: maxBytes) {
                    countLookup(hit: !missed)
                    return a
                }
                let blockRange = geometry.range(ofBlock: index)
                if blockRange.lowerBound < info.startOffset {
                    // The block's front is truncated: it cannot be cached whole. Read what is asked, once.
                    let end = min(blockRange.upperBound, info.length)
                    let r = try await storeRead(segment, from: offset, count: min(maxBytes, Int(end - offset)))
                    seg.learn(r.info).fire()
                    countLookup(hit: false)
                    return ReadAnswer(
                        info: seg.info ?? r.info, offset: offset, slices: r.data.readableBytes > 0 ? [r.data] : [])
                }
                if full {
                    let block = try await fullBlock(seg, index, missed: &missed)
                    countLookup(hit: !missed)
                    readAhead(seg, after: index, info: info, reader: reader)
                    let skip = Int(offset - blockRange.lowerBound)
                    let take = min(maxBytes, block.readableBytes - skip)
                    guard take > 0 else { return ReadAnswer(info: info, offset: offset, slices: []) }
                    return ReadAnswer(
                        info: info, offset: offset,
                        slices: [block.getSlice(at: block.readerIndex + skip, length: take)!])
                }
                // In the growing tail block, but the node does not hold those bytes: read them incrementally.
                missed = true
                try await fillTail(seg, index: index, for: offset)
                continue
            }
            if offset > info.length && askedStore {
                throw EddyError(.offsetOutOfRange, "offset \(offset) is past the end of \(segment) (\(info.length))")
            }
            if info.sealed && offset == info.length {
                return ReadAnswer(info: info, offset: offset, slices: [])
            }
            if !askedStore && !(wait > .zero && offset == info.length && seg.isWatching) {
                // The node's length may lag writes that bypassed it: ask the store once for what is new. A tail
                // read at the known end skips this while the segment's length wait runs: that wait hears of
                // such writes and wakes the readers.
                askedStore = true
                try await fetchTail(seg, reaching: offset + 1)
                continue
            }
            guard ContinuousClock.now < deadline else { return ReadAnswer(info: info, offset: offset, slices: []) }
            counters.tailWaits.add(1, ordering: .relaxed)
            watch(seg)
            await seg.waitForBytes(beyond: offset, until: deadline)
            if Task.isCancelled { throw EddyError(.shuttingDown, "the request was cancelled") }
        }
    }

    /// Tells the reader's state, the eviction policy (with reader hints) and the access trace that `reader`
    /// reads block `index` (`first`: the first look of this request, not a look again after a load).
    private func noteLookup(
        _ segment: SegmentID, block index: UInt64, info: SegmentInfo, reader: ReaderState?, tail: Bool, first: Bool
    ) {
        reader?.record(segment, block: index, tail: tail)
        guard first else { return }
        let full = geometry.isFull(block: index, segmentLength: info.length)
        if configuration.readerHints, let reader {
            cache.readerMoved(reader.id, to: BlockID(segment: segment, index: index), tail: tail || !full)
        }
        guard trace != nil || whatIf != nil else { return }
        let size = full ? Int(geometry.blockSize) : Int(info.length - geometry.range(ofBlock: index).lowerBound)
        let ordinal = ordinals.ordinal(of: segment)
        trace?.record(ordinal, block: index, size: size, reader: reader?.id ?? 0, tail: tail || !full)
        whatIf?.record(BlockKey(segment: ordinal, block: index & BlockKey.maxBlock).rawValue, size: Int64(size))
    }

    private func countLookup(hit: Bool) {
        if hit { counters.hits.add(1, ordering: .relaxed) } else { counters.misses.add(1, ordering: .relaxed) }
    }

    /// The bytes of full block `index`: from the cache, from a partial assembly completed by its missing front,
    /// or loaded from the store once however many readers wait.
    private func fullBlock(_ seg: OwnedSegment, _ index: UInt64, missed: inout Bool) async throws(EddyError)
        -> ByteBuffer
    {
        let id = BlockID(segment: seg.id, index: index)
        if let b = try cache.buffer(id) { return b }
        missed = true
        let range = geometry.range(ofBlock: index)
        do {
            let (bytes, joined) = try await blockLoads.run(id) {
                if let b = try self.cache.buffer(id) { return b }
                if let lo = seg.assemblyStart(ofBlock: index), lo > range.lowerBound, lo < range.upperBound {
                    // The node has the block's end already: read only its front.
                    if let whole = try await self.loadFront(seg, index, before: lo) { return whole }
                }
                return try await self.loadWholeBlock(seg, index)
            }
            if joined { counters.coalesced.add(1, ordering: .relaxed) }
            return bytes
        } catch {
            throw Self.typed(error)
        }
    }

    /// A read below the store's truncation point: the block from object storage through the cache (cached when
    /// it was flushed whole), loaded once however many readers ask.
    private func coldRead(
        _ seg: OwnedSegment, _ writeBack: WriteBack, offset: UInt64, maxBytes: Int, info: SegmentInfo
    ) async throws(EddyError) -> ReadAnswer {
        let index = geometry.index(containing: offset)
        let id = BlockID(segment: seg.id, index: index)
        let blockStart = geometry.range(ofBlock: index).lowerBound
        var block: ByteBuffer
        if let cached = try cache.buffer(id) {
            block = cached
            countLookup(hit: true)
        } else {
            let blockSize = Int(geometry.blockSize)
            do {
                (block, _) = try await blockLoads.run(id) {
                    if let b = try self.cache.buffer(id) { return b }
                    let bytes = try await writeBack.coldBlock(seg.id, index: index)
                    guard bytes.readableBytes == blockSize else { return bytes }
                    return self.cache.admit(id, buffer: bytes) ?? bytes
                }
            } catch {
                throw Self.typed(error)
            }
            countLookup(hit: false)
        }
        let skip = Int(offset - blockStart)
        guard skip < block.readableBytes else {
            throw EddyError(.truncated, "offset \(offset) of \(seg.id) is neither in the store nor flushed")
        }
        let take = min(maxBytes, block.readableBytes - skip)
        return ReadAnswer(
            info: info, offset: offset, slices: [block.getSlice(at: block.readerIndex + skip, length: take)!])
    }

    /// One store read of all of block `index`, cached when the block is full.
    private func loadWholeBlock(_ seg: OwnedSegment, _ index: UInt64) async throws(EddyError) -> ByteBuffer {
        let blockSize = Int(geometry.blockSize)
        let r = try await storeRead(seg.id, from: geometry.range(ofBlock: index).lowerBound, count: blockSize)
        seg.learn(r.info).fire()
        guard r.data.readableBytes == blockSize else { return r.data }
        // Answer from the cached copy: the read's own buffer is the connection's receive buffer.
        return cache.admit(BlockID(segment: seg.id, index: index), buffer: r.data) ?? r.data
    }

    /// Starts loads of the next full blocks when `reader` reads `segment` sequentially (a catch-up scan), so a
    /// scan has several store reads outstanding.
    private func readAhead(_ seg: OwnedSegment, after index: UInt64, info: SegmentInfo, reader: ReaderState?) {
        // Blocks read ahead must live until their reader gets there: in a cache of fewer than 16 blocks per block
        // read ahead they would be evicted first and read twice (a promote/evict loop), so the depth shrinks.
        let depth = min(configuration.readAhead, Int(cache.configuration.capacity / Int64(geometry.blockSize) / 16))
        guard depth > 0, let reader, reader.isSequential(seg.id) else { return }
        for next in (index + 1)...(index + UInt64(depth)) {
            guard geometry.isFull(block: next, segmentLength: info.length) else { break }
            let id = BlockID(segment: seg.id, index: next)
            guard !cache.contains(id) else { continue }
            // The job runs a little later, in a task of its own: a demand load of the block may have cached it
            // meanwhile (and left the single-flight registry), and must not be followed by a second store read.
            let load: @Sendable () async throws -> ByteBuffer = {
                if let cached = try self.cache.buffer(id) { return cached }
                return try await self.loadWholeBlock(seg, next)
            }
            if blockLoads.start(id, load) {
                counters.readAheads.add(1, ordering: .relaxed)
            }
        }
    }

    /// Reads the bytes of tail block `index` the node lacks: the front before its assembly (when `offset` is
    /// there), else from the assembly's end (or the block's start) to the block's end.
    private func fillTail(_ seg: OwnedSegment, index: UInt64, for offset: UInt64) async throws(EddyError) {
        if let lo = seg.assemblyStart(ofBlock: index), offset < lo {
            _ = try await loadFront(seg, index, before: lo)
            return
        }
        try await readTail(seg, from: seg.tailEnd(ofBlock: index) ?? geometry.range(ofBlock: index).lowerBound)
    }

    /// Reads the front of block `index` up to `lo`, where the node's assembly of it starts (the node began
    /// following the segment mid-block), once for all callers; caches the block if that completes it.
    /// - Returns: the block, to serve from, when this read completed it.
    private func loadFront(_ seg: OwnedSegment, _ index: UInt64, before lo: UInt64) async throws(EddyError)
        -> ByteBuffer?
    {
        let start = geometry.range(ofBlock: index).lowerBound
        return try await sharedRead(seg, from: start) { () throws(EddyError) in
            let r = try await self.storeRead(seg.id, from: start, count: Int(lo - start))
            guard let whole = seg.prepend(at: start, r.data) else { return nil }
            return self.cache.admit(BlockID(segment: seg.id, index: whole.0), buffer: whole.1) ?? whole.1
        }
    }

    /// Reads what the store has past the node's known length, up to the end of that block. Bytes of appends
    /// passing through this node come with their acknowledgements: while such appends are in flight it first
    /// waits for them to bring the known length to `target`, and reads from the store only if they did not.
    private func fetchTail(_ seg: OwnedSegment, reaching target: UInt64) async throws(EddyError) {
        await seg.awaitAppends(reaching: target, until: .now + configuration.requestTimeout)
        guard let info = seg.info, info.length < target else { return }
        try await readTail(seg, from: info.length)
    }

    /// Reads from `from` to the end of its block into the tail assembly (one read in flight per segment and
    /// offset), learning the segment's state on the way, and wakes the tail readers.
    private func readTail(_ seg: OwnedSegment, from: UInt64) async throws(EddyError) {
        let blockEnd = geometry.range(ofBlock: geometry.index(containing: from)).upperBound
        _ = try await sharedRead(seg, from: from) { () throws(EddyError) in
            let r = try await self.storeRead(seg.id, from: from, count: Int(blockEnd - from))
            let wake = seg.learn(r.info)
            self.absorb(seg.extend(at: from, r.data), seg.id)
            wake.fire()
            return nil
        }
    }

    /// One store read per (segment, start offset) at a time: a request for the same range joins it and gets the
    /// same result.
    private func sharedRead(
        _ seg: OwnedSegment, from: UInt64, _ body: @escaping @Sendable () async throws(EddyError) -> ByteBuffer?
    ) async throws(EddyError) -> ByteBuffer? {
        do {
            let (result, joined) = try await storeReads.run(RangeKey(segment: seg.id, from: from)) {
                try await body()
            }
            if joined { counters.coalesced.add(1, ordering: .relaxed) }
            return result
        } catch {
            throw Self.typed(error)
        }
    }

    /// Keeps one length wait against the store running for `seg` while tail readers wait there: it learns of
    /// bytes written past the ring (and of seals) and reads them once for all readers.
    private func watch(_ seg: OwnedSegment) {
        guard seg.startWatching() else { return }
        let wait: UInt32 = 5000
        Task {
            var idle = false
            while true {
                // Readers come back right after a wake-up: the wait ends after a whole round with none waiting
                // (or once the segment is sealed).
                if idle || seg.info?.sealed == true, seg.stopWatchingIfIdle() { return }
                idle = seg.waiterCount == 0
                guard let info = seg.info else { return seg.stopWatching() }
                do {
                    let r = try await store.send(
                        .read(segment: seg.id, offset: info.length, maxBytes: 0, waitMilliseconds: wait),
                        timeout: configuration.requestTimeout + .milliseconds(Int64(wait)))
                    guard case .readResult(_, let now, _) = r else { continue }
                    if now.length > (seg.info?.length ?? 0) { try await fetchTail(seg, reaching: now.length) }
                    seg.learn(now).fire()
                } catch {
                    // The store is away: waiters get empty answers at their deadlines; try again shortly.
                    seg.wakeAll()
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
        }
    }

    private func refreshInfo(_ seg: OwnedSegment) async throws(EddyError) -> SegmentInfo {
        let store = self.store
        let timeout = configuration.requestTimeout
        do {
            let (info, _) = try await infoRefresh.run(seg.id) {
                let r = try await store.send(.segmentInfo(seg.id), timeout: timeout)
                guard case .segmentInfo(let info) = r else {
                    throw EddyError(.malformedFrame, "the store answered segment info with \(r)")
                }
                return info
            }
            seg.learn(info).fire()
            return seg.info ?? info
        } catch {
            throw Self.typed(error)
        }
    }

    /// One read from the store, within the bytes-in-flight budget, counted in the ledger.
    private func storeRead(_ segment: SegmentID, from offset: UInt64, count: Int) async throws(EddyError)
        -> (info: SegmentInfo, data: ByteBuffer)
    {
        try await budget.acquire(Int64(count), timeout: configuration.requestTimeout)
        defer { budget.release(Int64(count)) }
        let r = try await store.send(
            .read(segment: segment, offset: offset, maxBytes: UInt32(count), waitMilliseconds: 0),
            timeout: configuration.requestTimeout)
        guard case .readResult(let at, let info, let data) = r else {
            throw EddyError(.malformedFrame, "the store answered a read with \(r)")
        }
        ledger.record(segment, from: at, count: data.readableBytes, geometry: geometry)
        return (info, data)
    }

    // MARK: - Not the owner

    private func nonOwnerRead(
        _ segment: SegmentID, owner: String, offset: UInt64, maxBytes: Int, wait: Duration
    ) async throws(EddyError) -> ReadAnswer {
        let index = geometry.index(containing: offset)
        let id = BlockID(segment: segment, index: index)
        let range = geometry.range(ofBlock: index)
        let hint = hints.withLock { $0[segment] }
        if let near, let hint, let block = try near.buffer(id) {
            counters.nearHits.add(1, ordering: .relaxed)
            return Self.slice(block, blockStart: range.lowerBound, offset: offset, maxBytes: maxBytes, info: hint)
        }
        if near != nil, let hint, geometry.isFull(block: index, segmentLength: hint.length), offset >= hint.startOffset
        {
            // A full block: fetch all of it once for every local reader, and keep it in the near cache.
            let a = try await forwardRead(
                ForwardKey(
                    owner: owner, segment: segment, offset: range.lowerBound, maxBytes: UInt32(geometry.blockSize),
                    waitMilliseconds: 0))
            if a.count == Int(geometry.blockSize), let received = a.slices.first {
                let data = near?.admit(id, buffer: received) ?? received
                return Self.slice(data, blockStart: range.lowerBound, offset: offset, maxBytes: maxBytes, info: a.info)
            }
        }
        let ms = UInt32(clamping: Int64(wait.inSeconds * 1000))
        return try await forwardRead(
            ForwardKey(owner: owner, segment: segment, offset: offset, maxBytes: UInt32(maxBytes), waitMilliseconds: ms)
        )
    }

    private static func slice(_ block: ByteBuffer, blockStart: UInt64, offset: UInt64, maxBytes: Int, info: SegmentInfo)
        -> ReadAnswer
    {
        let skip = Int(offset - blockStart)
        let take = max(0, min(maxBytes, block.readableBytes - skip))
        return ReadAnswer(
            info: info, offset: offset,
            slices: take > 0 ? [block.getSlice(at: block.readerIndex + skip, length: take)!] : [])
    }

    /// Forwards a read to its owner; identical forwards of local readers share one request.
    private func forwardRead(_ key: ForwardKey) async throws(EddyError) -> ReadAnswer {
        let request = Request.read(
            segment: key.segment, offset: key.offset, maxBytes: key.maxBytes, waitMilliseconds: key.waitMilliseconds)
        let timeout = configuration.requestTimeout + .milliseconds(Int64(key.waitMilliseconds))
        let response: Response
        do {
            let (r, joined) = try await forwards.run(key) {
                self.counters.forwards.add(1, ordering: .relaxed)
                return try await self.forward(request, to: key.owner, timeout: timeout)
            }
            if joined { counters.coalescedForwards.add(1, ordering: .relaxed) }
            response = r
        } catch {
            throw Self.typed(error)
        }
        guard case .readResult(let offset, let info, let data) = response else {
            throw EddyError(.malformedFrame, "\(key.owner) answered a read with \(response)")
        }
        hints.withLock { h in
            if let old = h[key.segment], old.length > info.length { return }
            h[key.segment] = info
        }
        return ReadAnswer(info: info, offset: offset, slices: data.readableBytes > 0 ? [data] : [])
    }

    // MARK: - Housekeeping

    /// Drops everything the node holds of a deleted stream.
    func purge(_ name: StreamName) {
        let gone = segments.withLock { s in
            let ids = s.keys.filter { $0.stream == name }
            return ids.compactMap { s.removeValue(forKey: $0) }
        }
        for seg in gone { seg.wakeAll() }
        hints.withLock { h in h = h.filter { $0.key.stream != name } }
        cache.removeStream(name)
        near?.removeStream(name)
    }

    static func typed(_ error: any Error) -> EddyError {
        if let e = error as? EddyError { return e }
        if error is CancellationError { return EddyError(.shuttingDown, "the request was cancelled") }
        return EddyError(.internalError, "\(error)")
    }

    /// Tail readers waiting on this node's owned segments.
    var tailWaiters: Int {
        segments.withLock { s in s.values.reduce(0) { $0 + $1.waiterCount } }
            + parkedForwards.withLock { p in p.values.reduce(0) { $0 + $1.count } }
    }
}

extension NodeCore: WriteBackHost {
    /// Runs `request` as if a client had sent it to this node (write-back's retention truncates this way).
    package func handleAsClient(_ request: Request) async -> Response { await handle(request) }
}
