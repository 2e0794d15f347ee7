import EddyAuth
import EddyTLS
import Foundation
import NIOCore
import NIOPosix
import SegmentStore
import StoreClient
import StoreServer
import StreamModel
import Synchronization
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

// Test support shared by the server and node test targets: an in-process store on a free port, a raw socket for
// hand-made bytes, free ports. Not part of the product.

/// A free loopback port for a server a test starts. It is picked below Linux's ephemeral range (32768 and up),
/// so the kernel cannot hand it to an outgoing connection between this check and the server's bind: the port is
/// bound, released, and returned, and never handed out twice in one test process (tests start servers side by
/// side, and a port checked free is not bound until its server has started). A small race with other programs
/// binding ports there remains, fine for tests.
public func freeLoopbackPort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20000..<32000)
        guard handedOutPorts.withLock({ $0.insert(port).inserted }) else { continue }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let bound = withLoopbackAddress(port: port) { bind(fd, $0, $1) }
        close(fd)
        if bound == 0 { return port }
    }
    throw EddyError(.ioError, "cannot find a free port")
}

/// The ports ``freeLoopbackPort()`` has handed out in this process.
private let handedOutPorts = Mutex<Set<Int>>([])

/// Calls `body` with the `sockaddr` of 127.0.0.1:`port` and its length (for bind and connect).
public func withLoopbackAddress<T>(port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// A store and its server on a free loopback port, in a fresh directory.
public final class Harness {
    public let directory: String
    public let store: SegmentStore
    public let server: StoreServer

    /// Starts a store and its server with `access` (authentication off by default), per-principal `rates`, and
    /// `tls` on its listener (none: plain TCP).
    public init(
        access: AccessControl = .off, rates: TenantRates = TenantRates(), tls: ServerTLS? = nil,
        limits: ConnectionLimits = ConnectionLimits()
    ) async throws {
        directory = NSTemporaryDirectory() + "eddy-server-" + UUID().uuidString
        var configuration = StoreConfiguration(dataDirectory: directory)
        configuration.logger.logLevel = .warning
        store = try SegmentStore(configuration: configuration)
        var serverConfiguration = StoreServerConfiguration(address: ServerAddress(host: "127.0.0.1", port: 0))
        serverConfiguration.logger.logLevel = .warning
        serverConfiguration.maxFrameSize = 1 << 20
        serverConfiguration.access = access
        serverConfiguration.rates = rates
        serverConfiguration.tls = tls
        serverConfiguration.limits = limits
        server = try await StoreServer.start(store: store, configuration: serverConfiguration)
    }

    public var address: ServerAddress { ServerAddress(host: "127.0.0.1", port: server.port) }

    /// A client connection, with `token` in its hello (empty: none), over `tls` when given.
    public func client(token: String = "", tls: ClientTLS? = nil) async throws -> StoreClient {
        try await StoreClient.connect(to: address, token: token, tls: tls)
    }

    public func shutdown() async {
        await server.close()
        store.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A plain blocking TCP socket that sends hand-made bytes, for the bad-input tests.
public struct RawConnection: Sendable {
    public let fd: Int32

    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { throw EddyError(.connectionFailed, "connect failed") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    public func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) } }

    public func send(_ frame: Frame) {
        var out = ByteBuffer()
        try! FrameEncoder().encode(data: frame, out: &out)
        send(Array(out.readableBytesView))
    }

    /// Reads one whole frame, or nil when the server closed the connection.
    public func receive() -> Frame? {
        func exactly(_ n: Int) -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: n)
            var got = 0
            while got < n {
                let r = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, n - got, 0) }
                // A signal (SIGCHLD of a process another test started) interrupts the wait: not an end.
                if r < 0 && errno == EINTR { continue }
                if r <= 0 { return nil }
                got += r
            }
            return bytes
        }
        guard let head = exactly(9) else { return nil }
        let length = Int(UInt32(head[0]) << 24 | UInt32(head[1]) << 16 | UInt32(head[2]) << 8 | UInt32(head[3]))
        let id = UInt32(head[5]) << 24 | UInt32(head[6]) << 16 | UInt32(head[7]) << 8 | UInt32(head[8])
        guard let body = exactly(length - 5) else { return nil }
        return Frame(type: head[4], requestID: id, body: ByteBuffer(bytes: body))
    }

    public func response() throws -> Response? { try receive().map { try MessageCodec.response($0) } }

    /// Reads every byte that arrives until the server closes (`closed`), nothing arrives for `idle`, or `limit`
    /// has passed.
    public func readAll(limit: Duration, idle: Duration = .seconds(5)) -> (bytes: [UInt8], closed: Bool) {
        var timeout = timeval(tv_sec: Int(idle.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let r = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if r == 0 || (r < 0 && errno == ECONNRESET) { return (out, true) }
            if r < 0 && errno == EINTR { continue }
            if r < 0 { break }
            out += chunk[..<r]
        }
        return (out, false)
    }

    public func close() { Glibc.close(fd) }
}

public func frames(_ payloads: [String]) throws -> ByteBuffer {
    var out: [UInt8] = []
    for p in payloads { try EventFrame.encode(Event(timestamp: 1, payload: Array(p.utf8)), into: &out) }
    return ByteBuffer(bytes: out)
}

/// `count` pseudo-random bytes from `seed` (xorshift64, eight bytes a step): the same seed gives the same bytes,
/// and a shorter run is a prefix of a longer one. Fast in debug builds too (8 MiB in a few milliseconds), so tests
/// that need megabytes of test data do not hold a cooperative thread for seconds making them.
public func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        guard let base = buffer.baseAddress else {
            initialized = 0
            return
        }
        var state = seed &* 2 &+ 1
        var offset = 0
        while offset < count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            let word = state.littleEndian
            if count - offset >= 8 {
                UnsafeMutableRawPointer(base + offset).storeBytes(of: word, as: UInt64.self)
            } else {
                withUnsafeBytes(of: word) { bytes in
                    for i in 0..<(count - offset) { base[offset + i] = bytes[i] }
                }
            }
            offset += 8
        }
        initialized = count
    }
}
