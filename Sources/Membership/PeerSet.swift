import Coalescing
import EddyTLS
import HashRing
import Logging
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

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
