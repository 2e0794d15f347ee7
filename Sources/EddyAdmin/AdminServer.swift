import EddyAuth
import EddyTLS
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import StreamModel
import WireProtocol

/// AdminServer is the admin HTTP server of a store or a node (`--admin-listen`): liveness and readiness probes,
/// JSON documents about the server, and its Prometheus metrics. docs/operations.md lists the endpoints.
///
/// It is started before the server reports itself ready (a port in use fails the start with a clear error) and
/// runs until ``close()``; as a ``Service`` it closes when its `ServiceGroup` shuts down gracefully.
public final class AdminServer: Service, Sendable, CustomStringConvertible {
    /// The address it is bound to (with the real port when 0 was asked for).
    public let address: ServerAddress
    private let task: Task<Void, Never>
    private let group: ServiceGroup

    private init(address: ServerAddress, task: Task<Void, Never>, group: ServiceGroup) {
        self.address = address
        self.task = task
        self.group = group
    }

    /// Binds `address` and serves the routes `install` adds to the router. With `access` enabled, every route
    /// but the probes (`/health`, `/ready`) and the dashboard page (`/`) needs `Authorization: Bearer TOKEN` of a
    /// principal with `admin` on `*` (the pages's own requests send the token given in its URL fragment).
    /// With `tls`, it serves HTTPS with the server's certificate (reloaded with it). `purpose` names the server in
    /// its errors and its `Server` header (`eddy-admin`); the HTTP gateway is served this way too (`http`).
    /// - Throws: ``EddyError/Code/ioError`` when the address cannot be bound.
    public static func start(
        address: ServerAddress, logger: Logger, access: AccessControl = .off, audit: AuditLog = AuditLog(),
        tls: ServerTLS? = nil, purpose: String = "admin", install: (Router<BasicRequestContext>) -> Void
    ) async throws(EddyError) -> AdminServer {
        let router = Router()
        if access.enabled { router.add(middleware: BearerTokens(access: access, audit: audit)) }
        install(router)
        // The first outcome wins: the bound port (from the server) or an error (the run ended before it started).
        let (outcomes, started) = AsyncStream<Result<Int, EddyError>>.makeStream()
        let application = Application(
            router: router,
            server: HTTPServerBuilder.http1(behind: tls),
            configuration: ApplicationConfiguration(
                address: .hostname(address.host, port: address.port), serverName: "eddy-\(purpose)"),
            onServerRunning: { channel in started.yield(.success(channel.localAddress?.port ?? address.port)) },
            logger: logger)
        // The application runs in a group of its own, so closing it is a graceful HTTP shutdown (requests in
        // progress finish) rather than a cancellation.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [application], logger: logger))
        let task = Task {
            do {
                try await group.run()
                started.yield(
                    .failure(EddyError(.ioError, "\(purpose) server on \(address) stopped before it started")))
            } catch {
                started.yield(.failure(EddyError(.ioError, "cannot listen on \(address) (\(purpose)): \(error)")))
            }
            started.finish()
        }
        var first = outcomes.makeAsyncIterator()
        switch await first.next() ?? .failure(EddyError(.ioError, "\(purpose) server on \(address) did not start")) {
        case .success(let port):
            return AdminServer(address: ServerAddress(host: address.host, port: port), task: task, group: group)
        case .failure(let error):
            task.cancel()
            throw error
        }
    }

    /// Stops serving: requests in progress finish, then the listener closes.
    public func close() async {
        await group.triggerGracefulShutdown()
        await task.value
    }

    /// Serves until the group shuts down gracefully, then closes.
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    public var description: String { "admin server \(address)" }
}

/// The answers of the admin API: JSON documents, errors as `{"error": {"code", "message"}}` with a status that
/// fits the error.
enum AdminResponse {
    static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        var buffer = ByteBuffer()
        buffer.writeString(text)
        buffer.writeString("\n")
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: buffer))
    }

    static func json(_ object: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return json(String(decoding: data, as: UTF8.self), status: status)
    }

    static func error(_ error: EddyError) -> Response {
        let status: HTTPResponse.Status =
            switch error.code {
            case .invalidArgument, .invalidName, .malformedFrame, .malformedEvent: .badRequest
            case .streamNotFound, .segmentNotFound: .notFound
            case .unauthorized: .unauthorized
            case .forbidden: .forbidden
            case .unavailable, .connectionFailed, .shuttingDown, .overloaded: .serviceUnavailable
            case .timedOut: .gatewayTimeout
            default: .internalServerError
            }
        return json(["error": ["code": "\(error.code)", "message": error.message]], status: status)
    }

    static func text(_ bytes: [UInt8], contentType: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: contentType],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// The request's body as text (at most 1 MiB).
    static func body(_ request: Request) async throws(EddyError) -> String {
        var request = request
        do { return String(buffer: try await request.collectBody(upTo: 1 << 20)) } catch {
            throw EddyError(.invalidArgument, "request body: \(error)")
        }
    }

    /// Runs `body` and turns a thrown ``EddyError`` into an error answer.
    static func answering(_ body: () async throws(EddyError) -> Response) async -> Response {
        do throws(EddyError) { return try await body() } catch { return Self.error(error) }
    }
}

/// The admin API's authentication: the `Authorization: Bearer TOKEN` header, checked like a protocol hello, and
/// only administrators (`admin` on `*`) past it; the probes and the dashboard page need none.
struct BearerTokens: RouterMiddleware {
    typealias Context = BasicRequestContext
    let access: AccessControl
    let audit: AuditLog
    static let open: Set<String> = ["/", "/health", "/ready"]

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        if Self.open.contains(request.uri.path) { return try await next(request, context) }
        let header = request.headers[.authorization] ?? ""
        let token = header.hasPrefix("Bearer ") ? String(header.dropFirst(7)) : ""
        let principal: Principal
        do {
            principal = try await access.principal(for: token)
        } catch {
            audit.refusedConnection(peer: "admin http \(request.uri.path)", error)
            return AdminResponse.error(error)
        }
        do throws(EddyError) {
            try principal.requireAdministrator("use the admin API (\(request.uri.path))")
        } catch {
            audit.refusedAdmin(path: request.uri.path, by: principal, error)
            return AdminResponse.error(error)
        }
        if request.method == .post { audit.adminCall(path: request.uri.path, by: principal) }
        return try await next(request, context)
    }
}
