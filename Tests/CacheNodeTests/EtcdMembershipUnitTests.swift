import EddyTestSupport
import EtcdGateway
import Foundation
import HashRing
import Membership
import Synchronization
import Testing
import WireProtocol

@testable import CacheNode
@testable import StreamModel

/// The etcd membership's watch against a real etcd: resuming after a dropped watch replays what it missed, and a
/// resume from a compacted revision reads the members again instead.
@Suite("etcd membership: resuming the watch", .serialized)
struct EtcdMembershipUnitTests {
    final class Rings: Sendable {
        let seen = Mutex<[[String]]>([])
        func add(_ ring: HashRing) { seen.withLock { $0.append(ring.members) } }
        var all: [[String]] { seen.withLock { $0 } }
    }

    static func membership(_ etcd: EtcdServer, prefix: String, rings: Rings) throws -> EtcdMembership {
        var c = NodeConfiguration(
            listen: try ServerAddress(parsing: "127.0.0.1:7001"), store: try ServerAddress(parsing: "127.0.0.1:7000"),
            members: [])
        var e = EtcdMembershipConfiguration(endpoint: etcd.endpoint)
        e.prefix = prefix
        c.etcd = e
        return EtcdMembership(configuration: c.membership, etcd: e) { rings.add($0) }
    }

    @Test(
        "a watch resumed from a revision replays the changes since; one resumed from a compacted revision re-reads the members"
    )
    func resume() async throws {
        let etcd = try EtcdServer()
        try await etcd.waitUntilReady()
        let client = EtcdClient(endpoint: etcd.endpoint)
        let (b, c, d) = ("127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004")

        // Not compacted: every change since the revision is replayed, in order.
        let replayed = Rings()
        let m1 = try Self.membership(etcd, prefix: "/replay", rings: replayed)
        let r1 = try await client.put("/replay/members/\(b)", [])
        try await client.put("/replay/members/\(c)", [])
        try await client.delete("/replay/members/\(b)")
        let t1 = Task { await m1.follow(from: r1) }
        defer { t1.cancel() }
        try await waitUntil(30, "the replay") { replayed.all.last == [c] }
        #expect(replayed.all == [[b], [b, c], [c]])

        // Compacted past the revision: etcd cancels the watch, and the membership reads the members instead
        // (it never sees b), then follows the changes after.
        let reread = Rings()
        let m2 = try Self.membership(etcd, prefix: "/compacted", rings: reread)
        let r2 = try await client.put("/compacted/members/\(b)", [])
        try await client.put("/compacted/members/\(c)", [])
        let r3 = try await client.delete("/compacted/members/\(b)")
        try await client.compact(revision: r3)
        let t2 = Task { await m2.follow(from: r2) }
        defer { t2.cancel() }
        try await waitUntil(30, "the re-read") { reread.all.last == [c] }
        #expect(reread.all == [[c]])
        let r4 = try await client.put("/compacted/members/\(d)", [])
        try await waitUntil(30, "the next change") { reread.all.last == [c, d] }
        #expect(m2.ring.epoch >= UInt64(r4), "the epoch is the revision of the change")
    }

    @Test(
        "a read of the members answered before a change the watch has applied is not installed: it cannot bring back a member that left"
    )
    func staleRead() async throws {
        let etcd = try EtcdServer()
        try await etcd.waitUntilReady()
        let client = EtcdClient(endpoint: etcd.endpoint)
        let (b, c) = ("127.0.0.1:7002", "127.0.0.1:7003")
        let rings = Rings()
        let m = try Self.membership(etcd, prefix: "/stale", rings: rings)
        try await client.put("/stale/members/\(b)", [])
        try await client.put("/stale/members/\(c)", [])
        // A read taken here, while both are registered...
        let (before, readAt) = try await client.range(prefix: "/stale/members/")
        let t = Task { await m.follow() }
        defer { t.cancel() }
        try await waitUntil(30, "the first read") { rings.all.last == [b, c] }
        // ...and b leaves; the watch applies the DELETE.
        let gone = try await client.delete("/stale/members/\(b)")
        try await waitUntil(30, "the delete") { rings.all.last == [c] }

        // The read answered at the older revision arrives late: it is left out, and b stays gone.
        #expect(!m.install(before.map(\.key), revision: readAt, restarted: false))
        #expect(m.ring.members == [c] && m.knownMembers == [c])
        #expect(m.ring.epoch >= UInt64(gone))
        // A probe (a fresh read) agrees with the watch.
        await m.probe()
        #expect(m.ring.members == [c])
        // Only a restart of etcd's history (its data lost, revisions from 1 again) lets an older revision in.
        #expect(m.install(before.map(\.key), revision: readAt, restarted: true))
        #expect(m.ring.members == [b, c])
    }
}
