import EddyClient
import EddyTestSupport
import EtcdGateway
import Foundation
import StreamModel
import Testing

/// `--membership etcd` with real node processes and a real etcd (Debian's `etcd-server`, started here on
/// loopback): nodes register under a lease and build the ring from a watch; join, leave (SIGTERM revokes the
/// lease), lease expiry after SIGKILL, and an etcd restart.
@Suite("etcd membership as real processes", .serialized)
struct EtcdMembershipTests {
    /// The members and epoch a node's stats report.
    static func view(_ node: String) async throws -> (members: [String], epoch: Int) {
        let s = try await RingTests.stats(node)
        return ((s["members"] as? [String]) ?? [], s["ring_epoch"] as? Int ?? -1)
    }

    /// Waits until every node of `nodes` reports exactly `members`; returns how long that took.
    @discardableResult
    static func converge(_ nodes: [String], to members: [String], within seconds: Double) async throws -> Duration {
        let start = ContinuousClock.now
        var last: [String: [String]] = [:]
        while ContinuousClock.now - start < .seconds(seconds) {
            var all = true
            for n in nodes {
                let v = (try? await view(n))?.members ?? []
                last[n] = v
                if v != members.sorted() { all = false }
            }
            if all { return ContinuousClock.now - start }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("nodes did not converge on \(members.sorted()) within \(seconds) s: \(last)")
        throw CLIError("no convergence")
    }

    static func registered(_ etcd: EtcdClient, _ prefix: String) async throws -> [String] {
        try await etcd.range(prefix: prefix + "/members/").values.map {
            String($0.key.dropFirst((prefix + "/members/").count))
        }
    }

    @Test(
        "join, leave on SIGTERM, lease expiry after SIGKILL and an etcd restart: every node's ring follows etcd, epochs are etcd revisions, and reads through the ring hit the store once"
    )
    func lifecycle() async throws {
        let etcd = try EtcdServer()
        try await etcd.waitUntilReady()
        let client = EtcdClient(endpoint: etcd.endpoint)
        let prefix = "/eddy-test-\(UInt32.random(in: 0...UInt32.max))"
        let ring = try Ring(
            nodes: 5, running: 2, nodeArguments: ["--block-size", "64K", "--etcd-lease-ttl", "4"],
            etcd: (etcd.endpoint, prefix))
        defer { ring.stopAll() }
        let a = ring.nodeAddresses

        // Both nodes registered, and both rings are etcd's member list at one etcd revision.
        try await Self.converge([a[0], a[1]], to: [a[0], a[1]], within: 10)
        #expect(try await Self.registered(client, prefix) == [a[0], a[1]].sorted())
        let (values, revision) = try await client.range(prefix: prefix + "/members/")
        let newest = values.map(\.modRevision).max() ?? 0
        for n in [a[0], a[1]] {
            let epoch = try await Self.view(n).epoch
            #expect(
                Int64(epoch) >= newest && Int64(epoch) <= revision, "\(n): epoch \(epoch), etcd \(newest)...\(revision)"
            )
        }

        // Reads through the etcd-built ring: exactly the events, and the store read once per byte (one owner per
        // segment, which both nodes agree on).
        let name = try StreamName(parsing: "etcd/ring")
        let store = try await RingTests.client([ring.storeAddress])
        try await store.createStream(name, segments: 4)
        try await RingTests.fill(store, name, segments: 4, count: 800)
        let total = try await store.info(name).segments.reduce(UInt64(0)) { $0 + $1.length }
        let results = try await RingTests.readAll(name, readers: 16, segments: 4, through: [a[0], a[1]])
        for (r, got) in results {
            #expect(got == (0..<800).map { "s\(r % 4)-\($0)-" + String(repeating: "p", count: 180) }, "reader \(r)")
        }
        let storeStats = try await RingTests.stats(ring.storeAddress)
        #expect(storeStats["read_bytes"] as? Int == Int(total), "store: \(storeStats)")

        // Join: a third node appears in every ring.
        try ring.addNode(2)
        let joined = try await Self.converge([a[0], a[1], a[2]], to: [a[0], a[1], a[2]], within: 10)
        print("join seen by every node after \(joined)")

        // Leave: SIGTERM revokes the lease, so the others see it go at once, well before the 4 s TTL.
        let leaving = ContinuousClock.now
        ring.nodes[2].stop()
        let left = try await Self.converge([a[0], a[1]], to: [a[0], a[1]], within: 10)
        #expect(
            ring.nodes[2].log.contains("left the ring: registration revoked in etcd"),
            "a drained node revokes its registration rather than letting it lapse")
        #expect(try await Self.registered(client, prefix) == [a[0], a[1]].sorted())
        print("leave seen \(left) after the node's exit, \(ContinuousClock.now - leaving) after SIGTERM")

