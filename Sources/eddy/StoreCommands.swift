import ArgumentParser
import CNUMA
import CZstd
import CacheNode
import EddyAdmin
import EddyAuth
import EddyConfig
import EddyGateway
import EddyTLS
import Foundation
import Logging
import SegmentStore
import ServiceLifecycle
import StoreServer
import StreamModel
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// Options of a store process, shared by `eddy store` and `eddy up`.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "Journal I/O path: auto (io_uring, else pwrite+fdatasync), io_uring or posix.")
    var io: String = "auto"

    @Option(name: .long, help: "Journal bytes between checkpoints (suffixes K, M, G).")
    var checkpointBytes: String = "64M"

    func backend() throws -> IOBackend {
        guard let b = IOBackend(rawValue: io) else {
            throw ValidationError("unknown --io '\(io)': use auto, io_uring or posix")
        }
        return b
    }
}

/// Opens the store and starts its server, logging the platform facts (which journal I/O path is in use); the
/// journal's sync latency goes to `metrics` (none: not recorded).
func startStore(
    data: String, address: ServerAddress, options: StoreOptions, access: AccessControl, security: SecurityOptions,
    tls: ServerTLS?, metrics: MetricsExporter?
) async throws -> StoreServer {
    let logger = Logger(label: "eddy")
    var configuration = StoreConfiguration(dataDirectory: data, logger: Logger(label: "eddy.store"))
    configuration.ioBackend = try options.backend()
    configuration.checkpointBytes = UInt64(try parseSize(options.checkpointBytes, what: "--checkpoint-bytes"))
    configuration.metricsFactory = metrics?.factory
    let store = try SegmentStore(configuration: configuration)
    logger.info(
        "platform",
        metadata: [
            "journal-io": "\(store.ioPath)",
            "numa-nodes": "\(numa_available() == 0 ? Int(numa_max_node()) + 1 : 1)",
            "zstd": "\(String(cString: ZSTD_versionString()))",
        ])
    do {
        var serverConfiguration = StoreServerConfiguration(address: address)
        serverConfiguration.access = access
        serverConfiguration.limits = security.limits
        serverConfiguration.rates = security.rates()
        serverConfiguration.tls = tls
        let server = try await StoreServer.start(store: store, configuration: serverConfiguration)
        logger.info("eddy store ready", metadata: ["listen": "\(server.address)", "data": "\(data)"])
        return server
    } catch {
        store.close()
        throw error
    }
}

/// Runs a store, its server and its admin server until SIGINT or SIGTERM, then shuts down cleanly (admin last,
/// checkpoint included).
func serveStore(
    data: String, listen: String, options: StoreOptions, security: SecurityOptions, process: ServerProcessOptions
) async throws {
    try process.bootstrapLogging()
    let logger = Logger(label: "eddy")
    let address = try ServerAddress(parsing: listen)
    let access = try await security.access(logger: logger, server: "store \(address)")
    let tls = try security.serverTLS(logger: logger, server: "store \(address)")
    let admin = try process.admin(beside: address)
    let server = try await startStore(
        data: data, address: address, options: options, access: access, security: security, tls: tls,
        metrics: admin?.metrics)
    var services: [any Service] = []
    if let admin {
        do {
            services.append(
                try await admin.start(for: "store", access: access, tls: tls) { AdminRoutes.store(server, metrics: $0) }
            )
        } catch {
            await ClosingService.store(server).close()
            throw error
        }
    }
    services.append(ClosingService.store(server))
    let hangup = reloadOnHangup(tls: tls, access: access, logger: logger)
    defer { hangup.cancel() }
    try await process.serve(services, logger: logger)
}

/// Waits for SIGINT or SIGTERM and returns its number.
func waitForSignal() async -> Int32 {
    let (stream, continuation) = AsyncStream<Int32>.makeStream()
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { continuation.yield(sig) }
        source.resume()
        sources.append(source)
    }
    var iterator = stream.makeAsyncIterator()
    let received = await iterator.next() ?? SIGTERM
    for s in sources { s.cancel() }
    return received
}

