import EddyTLS
import EddyTestSupport
import Foundation
import Testing

/// TLS across real processes: the flags of every server and client command, mutual TLS between the servers,
/// SIGHUP reloads, and `eddy up --secure`.
@Suite("TLS across processes", .serialized)
struct TLSCLITests {
    static let tokens = """
        {"tokens": [
          {"token": "t-service", "principal": "node-service", "grants": [{"scope": "*", "roles": ["admin"]}]},
          {"token": "t-alice", "principal": "alice", "grants": [{"scope": "tenant-a/*", "roles": ["read", "write", "admin"]}]}
        ]}
        """

    /// The admin URL a server's log names (`admin listening admin=https://HOST:PORT/`), as HOST:PORT.
    static func adminAddress(in log: String) -> String? {
        guard let range = log.range(of: #"admin=https://[0-9.]+:[0-9]+/"#, options: .regularExpression) else {
            return nil
        }
        return String(log[range].dropFirst("admin=https://".count).dropLast())
    }

    @Test(
        "a ring with mutual TLS and tokens: clients with a certificate read and write through every node, nodes forward to each other and to the store over TLS, the admin port is HTTPS; a client without a certificate is refused"
    )
    func mutualRing() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let server = try files.write("server")
        let client = try files.write("client")
        let tokensPath = files.folder + "/tokens.json"
        try Self.tokens.write(toFile: tokensPath, atomically: true, encoding: .utf8)
        let tlsServer = [
            "--tls-cert", server.certificate, "--tls-key", server.key, "--tls-ca", files.caPath, "--tls-mutual",
            "--auth", "tokens:\(tokensPath)",
        ]
        let ring = try Ring(nodeArguments: tlsServer + ["--service-token", "t-service"], storeArguments: tlsServer)
        defer { ring.stopAll() }
        let tlsClient = ["--tls-ca", files.caPath, "--tls-cert", client.certificate, "--tls-key", client.key]
        func run(_ arguments: [String], input: String = "", token: String = "t-alice") async throws -> CommandResult {
            try await eddyAsync(arguments + tlsClient + ["--token", token], input: input)
        }
        let (n0, n1, n2) = (ring.nodeAddresses[0], ring.nodeAddresses[1], ring.nodeAddresses[2])
        let created = try await run(["create", "tenant-a/tls", "--segments", "4", "--server", n0])
        #expect(created.status == 0, "\(created.stderr)")
        let lines = (0..<100).map { "secret \($0)" }
        let appended = try await run(
            ["append", "tenant-a/tls", "--server", n1], input: lines.joined(separator: "\n") + "\n")
        #expect(appended.status == 0, "\(appended.stderr)")
        for node in [n0, n1, n2] {
            let read = try await run(["read", "tenant-a/tls", "--server", node])
            #expect(read.status == 0, "\(node): \(read.stderr)")
            #expect(Set(read.stdout.split(separator: "\n").map(String.init)) == Set(lines), "\(node)")
        }
        // The ring formed over TLS: every node counts the others as members.
        let ringState = try await run(["admin", "stats", "--server", n2, "--format", "json"], token: "t-service")
        #expect(ringState.stdout.contains(n0) && ringState.stdout.contains(n1), "\(ringState.stdout.prefix(400))")

        // Without a client certificate, or without TLS at all, the node refuses.
        let anonymous = try await eddyAsync(
            ["list", "--server", n0, "--tls-ca", files.caPath, "--token", "t-alice"])
        #expect(anonymous.status != 0, "a client without a certificate listed: \(anonymous.stdout)")
        let plain = try await eddyAsync(["list", "--server", n0, "--token", "t-alice"])
        #expect(plain.status != 0 && plain.stderr.contains("TLS"), "\(plain.stderr)")

