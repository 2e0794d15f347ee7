import EddyAdmin
import EddyAuth
import EddyClient
import EddyTLS
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import StreamModel
import Synchronization
import WireProtocol

/// Settings of a node's HTTP gateway (`--http-listen`).
public struct GatewayConfiguration: Sendable {
    /// The address to serve HTTP on.
    public var listen: ServerAddress
    /// The node's protocol address: the gateway is a client of its own node, so web requests go through the
    /// node's read path (owners, near cache, subscriptions) and its authorization like any other.
    public var node: ServerAddress
    /// How bearer tokens are checked (the node's `--auth`); `.off` takes every request.
    public var access: AccessControl = .off
    /// The node's TLS: HTTPS on the gateway's port, and TLS on its connection to the node.
    public var tls: ServerTLS?
    /// Origins allowed to call from a browser page (`--http-cors-origins`); `*` allows any. Empty: none.
    public var corsOrigins: [String] = []
    /// The largest POST body.
    public var maxBodyBytes = 16 << 20
    /// The most bytes read for one Server-Sent Events client but not yet sent to it; past it the client is
    /// closed (it reads too slowly).
    public var eventBacklogBytes = 8 << 20
    /// The most payload bytes of recent events kept per followed segment: Server-Sent Events responses of one
    /// segment (and one token) share one follower of it, and one that starts within these bytes of its tail
    /// joins at once; one further behind reads on its own up to them.
    public var sharedTailBytes = 4 << 20
    /// How often a Server-Sent Events response without events gets a comment line.
    public var keepAlive: Duration = .seconds(15)
    /// The gateway's logger.
    public var logger = Logger(label: "eddy.http")

    /// A gateway on `listen` in front of the node at `node`.
    public init(listen: ServerAddress, node: ServerAddress) {
        self.listen = listen
        self.node = node
    }
}

/// HTTPGateway is a node's HTTP and Server-Sent Events API (docs/http.md): streams listed, created, described
/// and deleted; events appended (NDJSON or text lines, exactly-once with `Eddy-Writer` and `Eddy-Sequence`)
/// and read (NDJSON up to the tail, or Server-Sent Events that follow it and resume with `Last-Event-ID`).
///
/// Its requests reach the node through the node's own protocol port, one connection per bearer token: the node
/// serves them like any client's (one store read per block however many web readers follow a segment).
public final class HTTPGateway: Service, Sendable, CustomStringConvertible {
    /// The address it serves on (with the real port when 0 was asked for).
    public var address: ServerAddress { server.address }
    private let server: AdminServer
    private let clients: NodeClients
    private let live: GatewayReads.LiveResponses
    private let origins: AllowedOrigins
    private let tails: SharedTails

    private init(
        server: AdminServer, clients: NodeClients, live: GatewayReads.LiveResponses, origins: AllowedOrigins,
        tails: SharedTails, tls: Bool
    ) {
        self.tls = tls
        self.server = server
        self.clients = clients
        self.live = live
        self.origins = origins
        self.tails = tails
    }

    /// Binds the gateway's address and serves until ``close()``.
    /// - Throws: ``EddyError/Code/ioError`` when the address cannot be bound.
    public static func start(_ configuration: GatewayConfiguration) async throws(EddyError) -> HTTPGateway {
        var node = configuration.node
        if node.host == "0.0.0.0" { node = ServerAddress(host: "127.0.0.1", port: node.port) }
        if node.host == "::" { node = ServerAddress(host: "::1", port: node.port) }
        var base = EddyClient.Configuration(servers: [node])
        base.tls = configuration.tls?.outgoing
        let clients = NodeClients(base: base)
        let live = GatewayReads.LiveResponses()
        let routes = GatewayRoutes(configuration: configuration, clients: clients, live: live)
        let server = try await AdminServer.start(
            address: configuration.listen, logger: configuration.logger, tls: configuration.tls, purpose: "http"
        ) { router in routes.install(router) }
        return HTTPGateway(
            server: server, clients: clients, live: live, origins: routes.origins, tails: routes.tails,
            tls: configuration.tls != nil)
    }