struct Store: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the segment store server.",
        discussion: "Serves the store protocol (docs/protocol.md) until Ctrl-C or SIGTERM.")

    @Option(name: .long, help: "The data directory.")
    var data: String

    @Option(name: .long, help: "HOST:PORT to listen on.")
    var listen: String = "127.0.0.1:9099"

    @OptionGroup var options: StoreOptions
    @OptionGroup var security: SecurityOptions
    @OptionGroup var process: ServerProcessOptions

    func run() async throws {
        try await reportingErrors {
            try await serveStore(data: data, listen: listen, options: options, security: security, process: process)
        }
    }
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the embedded default on this machine: a store and three cache nodes.",
        discussion: """
            The store listens on 127.0.0.1:9099 with its data under DIR/store; the nodes on 127.0.0.1:9090, 9091 and
            9092, so every client command's default --server reaches a node. Ctrl-C stops them all.
            """)

    @Option(name: .long, help: "The data directory.")
    var data: String = "./data"

    @Option(name: .long, help: "HOST:PORT for the store.")
    var store: String = "127.0.0.1:9099"

    @Option(name: .long, help: "The nodes' addresses, HOST:PORT,HOST:PORT,...")
    var nodes: String = "127.0.0.1:9090,127.0.0.1:9091,127.0.0.1:9092"

    @Option(name: .long, help: "The nodes' HTTP gateways: auto (each node's port + 200: 9290-9292) or none.")
    var httpListen: String = "auto"

    @OptionGroup var upstream: UpstreamOptions

    @Flag(
        name: .long,
        help: """
            Start with authentication and TLS: makes (once) an authority, a certificate and a tokens file under             DATA/secure and prints the demo token.
            """)
    var secure = false

    @OptionGroup var options: StoreOptions
    @OptionGroup var nodeOptions: NodeOptions
    @OptionGroup var writeBack: WriteBackOptions
    @OptionGroup var security: SecurityOptions
    @OptionGroup var process: ServerProcessOptions

    func validate() throws {
        guard httpListen == "auto" || httpListen == "none" else {
            throw ValidationError("eddy up takes --http-listen auto or none (each node's port + 200)")
        }
        if secure, security.auth != "off" || security.tlsCert != nil {
            throw ValidationError("--secure makes its own --auth and --tls-* settings: give either, not both")
        }
    }

    func run() async throws {
        try await reportingErrors {
            try process.bootstrapLogging()
            let demo =
                secure
                ? try SecureDemo.prepare(
                    data: data,
                    hosts: try ([store] + nodes.split(separator: ",").map(String.init)).map {
                        try ServerAddress(parsing: $0).host
                    }) : nil
            let security = demo?.apply(to: self.security) ?? self.security
            guard process.adminListen == "auto" || process.adminListen == "none" else {
                throw ValidationError("eddy up takes --admin-listen auto or none (each server's port + 100)")
            }
            let logger = Logger(label: "eddy")
            let home = try upstream.addresses()  // empty: this eddy up has its own store
            // A regional ring writes nothing back (its home ring does) unless asked to, which it refuses.
            let objects = try writeBack.objects.location(fallback: home.isEmpty ? "file://\(data)/objects" : "none")
            let storeAddress = try ServerAddress(parsing: store)
            let members = try ServerAddress.list(parsing: nodes)
            let storeAdmin = home.isEmpty ? try process.admin(beside: storeAddress) : nil
            let access = try await security.access(logger: logger, server: "eddy up")
            let serviceToken = try await security.nodeServiceToken(access)
            let tls = try security.serverTLS(logger: logger, server: "eddy up")
            var server: StoreServer?
            if home.isEmpty {
                let started = try await startStore(
                    data: data + "/store", address: storeAddress, options: options, access: access,
                    security: security, tls: tls, metrics: storeAdmin?.metrics)
                Output.shared.line("store  listening on \(started.address), data in \(data)/store")
                server = started
            } else {
                Output.shared.line(
                    "regional ring: no store; reading the home ring \(home.map(\.description).joined(separator: ","))"
                        + (upstream.zone.map { " (zone \($0) first)" } ?? ""))
            }
            var admins: [AdminServer] = []
            var gateways: [HTTPGateway] = []
            var started: [CacheNode] = []
            do {
                if let storeAdmin, let server {
                    admins.append(
                        try await storeAdmin.start(for: "store", access: access, tls: tls) {
                            AdminRoutes.store(server, metrics: $0)
                        })
                    Output.shared.line("store  admin on \(AdminSetup.url(admins.last!.address, tls: tls))")
                }
                for m in members {
                    let admin = try process.admin(beside: m)
                    var c = NodeConfiguration(listen: m, store: server?.address ?? storeAddress, members: members)
                    try upstream.apply(to: &c)
                    try nodeOptions.apply(to: &c)
                    try writeBack.apply(to: &c, fallback: home.isEmpty ? "file://\(data)/objects" : "none")
                    c.access = access
                    c.serviceToken = serviceToken
                    c.limits = security.limits
                    c.rates = security.rates()
                    c.tls = tls
                    c.logger = Logger(label: "eddy.node.\(m.port)")
                    c.metricsFactory = admin?.metrics.factory
                    if let path = c.traceOut { c.traceOut = "\(path).\(m.port)" }  // one trace per node
                    let node = try await CacheNode.start(configuration: c)
                    started.append(node)
                    Output.shared.line("node   listening on \(m), policy \(c.policy), cache \(c.cacheBytes) bytes")
                    let link = GatewayLink()
                    var dashboard: AdminServer?
                    if let admin {
                        dashboard = try await admin.start(for: "node \(m)", access: access, tls: tls) {
                            AdminRoutes.node(node, metrics: $0, gateway: link)
                        }
                        admins.append(dashboard!)
                        Output.shared.line(
                            "node   admin and dashboard on \(AdminSetup.url(admins.last!.address, tls: tls))")
                    }
                    if httpListen == "auto" {
                        let address = try AdminListen.auto.address(beside: m, offset: 200, what: "http")!
                        gateways.append(
                            try await startGateway(
                                address, node: ServerAddress(host: m.host, port: node.port), access: access, tls: tls,
                                cors: nodeOptions.httpCorsOrigins))
                        gateways.last!.link(link, dashboardPort: dashboard?.address.port)
                        Output.shared.line(
                            "node   http gateway on \(tls == nil ? "http" : "https")://\(gateways.last!.address)/v1/streams"
                        )
                    }
                }
            } catch {
                for g in gateways { await g.close() }
                for n in started { await n.close() }
                for a in admins { await a.close() }
                if let server { await ClosingService.store(server).close() }
                throw error
            }
            Output.shared.line("write-back to \(objects.map(\.description) ?? "nothing (--object-store none)")")
            if let demo {
                Output.shared.line("secure: tokens in \(demo.tokens), TLS authority \(demo.authority)")
                Output.shared.line("secure: in another terminal:")
                Output.shared.line("  export EDDY_TOKEN=\(demo.demoToken) EDDY_TLS_CA=\(demo.authority)")
            }
            Output.shared.line("eddy up: try `eddy create demo/events --segments 4` in another terminal; Ctrl-C stops")
            Output.shared.flush()
            // Shut down in reverse: the nodes drain first, then the store checkpoints, the admin servers go last.
            let services: [any Service] =
                admins + (server.map { [ClosingService.store($0)] } ?? [])
                + started.map { ClosingService.node($0, grace: process.drainGrace) } + gateways
            let hangup = reloadOnHangup(tls: tls, access: access, logger: logger)
            defer { hangup.cancel() }
            try await process.serve(services, logger: logger)
        }
    }
}
