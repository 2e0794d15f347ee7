import CoreMetrics
import NIOCore
import Synchronization
import WireProtocol

/// RequestTimers records how long the node takes to answer each type of request, as swift-metrics timers
/// (`eddy_request_duration_seconds{node, type}`; Prometheus histograms through the admin server's factory).
/// A forwarded request counts under `forwarded_` and its inner type. Each timer is made once, so recording one
/// is a locked lookup by a small number (the message type, + 256 when forwarded) and the histogram's update.
final class RequestTimers: Sendable {
    private let factory: any MetricsFactory
    private let node: String
    /// Timers by request type, made on first use (a node that never sees a type exports no series for it).
    private let timers = Mutex<[Int: CoreMetrics.Timer]>([:])

    init(factory: any MetricsFactory, node: String) {
        self.factory = factory
        self.node = node
    }

    /// Records `request`, started at `start` (uptime nanoseconds), as done now.
    func record(_ request: Request, since start: UInt64) {
        let elapsed = Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds &- start)
        let key: Int =
            if case .forwarded(_, let inner) = request { 256 + Int(inner.type.rawValue) } else {
                Int(request.type.rawValue)
            }
        let timer = timers.withLock { t in
            if let timer = t[key] { return timer }
            let timer = CoreMetrics.Timer(
                label: "eddy_request_duration_seconds", dimensions: [("node", node), ("type", Self.name(of: request))],
                factory: factory)
            t[key] = timer
            return timer
        }
        timer.recordNanoseconds(elapsed)
    }

    static func name(of request: Request) -> String {
        switch request {
        case .forwarded(_, let inner): "forwarded_" + name(of: inner)
        case .createStream: "create_stream"
        case .deleteStream: "delete_stream"
        case .listStreams: "list_streams"
        case .streamInfo: "stream_info"
        case .append: "append"
        case .read: "read"
        case .seal: "seal"
        case .truncate: "truncate"
        case .writerState: "writer_state"
        case .segmentInfo: "segment_info"
        case .stats: "stats"
        case .subscribe: "subscribe"
        case .admin: "admin"
        case .heartbeat: "heartbeat"
        case .hello, .credit, .unsubscribe, .ping: "other"
        }
    }
}
