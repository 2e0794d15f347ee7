import EddyTestSupport
import EtcdGateway
import Foundation
import StreamModel
import Testing

/// The etcd gateway client against a real etcd (Debian's `etcd-server`, started by the test on loopback).
@Suite("etcd v3 JSON gateway against a real etcd", .serialized)
struct EtcdClientTests {
    /// Collects a watch's events in the background.
    final class Collected: @unchecked Sendable {
        private let lock = NSLock()
        private var events: [EtcdClient.WatchEvent] = []
        private var failure: (any Error)?
        func add(_ e: EtcdClient.WatchEvent) { lock.withLock { events.append(e) } }
        func fail(_ e: any Error) { lock.withLock { failure = e } }
        var all: [EtcdClient.WatchEvent] { lock.withLock { events } }
        var error: (any Error)? { lock.withLock { failure } }
    }

    static func collect(_ stream: AsyncThrowingStream<EtcdClient.WatchEvent, any Error>) -> (
        Collected, Task<Void, Never>
    ) {
        let c = Collected()
        let task = Task {
            do {
                for try await e in stream { c.add(e) }
            } catch {
                c.fail(error)
            }
        }
        return (c, task)
    }

    @Test("puts under a lease, ranges of a prefix in key order, a watch sees puts and deletes, revisions grow")
    func keysAndWatch() async throws {
        let etcd = try EtcdServer()
        try await etcd.waitUntilReady()
        let client = EtcdClient(endpoint: etcd.endpoint)
        let (events, task) = Self.collect(client.watch(prefix: "/eddy/members/"))
        defer { task.cancel() }
        try await waitUntil(30, "the watch") { events.all.contains { if case .created = $0 { true } else { false } } }
        // Granted once the watch is up, and long: a busy test process must not run it out before the puts (the
        // lapse of a lease has a test of its own).
        let lease = try await client.grantLease(ttl: 120)
        let r1 = try await client.put("/eddy/members/127.0.0.1:9091", Array("b".utf8), lease: lease)
        let r2 = try await client.put("/eddy/members/127.0.0.1:9090", Array("a".utf8), lease: lease)
        try await client.put("/eddy/other", Array("x".utf8))
        #expect(r2 > r1)
        let (values, revision) = try await client.range(prefix: "/eddy/members/")
        #expect(values.map(\.key) == ["/eddy/members/127.0.0.1:9090", "/eddy/members/127.0.0.1:9091"])
        #expect(values.map { String(decoding: $0.value, as: UTF8.self) } == ["a", "b"])
        #expect(revision >= r2)
        let r3 = try await client.delete("/eddy/members/127.0.0.1:9091")
        try await waitUntil(30, "the events") { events.all.count >= 4 }
        let seen = events.all.filter { if case .created = $0 { false } else { true } }
        #expect(
            seen == [
                .put(.init(key: "/eddy/members/127.0.0.1:9091", value: Array("b".utf8), modRevision: r1)),
                .put(.init(key: "/eddy/members/127.0.0.1:9090", value: Array("a".utf8), modRevision: r2)),
                .delete(key: "/eddy/members/127.0.0.1:9091", revision: r3),
            ], "the other prefix's key is not reported")
        #expect(try await client.keepAlive(lease: lease) == 120)
    }

    @Test("a lease that is not kept alive lapses: its keys go (watchers see a DELETE) and keep-alive says lost")
    func leaseExpiry() async throws {
        let etcd = try EtcdServer()
        try await etcd.waitUntilReady()
        let client = EtcdClient(endpoint: etcd.endpoint)
        let lease = try await client.grantLease(ttl: 2)
        try await client.put("/eddy/members/n1", Array("n1".utf8), lease: lease)
        let (_, start) = try await client.range(prefix: "/eddy/members/")
        let (events, task) = Self.collect(client.watch(prefix: "/eddy/members/", from: start + 1))
        defer { task.cancel() }
        try await waitUntil(30, "the DELETE") {
            events.all.contains { if case .delete(let key, _) = $0 { key == "/eddy/members/n1" } else { false } }
        }
        #expect(try await client.range(prefix: "/eddy/members/").values.isEmpty)
        #expect(try await client.keepAlive(lease: lease) == nil, "an expired lease answers without a TTL")
    }

    @Test(
        "a watch from a compacted revision ends with a typed error; etcd down is unavailable; after a restart the data is there"
    )
    func compactionAndRestart() async throws {
        let etcd = try EtcdServer()
        try await etcd.waitUntilReady()
        let client = EtcdClient(endpoint: etcd.endpoint, timeout: .seconds(2))
        let first = try await client.put("/eddy/members/a", Array("1".utf8))
        try await client.put("/eddy/members/a", Array("2".utf8))
        let latest = try await client.put("/eddy/members/a", Array("3".utf8))
        try await client.compact(revision: latest)
        let (events, task) = Self.collect(client.watch(prefix: "/eddy/members/", from: first))
        defer { task.cancel() }
        try await waitUntil(30, "the cancelled watch") { events.error != nil }
        let error = try #require(events.error as? EddyError)
        #expect(error.code == .truncated && error.message.contains("compacted"), "\(error)")

        etcd.stop()
        do {
            _ = try await client.range(prefix: "/eddy/members/")
            Issue.record("a range with etcd down answered")
        } catch {
            #expect(error.code == .unavailable)
        }
        try etcd.start()
        try await etcd.waitUntilReady()
        let values = try await client.range(prefix: "/eddy/members/").values
        #expect(values.map { String(decoding: $0.value, as: UTF8.self) } == ["3"])
    }
}
