import Foundation
import NIOCore
import NIOPosix
import StreamModel
import Synchronization
import WireProtocol

/// The readers of `eddy bench fanout --http`: each a Server-Sent Events response of a node's HTTP gateway
/// (docs/http.md) that follows the stream's tail, over a plain NIO connection that only looks for each event's
/// `"timestamp":` (a general HTTP client's per-chunk cost made the bench its own bottleneck at 1000 readers).
/// Every event's latency is its arrival time minus that timestamp (the writer's send time).
enum HTTPFanout {
    /// The gateway of each of `servers`: the node's port + 200 (`--http-listen auto`, `eddy up`).
    static func gateways(_ servers: [ServerAddress]) -> [ServerAddress] {
        servers.map { ServerAddress(host: $0.host, port: $0.port + 200) }
    }

    /// Opens one reader's response; it counts in `progress.ready` once the gateway answered 200.
    static func open(
        _ gateway: ServerAddress, stream: String, token: String, progress: Progress,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> SSEReader {
        let reader = SSEReader(progress: progress)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(reader) }
            }
            .connect(host: gateway.host, port: gateway.port).get()
        var request = "GET /v1/streams/\(stream)/events?from=tail HTTP/1.1\r\nHost: \(gateway)\r\n"
        request += "Accept: text/event-stream\r\n"
        if !token.isEmpty { request += "Authorization: Bearer \(token)\r\n" }
        try await channel.writeAndFlush(ByteBuffer(string: request + "\r\n")).get()
        try await reader.answered?.get()
        progress.ready.add(1, ordering: .relaxed)
        return reader
    }
}

/// SSEReader counts one Server-Sent Events response's events and their latencies, on its channel's loop.
final class SSEReader: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private let progress: Progress
    private var pending: [UInt8] = []
    private var head = true
    private var figures = BenchFigures()
    private var channel: Channel?
    private var promise: EventLoopPromise<Void>?

    init(progress: Progress) { self.progress = progress }

    /// Completes once the response head arrived (fails when it is not 200).
    private(set) var answered: EventLoopFuture<Void>?

    func handlerAdded(context: ChannelHandlerContext) {
        channel = context.channel
        let p = context.eventLoop.makePromise(of: Void.self)
        promise = p
        answered = p.futureResult
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
        pending += unwrapInboundIn(data).readableBytesView
        if head {
            guard let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let status = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
            guard status.hasPrefix("HTTP/1.1 200") else {
                promise?.fail(EddyError(.unavailable, "the gateway answered: \(status.prefix(200))"))
                promise = nil
                context.close(promise: nil)
                return
            }
            pending.removeFirst(end.upperBound)
            head = false
            promise?.succeed()
            promise = nil
        }
        let (count, used) = Self.record(pending, now: now, into: &figures)
        pending.removeFirst(used)
        progress.events.add(count, ordering: .relaxed)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(EddyError(.connectionFailed, "the gateway closed the connection"))
        promise = nil
    }

    /// Closes the connection and returns what it counted.
    func finish() async -> BenchFigures {
        guard let channel else { return BenchFigures() }
        return
            (try? await channel.eventLoop.submit {
                channel.close(promise: nil)
                return self.figures
            }.get()) ?? BenchFigures()
    }

    /// Records the whole events at the front of `bytes` (each ends with a blank line; the chunked encoding's size
    /// lines fall between them) and returns how many, and how many bytes they took. The timestamp is read from the
    /// end of the data line: the gateway's JSON has its keys sorted, so `"timestamp":DIGITS}` ends it.
    static func record(_ bytes: [UInt8], now: Int64, into figures: inout BenchFigures) -> (Int, Int) {
        bytes.withUnsafeBufferPointer { b in
            var count = 0
            var start = 0
            var i = 0
            let n = b.count
            while i + 1 < n {
                guard let found = memchr(b.baseAddress! + i, 0x0A, n - i - 1) else { break }
                i = b.baseAddress!.distance(to: found.assumingMemoryBound(to: UInt8.self))
                guard b[i + 1] == 0x0A else {
                    i += 1
                    continue
                }
                // A block start..<i; a message ends with its data's "}" after the timestamp's digits.
                if i > start, b[i - 1] == UInt8(ascii: "}") {
                    var j = i - 2
                    var stamp: Int64 = 0
                    var scale: Int64 = 1
                    while j >= start, (0x30...0x39).contains(b[j]) {
                        stamp += Int64(b[j] - 0x30) * scale
                        scale *= 10
                        j -= 1
                    }
                    if scale > 1 {
                        _ = figures.histogram.record(UInt64(max(1, now - stamp)))
                        figures.events += 1
                        figures.bytes += i - start + 2
                        count += 1
                    }
                }
                i += 2
                start = i
            }
            return (count, start)
        }
    }
}