        // The admin port speaks HTTPS with the same certificate.
        let admin = try #require(Self.adminAddress(in: ring.nodes[0].log), "\(ring.nodes[0].log.suffix(2000))")
        let stats = try await run(["admin", "stats", "--server", n0, "--admin", admin], token: "t-service")
        #expect(stats.status == 0 && stats.stdout.contains("hits"), "\(stats.stderr)")
    }

    @Test("SIGHUP reloads a server's certificate (new connections see it) and its tokens file (a new token works)")
    func hangupReload() async throws {
        let files = try CertificateFiles()
        defer { files.remove() }
        let server = try files.write("server")
        let tokensPath = files.folder + "/tokens.json"
        try Self.tokens.write(toFile: tokensPath, atomically: true, encoding: .utf8)
        let folder = temporaryPath("tls-reload")
        let address = "127.0.0.1:\(try freePort())"
        let store = try ServerProcess(
            [
                "store", "--data", folder, "--listen", address, "--tls-cert", server.certificate, "--tls-key",
                server.key, "--auth", "tokens:\(tokensPath)",
            ], log: folder + ".log", marker: "eddy store ready")
        defer {
            store.stop()
            try? FileManager.default.removeItem(atPath: folder)
            try? FileManager.default.removeItem(atPath: folder + ".log")
        }
        let before = try await eddyAsync(["list", "--server", address, "--tls-ca", files.caPath, "--token", "t-alice"])
        #expect(before.status == 0, "\(before.stderr)")
        let newcomer = try await eddyAsync(["list", "--server", address, "--tls-ca", files.caPath, "--token", "t-new"])
        #expect(newcomer.status != 0 && newcomer.stderr.contains("not valid"), "\(newcomer.stderr)")

        // A certificate of another authority, a new token, then SIGHUP.
        let next = try CertificateFiles()
        defer { next.remove() }
        let (certificate, key) = try next.authority.issue(hosts: ["127.0.0.1"])
        try certificate.write(toFile: server.certificate, atomically: true, encoding: .utf8)
        try key.write(toFile: server.key, atomically: true, encoding: .utf8)
        let withNewcomer = Self.tokens.replacingOccurrences(
            of: "\n]}",
            with: """
                ,
                  {"token": "t-new", "principal": "new", "grants": [{"scope": "new/*", "roles": ["read"]}]}
                ]}
                """)
        #expect(withNewcomer.contains("t-new"))
        try withNewcomer.write(toFile: tokensPath, atomically: true, encoding: .utf8)
        #expect(kill(store.pid, SIGHUP) == 0)
        let reloaded = Date().addingTimeInterval(10)
        while Date() < reloaded, !store.log.contains("reloaded (SIGHUP)") {
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Task.sleep(for: .milliseconds(300))  // both reloads logged

        let oldAuthority = try await eddyAsync(
            ["list", "--server", address, "--tls-ca", files.caPath, "--token", "t-alice"])
        #expect(oldAuthority.status != 0 && oldAuthority.stderr.contains("not trusted"), "\(oldAuthority.stderr)")
        let newAuthority = try await eddyAsync(
            ["list", "--server", address, "--tls-ca", next.caPath, "--token", "t-new"])
        #expect(newAuthority.status == 0, "\(newAuthority.stderr)\n\(store.log.suffix(1500))")
        #expect(store.process.isRunning)
    }

    @Test("eddy up --secure starts with tokens and TLS and prints a token that works; without it nothing is served")
    func upSecure() async throws {
        let folder = temporaryPath("up-secure")
        let store = "127.0.0.1:\(try freePort())"
        let nodes = try (0..<3).map { _ in "127.0.0.1:\(try freePort())" }
        let up = try ServerProcess(
            [
                "up", "--data", folder, "--secure", "--store", store, "--nodes", nodes.joined(separator: ","),
                "--admin-listen", "none", "--http-listen", "none",
            ],
            log: folder + ".log", marker: "eddy up: try", output: folder + ".out")
        defer {
            up.stop()
            try? FileManager.default.removeItem(atPath: folder)
            try? FileManager.default.removeItem(atPath: folder + ".log")
            try? FileManager.default.removeItem(atPath: folder + ".out")
        }
        let environment = secureEnvironment(up.output)
        #expect(environment["EDDY_TLS_CA"]?.hasSuffix("/secure/ca.pem") == true, "\(up.output)")
        #expect((environment["EDDY_TOKEN"]?.count ?? 0) >= 32, "\(up.output)")
        let created = try await eddyAsync(
            ["create", "demo/secure", "--segments", "2", "--server", nodes[0]], environment: environment)
        #expect(created.status == 0, "\(created.stderr)")
        let appended = try await eddyAsync(
            ["append", "demo/secure", "--server", nodes[1]], input: "one\ntwo\n", environment: environment)
        #expect(appended.status == 0, "\(appended.stderr)")
        let read = try await eddyAsync(["read", "demo/secure", "--server", nodes[2]], environment: environment)
        #expect(Set(read.stdout.split(separator: "\n")) == ["one", "two"], "\(read.stderr)")

        var noToken = environment
        noToken["EDDY_TOKEN"] = nil
        let refused = try await eddyAsync(["list", "--server", nodes[0]], environment: noToken)
        #expect(refused.status != 0 && refused.stderr.contains("requires a token"), "\(refused.stderr)")
    }
}
