import Logging
import NIOCore
import StreamModel
import WireProtocol

extension ChannelPipeline.SynchronousOperations {
    /// Adds the front every Eddy listener's connections start with, the same for the store and the nodes: TLS
    /// with its handshake deadline (when `tls` is given), then the ``ConnectionGuard`` of `limits` (connections
    /// over the limit are refused and logged as `connection refused` on `logger`), then the frame decoder.
    /// What follows (the frame writer, the server's handler) is the caller's.
    /// - Parameters:
    ///   - tls: the listener's TLS, or nil for plain TCP.
    ///   - limits: the connection limits; `frameTimeout` is also the TLS handshake's deadline.
    ///   - open: how many connections the server has open now.
    ///   - maxFrameSize: the largest frame the decoder accepts.
    public func addServerFront(
        tls: ServerTLS?, limits: ConnectionLimits, open: @escaping @Sendable () -> Int, maxFrameSize: Int,
        logger: Logger
    ) throws {
        try tls?.addHandlers(to: self, handshakeTimeout: TimeAmount(limits.frameTimeout))
        try addHandler(
            ConnectionGuard(limits: limits, open: open) { error in
                logger.warning("connection refused", metadata: ["why": "\(error.message)"])
            })
        try addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: maxFrameSize)))
    }
}
