import Foundation
import Hummingbird
import NIOCore
import StreamModel
import Synchronization

/// The gateway's answers: JSON documents, and errors as `{"error": "<code name>", "message": "..."}` with the
/// status docs/http.md gives each code.
enum GatewayResponse {
    /// The HTTP status of an error code.
    static func status(of code: EddyError.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidName, .invalidArgument, .malformedEvent, .malformedFrame, .offsetOutOfRange, .notEventBoundary,
            .unknownMessageType, .unsupportedVersion:
            .badRequest
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .streamNotFound, .segmentNotFound: .notFound
        case .streamExists, .eventNumberConflict, .segmentSealed: .conflict
        case .truncated: .gone
        case .frameTooLarge: .contentTooLarge
        case .overloaded: .tooManyRequests
        case .unavailable, .connectionFailed, .shuttingDown, .staleEpoch, .eventNumberGap: .serviceUnavailable
        case .timedOut: .gatewayTimeout
        case .corruptData, .ioError, .internalError: .internalServerError
        }
    }

    /// The error body of `error`, one line.
    static func errorLine(_ error: EddyError) -> String {
        json(["error": "\(error.code)", "message": error.message])
    }

    static func error(_ error: EddyError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if error.code == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"eddy\"" }
        return Response(
            status: status(of: error.code), headers: headers, body: ResponseBody(byteBuffer: line(errorLine(error))))
    }

    static func document(_ object: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: line(json(object))))
    }

    static func json(_ object: [String: Any]) -> String {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    private static func line(_ text: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeString(text)
        buffer.writeString("\n")
        return buffer
    }

    /// The JSON document of a stream: `name` and its `segments` (`number`, `start`, `length`, `sealed`).
    static func stream(_ info: StreamInfo) -> [String: Any] {
        [
            "name": info.name.description,
            "segments": info.segments.map {
                ["number": $0.segment.number, "start": $0.startOffset, "length": $0.length, "sealed": $0.sealed]
                    as [String: Any]
            },
        ]
    }
}

/// The origins whose browser pages may call the gateway: those of `--http-cors-origins` (or any, with `*`), and
/// pages served on the node's admin port (the dashboard's stream viewer), whatever host name the browser used
/// to reach it.
final class AllowedOrigins: Sendable {
    let listed: Set<String>
    private let dashboards = Mutex<Set<String>>([])

    init(_ listed: [String]) { self.listed = Set(listed) }

    /// Allows pages served on `port` over `scheme` (`http` or `https`).
    func allowPages(onPort port: Int, scheme: String) {
        _ = dashboards.withLock { $0.insert("\(scheme):\(port)") }
    }

    func allows(_ origin: String) -> Bool {
        if listed.contains("*") || listed.contains(origin) { return true }
        guard let place = Self.schemeAndPort(origin) else { return false }
        return dashboards.withLock { $0.contains(place) }
    }

    /// `scheme:port` of an origin (`http://host:port`; the scheme's default port when it names none).
    static func schemeAndPort(_ origin: String) -> String? {
        guard let split = origin.range(of: "://") else { return nil }
        let scheme = origin[..<split.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { return nil }
        let host = origin[split.upperBound...]
        if let colon = host.lastIndex(of: ":"), !host[colon...].contains("]"),
            let port = Int(host[host.index(after: colon)...])
        {
            return "\(scheme):\(port)"
        }
        return "\(scheme):\(scheme == "https" ? 443 : 80)"
    }
}

/// Cross-origin requests: a request whose `Origin` is allowed (``AllowedOrigins``) gets
/// `Access-Control-Allow-Origin`; its preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here
/// with the methods and headers the API takes.
struct CrossOrigin: RouterMiddleware {
    typealias Context = BasicRequestContext
    let origins: AllowedOrigins

    static let methods = "GET, PUT, POST, DELETE, OPTIONS"
    static let headers = "Authorization, Content-Type, Accept, Eddy-Writer, Eddy-Sequence, Last-Event-ID"

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let origin = request.headers[.origin], origins.allows(origin) else {
            return try await next(request, context)
        }
        if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
            return Response(
                status: .noContent,
                headers: [
                    .accessControlAllowOrigin: origin, .vary: "Origin", .accessControlAllowMethods: Self.methods,
                    .accessControlAllowHeaders: Self.headers, .accessControlMaxAge: "600",
                ])
        }
        var response = try await next(request, context)
        response.headers[.accessControlAllowOrigin] = origin
        response.headers[.vary] = "Origin"
        response.headers[.accessControlExposeHeaders] = "Content-Type"
        return response
    }
}

/// Turns the router's own errors (no such route, a body over its limit) into the gateway's error documents.
struct ErrorDocuments: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as EddyError {
            return GatewayResponse.error(error)
        } catch let error as HTTPError {
            let code: EddyError.Code = error.status == .contentTooLarge ? .frameTooLarge : .invalidArgument
            let message =
                error.status == .notFound
                ? "no such endpoint: \(request.method) \(request.uri.path) (docs/http.md lists them)"
                : (error.body ?? "\(error.status)")
            var response = GatewayResponse.error(EddyError(code, message))
            if error.status == .notFound || error.status == .methodNotAllowed { response.status = error.status }
            return response
        }
    }
}
