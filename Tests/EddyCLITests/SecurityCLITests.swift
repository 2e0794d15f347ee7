import EddyClient
import EddyTestSupport
import Foundation
import StoreClient
import StreamModel
import Testing
import WireProtocol

/// Tokens and roles across a ring of real processes: clients authenticate to the nodes, the nodes to the store
/// and to each other with their service identity, and each principal gets only what its grants allow.
@Suite("access control across a ring, as real processes", .serialized)
struct SecurityCLITests {
    static let tokens = """
        {"tokens": [
          {"token": "t-service", "principal": "node-service", "grants": [{"scope": "*", "roles": ["admin"]}]},
          {"token": "t-admin", "principal": "alice", "grants": [{"scope": "tenant-a/*", "roles": ["admin"]}]},
          {"token": "t-writer", "principal": "writer", "grants": [{"scope": "tenant-a/*", "roles": ["write"]}]},
          {"token": "t-reader", "principal": "reader", "grants": [{"scope": "tenant-a/*", "roles": ["read"]}]},
          {"token": "t-bob", "principal": "bob", "grants": [{"scope": "tenant-b/*", "roles": ["read", "write", "admin"]}]}
        ]}
        """

    static func tokensFile() throws -> String {
        let path = temporaryPath("tokens") + ".json"
        try tokens.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test(
        "tenants across three nodes: each principal does what its grants allow, through any node; the rest is refused, listed by nobody else, and audited"
    )
    func ring() async throws {
        let file = try Self.tokensFile()
        let ring = try Ring(
            nodeArguments: ["--auth", "tokens:\(file)", "--service-token", "t-service"],
            storeArguments: ["--auth", "tokens:\(file)"])
        defer { ring.stopAll() }
        let (n0, n1, n2) = (ring.nodeAddresses[0], ring.nodeAddresses[1], ring.nodeAddresses[2])
        func run(_ arguments: [String], token: String?, input: String = "") async throws -> CommandResult {
            try await eddyAsync(arguments + (token.map { ["--token", $0] } ?? []), input: input)
        }

        let createdA = try await run(
            ["create", "tenant-a/orders", "--segments", "4", "--server", n0], token: "t-admin")
        #expect(createdA.status == 0, "\(createdA.stderr)")
        let createdB = try await run(["create", "tenant-b/private", "--segments", "1", "--server", n1], token: "t-bob")
        #expect(createdB.status == 0, "\(createdB.stderr)")
        let lines = (0..<200).map { "order \($0)" }
        let appended = try await run(
            ["append", "tenant-a/orders", "--server", n1], token: "t-writer",
            input: lines.joined(separator: "\n") + "\n")
        #expect(appended.status == 0, "\(appended.stderr)")
        // Reads through each node: most segments are owned elsewhere, so the node forwards with its own identity.
        for node in [n0, n1, n2] {
            let read = try await run(["read", "tenant-a/orders", "--server", node], token: "t-reader")
            #expect(read.status == 0, "\(read.stderr)")
            #expect(Set(read.stdout.split(separator: "\n").map(String.init)) == Set(lines))
        }
        // The token may also come from the environment.
        let fromEnvironment = try await eddyAsync(
            ["info", "tenant-a/orders", "--server", n2], environment: ["EDDY_TOKEN": "t-reader"])
        #expect(fromEnvironment.status == 0, "\(fromEnvironment.stderr)")

        // Refusals: a role the grant lacks, another tenant's stream, no token, a wrong one.
        for (arguments, token, says) in [
            (["append", "tenant-a/orders", "--server", n2], "t-reader", "reader may not write tenant-a/orders"),
            (["read", "tenant-a/orders", "--server", n0], "t-writer", "writer may not read tenant-a/orders"),
            (["delete", "tenant-a/orders", "--server", n0], "t-writer", "writer may not admin tenant-a/orders"),
            (["read", "tenant-a/orders", "--server", n1], "t-bob", "bob may not see tenant-a/orders"),
            (["info", "tenant-b/private", "--server", n2], "t-admin", "alice may not see tenant-b/private"),
            (["read", "tenant-a/orders", "--server", n0], nil, "requires a token"),
            (["read", "tenant-a/orders", "--server", n0], "t-nobody", "the token is not valid"),
        ] as [([String], String?, String)] {
            let r = try await run(arguments, token: token, input: "x\n")
            #expect(r.status != 0, "\(arguments) with \(token ?? "no token") succeeded")
            #expect(r.stderr.contains(says), "\(arguments) with \(token ?? "no token"): \(r.stderr)")
        }
        // Listings show each principal only its own tenant's streams.
        let bobs = try await run(["list", "--server", n0], token: "t-bob")
        #expect(bobs.stdout.contains("tenant-b/private") && !bobs.stdout.contains("tenant-a"), "\(bobs.stdout)")
        let readers = try await run(["list", "--server", n2], token: "t-reader")
        #expect(readers.stdout.contains("tenant-a/orders") && !readers.stdout.contains("tenant-b"), "\(readers.stdout)")

        // A client's token never stands in for a node: node-to-node messages need the service identity.
        var configuration = EddyClient.Configuration(servers: [try ServerAddress(parsing: n0)])
        configuration.token = "t-admin"
        let client = try await EddyClient.connect(configuration)
        let view = RingView(from: n1, epoch: 1, fingerprint: 0, members: [])
        do {
            _ = try await client.send(.heartbeat(view))
            Issue.record("a tenant admin's heartbeat was answered")
        } catch {
            #expect(error.code == .forbidden, "\(error)")
        }
        await client.close()

        // The store itself refuses tenants what they may not do there, too.
        let direct = try await run(["read", "tenant-a/orders", "--server", ring.storeAddress], token: "t-bob")
        #expect(direct.status != 0 && direct.stderr.contains("bob may not"), "\(direct.stderr)")

        // The admin HTTP API: probes open, everything else for administrators (admin on *) only.
        let log = ring.nodes[0].log
        let admin = try #require(
            log.range(of: #"admin=http://[0-9.]+:[0-9]+"#, options: .regularExpression).map {
                String(log[$0].dropFirst("admin=http://".count))
            })
        func status(_ path: String, _ token: String?) throws -> String {
            try runProgram(
                "/usr/bin/curl",
                ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(admin)\(path)"]
                    + (token.map { ["-H", "Authorization: Bearer \($0)"] } ?? [])
            ).stdout
        }
        #expect(try status("/health", nil) == "200")
        #expect(try status("/stats", nil) == "401")
        #expect(try status("/stats", "t-nobody") == "401")
        #expect(try status("/stats", "t-admin") == "403", "a tenant's admin is not the server's")
        #expect(try status("/stats", "t-service") == "200")
        let stats = try await eddyAsync(["admin", "stats", "--server", n0, "--admin", admin, "--token", "t-service"])
        #expect(stats.status == 0 && stats.stdout.contains("hit_ratio"), "\(stats.stderr)")
        let refusedStats = try await eddyAsync([
            "admin", "stats", "--server", n0, "--admin", admin, "--token", "t-reader",
        ])
        #expect(
            refusedStats.status != 0 && refusedStats.stderr.contains("may not use the admin API"),
            "\(refusedStats.stderr)")

