import ArgumentParser
import AsyncHTTPClient
import EddyClient
import EddyTLS
import Foundation
import NIOCore
import NIOHTTP1
import StreamModel
import WireProtocol

/// Which server `eddy admin` asks, and how: its admin HTTP API (docs/operations.md, "Admin API"), or, when the
/// server has none, its protocol port.
struct AdminTarget: ParsableArguments {
    @Option(name: .long, help: "The node's (or the store's) protocol address, HOST:PORT.")
    var server: String = "127.0.0.1:9090"

    @Option(
        name: .long,
        help: """
            The server's admin HTTP address, HOST:PORT. Default: the protocol port + 100, used when the server \
            there is the one --server names; otherwise the command asks over the protocol port.
            """)
    var admin: String?

    @OptionGroup var credentials: ClientCredentials

    /// `--token`, else `$EDDY_TOKEN`, else none.
    var bearer: String { credentials.bearer }
}

/// `--format text|json` of the admin commands.
struct FormatOption: ParsableArguments {
    @Option(name: .long, help: "Output: text or json.") var format: String = "text"

    func validate() throws {
        guard format == "text" || format == "json" else {
            throw ValidationError("unknown --format '\(format)': use text or json")
        }
    }

    var json: Bool { format == "json" }
}

/// One question `eddy admin` asks: its admin API route, and the same question as a protocol command.
enum AdminCall {
    case stats
    case whatIf
    case queueStats
    case queueJournal(limit: Int)
    case dlqList(queue: String?)
    case dlqShow(id: UInt64)
    case dlqRedrive([String: Any])
    case dlqPurge([String: Any])

    /// The HTTP method, the path (with its query) and the body.
    var http: (method: HTTPMethod, path: String, body: [String: Any]?) {
        switch self {
        case .stats: return (.GET, "/stats", nil)
        case .whatIf: return (.GET, "/whatif", nil)
        case .queueStats: return (.GET, "/queues", nil)
        case .queueJournal(let limit): return (.GET, "/queues/journal?limit=\(limit)", nil)
        case .dlqList(let queue):
            let query = queue.flatMap { $0.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) }
            return (.GET, "/dlq" + (query.map { "?queue=\($0)" } ?? ""), nil)
        case .dlqShow(let id): return (.GET, "/dlq/\(id)", nil)
        case .dlqRedrive(let arguments): return (.POST, "/dlq/redrive", arguments)
        case .dlqPurge(let arguments): return (.POST, "/dlq/purge", arguments)
        }
    }

    /// The protocol's admin command and its arguments; nil for `stats`, which is a request of its own.
    var command: (name: String, arguments: [String: Any])? {
        switch self {
        case .stats: return nil
        case .whatIf: return ("whatif", [:])
        case .queueStats: return ("queue.stats", [:])
        case .queueJournal(let limit): return ("queue.journal", ["limit": limit])
        case .dlqList(let queue): return ("dlq.list", queue.map { ["queue": $0] } ?? [:])
        case .dlqShow(let id): return ("dlq.show", ["id": id])
        case .dlqRedrive(let arguments): return ("dlq.redrive", arguments)
        case .dlqPurge(let arguments): return ("dlq.purge", arguments)
        }
    }
}

/// A connection to a server's admin API (or, failing that, its protocol port) for the commands of `eddy admin`.
enum AdminConnection {
    case http(AdminHTTP)
    case wire(EddyClient)

    /// Runs `body` with the connection `target` leads to, and reports errors as every command does.
    static func with(_ target: AdminTarget, _ body: (AdminConnection) async throws -> Void) async throws {
        try await withOpened({ try await open(target) }, close: { await $0.close() }, body)
    }

    static func open(_ target: AdminTarget) async throws -> AdminConnection {
        let server = try ServerAddress(parsing: target.server)
        let tls = try target.credentials.tls()
        if let admin = target.admin {
            return .http(try AdminHTTP(address: try ServerAddress(parsing: admin), token: target.bearer, tls: tls))
        }
        // The default admin port is the protocol port + 100 (`--admin-listen auto`); it is used only when the
        // server answering there says it is the one asked for.
        if server.port + 100 <= 65535 {
            let http = try AdminHTTP(
                address: ServerAddress(host: server.host, port: server.port + 100), token: target.bearer, tls: tls)
            if let health = try? await http.request("/health", timeout: .seconds(2)),
                (health["node"] as? String) == server.description || (health["listen"] as? String) == server.description
            {
                return .http(http)
            }
            await http.close()
        }
        var configuration = EddyClient.Configuration(servers: [server])
        configuration.token = target.bearer
        configuration.tls = tls
        return .wire(try await EddyClient.connect(configuration))
    }

