import EddyTestSupport
import Foundation
import Testing

/// `eddy node --http-listen` as a user runs it: a store and a node as processes, the gateway reached with plain
/// HTTP/1.1 over a socket.
@Suite("HTTP gateway of eddy node", .serialized)
struct GatewayCLITests {
    /// One HTTP/1.1 exchange (`Connection: close`): the status and the body, chunked encoding undone.
    static func exchange(port: Int, _ method: String, _ path: String, body: String = "", headers: [String] = [])
        async throws -> (status: Int, body: String)
    {
        try await offPool {
            let connection = try RawConnection(port: port)
            defer { connection.close() }
            var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            for h in headers { request += h + "\r\n" }
            request += "Content-Length: \(body.utf8.count)\r\n\r\n" + body
            connection.send(Array(request.utf8))
            let (bytes, _) = connection.readAll(limit: .seconds(20))
            let text = String(decoding: bytes, as: UTF8.self)
            guard let split = text.range(of: "\r\n\r\n") else { throw CLIError("no HTTP answer: \(text)") }
            let head = text[..<split.lowerBound]
            let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
            var rest = String(text[split.upperBound...])
            if head.lowercased().contains("transfer-encoding: chunked") {
                var decoded = ""
                while let line = rest.range(of: "\r\n"), let size = Int(rest[..<line.lowerBound], radix: 16), size > 0 {
                    let start = line.upperBound
                    let bytes = Array(rest[start...].utf8)
                    decoded += String(decoding: bytes.prefix(size), as: UTF8.self)
                    rest = String(decoding: bytes.dropFirst(size + 2), as: UTF8.self)
                }
                rest = decoded
            }
            return (status, rest)
        }
    }

    @Test("EDDY_NODE_HTTP_LISTEN starts the gateway; its NDJSON read is eddy read --format json, line for line")
    func nodeGateway() async throws {
        let folder = temporaryPath("gateway-cli")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let store = try StoreProcess(data: folder + "/store")
        defer { _ = store.stop() }
        let node = "127.0.0.1:\(try freePort())"
        let http = try freePort()
        let nodeProcess = try ServerProcess(
            ["node", "--listen", node, "--store", store.address, "--members", node],
            log: folder + "/node.log", marker: "http gateway ready",
            environment: ["EDDY_NODE_HTTP_LISTEN": "127.0.0.1:\(http)"])
        defer { nodeProcess.stop() }

        let created = try await Self.exchange(port: http, "PUT", "/v1/streams/cli/web?segments=2")
        #expect(created.status == 201, "\(created.body)")
        let appended = try await eddyAsync(
            ["append", "cli/web", "--server", node], input: (0..<300).map { "line \($0)" }.joined(separator: "\n"))
        #expect(appended.status == 0, "\(appended.stderr)")
        let posted = try await Self.exchange(
            port: http, "POST", "/v1/streams/cli/web/events?key=web", body: "from the web\n",
            headers: ["Content-Type: text/plain"])
        #expect(posted.status == 200 && posted.body.contains("\"pointer\""), "\(posted.body)")

        let read = try await eddyAsync(["read", "cli/web", "--format", "json", "--server", node])
        #expect(read.status == 0, "\(read.stderr)")
        let web = try await Self.exchange(port: http, "GET", "/v1/streams/cli/web/events")
        #expect(web.status == 200)
        #expect(web.body.split(separator: "\n") == read.stdout.split(separator: "\n"), "\(web.body.prefix(400))")
        #expect(read.stdout.split(separator: "\n").count == 301)

        let missing = try await Self.exchange(port: http, "GET", "/v1/streams/cli/nothing/events")
        #expect(missing.status == 404 && missing.body.contains("\"streamNotFound\""), "\(missing.body)")

        // eddy bench fanout --http: Server-Sent Events readers through the gateway get the events (every one, in
        // order, is GatewayTests' in-process; here a loaded machine delivers late, so a share within the duration).
        let bench = try await eddyAsync([
            "bench", "fanout", "--servers", node, "--http", "--http-servers", "127.0.0.1:\(http)", "--stream",
            "cli/sse",
            "--segments", "2", "--readers", "4", "--rate", "200", "--duration", "2", "--size", "100", "--json",
        ])
        #expect(bench.status == 0, "\(bench.stderr)")
        let figures = try #require(
            try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any], "\(bench.stdout)")
        #expect(figures["system"] as? String == "eddy-http")
        let deliveries = figures["deliveries"] as? Int ?? 0
        #expect(deliveries >= 4 * 150, "\(figures)")
        #expect((figures["p99_ms"] as? Double ?? 0) > 0, "\(figures)")
    }

    @Test("a bad --http-listen is refused with what it takes")
    func badAddress() throws {
        let run = try eddy(["node", "--listen", "127.0.0.1:1", "--members", "127.0.0.1:1", "--http-listen", "where"])
        #expect(run.status != 0 && run.stderr.contains("--http-listen"), "\(run.stderr)")
    }
}