        // Audit: refusals and admin actions, with the principal.
        let logs = ring.nodes.map(\.log).joined()
        #expect(logs.contains("refused") && logs.contains("principal=reader"), "no audit entry of reader's refusal")
        #expect(logs.contains("admin action") && logs.contains("principal=alice"), "no audit entry of alice's create")
    }

    @Test("a node with --auth but without a service token, or with a tenant's token as one, does not start")
    func serviceTokenRequired() throws {
        let file = try Self.tokensFile()
        for (extra, says) in [([], "--service-token"), (["--service-token", "t-admin"], "admin on *")] {
            let me = "127.0.0.1:\(try freePort())"
            let r = try eddy(["node", "--listen", me, "--members", me, "--auth", "tokens:\(file)"] + extra)
            #expect(r.status != 0)
            #expect(r.stderr.contains(says), "\(r.stderr)")
        }
        for auth in ["tokens:/nonexistent.json", "jwt:/nonexistent.json"] {
            let missing = try eddy(["store", "--data", temporaryPath("nostore"), "--auth", auth])
            #expect(missing.status != 0 && missing.stderr.contains("/nonexistent.json"), "\(missing.stderr)")
        }
        let bad = try eddy(["store", "--data", temporaryPath("nostore"), "--auth", "ldap:x"])
        #expect(bad.status != 0 && bad.stderr.contains("off, tokens:FILE, jwt:KEYFILE or k8s:FILE"), "\(bad.stderr)")
    }
}
