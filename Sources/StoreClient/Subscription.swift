import NIOCore
import StreamModel
import Synchronization
import WireProtocol

/// Bytes of a followed segment, pushed by a cache node.
public struct SegmentChunk: Sendable {
    /// Where the bytes start.
    public var offset: UInt64
    /// The segment's state when they were sent.
    public var info: SegmentInfo
    /// The bytes (empty for a heartbeat: nothing arrived within the heartbeat interval).
    public var data: ByteBuffer
}

/// Subscription follows one segment over one connection: the node pushes bytes as they arrive (see
/// ``Request/subscribe(segment:offset:window:heartbeatMilliseconds:)``), without a request per delivery.
///
/// Flow control is a byte window: the node sends while the window is open, and iterating gives the window back
/// (a credit message once half of it was consumed), so a subscriber that stops iterating is sent at most a
/// window of bytes. The sequence ends after the chunk that reaches the end of a sealed segment, or after
/// ``cancel()``. It fails with the node's error, with ``EddyError/Code/connectionFailed`` when the connection
/// breaks, and with ``EddyError/Code/timedOut`` when neither bytes nor a heartbeat came for two heartbeat
/// intervals and a second (a node that is gone without closing the connection).
public final class Subscription: AsyncSequence, Sendable {
    public typealias Element = SegmentChunk

    let sink: SubscriptionSink
    private let stream: AsyncThrowingStream<SegmentChunk, any Error>
    private let channel: Channel
    private let window: Int
    /// Bytes consumed since the last credit.
    private let consumed = Mutex(0)

    init(request: Request, window: Int, heartbeat: TimeAmount, channel: Channel) {
        let (stream, continuation) = AsyncThrowingStream<SegmentChunk, any Error>.makeStream()
        let sink = SubscriptionSink(continuation: continuation, heartbeat: heartbeat)
        self.sink = sink
        self.stream = stream
        self.channel = channel
        self.window = window
        continuation.onTermination = { termination in
            if case .cancelled = termination {
                channel.writeAndFlush(ClientHandler.Outgoing.unsubscribe(sink), promise: nil)
            }
        }
        let address = channel.remoteAddress.map { "\($0)" } ?? "the server"
        channel.writeAndFlush(ClientHandler.Outgoing.subscribe(request, sink)).whenFailure { error in
            continuation.finish(throwing: EddyError(.connectionFailed, "cannot subscribe at \(address): \(error)"))
        }
    }

    deinit { cancel() }

    /// Ends the subscription: the node is told, and iteration ends. Dropping the subscription does the same.
    public func cancel() {
        channel.writeAndFlush(ClientHandler.Outgoing.unsubscribe(sink), promise: nil)
    }

    /// Gives consumed bytes back to the node's window (one credit message per half window).
    fileprivate func consume(_ bytes: Int) {
        guard bytes > 0 else { return }
        let grant = consumed.withLock { c -> Int in
            c += bytes
            guard c >= window / 2 else { return 0 }
            defer { c = 0 }
            return c
        }
        if grant > 0 {
            channel.writeAndFlush(ClientHandler.Outgoing.credit(sink, UInt32(clamping: grant)), promise: nil)
        }
    }

    /// Iterates the pushed chunks in order.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<SegmentChunk, any Error>.AsyncIterator
        let subscription: Subscription

        /// The next chunk, or nil after the end of a sealed segment.
        public mutating func next() async throws -> SegmentChunk? {
            guard let chunk = try await base.next() else { return nil }
            subscription.consume(chunk.data.readableBytes)
            return chunk
        }
    }

    /// The iterator (one per subscription).
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), subscription: self)
    }
}

/// The connection's end of a subscription: where pushed chunks go. Its fields are used on the connection's
/// event loop only.
final class SubscriptionSink: @unchecked Sendable {
    let continuation: AsyncThrowingStream<SegmentChunk, any Error>.Continuation
    let heartbeat: TimeAmount
    /// The request ID the subscription was opened with (0 until it was written).
    var id: UInt32 = 0
    /// When the node was last heard of for this subscription.
    var lastHeard = NIODeadline.now()

    init(continuation: AsyncThrowingStream<SegmentChunk, any Error>.Continuation, heartbeat: TimeAmount) {
        self.continuation = continuation
        self.heartbeat = heartbeat
    }
}
