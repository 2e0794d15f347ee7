import EddyClient
import EddyTestSupport
import Foundation
import NIOCore
import StreamModel
import Testing
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// Connection limits of a real node: a slow client is cut off while others are served, connections over the
/// limit are refused with a typed error, and 10,000 connections are held with bounded memory.
@Suite("connection limits of a node, as real processes", .serialized)
struct LimitsCLITests {
    /// The node's resident memory (VmRSS), in bytes.
    static func rss(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
    }

    static func hello(id: UInt32 = 1) -> [UInt8] {
        var out = ByteBuffer()
        try! FrameEncoder().encode(data: MessageCodec.frame(.hello(version: protocolVersion), id: id), out: &out)
        return Array(out.readableBytesView)
    }

    static func port(_ address: String) -> Int { Int(address.split(separator: ":").last!)! }

    @Test("a client that sends a byte a second is cut off with a typed error while another is served meanwhile")
    func slowloris() async throws {
        let ring = try Ring(nodes: 1, nodeArguments: ["--frame-timeout", "2"])
        defer { ring.stopAll() }
        let node = ring.nodeAddresses[0]
        let slow = try RawConnection(port: Self.port(node))
        let started = ContinuousClock.now
        // What the slow client hears, and when: read on a thread of its own from the start, so the time is the
        // node's, not this test's (whose other work may wait for a busy machine).
        let heard = Locked<(Frame?, ContinuousClock.Instant)?>(nil)
        let listener = Thread { heard.set((slow.receive(), ContinuousClock.now)) }
        listener.start()
        // The hello, one byte a second, on a thread of its own; it stops when the node closes the connection.
        let trickle = Thread {
            for byte in Self.hello() {
                if Glibc.send(slow.fd, [byte], 1, Int32(MSG_NOSIGNAL)) != 1 { return }
                sleep(1)
            }
        }
        trickle.start()
        // Meanwhile a normal client is served.
        let c = try await RingTests.client([node])
        let name = try StreamName(parsing: "limits/fast")
        try await c.createStream(name, segments: 1)
        #expect(try await c.listStreams().map(\.name) == [name])
        await c.close()
        try await waitUntil(60, "the slow client's answer") { heard.get() != nil }
        let (cut, at) = heard.get()!
        let elapsed = at - started
        guard case .error(let error)? = try cut.map({ try MessageCodec.response($0) }) else {
            Issue.record("the slow client got no error frame: \(String(describing: cut))")
            return
        }
        #expect(error.code == .timedOut && error.message.contains("slow client"), "\(error)")
        #expect(elapsed < .seconds(8), "cut off after \(elapsed); its hello takes 15 s to send")
        #expect(try await offPool { slow.receive() } == nil, "the connection is closed")
        slow.close()
    }

    @Test("over --max-connections a hello is answered overloaded; a freed slot takes the next client")
    func maxConnections() async throws {
        let ring = try Ring(nodes: 1, nodeArguments: ["--max-connections", "20"])
        defer { ring.stopAll() }
        let port = Self.port(ring.nodeAddresses[0])
        // A lone node has no inbound connections of its own: the 20 are the test's.
        let held = try await offPool {
            try (0..<20).map { i -> RawConnection in
                let r = try RawConnection(port: port)
                r.send(Self.hello(id: UInt32(i + 1)))
                return r
            }
        }
        for r in held {
            let answer = try await offPool { try r.response() }
            guard case .helloOK? = answer else {
                Issue.record("a connection under the limit was not served: \(String(describing: answer))")
                return
            }
        }
        do {
            let c = try await RingTests.client([ring.nodeAddresses[0]])
            await c.close()
            Issue.record("the 21st connection was served")
        } catch {
            let refused = error as? EddyError
            #expect(refused?.code == .overloaded && refused?.message.contains("--max-connections") == true, "\(error)")
        }
        held[0].close()
        try await Task.sleep(for: .milliseconds(300))
        let c = try await RingTests.client([ring.nodeAddresses[0]])
        #expect(try await c.listStreams().isEmpty)
        await c.close()
        for r in held.dropFirst() { r.close() }
    }

}

#if canImport(Glibc)
    let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#endif

/// The 10,000-connection test, in a suite of its own that scripts/test.sh runs in a test process of its own: with
/// 10,000 sockets open, Foundation's `Process.run()` of this toolchain (Swift 6.3.1) can crash reading
/// `/proc/self/fd` (swift-corelibs-foundation PR 5472), and the other CLI tests start processes all the time.
@Suite("ten thousand connections", .serialized)
struct ManyConnectionsTests {
    @Test("10,000 concurrent connections on one node, each said hello, with bounded memory; others still served")
    func tenThousand() async throws {
        var limit = rlimit()
        getrlimit(RLIMIT_NOFILE_VALUE, &limit)
        try #require(
            limit.rlim_max >= 10_500, "this machine allows \(limit.rlim_max) open files; the test needs 10,500")
        limit.rlim_cur = limit.rlim_max
        setrlimit(RLIMIT_NOFILE_VALUE, &limit)

        let ring = try Ring(nodes: 1)
        defer { ring.stopAll() }
        let pid = ring.nodes[0].pid
        let port = LimitsCLITests.port(ring.nodeAddresses[0])
        let before = LimitsCLITests.rss(pid)
        let count = 10_000
        let (connections, answered) = try await offPool { () throws -> ([RawConnection], Int) in
            var all: [RawConnection] = []
            all.reserveCapacity(count)
            for i in 0..<count {
                let r = try RawConnection(port: port)
                r.send(LimitsCLITests.hello(id: UInt32(i + 1)))
                all.append(r)
            }
            var answered = 0
            for r in all {
                if case .helloOK? = try r.response() { answered += 1 }
            }
            return (all, answered)
        }
        #expect(answered == count)
        let during = LimitsCLITests.rss(pid)
        let perConnection = (during - before) / count
        print(
            "10,000 connections: node RSS \(before / 1_048_576) MiB before, \(during / 1_048_576) MiB with them (\(perConnection) bytes each)"
        )
        #expect(during - before < 200 << 20, "10,000 connections took \((during - before) >> 20) MiB")
        // The node still serves a client as usual.
        let c = try await RingTests.client([ring.nodeAddresses[0]])
        let name = try StreamName(parsing: "limits/many")
        try await c.createStream(name, segments: 1)
        #expect(try await c.listStreams().map(\.name) == [name])
        await c.close()
        for r in connections { r.close() }
    }
}
