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
    let ordinals = SegmentOrdinals()
    /// Write-back to object storage, when configured.
    let writeBack: WriteBack?

    let segments = Mutex<[SegmentID: OwnedSegment]>([:])
    /// The last state seen of segments owned elsewhere (from forwarded answers), to know which blocks are full.
    let hints = Mutex<[SegmentID: SegmentInfo]>([:])
    /// Segment names the store has, for the bounded-load assignment; and that assignment on the current ring.
    let placement: Mutex<Placement>
    let catalogRefresh = SingleFlight<Int, Set<String>>()
    let blockLoads = SingleFlight<BlockID, ByteBuffer>()
    /// Store reads by (segment, start offset); a read that completes a block gives the cached block.
    let storeReads = SingleFlight<RangeKey, ByteBuffer?>()
    let forwards = SingleFlight<ForwardKey, Response>()
    /// Tail reads parked on a shared forward, by forward.
    let parkedForwards = Mutex<[ForwardKey: [ParkedRead]]>([:])
    let infoRefresh = SingleFlight<SegmentID, SegmentInfo>()

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
        let nearBytes = configuration.blockCacheBytes - configuration.ownerCacheBytes
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
        budget = ByteBudget(limit: configuration.effectiveMaxBytesInFlight)
        timers = configuration.metricsFactory.map { RequestTimers(factory: $0, node: configuration.name) }
        trace = try configuration.traceOut.map { (path) throws(EddyError) in try AccessTrace(path: path) }
        whatIf =
            configuration.whatIf
            ? try WhatIf(configuration.whatIfConfiguration(ownerCacheBytes: configuration.ownerCacheBytes)) : nil
        store = Upstream(
            addresses: configuration.upstream, zone: configuration.upstreamZone, group: group,
            connectTimeout: configuration.requestTimeout, token: configuration.serviceToken,
            tls: configuration.tls?.outgoing)
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
    /// `submitted` runs once an append has been handed to the store's or the owner's connection (a connection's
    /// next append of the same writer and segment may start then: it reaches the store after this one).
    func handle(
        _ request: Request, forwardedBy view: RingView? = nil, submitted: (@Sendable () -> Void)? = nil
    ) async -> Response {
        do throws(EddyError) {
            return try await answer(request, forwardedBy: view, submitted: submitted)
        } catch {
            return .error(error)
        }
    }

    func answer(
        _ request: Request, forwardedBy view: RingView?, submitted: (@Sendable () -> Void)? = nil
    ) async throws(EddyError) -> Response {
        let timeout = configuration.requestTimeout
        switch request {
        case .hello:
            throw EddyError(.malformedFrame, "hello sent twice")
        case .stats:
            return .stats(statsJSON())
        case .ping:
            return .ok
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
            return try await answer(inner, forwardedBy: peerView, submitted: submitted)
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
            return try await routed(segment, request, forwardedBy: view, submitted: submitted) {
                () throws(EddyError) in
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
                let r = try await self.store.send(request, timeout: timeout, submitted: submitted)
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
    func checkView(_ view: RingView) throws(EddyError) {
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
    func viaOwner<T>(
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
    func routed(
        _ segment: SegmentID, _ request: Request, forwardedBy view: RingView?,
        submitted: (@Sendable () -> Void)? = nil, _ local: () async throws(EddyError) -> Response
    ) async throws(EddyError) -> Response {
        try await viaOwner(segment, forwardedBy: view, local: local) { (owner) throws(EddyError) in
            counters.forwards.add(1, ordering: .relaxed)
            return try await forward(request, to: owner, timeout: configuration.requestTimeout, submitted: submitted)
        }
    }

    func forward(
        _ request: Request, to owner: String, timeout: Duration, submitted: (@Sendable () -> Void)? = nil
    ) async throws(EddyError) -> Response {
        guard let peer = peers.upstream(owner) else {
            throw EddyError(.internalError, "\(owner) is in the ring but is not a HOST:PORT address")
        }
        return try await peer.send(.forwarded(membership.view(), request), timeout: timeout, submitted: submitted)
    }

    func tellPeers(_ request: Request) async {
        let view = membership.view()
        let timeout = configuration.requestTimeout
        await withTaskGroup(of: Void.self) { group in
            for name in membership.knownMembers where name != me {
                guard let peer = peers.upstream(name) else { continue }
                group.addTask { _ = try? await peer.send(.forwarded(view, request), timeout: timeout) }
            }
        }
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
