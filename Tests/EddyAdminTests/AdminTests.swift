import AsyncHTTPClient
import CacheNode
import EddyAdmin
import EddyTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import ObjectStorage
import SegmentStore
import StoreClient
import StoreServer
import StreamModel
import Testing
import WireProtocol
import WriteBack

/// A store and one cache node in this process, each with its admin server on a free loopback port; the node
/// writes back to a folder.
final class AdminRig {
    let harness: Harness
    let node: CacheNode
    let nodeAdmin: AdminServer
    let storeAdmin: AdminServer
    let nodeMetrics = MetricsExporter()
    let storeMetrics = MetricsExporter()
    let objects: String
    let address: ServerAddress

    init() async throws {
        harness = try await Harness()
        objects = NSTemporaryDirectory() + "eddy-admin-objects-" + UUID().uuidString
        address = ServerAddress(host: "127.0.0.1", port: try freeLoopbackPort())
        var c = NodeConfiguration(listen: address, store: harness.address, members: [address])
        c.blockSize = 64 << 10
        c.cacheBytes = 16 << 20
        c.logger.logLevel = .warning
        c.metricsFactory = nodeMetrics.factory
        var writeBack = WriteBackConfiguration(objectStore: try FileObjectStore(root: objects))
        writeBack.flushIdle = .milliseconds(300)
        c.writeBack = writeBack
        node = try await CacheNode.start(configuration: c)
        let any = ServerAddress(host: "127.0.0.1", port: 0)
        var logger = c.logger
        logger.logLevel = .warning
        nodeAdmin = try await AdminServer.start(
            address: any, logger: logger, install: AdminRoutes.node(node, metrics: nodeMetrics))
        storeAdmin = try await AdminServer.start(
            address: any, logger: logger, install: AdminRoutes.store(harness.server, metrics: storeMetrics))
    }

    func shutdown() async {
        await nodeAdmin.close()
        await storeAdmin.close()
        await node.close()
        await harness.shutdown()
        try? FileManager.default.removeItem(atPath: objects)
    }
}

/// One HTTP exchange with an admin server.
struct Answer {
    var status: Int
    var body: String
    var contentType: String

    /// The body as a JSON object.
    func json() throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], "\(body)")
    }
}

func http(_ server: AdminServer, _ path: String) async throws -> Answer {
    try await http(.GET, server, path)
}

func http(_ method: HTTPMethod, _ server: AdminServer, _ path: String, body: String? = nil) async throws -> Answer {
    try await gatewayCall(method, "http://\(server.address)\(path)", body: body)
}

