import Coalescing
import EddyTLS
import HashRing
import Logging
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

/// MembershipSettings are what a membership needs of its node's configuration (`NodeConfiguration` makes them).
package struct MembershipSettings: Sendable {
    /// This node's name in the ring, its listen address `HOST:PORT`.
    package var me: String
    /// The static member list (every node, this one included); unused with etcd.
    package var members: [ServerAddress]
    /// How often a node sends its heartbeats.
    package var heartbeatInterval: Duration
    /// A member not heard from for this long leaves the ring.
    package var failureTimeout: Duration
    /// The deadline of a request to etcd (at most 5 s is used).
    package var requestTimeout: Duration
    package var logger: Logger

    package init(
        me: String, members: [ServerAddress], heartbeatInterval: Duration, failureTimeout: Duration,
        requestTimeout: Duration, logger: Logger
    ) {
        self.me = me
        self.members = members
        self.heartbeatInterval = heartbeatInterval
        self.failureTimeout = failureTimeout
        self.requestTimeout = requestTimeout
        self.logger = logger
    }
}

/// How a node learns who is in the ring: the static member list with heartbeats (``StaticMembership``, the
/// default) or registrations in etcd under a lease (``EtcdMembership``). Either keeps the ring in a
/// ``RingHolder`` and tells the node of every change.
package protocol RingMembership: AnyObject, Sendable {
    /// The ring and its epoch agreement.
    var holder: RingHolder { get }
    /// Every member this node knows of, alive or not (the static list, or every registration in etcd).
    var knownMembers: [String] { get }
    /// Why the node is not (yet) a proper member, for `/ready`; nil when it is.
    var notReadyReason: String? { get }
    /// `static` or `etcd`, with its settings, for `/ring`.
    var summary: [String: String] { get }
    /// Becomes a member (etcd: registers and reads the members) before the node reports itself ready.
    func join() async throws(EddyError)
    /// Keeps the view current until the task is cancelled.
    func run() async
    /// Refreshes the view now (after a peer refused a forward or could not be reached).
    func probe() async
    /// Records that `peer` is alive with `view` (from a heartbeat it sent).
    func heard(_ peer: String, view: RingView)
    /// Leaves the ring at the start of a drain (etcd: revokes the lease, so every node sees the DELETE now).
    func leave() async
}

extension RingMembership {
    package var ring: HashRing { holder.ring }

    package func view(withMembers: Bool = false) -> RingView { holder.view(withMembers: withMembers) }

    package func adopt(_ view: RingView) { holder.adopt(view) }
}

/// RingHolder keeps the ring a node routes by. Nodes that reach the same member list adopt the highest epoch
/// among them (forwards and heartbeats carry it), so equal views carry equal epochs.
package final class RingHolder: Sendable {
    package let me: String
    private let current: Mutex<HashRing>
    private let onChange: @Sendable (HashRing) -> Void
    private let logger: Logger

    package init(me: String, ring: HashRing, logger: Logger, onChange: @escaping @Sendable (HashRing) -> Void) {
        self.me = me
        current = Mutex(ring)
        self.logger = logger
        self.onChange = onChange
    }

    /// The current ring.
    package var ring: HashRing { current.withLock { $0 } }

    /// This node's view as sent in forwards and heartbeats.
    package func view(withMembers: Bool = false) -> RingView {
        let ring = self.ring
        return RingView(
            from: me, epoch: ring.epoch, fingerprint: ring.fingerprint, members: withMembers ? ring.members : [])
    }

    /// Takes a peer's epoch when its member list is ours and its epoch is higher.
    package func adopt(_ view: RingView) {
        current.withLock { ring in
            if view.fingerprint == ring.fingerprint, view.epoch > ring.epoch {
                ring = HashRing(members: ring.members, epoch: view.epoch, configuration: ring.configuration)
            }
        }
    }

    /// Replaces the ring with what `next` makes of it (nil: no change); a new member list is logged and told to
    /// the node.
    package func update(_ next: (HashRing) -> HashRing?) {
        let changed: HashRing? = current.withLock { ring in
            guard let n = next(ring), n.members != ring.members else { return nil }
            ring = n
            return n
        }
        if let changed {
            logger.notice(
                "ring changed",
                metadata: ["epoch": "\(changed.epoch)", "members": "\(changed.members.joined(separator: ","))"])
            onChange(changed)
        }
    }
}

