import Coalescing
import EddyTLS
import HashRing
import Logging
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

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
