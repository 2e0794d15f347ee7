import CacheNode
import Foundation
import Hummingbird
import SegmentStore
import StoreServer
import StreamModel
import Synchronization

/// The admin API's routes for a node and for the store (docs/operations.md, "Admin API").
public enum AdminRoutes {
    static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The node's routes: `/` (the dashboard), `/health`, `/ready`, `/cluster`, `/ring`, `/stats`, `/whatif`,
    /// `/streams`, `/queues`, `/queues/journal`, `/dlq`, `/dlq/{id}`, `POST /dlq/redrive`, `POST /dlq/purge`,
    /// `/metrics`, and `/gateway` (where the node's HTTP gateway is, for the dashboard's stream viewer).
    public static func node(
        _ node: CacheNode, metrics: MetricsExporter, gateway: GatewayLink = GatewayLink()
    ) -> (Router<BasicRequestContext>) -> Void {
        let core = node.core
        let name = core.configuration.name
        return { router in
            router.get("health") { _, _ in
                AdminResponse.json(["status": "ok", "role": "node", "node": name])
            }
            router.get("ready") { _, _ in
                let reasons = await core.notReadyReasons()
                return AdminResponse.json(
                    ["ready": reasons.isEmpty, "role": "node", "node": name, "reasons": reasons],
                    status: reasons.isEmpty ? .ok : .serviceUnavailable)
            }
            router.get("/") { _, _ in
                AdminResponse.text(Array(Dashboard.html.utf8), contentType: "text/html; charset=utf-8")
            }
            router.get("gateway") { _, _ in AdminResponse.json(gateway.json) }
            router.get("cluster") { _, _ in AdminResponse.json(await core.clusterJSON()) }
            router.get("ring") { _, _ in AdminResponse.json(core.ringJSON()) }
            router.get("stats") { _, _ in AdminResponse.json(core.statsJSON()) }
            router.get("whatif") { _, _ in
                await AdminResponse.answering { () throws(EddyError) in AdminResponse.json(try core.whatIfJSON()) }
            }
            router.get("streams") { _, _ in
                await AdminResponse.answering { () throws(EddyError) in AdminResponse.json(try await core.streamsJSON())
                }
            }
            router.get("queues") { _, _ in
                await AdminResponse.answering { () throws(EddyError) in
                    AdminResponse.json(try await core.admin("queue.stats", arguments: ""))
                }
            }
            router.get("queues/journal") { request, _ in
                let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 1000
                return await AdminResponse.answering { () throws(EddyError) in
                    AdminResponse.json(try await core.admin("queue.journal", arguments: "{\"limit\":\(limit)}"))
                }
            }
            router.get("dlq") { request, _ in
                var arguments: [String: Any] = [:]
                if let queue = request.uri.queryParameters.get("queue") { arguments["queue"] = queue }
                let text = Self.text(arguments)
                return await AdminResponse.answering { () throws(EddyError) in
                    AdminResponse.json(try await core.admin("dlq.list", arguments: text))
                }
            }
            router.get("dlq/:id") { _, context in
                let id = context.parameters.get("id", as: UInt64.self)
                return await AdminResponse.answering { () throws(EddyError) in
                    guard let id else { throw EddyError(.invalidArgument, "a dead letter's id is a number") }
                    return AdminResponse.json(try await core.admin("dlq.show", arguments: "{\"id\":\(id)}"))
                }
            }
            for action in ["redrive", "purge"] {
                router.post("dlq/\(action)") { request, _ in
                    // The body is the command's JSON arguments; the node checks them as for `eddy admin dlq`.
                    await AdminResponse.answering { () throws(EddyError) in
                        let body = try await AdminResponse.body(request)
                        return AdminResponse.json(try await core.admin("dlq.\(action)", arguments: body))
                    }
                }
            }
            router.get("metrics") { _, _ in
                AdminResponse.text(metrics.render(core.metricSamples()), contentType: prometheusContentType)
            }
        }
    }

    /// The routes of a process that is neither a store nor a node (`eddy mirror`): `/health`, `/status` (the JSON
    /// document `status` makes) and `/metrics` (the series `samples` gives).
    public static func process(
        role: String, status: @escaping @Sendable () -> String, samples: @escaping @Sendable () -> [MetricSample],
        metrics: MetricsExporter
    ) -> (Router<BasicRequestContext>) -> Void {
        { router in
            router.get("health") { _, _ in AdminResponse.json(["status": "ok", "role": role]) }
            router.get("status") { _, _ in AdminResponse.json(status()) }
            router.get("metrics") { _, _ in
                AdminResponse.text(metrics.render(samples()), contentType: prometheusContentType)
            }
        }
    }

    /// The store's routes: `/health`, `/ready`, `/stats`, `/streams`, `/metrics`; the node-only paths answer 404
    /// with a JSON error that says to ask a node.
    public static func store(_ server: StoreServer, metrics: MetricsExporter) -> (Router<BasicRequestContext>) -> Void {
        let listen = server.address.description
        return { router in
            router.get("health") { _, _ in AdminResponse.json(["status": "ok", "role": "store", "listen": listen]) }
            router.get("ready") { _, _ in
                let serving = server.isServing
                return AdminResponse.json(
                    ["ready": serving, "role": "store", "reasons": serving ? [] : ["the store is shutting down"]],
                    status: serving ? .ok : .serviceUnavailable)
            }
            router.get("stats") { _, _ in AdminResponse.json(server.statsJSON()) }
            router.get("streams") { _, _ in AdminResponse.json(server.streamsJSON()) }
            router.get("metrics") { _, _ in
                AdminResponse.text(metrics.render(server.metricSamples()), contentType: prometheusContentType)
            }
            for path in ["ring", "queues", "dlq", "whatif", "cluster", "/"] {
                router.get(RouterPath(stringLiteral: path)) { _, _ in
                    AdminResponse.json(
                        [
                            "error": [
                                "code": "notFound",
                                "message": path == "/"
                                    ? "the dashboard is on the nodes' admin ports"
                                    : "the store has no /\(path); ask a node's admin port",
                            ]
                        ],
                        status: .notFound)
                }
            }
        }
    }

    static func text(_ object: [String: Any]) -> String {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

/// Where the node's HTTP gateway serves, as its admin port's `/gateway` tells the dashboard's stream viewer:
/// `{"enabled": false}` until ``set(host:port:tls:)`` (a node without `--http-listen`), then `{"enabled": true,
/// "host", "port", "scheme"}`. `host` is null when the gateway listens on every address: the page then uses the
/// host name it was itself reached by.
public final class GatewayLink: Sendable {
    private let place = Mutex<(host: String?, port: Int, tls: Bool)?>(nil)

    /// No gateway yet.
    public init() {}

    /// The gateway serves on `host`:`port`, over HTTPS with `tls`.
    public func set(host: String, port: Int, tls: Bool) {
        let wildcard = host == "0.0.0.0" || host == "::" || host.isEmpty
        place.withLock { $0 = (wildcard ? nil : host, port, tls) }
    }

    var json: [String: Any] {
        guard let at = place.withLock({ $0 }) else { return ["enabled": false] }
        return [
            "enabled": true, "host": at.host.map { $0 as Any } ?? NSNull(), "port": at.port,
            "scheme": at.tls ? "https" : "http",
        ]
    }
}