    func close() async {
        switch self {
        case .http(let http): await http.close()
        case .wire(let client): await client.close()
        }
    }

    /// Asks `call` and returns the JSON answer as an object.
    /// - Throws: the server's error (its code and message), or why the server could not be reached.
    func ask(_ call: AdminCall) async throws -> [String: Any] {
        switch self {
        case .http(let http):
            let (method, path, body) = call.http
            return try await http.request(path, method: method, body: body, timeout: .seconds(60))
        case .wire(let client):
            guard let (name, arguments) = call.command else {
                return try Self.object(try await client.stats(), what: "stats")
            }
            let text = String(
                decoding: try JSONSerialization.data(withJSONObject: arguments, options: [.sortedKeys]), as: UTF8.self)
            let r = try await client.send(.admin(command: name, arguments: text))
            guard case .stats(let json) = r else {
                throw EddyError(.malformedFrame, "the node answered \(name) with \(r)")
            }
            return try Self.object(json, what: name)
        }
    }

    /// `stats` as the server sent it (its JSON text, keys sorted).
    func statsText() async throws -> String {
        switch self {
        case .http(let http):
            // The server's own text (keys sorted, as over the protocol), not a parse and a re-encoding of it.
            return try await http.requestText("/stats", timeout: .seconds(60))
                .trimmingCharacters(in: .whitespacesAndNewlines)
        case .wire(let client):
            return try await client.stats()
        }
    }

    static func object(_ text: String, what: String) throws -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw EddyError(.malformedFrame, "the answer to \(what) is not a JSON object")
        }
        return object
    }
}

/// A server's admin HTTP API: `http://` or, with TLS (`--tls-ca`), `https://` trusting the given authorities.
struct AdminHTTP {
    let base: String
    let token: String
    private let client: HTTPClient
    private let owned: Bool

    init(address: ServerAddress, token: String, tls: ClientTLS?) throws {
        self.token = token
        guard let tls else {
            base = "http://\(address.host):\(address.port)"
            client = HTTPClient.shared
            owned = false
            return
        }
        base = "https://\(address.host):\(address.port)"
        var configuration = HTTPClient.Configuration()
        configuration.tlsConfiguration = try tls.configuration()
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        owned = true
    }

    func close() async {
        if owned { try? await client.shutdown() }
    }

    /// One admin API request; a JSON error answer (`{"error": {"code", "message"}}`) becomes an ``EddyError``.
    func request(
        _ path: String, method: HTTPMethod = .GET, body: [String: Any]? = nil, timeout: TimeAmount
    ) async throws -> [String: Any] {
        let text = try await requestText(path, method: method, body: body, timeout: timeout)
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw EddyError(.malformedFrame, "\(base)\(path) did not answer a JSON object")
        }
        return object
    }

    /// One admin API request's answer as sent; an error answer becomes an ``EddyError`` as in ``request``.
    func requestText(
        _ path: String, method: HTTPMethod = .GET, body: [String: Any]? = nil, timeout: TimeAmount
    ) async throws -> String {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if !token.isEmpty { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            let data = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: data))
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: timeout)
        } catch {
            throw EddyError(
                .unavailable, "cannot reach the admin API at \(base): \(TLSFailure.describe(error) ?? "\(error)")")
        }
        let text = String(buffer: try await response.body.collect(upTo: 64 << 20))
        guard (200..<300).contains(response.status.code) else {
            let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
            if let error = object?["error"] as? [String: Any], let message = error["message"] as? String {
                let name = error["code"] as? String
                let code = EddyError.Code.allCases.first { "\($0)" == name } ?? .unavailable
                throw EddyError(code, message)
            }
            throw EddyError(.unavailable, "\(base)\(path) answered \(response.status.code): \(text.prefix(200))")
        }
        return text
    }
}