/// The upstream connections to peer nodes, made when a member is first asked (members come and go with etcd).
package final class PeerSet: Sendable {
    private let upstreams = Mutex<[String: Upstream]>([:])
    private let group: EventLoopGroup
    private let connectTimeout: Duration
    private let token: String
    private let tls: ClientTLS?

    package init(group: EventLoopGroup, connectTimeout: Duration, token: String = "", tls: ClientTLS? = nil) {
        self.group = group
        self.connectTimeout = connectTimeout
        self.token = token
        self.tls = tls
    }

    /// The connection to the member named `name` (`HOST:PORT`); nil when the name is not an address.
    package func upstream(_ name: String) -> Upstream? {
        if let known = upstreams.withLock({ $0[name] }) { return known }
        guard let address = try? ServerAddress(parsing: name) else { return nil }
        return upstreams.withLock { u in
            if let known = u[name] { return known }
            let made = Upstream(
                address: address, group: group, connectTimeout: connectTimeout, token: token, tls: tls)
            u[name] = made
            return made
        }
    }

    /// Closes the connections to members not in `keeping`.
    package func prune(keeping: Set<String>) async {
        let gone: [Upstream] = upstreams.withLock { u in
            let names = u.keys.filter { !keeping.contains($0) }
            return names.compactMap { u.removeValue(forKey: $0) }
        }
        for g in gone { await g.close() }
    }

    /// Closes every connection.
    package func closeAll() async { await prune(keeping: []) }
}

/// StaticMembership is the static member list with heartbeats to every other member: a member not heard from for
/// `failureTimeout` leaves the ring; it rejoins when it answers again; every change gives a ring with the next
/// epoch.
package final class StaticMembership: RingMembership {
    package let holder: RingHolder
    package let peers: [String]
    private let me: String
    private let configuration: MembershipSettings
    private let lastHeard: Mutex<[String: ContinuousClock.Instant]>
    private let upstreams: PeerSet
    private let probing = SingleFlight<Int, Void>()

    package init(
        configuration: MembershipSettings, upstreams: PeerSet, onChange: @escaping @Sendable (HashRing) -> Void
    ) {
        self.configuration = configuration
        me = configuration.me
        let all = Set(configuration.members.map(\.description))
        peers = all.subtracting([me]).sorted()
        self.upstreams = upstreams
        // Every listed member counts as alive at the start, so a static ring serves at once; those that do not
        // answer leave it after the failure timeout.
        let now = ContinuousClock.now
        lastHeard = Mutex(Dictionary(uniqueKeysWithValues: peers.map { ($0, now) }))
        holder = RingHolder(
            me: me, ring: HashRing(members: all), logger: configuration.logger, onChange: onChange)
    }

    package var knownMembers: [String] { ([me] + peers).sorted() }

    package var notReadyReason: String? { ring.members.contains(me) ? nil : "not in the ring" }

    package var summary: [String: String] { ["membership": "static"] }

    package func join() async throws(EddyError) {}

    package func leave() async {}

    /// Runs heartbeat rounds until the task is cancelled.
    package func run() async {
        while !Task.isCancelled {
            await probe()
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    /// One heartbeat round now, shared with any round already in progress.
    package func probe() async {
        _ = try? await probing.run(0) { await self.round() }
    }

    private func round() async {
        let view = self.view(withMembers: true)
        let timeout = configuration.heartbeatInterval * 2
        await withTaskGroup(of: (String, Result<RingView, EddyError>?).self) { group in
            for peer in peers {
                guard let upstream = upstreams.upstream(peer) else { continue }
                group.addTask {
                    do throws(EddyError) {
                        guard
                            case .heartbeatAck(let answer) = try await upstream.send(.heartbeat(view), timeout: timeout)
                        else { return (peer, nil) }
                        return (peer, .success(answer))
                    } catch {
                        return (peer, .failure(error))
                    }
                }
            }
            for await (peer, answer) in group {
                switch answer {
                case .success(let view): heard(peer, view: view)
                case .failure(let error) where error.code == .unavailable && upstreams.upstream(peer)?.refused == true:
                    // Nothing listens there (a killed process): leave now rather than after the timeout.
                    lastHeard.withLock { l in
                        if l[peer] != nil { l[peer] = .now - configuration.failureTimeout }
                    }
                default: break
                }
            }
        }
        evaluate()
    }

    package func heard(_ peer: String, view: RingView) {
        lastHeard.withLock { l in
            guard l[peer] != nil else { return }
            l[peer] = .now
        }
        adopt(view)
        evaluate()
    }

    /// Recomputes who is alive; a change gives the next epoch and tells the node.
    private func evaluate() {
        let now = ContinuousClock.now
        let alive = lastHeard.withLock { l in
            [me] + peers.filter { p in l[p].map { now - $0 < configuration.failureTimeout } ?? false }
        }
        holder.update { $0.with(members: alive) }
    }
}
