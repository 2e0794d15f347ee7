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

/// A child channel with Nagle's algorithm off: a streamed response (Server-Sent Events, one small write per
/// event) would otherwise wait for the client's delayed acknowledgement, about 40 ms, before each write.
struct NoDelayChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.setOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1).flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 without Nagle's delay, behind `tls` (reloadable) when given.
    static func http1(behind tls: ServerTLS?) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            let http = HTTP1Channel(responder: responder, configuration: .init())
            guard let tls else { return NoDelayChannel(base: http) }
            return NoDelayChannel(base: ReloadableTLSChannel(base: http, tls: tls, handshakeTimeout: .seconds(30)))
        }
    }
}
