import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import StreamModel
import Synchronization
import WireProtocol

/// `eddy bench nio`: the yardstick for hot reads. A bare SwiftNIO server streams one shared block to every
/// connection as fast as the socket takes it (no protocol, no cache, no copy of the block), and bare SwiftNIO
/// clients count the bytes and drop them. What Eddy's hot reads reach against it (`scripts/bench-hot-vs-nginx.sh`)
/// is the cost of everything Eddy adds over the event loop and the sockets.
struct BenchNIO: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio",
        abstract: "Raw SwiftNIO loopback streaming, the yardstick for hot reads.",
        discussion: """
            With --serve HOST:PORT it runs the server until Ctrl-C or SIGTERM; with --server HOST:PORT it runs \
            the readers for --duration seconds and prints bytes/s (--json: bytes_per_s, readers, duration_s). \
            --sendfile makes the server send its block from shared memory with sendfile.
            """)

    @Option(name: .long, help: "Run the streaming server on HOST:PORT.") var serve: String?
    @Option(name: .long, help: "The streaming server to read from.") var server: String = "127.0.0.1:9190"
    @Option(name: .long, help: "Connections reading at once.") var readers: Int = 64
    @Option(name: .long, help: "Seconds to read.") var duration: Double = 10
    @Option(name: .long, help: "Bytes of each write of the server (default 1 MiB).") var blockSize: Int = 1 << 20
    @Flag(name: .long, help: "Print one JSON object.") var json = false
    @Flag(
        name: .long,
        help: "With --serve: keep the block in shared memory (tmpfs) and send it with sendfile instead of writev.")
    var sendfile = false

    func validate() throws {
        guard readers > 0 else { throw ValidationError("--readers must be at least 1") }
        guard duration > 0 else { throw ValidationError("--duration must be positive") }
        guard blockSize > 0 && blockSize <= 64 << 20 else { throw ValidationError("--block-size must be 1 B-64 MiB") }
        guard !sendfile || serve != nil else {
            throw ValidationError("--sendfile goes with --serve (the server sends)")
        }
    }

    func run() async throws {
        try await reportingErrors {
            if let serve { try await runServer(try ServerAddress(parsing: serve)) } else { try await runReaders() }
        }
    }

    private func runServer(_ address: ServerAddress) async throws {
        var block = ByteBufferAllocator().buffer(capacity: blockSize)
        block.writeRepeatingByte(0x5A, count: blockSize)
        let shared = block
        let file = sendfile ? try sharedMemoryFile(block) : nil
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(StreamingHandler(block: shared, file: file))
                }
            }
            .bind(host: address.host, port: address.port).get()
        let how = file == nil ? "writev" : "sendfile"
        FileHandle.standardError.write(
            Data("eddy bench nio: streaming \(blockSize) B blocks on \(address) (\(how))\n".utf8))
        _ = await waitForSignal()
        try? await channel.close()
        try? file?.close()
    }

    /// The block in an unlinked file of /dev/shm (memory, as a memfd is), for `sendfile`.
    private func sharedMemoryFile(_ block: ByteBuffer) throws -> NIOFileHandle {
        let path = "/dev/shm/eddy-bench-nio-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw EddyError(.internalError, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        unlink(path)
        do {
            try FileHandle(fileDescriptor: fd, closeOnDealloc: false).write(contentsOf: Data(block.readableBytesView))
        } catch {
            close(fd)
            throw EddyError(.internalError, "cannot write the block to \(path): \(error)")
        }
        return NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd)
    }

    private func runReaders() async throws {
        let address = try ServerAddress(parsing: server)
        let counted = Counted()
        var channels: [Channel] = []
        for _ in 0..<readers {
            channels.append(
                try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .channelOption(.maxMessagesPerRead, value: 16)
                    .channelOption(
                        .recvAllocator,
                        value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 1 << 20)
                    )
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(CountingHandler(counted: counted))
                        }
                    }
                    .connect(host: address.host, port: address.port).get())
        }
        // Let the connections reach full speed, then measure a window.
        try await Task.sleep(for: .milliseconds(500))
        let before = counted.bytes.load(ordering: .relaxed)
        let start = ContinuousClock.now
        try await Task.sleep(for: .seconds(duration))
        let bytes = counted.bytes.load(ordering: .relaxed) - before
        let elapsed = (ContinuousClock.now - start).inSeconds
        for c in channels { try? await c.close() }
        let rate = Double(bytes) / elapsed
        if json {
            printJSON([
                "system": "swiftnio", "readers": readers, "duration_s": elapsed, "bytes_per_s": rate,
                "block_size": blockSize,
            ])
        } else {
            print(String(format: "raw SwiftNIO, %d readers: %.2f GB/s", readers, rate / 1e9))
        }
    }
}

/// Bytes the readers received.
final class Counted: Sendable {
    let bytes = Atomic<Int>(0)
}

/// Writes the shared block again and again while the channel is writable.
final class StreamingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let block: ByteBuffer
    /// The same bytes in a file: written as a `FileRegion` (sendfile) when set.
    let file: NIOFileHandle?

    init(block: ByteBuffer, file: NIOFileHandle? = nil) {
        self.block = block
        self.file = file
    }

    func channelActive(context: ChannelHandlerContext) {
        pump(context)
        context.fireChannelActive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        pump(context)
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func pump(_ context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        while context.channel.isWritable {
            if let file {
                let region = FileRegion(fileHandle: file, readerIndex: 0, endIndex: block.readableBytes)
                context.write(NIOAny(IOData.fileRegion(region)), promise: nil)
            } else {
                context.write(wrapOutboundOut(block), promise: nil)
            }
            context.flush()
        }
    }
}

/// Counts what arrives and drops it.
final class CountingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let counted: Counted

    init(counted: Counted) {
        self.counted = counted
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        counted.bytes.add(unwrapInboundIn(data).readableBytes, ordering: .relaxed)
    }
}
