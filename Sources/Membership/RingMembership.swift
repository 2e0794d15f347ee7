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
