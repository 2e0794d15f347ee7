import AsyncHTTPClient
import CacheNode
import EddyAdmin
import EddyAuth
import EddyClient
import EddyGateway
import EddyTLS
import EddyTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import StoreClient
import StreamModel
import Testing
import WireProtocol

/// A store and one cache node in this process, and the node's HTTP gateway on a free loopback port.
final class GatewayRig {
    let harness: Harness
    let node: CacheNode
    let gateway: HTTPGateway
    let address: ServerAddress

    init(
        access: AccessControl = .off, tls: ServerTLS? = nil, configure: (inout GatewayConfiguration) -> Void = { _ in }
    ) async throws {
        harness = try await Harness(tls: tls)
        address = ServerAddress(host: "127.0.0.1", port: try freeLoopbackPort())
        var c = NodeConfiguration(listen: address, store: harness.address, members: [address])
        c.blockSize = 64 << 10
        c.cacheBytes = 16 << 20
        c.logger.logLevel = .warning
        c.access = access
        c.tls = tls
        node = try await CacheNode.start(configuration: c)
        var g = GatewayConfiguration(listen: ServerAddress(host: "127.0.0.1", port: 0), node: address)
        g.access = access
        g.tls = tls
        g.logger.logLevel = .warning
        configure(&g)
        gateway = try await HTTPGateway.start(g)
    }

    var base: String { "\(gateway.tls ? "https" : "http")://\(gateway.address)" }

    func shutdown() async {
        await gateway.close()
        await node.close()
        await harness.shutdown()
    }

    /// The subscriptions open on the node (its stats).
    func nodeSubscriptions() throws -> Int? {
        let stats = try JSONSerialization.jsonObject(with: Data(node.core.statsJSON().utf8)) as? [String: Any]
        return stats?["subscriptions"] as? Int
    }

    /// The bytes the store read for `stream` (its own counters).
    func storeReadBytes(_ stream: StreamName) async throws -> Int {
        let client = try await harness.client()
        defer { Task { await client.close() } }
        let stats = try #require(
            try JSONSerialization.jsonObject(with: Data(try await client.stats().utf8)) as? [String: Any])
        let streams = try #require(stats["streams"] as? [String: Any])
        return (streams[stream.description] as? [String: Any])?["read_bytes"] as? Int ?? 0
    }
}

/// One HTTP exchange (with the gateway, or an admin server).
func gatewayCall(
    _ method: HTTPMethod, _ url: String, body: String? = nil, headers: [(String, String)] = []
) async throws -> Answer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let bytes = try await response.body.collect(upTo: 64 << 20)
    return Answer(
        status: Int(response.status.code), body: String(buffer: bytes),
        contentType: response.headers.first(name: "content-type") ?? "")
}

/// The JSON objects of an NDJSON body.
func ndjson(_ body: String) throws -> [[String: Any]] {
    try body.split(separator: "\n").map {
        try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], "\($0)")
    }
}

/// One Server-Sent Event: its `event` type (nil: a message), `id` and `data`.
struct ServerSentEvent {
    var event: String?
    var id: String?
    var data: String
}

/// The HTTP client of the Server-Sent Events readers: one connection each, however many (the shared client keeps
/// 8 a host and queues the rest).
let eventSourceClient = HTTPClient(
    eventLoopGroupProvider: .singleton,
    configuration: HTTPClient.Configuration(
        connectionPool: .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 512)))

/// Reads a Server-Sent Events response as it arrives.
final class EventSourceReader {
    let response: HTTPClientResponse
    private var iterator: HTTPClientResponse.Body.AsyncIterator
    private var text = ""
    /// Comment lines seen (keep-alives).
    private(set) var comments = 0
    /// Whether the response ended.
    private(set) var ended = false

