import NIOCore
import Synchronization

/// OpenConnections are a server's accepted connections, so closing the server closes them too: clients see the
/// server go at once (and fail over) instead of waiting on one that no longer answers.
public final class OpenConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: Channel]>([:])

    /// An empty set.
    public init() {}

    /// Adds an accepted connection; it leaves the set when it closes.
    public func add(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in _ = self.channels.withLock { $0.removeValue(forKey: id) } }
    }

    /// The connections open now.
    public var count: Int { channels.withLock { $0.count } }

    /// Closes every connection in the set.
    public func closeAll() {
        for c in channels.withLock({ Array($0.values) }) { c.close(promise: nil) }
    }
}