    /// Lets browser pages served on `port` (the node's admin port: the dashboard's stream viewer) call the
    /// gateway, whatever host name the browser reached them by; `tls`: they are served over HTTPS.
    func allowPages(onPort port: Int, tls: Bool) {
        origins.allowPages(onPort: port, scheme: tls ? "https" : "http")
    }

    /// Tells the node's dashboard (its admin port's `/gateway`) where this gateway is, and lets the pages of the
    /// admin port at `dashboardPort` call it (the stream viewer; the admin port serves over HTTPS when the
    /// gateway does: both take the node's TLS).
    public func link(_ link: GatewayLink, dashboardPort: Int?) {
        link.set(host: address.host, port: address.port, tls: tls)
        if let dashboardPort { allowPages(onPort: dashboardPort, tls: tls) }
    }

    /// Whether it serves HTTPS.
    public let tls: Bool

    /// How many connections to the node the gateway holds (one per bearer token in use).
    public var nodeConnections: Int { clients.count }

    /// How many segments the gateway follows for its Server-Sent Events responses (each once per token,
    /// however many responses follow it).
    public var followedSegments: Int { tails.count }

    /// Stops serving (requests in progress finish; Server-Sent Events responses end), then closes the gateway's
    /// connections to the node.
    public func close() async {
        live.close()
        await server.close()
        await clients.close()
    }

    /// Serves until the service group shuts down gracefully, then closes.
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    public var description: String { "http gateway \(address)" }
}

/// The gateway's routes.
final class GatewayRoutes: Sendable {
    let configuration: GatewayConfiguration
    let clients: NodeClients
    let live: GatewayReads.LiveResponses
    let origins: AllowedOrigins
    /// The segments followed for Server-Sent Events responses, each once per node client.
    let tails: SharedTails
    private let roundRobin = Atomic<UInt32>(0)
    private static let writerHeader = HTTPFields.Element.Name("Eddy-Writer")!
    private static let sequenceHeader = HTTPFields.Element.Name("Eddy-Sequence")!
    private static let lastEventID = HTTPFields.Element.Name("Last-Event-ID")!

    init(configuration: GatewayConfiguration, clients: NodeClients, live: GatewayReads.LiveResponses) {
        self.configuration = configuration
        self.clients = clients
        self.live = live
        origins = AllowedOrigins(configuration.corsOrigins)
        tails = SharedTails(keepBytes: configuration.sharedTailBytes)
    }

    func install(_ router: Router<BasicRequestContext>) {
        router.add(middleware: ErrorDocuments())
        router.add(middleware: CrossOrigin(origins: origins))
        router.get("/v1/streams") { request, _ in
            try await self.answering(request) { (lease, _) throws(EddyError) in
                let names = try await lease.client.listStreams().map(\.name.description)
                return GatewayResponse.document(["streams": names])
            }
        }
        router.put("/v1/streams/:scope/:stream") { request, context in
            try await self.answering(request) { (lease, _) throws(EddyError) in
                let name = try Self.stream(context)
                let text = request.uri.queryParameters.get("segments") ?? "1"
                guard let segments = UInt32(text), segments > 0 else {
                    throw EddyError(.invalidArgument, "segments must be a whole number above 0, not '\(text)'")
                }
                try await lease.client.createStream(name, segments: segments)
                return GatewayResponse.document(
                    GatewayResponse.stream(try await lease.client.info(name)), status: .created)
            }
        }
        router.get("/v1/streams/:scope/:stream") { request, context in
            try await self.answering(request) { (lease, _) throws(EddyError) in
                GatewayResponse.document(GatewayResponse.stream(try await lease.client.info(try Self.stream(context))))
            }
        }
        router.delete("/v1/streams/:scope/:stream") { request, context in
            try await self.answering(request) { (lease, _) throws(EddyError) in
                let name = try Self.stream(context)
                try await lease.client.deleteStream(name)
                return GatewayResponse.document(["deleted": name.description])
            }
        }
        router.post("/v1/streams/:scope/:stream/events") { request, context in
            try await self.answering(request) { (lease, _) throws(EddyError) in
                try await self.append(request, context, lease)
            }
        }
        router.get("/v1/streams/:scope/:stream/events") { request, context in
            try await self.answering(request) { (lease, _) throws(EddyError) in
                try await self.read(request, context, lease)
            }
        }
    }