        // SIGKILL: nothing revokes the lease; the key stays until the TTL lapses, then every ring drops it.
        try ring.addNode(3)
        try await Self.converge([a[0], a[1], a[3]], to: [a[0], a[1], a[3]], within: 10)
        ring.nodes[3].kill()
        #expect(try await Self.registered(client, prefix).contains(a[3]), "the key outlives a killed node")
        // 30 s: a loaded machine once took over 15 s (etcd commits the lease's end like a write: an fsync).
        let expired = try await Self.converge([a[0], a[1]], to: [a[0], a[1]], within: 30)
        #expect(!(try await Self.registered(client, prefix).contains(a[3])))
        print("lease expiry seen after \(expired)")

        // etcd restart: the nodes keep their ring and keep serving while it is down, then follow it again (a
        // node that joins afterwards is seen by both; their registrations are there).
        etcd.stop()
        try await Task.sleep(for: .seconds(2))
        #expect(try await Self.view(a[0]).members == [a[0], a[1]].sorted(), "the last ring is kept")
        let again = try await RingTests.readAll(name, readers: 2, segments: 2, through: [a[0], a[1]])
        #expect(again.allSatisfy { $0.1.count == 800 }, "reads go on while etcd is down")
        try etcd.start()
        try await etcd.waitUntilReady()
        try ring.addNode(4)
        let rejoined = try await Self.converge([a[0], a[1], a[4]], to: [a[0], a[1], a[4]], within: 20)
        // Every registration is there (a lease that lapsed during the outage, its node's keep-alive answered too
        // late by the restarting etcd, is granted again: give that a few seconds rather than catch the gap).
        var registrations: [String] = []
        let deadline = ContinuousClock.now + .seconds(15)
        repeat {
            registrations = try await Self.registered(client, prefix)
            if registrations == [a[0], a[1], a[4]].sorted() { break }
            try await Task.sleep(for: .milliseconds(200))
        } while ContinuousClock.now < deadline
        #expect(registrations == [a[0], a[1], a[4]].sorted())
        print("after the etcd restart, a join seen after \(rejoined)")
        #expect(ring.nodes[0].log.contains("etcd unreachable"), "the outage is logged")
        await store.close()
    }

    @Test("bad membership flags are refused with the reason; a node whose etcd does not answer fails to start")
    func badFlags() async throws {
        let port = try freePort()
        let r1 = try await eddyAsync(["node", "--listen", "127.0.0.1:\(port)", "--membership", "etcd"])
        #expect(r1.status != 0 && r1.stderr.contains("--membership etcd needs --etcd"), "\(r1.stderr)")
        let r2 = try await eddyAsync(["node", "--listen", "127.0.0.1:\(port)", "--membership", "gossip"])
        #expect(r2.status != 0 && r2.stderr.contains("static or etcd"), "\(r2.stderr)")
        let r3 = try await eddyAsync([
            "node", "--listen", "127.0.0.1:\(port)", "--membership", "etcd", "--etcd", "127.0.0.1:2379",
        ])
        #expect(r3.status != 0 && r3.stderr.contains("is not an http://HOST:PORT URL"), "\(r3.stderr)")
        let r5 = try await eddyAsync(["node", "--listen", "127.0.0.1:\(port)"])
        #expect(r5.status != 0 && r5.stderr.contains("--membership static needs --members"), "\(r5.stderr)")
        let r4 = try await eddyAsync([
            "node", "--listen", "127.0.0.1:\(port)", "--membership", "etcd", "--etcd",
            "http://127.0.0.1:\(try freePort())",
            "--etcd-lease-ttl", "2", "--admin-listen", "none",
        ])
        #expect(r4.status != 0 && r4.stderr.contains("cannot join the ring through etcd"), "\(r4.stderr)")
    }
}
