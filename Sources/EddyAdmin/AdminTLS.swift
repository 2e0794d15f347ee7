import EddyTLS
import HummingbirdCore
import Logging
import NIOCore

/// The admin HTTP server's child channel over TLS: like HummingbirdTLS's `TLSChannel`, but each connection takes
/// the server's current certificate, so a SIGHUP reload (``ServerTLS/reload()``) reaches the admin port too.
struct ReloadableTLSChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let tls: ServerTLS
    let handshakeTimeout: TimeAmount

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try tls.addHandlers(to: channel.pipeline.syncOperations, handshakeTimeout: handshakeTimeout)
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 behind `tls`, reloadable.
    static func http1(behind tls: ServerTLS) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            ReloadableTLSChannel(
                base: HTTP1Channel(responder: responder, configuration: .init()), tls: tls,
                handshakeTimeout: .seconds(30))
        }
    }
}
