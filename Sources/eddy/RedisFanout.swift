import Foundation
import Histogram
import NIOCore
import NIOPosix
import Synchronization

/// A minimal RESP (Redis protocol) value, enough for XADD and XREAD answers.
indirect enum RESPValue: Sendable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk(ByteBuffer?)
    case array([RESPValue]?)
}

/// RESPDecoder cuts a byte stream into RESP values (nested arrays included); it waits for more bytes when a value
/// is incomplete.
struct RESPDecoder: ByteToMessageDecoder {
    typealias InboundOut = RESPValue

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        var probe = buffer
        guard let value = try Self.parse(&probe) else { return .needMoreData }
        buffer = probe
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }

    /// Parses one value, advancing `b`; nil when `b` ends inside it.
    static func parse(_ b: inout ByteBuffer) throws -> RESPValue? {
        guard let type = b.getInteger(at: b.readerIndex, as: UInt8.self),
            let end = b.readableBytesView.firstIndex(of: UInt8(ascii: "\r"))
        else { return nil }
        let lineLength = end - b.readerIndex
        guard b.readableBytes >= lineLength + 2 else { return nil }
        let line = b.getString(at: b.readerIndex + 1, length: lineLength - 1) ?? ""
        b.moveReaderIndex(forwardBy: lineLength + 2)
        switch type {
        case UInt8(ascii: "+"): return .simple(line)
        case UInt8(ascii: "-"): return .error(line)
        case UInt8(ascii: ":"): return .integer(Int(line) ?? 0)
        case UInt8(ascii: "$"):
            let n = Int(line) ?? -1
            guard n >= 0 else { return .bulk(nil) }
            guard b.readableBytes >= n + 2 else { return nil }
            let data = b.readSlice(length: n)!
            b.moveReaderIndex(forwardBy: 2)
            return .bulk(data)
        case UInt8(ascii: "*"):
            let n = Int(line) ?? -1
            guard n >= 0 else { return .array(nil) }
            var items: [RESPValue] = []
            for _ in 0..<n {
                guard let item = try parse(&b) else { return nil }
                items.append(item)
            }
            return .array(items)
        default:
            throw RedisBenchError(message: "not RESP: type byte \(type)")
        }
    }
}

struct RedisBenchError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// RedisConnection sends commands one at a time or pipelined and hands back their answers in order.
final class RedisConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = RESPValue

    private var waiting: [EventLoopPromise<RESPValue>] = []
    private let channel: Channel

    private init(channel: Channel) { self.channel = channel }

    static func connect(host: String, port: Int, group: EventLoopGroup) async throws -> RedisConnection {
        let holder = Mutex<RedisConnection?>(nil)
        _ = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = RedisConnection(channel: channel)
                    holder.withLock { $0 = connection }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPDecoder()))
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .connect(host: host, port: port).get()
        return holder.withLock { $0! }
    }

    /// Sends commands in one write; the futures complete with their answers, in order.
    func send(_ commands: [[String]]) -> [EventLoopFuture<RESPValue>] {
        var out = channel.allocator.buffer(capacity: 256)
        for command in commands {
            out.writeString("*\(command.count)\r\n")
            for part in command { out.writeString("$\(part.utf8.count)\r\n\(part)\r\n") }
        }
        let promises = commands.map { _ in channel.eventLoop.makePromise(of: RESPValue.self) }
        let bytes = out
        channel.eventLoop.execute {
            self.waiting.append(contentsOf: promises)
            self.channel.writeAndFlush(bytes, promise: nil)
        }
        return promises.map(\.futureResult)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        guard !waiting.isEmpty else { return }
        waiting.removeFirst().succeed(value)
    }

    func channelInactive(context: ChannelHandlerContext) {
        for p in waiting { p.fail(RedisBenchError(message: "redis closed the connection")) }
        waiting.removeAll()
    }

    func close() async { try? await channel.close() }
}

/// The Redis Streams side of `eddy bench fanout --redis`: one writer XADDs `rate` entries per second stamped with
/// their send time; `readers` connections each follow the stream with `XREAD BLOCK`, recording send-to-delivery
/// latency per entry. The same readers, rate, tick and payload as the Eddy run, through the same client runtime.
/// `started` runs when every reader is in place, right before the writer starts.
func redisFanout(
    host: String, port: Int, readers: Int, rate: Int, seconds: Double, size: Int,
    started: @Sendable () -> Void = {}
) async throws -> BenchFigures {
    let group = MultiThreadedEventLoopGroup.singleton
    let key = "eddy-bench-\(UUID().uuidString)"
    let admin = try await RedisConnection.connect(host: host, port: port, group: group)
    _ = try await admin.send([["XADD", key, "0-1", "t", "0"]])[0].get()
    let start = ContinuousClock.now
    let end = start + .milliseconds(Int64(seconds * 1000))
    let readyBox = ReadyBox()
    let figures = try await withThrowingTaskGroup(of: BenchFigures.self) { group2 in
        for _ in 0..<readers {
            group2.addTask {
                let c = try await RedisConnection.connect(host: host, port: port, group: group)
                defer { Task { await c.close() } }
                var last = "0-1"
                var f = BenchFigures()
                readyBox.bump()
                while ContinuousClock.now < end + .milliseconds(500) {
                    let answer = try await c.send([["XREAD", "BLOCK", "500", "STREAMS", key, last]])[0].get()
                    let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                    guard case .array(let streams?) = answer else { continue }
                    for case .array(let pair?) in streams {
                        guard pair.count == 2, case .array(let entries?) = pair[1] else { continue }
                        for case .array(let entry?) in entries {
                            guard entry.count == 2, case .bulk(let id?) = entry[0], case .array(let fields?) = entry[1],
                                fields.count >= 2, case .bulk(let stamp?) = fields[1]
                            else { continue }
                            last = String(buffer: id)
                            if let sent = Int64(String(buffer: stamp)), sent > 0 {
                                _ = f.histogram.record(UInt64(max(1, now - sent)))
                                f.events += 1
                            }
                        }
                    }
                    if ContinuousClock.now >= end { break }
                }
                return f
            }
        }
        while readyBox.value < readers { try await Task.sleep(for: .milliseconds(20)) }
        started()
        let payload = String(repeating: "t", count: size)
        let writer = Task {
            var owed = 0.0
            var next = ContinuousClock.now
            while ContinuousClock.now < end && !Task.isCancelled {
                owed += Double(rate) / 100
                var batch: [[String]] = []
                let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
                while owed >= 1 {
                    batch.append(["XADD", key, "*", "t", "\(now)", "p", payload])
                    owed -= 1
                }
                if !batch.isEmpty { _ = admin.send(batch) }
                next += .milliseconds(10)
                try? await Task.sleep(until: next, clock: .continuous)
            }
        }
        var all = BenchFigures()
        for try await f in group2 { all.add(f) }
        writer.cancel()
        return all
    }
    _ = try? await admin.send([["DEL", key]])[0].get()
    await admin.close()
    return figures
}

/// A shared counter of readers in place.
final class ReadyBox: Sendable {
    private let count = Mutex(0)
    func bump() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