    init(_ url: String, headers: [(String, String)] = []) async throws {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "text/event-stream")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        response = try await eventSourceClient.execute(request, timeout: .seconds(600))
        iterator = response.body.makeAsyncIterator()
    }

    /// The next event (keep-alive comments counted and skipped), or nil at the end of the response.
    func next() async throws -> ServerSentEvent? {
        while true {
            if let range = text.range(of: "\n\n") {
                let block = text[..<range.lowerBound]
                text.removeSubrange(..<range.upperBound)
                var event = ServerSentEvent(data: "")
                var sawField = false
                for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line.hasPrefix(":") {
                        comments += 1
                    } else if line.hasPrefix("id: ") {
                        event.id = String(line.dropFirst(4))
                        sawField = true
                    } else if line.hasPrefix("data: ") {
                        event.data = String(line.dropFirst(6))
                        sawField = true
                    } else if line.hasPrefix("event: ") {
                        event.event = String(line.dropFirst(7))
                        sawField = true
                    }
                }
                if sawField && (event.id != nil || event.event != nil) { return event }
                continue
            }
            guard let chunk = try await iterator.next() else {
                ended = true
                return nil
            }
            text += String(buffer: chunk)
        }
    }

    /// The next `count` events, within `limit`.
    func take(_ count: Int, within limit: Duration = .seconds(20)) async throws -> [ServerSentEvent] {
        var out: [ServerSentEvent] = []
        let deadline = ContinuousClock.now + limit
        while out.count < count, ContinuousClock.now < deadline, let e = try await next() { out.append(e) }
        return out
    }
}

@Suite("HTTP gateway", .serialized)
struct GatewayTests {
    static let tokens = """
        {"tokens": [
          {"token": "t-root", "principal": "root", "grants": [{"scope": "*", "roles": ["admin"]}]},
          {"token": "t-a", "principal": "tenant-a", "grants": [{"scope": "tenant-a/*", "roles": ["read", "write"]}]}
        ]}
        """

    @Test("streams: create (201), list, describe, delete, and each error as its status and code name")
    func streamEndpoints() async throws {
        let rig = try await GatewayRig()
        let base = rig.base
        let created = try await gatewayCall(.PUT, "\(base)/v1/streams/web/orders?segments=3")
        #expect(created.status == 201, "\(created.body)")
        let document = try created.json()
        #expect(document["name"] as? String == "web/orders")
        let segments = try #require(document["segments"] as? [[String: Any]])
        #expect(segments.map { $0["number"] as? Int } == [0, 1, 2])
        #expect(segments.allSatisfy { $0["length"] as? Int == 0 && $0["sealed"] as? Bool == false })

        let listed = try await gatewayCall(.GET, "\(base)/v1/streams").json()
        #expect((listed["streams"] as? [String])?.contains("web/orders") == true, "\(listed)")
        let described = try await gatewayCall(.GET, "\(base)/v1/streams/web/orders")
        #expect(try described.status == 200 && (described.json()["segments"] as? [Any])?.count == 3)

        func expectError(
            _ answer: Answer, _ status: Int, _ code: String, sourceLocation: SourceLocation = #_sourceLocation
        )
            throws
        {
            #expect(answer.status == status, "\(answer.body)", sourceLocation: sourceLocation)
            let body = try answer.json()
            #expect(body["error"] as? String == code, "\(body)", sourceLocation: sourceLocation)
            #expect((body["message"] as? String ?? "").isEmpty == false, sourceLocation: sourceLocation)
        }
        try expectError(try await gatewayCall(.PUT, "\(base)/v1/streams/web/orders"), 409, "streamExists")
        try expectError(try await gatewayCall(.GET, "\(base)/v1/streams/web/nothing"), 404, "streamNotFound")
        try expectError(try await gatewayCall(.GET, "\(base)/v1/streams/web/nothing/events"), 404, "streamNotFound")
        try expectError(try await gatewayCall(.PUT, "\(base)/v1/streams/web/b%20d"), 400, "invalidName")
        try expectError(try await gatewayCall(.PUT, "\(base)/v1/streams/web/x?segments=zero"), 400, "invalidArgument")
        try expectError(try await gatewayCall(.GET, "\(base)/v2/nowhere"), 404, "invalidArgument")

        let deleted = try await gatewayCall(.DELETE, "\(base)/v1/streams/web/orders")
        #expect(try deleted.status == 200 && (deleted.json()["deleted"] as? String) == "web/orders", "\(deleted.body)")
        try expectError(try await gatewayCall(.GET, "\(base)/v1/streams/web/orders"), 404, "streamNotFound")
        await rig.shutdown()
    }