    private static func stream(_ context: BasicRequestContext) throws(EddyError) -> StreamName {
        try StreamName(
            scope: context.parameters.get("scope") ?? "", stream: context.parameters.get("stream") ?? "")
    }

    /// The request's bearer token: `Authorization: Bearer TOKEN`, else `?access_token=TOKEN`.
    static func token(_ request: Request) -> String {
        if let header = request.headers[.authorization], header.hasPrefix("Bearer ") {
            return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        }
        return request.uri.queryParameters.get("access_token") ?? ""
    }

    /// Checks the request's token, leases the node client of its principal and runs `body`; a thrown
    /// ``EddyError`` becomes the error document.
    private func answering(
        _ request: Request, _ body: (Lease, Principal) async throws(EddyError) -> Response
    ) async throws -> Response {
        do throws(EddyError) {
            var token = Self.token(request)
            let principal = try await configuration.access.principal(for: token)
            if !configuration.access.enabled { token = "" }
            return try await body(try await clients.lease(token), principal)
        } catch {
            return GatewayResponse.error(error)
        }
    }

    private func append(_ request: Request, _ context: BasicRequestContext, _ lease: Lease)
        async throws(EddyError) -> Response
    {
        let name = try Self.stream(context)
        let identity = try GatewayAppends.identity(
            writer: request.headers[Self.writerHeader], sequence: request.headers[Self.sequenceHeader])
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: configuration.maxBodyBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw EddyError(
                .frameTooLarge, "the body is over the gateway's limit of \(configuration.maxBodyBytes) bytes")
        } catch {
            throw EddyError(.invalidArgument, "cannot read the body: \(error)")
        }
        let events = try GatewayAppends.parse(
            body, contentType: request.headers[.contentType] ?? "", key: request.uri.queryParameters.get("key"))
        let info = try await lease.client.info(name)
        let unkeyed =
            identity.map { UInt32(truncatingIfNeeded: $0.sequence) } ?? roundRobin.add(1, ordering: .relaxed).oldValue
        let shares = try GatewayAppends.route(
            events, stream: info, unkeyed: unkeyed, now: Int64(Date().timeIntervalSince1970 * 1_000_000))
        let pointers: [EventPointer]
        do {
            pointers = try await GatewayAppends.append(
                shares, count: events.count, identity: identity, client: lease.client)
        } catch  where error.code == .eventNumberConflict && identity != nil {
            throw EddyError(
                .eventNumberConflict,
                "Eddy-Writer '\(identity!.writer)' sent a later Eddy-Sequence than \(identity!.sequence) already, or "
                    + "sequence \(identity!.sequence) with other events: a retry must repeat its request as it was")
        }
        var out = ByteBuffer()
        for p in pointers { out.writeString("{\"pointer\":\"\(p)\"}\n") }
        return Response(
            status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody(byteBuffer: out))
    }

    private func read(_ request: Request, _ context: BasicRequestContext, _ lease: Lease)
        async throws(EddyError) -> Response
    {
        let name = try Self.stream(context)
        let query = request.uri.queryParameters
        var limit = Int.max
        if let text = query.get("limit") {
            guard let n = Int(text), n > 0 else {
                throw EddyError(.invalidArgument, "limit must be a whole number above 0, not '\(text)'")
            }
            limit = n
        }
        let sse = (request.headers[.accept] ?? "").contains("text/event-stream")
        let from = (sse ? request.headers[Self.lastEventID] : nil) ?? query.get("from")
        let info = try await lease.client.info(name)
        let cursors = try await GatewayReads.cursors(from, info: info, client: lease.client)
        if sse {
            return Response(
                status: .ok,
                headers: [
                    .contentType: "text/event-stream", .cacheControl: "no-cache",
                    HTTPFields.Element.Name("X-Accel-Buffering")!: "no",
                ],
                body: GatewayReads.events(
                    cursors, name: name, limit: limit, keepAlive: configuration.keepAlive,
                    backlogLimit: configuration.eventBacklogBytes, lease: lease, live: live, tails: tails,
                    logger: configuration.logger))
        }
        return Response(
            status: .ok, headers: [.contentType: "application/x-ndjson"],
            body: GatewayReads.ndjson(cursors, info: info, limit: limit, lease: lease, logger: configuration.logger))
    }
}