/// Parses exposition text with Prometheus's own Python parser (`prometheus_client`); a parse error fails the
/// test. Returns each sample as (name, labels, value).
func parsePrometheus(_ text: String) throws -> [(name: String, labels: [String: String], value: Double)] {
    let script = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        out = []
        for family in text_string_to_metric_families(sys.stdin.read()):
            for s in family.samples:
                out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
        print(json.dumps(out))
        """
    let run = try runProgram("/usr/bin/env", ["python3", "-c", script], input: text)
    try #require(run.status == 0, "prometheus_client refused the exposition: \(run.stderr)")
    let data = Data(run.stdout.utf8)
    let list = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
    return list.map {
        ($0["name"] as! String, $0["labels"] as! [String: String], ($0["value"] as! NSNumber).doubleValue)
    }
}

func value(
    _ samples: [(name: String, labels: [String: String], value: Double)], _ name: String,
    _ labels: [String: String] = [:]
) -> Double? {
    samples.first { sample in sample.name == name && labels.allSatisfy { k, v in sample.labels[k] == v } }?.value
}

@Suite("admin API", .serialized)
struct AdminTests {
    static let name = try! StreamName(parsing: "admin/events")

    @Test("a node's admin API: health, ready, ring, stats, streams, queues, dlq, and typed errors")
    func nodeEndpoints() async throws {
        let rig = try await AdminRig()
        let client = try await StoreClient.connect(to: rig.address)
        try await client.createStream(Self.name, segments: 2)
        let segment = SegmentID(stream: Self.name, number: 1)
        let appended = try frames(["one", "two", "three"])
        _ = try await client.append(segment, frames: appended)

        let health = try await http(rig.nodeAdmin, "/health")
        #expect(health.status == 200)
        #expect(health.contentType.hasPrefix("application/json"))
        #expect(try health.json()["node"] as? String == rig.address.description)

        let ready = try await http(rig.nodeAdmin, "/ready")
        #expect(ready.status == 200, "\(ready.body)")
        #expect(try ready.json()["ready"] as? Bool == true)

        let ring = try await http(rig.nodeAdmin, "/ring").json()
        #expect(ring["members"] as? [String] == [rig.address.description])
        #expect((ring["epoch"] as? Int ?? 0) >= 1)

        let stats = try await http(rig.nodeAdmin, "/stats").json()
        #expect(stats["role"] as? String == "node")
        #expect(stats["appends"] as? Int == 1)

        let streams = try await http(rig.nodeAdmin, "/streams").json()
        let list = try #require(streams["streams"] as? [[String: Any]])
        let ours = try #require(list.first { $0["name"] as? String == Self.name.description })
        let segments = try #require(ours["segments"] as? [[String: Any]])
        #expect(segments.count == 2)
        let second = try #require(segments.first { $0["segment"] as? String == segment.description })
        #expect(second["length"] as? Int == appended.readableBytes)
        #expect(second["owner"] as? String == rig.address.description)

        // The write-back queue: the stats, an empty dead-letter list, a missing dead letter and a bad purge.
        var queues: [String: Any] = [:]
        for _ in 0..<100 {
            let answer = try await http(rig.nodeAdmin, "/queues")
            if answer.status == 200 {
                queues = try answer.json()
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(queues["lanes"] is [Any], "\(queues)")
        let dlq = try await http(rig.nodeAdmin, "/dlq").json()
        #expect((dlq["dead_letters"] as? [Any])?.isEmpty == true)
        let missing = try await http(rig.nodeAdmin, "/dlq/12345")
        #expect(missing.status == 400)
        #expect(
            (try missing.json()["error"] as? [String: Any])?["message"] as? String
                == "no dead letter 12345 on \(rig.address)")
        let notNumber = try await http(rig.nodeAdmin, "/dlq/abc")
        #expect(notNumber.status == 400)
        let badPurge = try await http(.POST, rig.nodeAdmin, "/dlq/purge", body: "{}")
        #expect(badPurge.status == 400)
        #expect(badPurge.body.contains("dlq.purge needs ids, a queue or all"))
        let notJSON = try await http(.POST, rig.nodeAdmin, "/dlq/redrive", body: "[1,2")
        #expect(notJSON.status == 400)
        let purgeAll = try await http(.POST, rig.nodeAdmin, "/dlq/purge", body: "{\"all\": true}")
        #expect(purgeAll.status == 200)
        #expect(try purgeAll.json()["purged"] as? Int == 0)

        // The store's admin API: its own documents, and a pointer to the nodes for theirs.
        let storeStreams = try await http(rig.storeAdmin, "/streams").json()
        #expect(
            (storeStreams["streams"] as? [[String: Any]])?.contains { $0["name"] as? String == Self.name.description }
                == true)
        let storeStats = try await http(rig.storeAdmin, "/stats").json()
        #expect(storeStats["role"] as? String == "store")
        let storeRing = try await http(rig.storeAdmin, "/ring")
        #expect(storeRing.status == 404)
        #expect(storeRing.body.contains("ask a node"))
        #expect(try await http(rig.storeAdmin, "/ready").status == 200)
        #expect(try await http(rig.nodeAdmin, "/no/such/path").status == 404)
        await client.close()
        await rig.shutdown()
    }

    @Test("/metrics of a node and of the store parse with Prometheus's parser and count what happened")
    func metricsParse() async throws {
        let rig = try await AdminRig()
        let client = try await StoreClient.connect(to: rig.address)
        try await client.createStream(Self.name, segments: 1)
        let segment = SegmentID(stream: Self.name, number: 0)
        for i in 0..<5 { _ = try await client.append(segment, frames: try frames(["event \(i)"])) }
        for _ in 0..<3 { _ = try await client.read(segment, from: 0, maxBytes: 1 << 16) }
        // A stream written straight to the store: the node's read of it is a store read on both sides.
        let direct = try await rig.harness.client()
        let other = try StreamName(parsing: "admin/direct")
        try await direct.createStream(other, segments: 1)
        _ = try await direct.append(SegmentID(stream: other, number: 0), frames: try frames(["straight to the store"]))
        _ = try await client.read(SegmentID(stream: other, number: 0), from: 0, maxBytes: 1 << 16)

        let answer = try await http(rig.nodeAdmin, "/metrics")
        #expect(answer.status == 200)
        #expect(answer.contentType.hasPrefix("text/plain; version=0.0.4"))
        let node = try parsePrometheus(answer.body)
        let me = ["node": rig.address.description]
        #expect(value(node, "eddy_appends_total", me) == 5)
        #expect(value(node, "eddy_reads_total", me) == 4)
        #expect(value(node, "eddy_request_duration_seconds_count", me.merging(["type": "append"]) { a, _ in a }) == 5)
        #expect(value(node, "eddy_request_duration_seconds_count", me.merging(["type": "read"]) { a, _ in a }) == 4)
        #expect(value(node, "eddy_ring_members", me) == 1)
        #expect(value(node, "eddy_cache_capacity_bytes", ["cache": "owner", "policy": "stream"]) ?? 0 > 0)
        #expect((value(node, "eddy_store_reads_total", me) ?? 0) >= 1)
        // Every counter series ends in _total; histograms come with _bucket, _sum and _count.
        let counters = answer.body.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") && $0.hasSuffix(" counter") }
        #expect(counters.count >= 10)
        for line in counters where !line.dropLast(" counter".count).hasSuffix("_total") {
            Issue.record("counter not named ..._total: \(line)")
        }
        #expect(node.contains { $0.name == "eddy_request_duration_seconds_bucket" && $0.labels["le"] == "+Inf" })

        // A second scrape moves counters by what happened in between, and only by that.
        _ = try await client.read(segment, from: 0, maxBytes: 1 << 16)
        let again = try parsePrometheus(try await http(rig.nodeAdmin, "/metrics").body)
        #expect(value(again, "eddy_reads_total", me) == 5)
        #expect(value(again, "eddy_appends_total", me) == 5)

        let store = try parsePrometheus(try await http(rig.storeAdmin, "/metrics").body)
        #expect((value(store, "eddy_store_appended_events_total") ?? 0) >= 5)
        #expect(value(store, "eddy_store_streams") ?? 0 >= 1)
        #expect((value(store, "eddy_store_read_requests_total", ["stream": other.description]) ?? 0) >= 1)
        await client.close()
        await direct.close()
        await rig.shutdown()
    }

    @Test("/ready says why a node is not ready: the store down, then draining")
    func readiness() async throws {
        let rig = try await AdminRig()
        #expect(try await http(rig.nodeAdmin, "/ready").status == 200)
        await rig.harness.server.close()
        #expect(try await http(rig.storeAdmin, "/ready").status == 503)
        let down = try await http(rig.nodeAdmin, "/ready")
        #expect(down.status == 503)
        let reasons = try #require(try down.json()["reasons"] as? [String])
        #expect(reasons.contains { $0.contains("store \(rig.harness.address)") }, "\(reasons)")
        // /health stays 200: the process is alive, only not ready.
        #expect(try await http(rig.nodeAdmin, "/health").status == 200)
        await rig.node.drain(grace: .seconds(1))
        let drained = try #require(try await http(rig.nodeAdmin, "/ready").json()["reasons"] as? [String])
        #expect(drained.contains { $0.hasPrefix("draining") }, "\(drained)")
        await rig.shutdown()
    }
}