    @Test("events: NDJSON and text appends answer pointers in body order; NDJSON reads give eddy read's objects")
    func appendAndRead() async throws {
        let rig = try await GatewayRig()
        let url = "\(rig.base)/v1/streams/web/log/events"
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/log?segments=2")
        let body = """
            {"key": "k1", "payload": "first"}
            {"payload": "second"}

            {"key": null, "payload_base64": "AAEC/w=="}
            {"key": "k1", "payload": "fourth"}

            """
        let appended = try await gatewayCall(
            .POST, url, body: body, headers: [("Content-Type", "application/x-ndjson")])
        #expect(appended.status == 200, "\(appended.body)")
        let pointers = try ndjson(appended.body).compactMap { $0["pointer"] as? String }
        #expect(pointers.count == 4)
        let parsed = try pointers.map { try EventPointer(parsing: $0) }
        // The two k1 events share a segment, in body order; the unkeyed two share one too.
        #expect(parsed[0].segment == parsed[3].segment && parsed[0].offset < parsed[3].offset)
        #expect(parsed[1].segment == parsed[2].segment && parsed[1].offset < parsed[2].offset)

        let text = try await gatewayCall(
            .POST, url + "?key=k1", body: "line one\r\nline two\n", headers: [("Content-Type", "text/plain")])
        #expect(text.status == 200, "\(text.body)")
        #expect(try ndjson(text.body).count == 2)

        // Every event, as `eddy read --format json` prints it, from the node's own client library.
        let read = try await gatewayCall(.GET, url)
        #expect(read.status == 200 && read.contentType.hasPrefix("application/x-ndjson"), "\(read.body)")
        let objects = try ndjson(read.body)
        #expect(objects.count == 6, "\(read.body)")
        let payloads = Set(objects.compactMap { $0["payload"] as? String })
        #expect(payloads == ["first", "second", "fourth", "line one", "line two"])
        let binary = try #require(objects.first { $0["payload_base64"] != nil })
        #expect(binary["payload_base64"] as? String == "AAEC/w==" && binary["key"] is NSNull)
        #expect(Set(objects.compactMap { $0["pointer"] as? String }).isSuperset(of: pointers))
        let client = try await StoreClient.connect(to: rig.address)
        let info = try await client.info(try StreamName(parsing: "web/log"))
        var expected: [String] = []
        for s in info.segments {
            var cursor = SegmentCursor(segment: s.segment, offset: 0)
            let (_, data) = try await client.read(s.segment, from: 0)
            expected += try cursor.take(data).map { String(decoding: $0.json(), as: UTF8.self) }
        }
        #expect(read.body.split(separator: "\n").map(String.init) == expected)
        await client.close()

        // limit, and from a pointer: right after it, in its segment only.
        #expect(try ndjson(try await gatewayCall(.GET, url + "?limit=2").body).count == 2)
        let after = try ndjson(try await gatewayCall(.GET, url + "?from=\(pointers[0])").body)
        #expect(after.compactMap { $0["payload"] as? String } == ["fourth", "line one", "line two"], "\(after)")
        #expect(try ndjson(try await gatewayCall(.GET, url + "?from=tail").body).isEmpty)

        // Bad bodies and pointers: 400 with the reason.
        for (bad, type) in [
            ("{\"payload\": 3}\n", "application/x-ndjson"), ("not json\n", "application/x-ndjson"),
            ("{\"key\": \"k\"}\n", "application/x-ndjson"), ("x\n", "application/x-www-form-urlencoded"),
            ("", "text/plain"),
        ] {
            let answer = try await gatewayCall(.POST, url, body: bad, headers: [("Content-Type", type)])
            #expect(
                try answer.status == 400 && (answer.json()["error"] as? String) == "invalidArgument",
                "\(bad): \(answer.body)")
        }
        for from in [
            "garbage", "web/other/00000000/00000000000000000000+20", "\(parsed[0].segment)/00000000000000009999+20",
        ] {
            let answer = try await gatewayCall(.GET, url + "?from=\(from)")
            #expect(answer.status == 400, "\(from): \(answer.body)")
        }
        await rig.shutdown()
    }

    @Test("Eddy-Writer and Eddy-Sequence: a retry appends nothing and answers the same pointers; a stale one is 409")
    func exactlyOnce() async throws {
        let rig = try await GatewayRig()
        let url = "\(rig.base)/v1/streams/web/once/events"
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/once?segments=4")
        let body = (0..<50).map { "{\"key\": \"k\($0 % 7)\", \"payload\": \"e\($0)\"}" }.joined(separator: "\n")
        func post(_ sequence: Int, _ text: String = body) async throws -> Answer {
            try await gatewayCall(
                .POST, url, body: text,
                headers: [
                    ("Content-Type", "application/x-ndjson"), ("Eddy-Writer", "orders-app"),
                    ("Eddy-Sequence", "\(sequence)"),
                ])
        }
        let first = try await post(1)
        #expect(first.status == 200, "\(first.body)")
        let again = try await post(1)
        #expect(again.status == 200 && again.body == first.body, "\(again.body)")
        // Sequences are compared segment by segment: the later request and the stale one share k1's segment.
        let next = try await post(2, "{\"key\": \"k1\", \"payload\": \"later\"}")
        #expect(next.status == 200, "\(next.body)")
        let stale = try await post(1, "{\"key\": \"k1\", \"payload\": \"other\"}")
        #expect(try stale.status == 409 && (stale.json()["error"] as? String) == "eventNumberConflict", "\(stale.body)")
        let half = try await gatewayCall(
            .POST, url, body: "x", headers: [("Content-Type", "text/plain"), ("Eddy-Writer", "w")])
        #expect(half.status == 400, "\(half.body)")
        let events = try ndjson(try await gatewayCall(.GET, url).body)
        #expect(events.count == 51, "a retry was written again: \(events.count) events")
        await rig.shutdown()
    }

    @Test("Server-Sent Events follow the tail; Last-Event-ID resumes with no gap and no duplicate; keep-alives")
    func serverSentEvents() async throws {
        let rig = try await GatewayRig { $0.keepAlive = .milliseconds(200) }
        let url = "\(rig.base)/v1/streams/web/live/events"
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/live?segments=1")
        func post(_ payloads: [String]) async throws {
            let answer = try await gatewayCall(
                .POST, url, body: payloads.joined(separator: "\n"), headers: [("Content-Type", "text/plain")])
            #expect(answer.status == 200, "\(answer.body)")
        }
        try await post(["a0", "a1", "a2"])
        let reader = try await EventSourceReader(url)
        #expect(reader.response.headers.first(name: "content-type") == "text/event-stream")
        let early = try await reader.take(3)
        #expect(
            early.map { try? JSONSerialization.jsonObject(with: Data($0.data.utf8)) as? [String: Any] }.compactMap {
                $0?["payload"] as? String
            } == ["a0", "a1", "a2"])
        // Each id is the event's pointer (one segment), the same as the data's.
        for e in early {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(e.data.utf8)) as? [String: Any])
            #expect(e.id == object["pointer"] as? String)
        }
        try await post(["b0", "b1"])
        let live = try await reader.take(2)
        #expect(live.map(\.data).allSatisfy { $0.contains("\"b") }, "\(live)")
        try await Task.sleep(for: .milliseconds(700))
        try await post(["b2"])
        _ = try await reader.take(1)
        #expect(reader.comments >= 2, "keep-alive comments: \(reader.comments)")

        // A browser reconnects with the last id it saw: the rest follows, nothing twice.
        let lastSeen = try #require(live.last?.id)
        try await post(["c0"])
        let resumed = try await EventSourceReader(url, headers: [("Last-Event-ID", lastSeen)])
        let rest = try await resumed.take(2)
        #expect(rest.map(\.data).map { $0.contains("\"b2\"") || $0.contains("\"c0\"") } == [true, true], "\(rest)")
        // `from` does the same for clients without the header; `limit` ends the response.
        let limited = try await EventSourceReader(url + "?from=\(lastSeen)&limit=1")
        let one = try await limited.take(2, within: .seconds(5))
        #expect(one.count == 1 && one[0].data.contains("\"b2\"") && limited.ended, "\(one)")
        await rig.shutdown()
    }

    @Test(
        "an SSE reader far behind the segment's shared tail reads on its own, then joins it: no gap, no duplicate; the tail stops with its last reader"
    )
    func sharedTailCatchUp() async throws {
        // A window of 8 KB: a reader from the start of 100 KB is far behind a tail already followed.
        let rig = try await GatewayRig { $0.sharedTailBytes = 8 << 10 }
        let url = "\(rig.base)/v1/streams/web/behind/events"
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/behind?segments=1")
        func post(_ range: Range<Int>) async throws {
            let body = range.map { "e\($0)-" + String(repeating: "z", count: 1000) }.joined(separator: "\n")
            let answer = try await gatewayCall(.POST, url, body: body, headers: [("Content-Type", "text/plain")])
            try #require(answer.status == 200, "\(answer.body)")
        }
        func numbers(_ events: [ServerSentEvent]) -> [Int] {
            events.compactMap { $0.data.firstMatch(of: #/"payload":"e(\d+)-/#).map { Int($0.output.1)! } }
        }
        try await post(0..<100)
        let ahead = try await EventSourceReader(url + "?from=tail")
        try await post(100..<110)
        #expect(numbers(try await ahead.take(10)) == Array(100..<110))
        #expect(rig.gateway.followedSegments == 1)
        // From the start: 110 events behind a window of ~8 events; it catches up, then follows with the other.
        let behind = try await EventSourceReader(url)
        #expect(numbers(try await behind.take(110)) == Array(0..<110))
        try await post(110..<120)
        let got = try await behind.take(10)
        #expect(numbers(got) == Array(110..<120))
        #expect(numbers(try await ahead.take(10)) == Array(110..<120))
        #expect(rig.gateway.followedSegments == 1)
        #expect(try rig.nodeSubscriptions() == 1, "one follower for both")
        // A reader that starts a little behind the tail (inside the window) is handed the held events at once;
        // with a limit, its response ends and it leaves the tail, which the others keep.
        let near = try await EventSourceReader(url + "?from=\(try #require(got[6].id))&limit=3")
        #expect(numbers(try await near.take(4, within: .seconds(5))) == [117, 118, 119] && near.ended)
        try await waitUntil(10, "the limited reader to leave") { rig.gateway.followedSegments == 1 }
        try await post(120..<121)
        #expect(numbers(try await behind.take(1)) == [120])
        #expect(numbers(try await ahead.take(1)) == [120])

        // The last reader of a tail leaving stops its follower.
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/once?segments=1")
        let once = try await EventSourceReader("\(rig.base)/v1/streams/web/once/events?limit=1")
        try await waitUntil(10, "a second tail") { rig.gateway.followedSegments == 2 }
        _ = try await gatewayCall(
            .POST, "\(rig.base)/v1/streams/web/once/events", body: "only", headers: [("Content-Type", "text/plain")])
        #expect(try await once.take(2, within: .seconds(5)).count == 1 && once.ended)
        try await waitUntil(10, "the tail of web/once to stop") { rig.gateway.followedSegments == 1 }
        await rig.shutdown()
    }

    @Test("SSE over several segments: each id carries every segment's position, so Last-Event-ID resumes them all")
    func serverSentEventsManySegments() async throws {
        let rig = try await GatewayRig()
        let url = "\(rig.base)/v1/streams/web/wide/events"
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/wide?segments=3")
        let body = (0..<30).map { "{\"key\": \"k\($0)\", \"payload\": \"p\($0)\"}" }.joined(separator: "\n")
        _ = try await gatewayCall(.POST, url, body: body, headers: [("Content-Type", "application/x-ndjson")])
        let reader = try await EventSourceReader(url)
        let first = try await reader.take(12)
        #expect(first.count == 12)
        let id = try #require(first.last?.id)
        #expect(id.split(separator: ",").count == 3, "\(id)")
        let more = (30..<40).map { "{\"key\": \"k\($0)\", \"payload\": \"p\($0)\"}" }.joined(separator: "\n")
        _ = try await gatewayCall(.POST, url, body: more, headers: [("Content-Type", "application/x-ndjson")])
        let resumed = try await EventSourceReader(url, headers: [("Last-Event-ID", id)])
        let rest = try await resumed.take(28)
        let payloads = (first + rest).compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.data.utf8)) as? [String: Any])?["payload"] as? String
        }
        #expect(payloads.count == 40 && Set(payloads) == Set((0..<40).map { "p\($0)" }), "\(payloads.sorted())")
        await rig.shutdown()
    }

    @Test("many SSE readers of one segment cost one store read per byte; a reader that stops reading is closed")
    func fanOutAndSlowReaders() async throws {
        let rig = try await GatewayRig { $0.eventBacklogBytes = 256 << 10 }
        let name = try StreamName(parsing: "web/fan")
        let url = "\(rig.base)/v1/streams/web/fan/events"
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/fan?segments=1")
        // Written to the store itself, so the node has to read every byte from there.
        let store = try await rig.harness.client()
        let payload = String(repeating: "x", count: 1000)
        for round in 0..<10 {
            _ = try await store.append(
                SegmentID(stream: name, number: 0), frames: try frames((0..<20).map { "\(round)-\($0)-\(payload)" }))
        }
        let length = try await store.info(name).segments[0].length
        await store.close()
        var readers: [EventSourceReader] = []
        for _ in 0..<20 { readers.append(try await EventSourceReader(url)) }
        for r in readers {
            let got = try await r.take(200)
            #expect(got.count == 200 && got.last?.data.contains("\"9-19-") == true)
        }
        var read = try await rig.storeReadBytes(name)
        #expect(read == Int(length), "20 web readers of \(length) bytes made the store read \(read)")
        // Then the tail, appended through the gateway: pushed to every reader, read from the store by nobody.
        let tail = (0..<5).map { "{\"payload\": \"tail-\($0)\"}" }.joined(separator: "\n")
        _ = try await gatewayCall(.POST, url, body: tail, headers: [("Content-Type", "application/x-ndjson")])
        for r in readers {
            let got = try await r.take(5)
            #expect(got.map(\.data).map { $0.contains("tail-") } == Array(repeating: true, count: 5))
        }
        read = try await rig.storeReadBytes(name)
        #expect(read == Int(length), "the tail made the store read \(read - Int(length)) bytes")
        #expect(rig.gateway.nodeConnections == 1)
        // The 20 responses share one follower: one subscription on the node, not 20.
        #expect(rig.gateway.followedSegments == 1)
        #expect(try rig.nodeSubscriptions() == 1, "one subscription on the node for 20 responses")

        // A client that sends its request and never reads: past the backlog limit the gateway ends its response.
        // (On a stream of its own: the 20 readers above are left out of it, which keeps the suite's load down.)
        _ = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/web/stall?segments=1")
        let stalled = try RawConnection(port: rig.gateway.address.port)
        stalled.send(
            Array(
                "GET /v1/streams/web/stall/events?from=tail HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
                    .utf8
            ))
        try await Task.sleep(for: .milliseconds(300))
        let big = String(repeating: "y", count: 60_000)
        for _ in 0..<20 {
            let body = (0..<10).map { _ in "{\"payload\": \"\(big)\"}" }.joined(separator: "\n")
            _ = try await gatewayCall(
                .POST, "\(rig.base)/v1/streams/web/stall/events", body: body,
                headers: [("Content-Type", "application/x-ndjson")])
        }
        // Either its response ended with an `overloaded` error event (the writer got to say so once the client
        // read again) or, when the writer stayed stuck, its connection was closed; either way short of the 12 MB.
        // (Generous waits: under the full test suite's load the node's pushes to the gateway can lag seconds.)
        let (received, closed) = stalled.readAll(limit: .seconds(60), idle: .seconds(8))
        let text = String(decoding: received.suffix(4096), as: UTF8.self)
        #expect(
            closed || (text.contains("event: error") && text.contains("overloaded")),
            "the stalled reader's response goes on after \(received.count) bytes")
        #expect(received.count < 12_000_000, "the stalled reader got all \(received.count) bytes")
        stalled.close()
        await rig.shutdown()
    }

    @Test(
        "with --auth: 401 without or with a bad token, 403 out of the grants, only granted streams listed, access_token"
    )
    func authentication() async throws {
        let access = AccessControl(
            setting: .tokens(path: "(test)"), authenticator: try TokensFile(json: Data(Self.tokens.utf8), source: "t"))
        let rig = try await GatewayRig(access: access)
        let base = rig.base
        let root = [("Authorization", "Bearer t-root")]
        let tenant = [("Authorization", "Bearer t-a")]
        #expect(try await gatewayCall(.PUT, "\(base)/v1/streams/tenant-a/s", headers: root).status == 201)
        #expect(try await gatewayCall(.PUT, "\(base)/v1/streams/tenant-b/s", headers: root).status == 201)
        let anonymous = try await gatewayCall(.GET, "\(base)/v1/streams")
        #expect(try anonymous.status == 401 && (anonymous.json()["error"] as? String) == "unauthorized")
        let bad = try await gatewayCall(.GET, "\(base)/v1/streams", headers: [("Authorization", "Bearer nope")])
        #expect(bad.status == 401, "\(bad.body)")
        let listed = try await gatewayCall(.GET, "\(base)/v1/streams", headers: tenant).json()
        #expect(listed["streams"] as? [String] == ["tenant-a/s"], "\(listed)")
        let forbidden = try await gatewayCall(.GET, "\(base)/v1/streams/tenant-b/s/events", headers: tenant)
        #expect(
            try forbidden.status == 403 && (forbidden.json()["error"] as? String) == "forbidden", "\(forbidden.body)")
        let write = try await gatewayCall(
            .POST, "\(base)/v1/streams/tenant-a/s/events", body: "hi",
            headers: tenant + [("Content-Type", "text/plain")])
        #expect(write.status == 200, "\(write.body)")
        let byQuery = try await gatewayCall(.GET, "\(base)/v1/streams/tenant-a/s/events?access_token=t-a")
        #expect(byQuery.status == 200 && byQuery.body.contains("\"hi\""), "\(byQuery.body)")
        #expect(try await gatewayCall(.DELETE, "\(base)/v1/streams/tenant-b/s", headers: tenant).status == 403)
        await rig.shutdown()
    }

    @Test("with --auth k8s: a pod's projected token in the Authorization header is its service account")
    func kubernetesTokens() async throws {
        let cluster = try KubernetesTokenIssuer()
        let file = """
            {"issuer": "\(KubernetesTokenIssuer.issuer)", "audience": "eddy", "jwks": \(try cluster.jwks),
             "grants": {"default": [{"scope": "{namespace}/*", "roles": ["read", "write", "admin"]}]}}
            """
        let access = AccessControl(
            setting: .kubernetes(path: "(test)"),
            authenticator: try await KubernetesAuthenticator.load(text: file, source: "(test)", folder: "/"))
        let rig = try await GatewayRig(access: access)
        let pod = [("Authorization", "Bearer \(try await cluster.token(namespace: "shop", account: "web"))")]
        #expect(try await gatewayCall(.PUT, "\(rig.base)/v1/streams/shop/orders", headers: pod).status == 201)
        let posted = try await gatewayCall(
            .POST, "\(rig.base)/v1/streams/shop/orders/events", body: "paid",
            headers: pod + [("Content-Type", "text/plain")])
        #expect(posted.status == 200, "\(posted.body)")
        let other = try await gatewayCall(.PUT, "\(rig.base)/v1/streams/billing/x", headers: pod)
        #expect(other.status == 403, "\(other.body)")
        let expired = [
            ("Authorization", "Bearer \(try await cluster.token(namespace: "shop", account: "web", expires: -120))")
        ]
        let refused = try await gatewayCall(.GET, "\(rig.base)/v1/streams", headers: expired)
        #expect(try refused.status == 401 && (refused.json()["error"] as? String) == "unauthorized", "\(refused.body)")
        await rig.shutdown()
    }

    @Test("with the node's TLS certificate the gateway serves HTTPS (and reaches its node over TLS)")
    func https() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        var server = try files.write("node")
        server.authority = files.caPath
        let rig = try await GatewayRig(tls: try ServerTLS(files: server))
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(files.caPath)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        var request = HTTPClientRequest(url: "\(rig.base)/v1/streams/secure/s?segments=1")
        request.method = .PUT
        let created = try await client.execute(request, timeout: .seconds(30))
        #expect(rig.base.hasPrefix("https://") && created.status == .created)
        request = HTTPClientRequest(url: "\(rig.base)/v1/streams")
        let listed = String(
            buffer: try await client.execute(request, timeout: .seconds(30)).body.collect(upTo: 1 << 20))
        #expect(listed.contains("secure/s"), "\(listed)")
        try await client.shutdown()
        // Plain HTTP to the HTTPS port gets nothing served.
        await #expect(throws: (any Error).self) {
            _ = try await gatewayCall(.GET, "http://\(rig.gateway.address)/v1/streams")
        }
        await rig.shutdown()
    }

    @Test("CORS: an allowed origin's preflight is answered and its responses carry Access-Control-Allow-Origin")
    func crossOrigin() async throws {
        let rig = try await GatewayRig { $0.corsOrigins = ["https://app.example"] }
        let preflight = try await gatewayCall(
            .OPTIONS, "\(rig.base)/v1/streams",
            headers: [("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")])
        #expect(preflight.status == 204)
        var request = HTTPClientRequest(url: "\(rig.base)/v1/streams")
        request.headers.add(name: "Origin", value: "https://app.example")
        let allowed = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(allowed.headers.first(name: "access-control-allow-origin") == "https://app.example")
        request.headers.replaceOrAdd(name: "Origin", value: "https://evil.example")
        let other = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(other.headers.first(name: "access-control-allow-origin") == nil)

        // Linked to a dashboard on port 9190: pages served there (by any host name) may call, others not.
        func allowOrigin(_ origin: String) async throws -> String? {
            request.headers.replaceOrAdd(name: "Origin", value: origin)
            return try await HTTPClient.shared.execute(request, timeout: .seconds(10)).headers.first(
                name: "access-control-allow-origin")
        }
        #expect(try await allowOrigin("http://localhost:9190") == nil)
        rig.gateway.link(GatewayLink(), dashboardPort: 9190)
        for origin in ["http://localhost:9190", "http://127.0.0.1:9190", "http://[::1]:9190", "http://node-a:9190"] {
            #expect(try await allowOrigin(origin) == origin)
        }
        for origin in ["http://localhost:9191", "https://localhost:9190", "http://localhost", "9190", "ftp://x:9190"] {
            #expect(try await allowOrigin(origin) == nil, "\(origin)")
        }
        await rig.shutdown()
    }
}
