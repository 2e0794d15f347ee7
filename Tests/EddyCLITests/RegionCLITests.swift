import EddyTestSupport
import Foundation
import Testing

/// `eddy up --upstream-ring` and `eddy node --upstream-ring` as a user runs them: a regional ring without a store
/// beside a home `eddy up`, and the settings a regional node refuses.
@Suite("regional rings as real processes", .serialized)
struct RegionCLITests {
    @Test(
        "eddy up --upstream-ring starts a regional ring without a store: creates, appends and reads sent to it reach the home ring"
    )
    func regionalUp() async throws {
        let folder = temporaryPath("region")
        let store = "127.0.0.1:\(try freePort())"
        let homeNodes = try (0..<2).map { _ in "127.0.0.1:\(try freePort())" }
        let regionalNodes = try (0..<2).map { _ in "127.0.0.1:\(try freePort())" }
        let home = try ServerProcess(
            [
                "up", "--data", folder + "/home", "--store", store, "--nodes", homeNodes.joined(separator: ","),
                "--admin-listen", "none", "--http-listen", "none", "--object-store", "none",
            ],
            log: folder + "-home.log", marker: "eddy up: try", output: folder + "-home.out")
        defer { home.stop() }
        let region = try ServerProcess(
            [
                "up", "--data", folder + "/region", "--nodes", regionalNodes.joined(separator: ","),
                "--upstream-ring", homeNodes.joined(separator: ","), "--admin-listen", "none", "--http-listen", "none",
            ],
            log: folder + "-region.log", marker: "eddy up: try", output: folder + "-region.out")
        defer {
            region.stop()
            for path in [
                folder, folder + "-home.log", folder + "-home.out", folder + "-region.log", folder + "-region.out",
            ] {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
        #expect(region.output.contains("regional ring: no store; reading the home ring"), "\(region.output)")
        #expect(!region.output.contains("store  listening"), "a regional eddy up starts no store")
        #expect(region.output.contains("write-back to nothing"), "\(region.output)")

        let created = try await eddyAsync(["create", "geo/cli", "--segments", "2", "--server", regionalNodes[0]])
        #expect(created.status == 0, "\(created.stderr)")
        let lines = (0..<40).map { "event-\($0)" }
        let appended = try await eddyAsync(
            ["append", "geo/cli", "--server", regionalNodes[1]], input: lines.joined(separator: "\n") + "\n")
        #expect(appended.status == 0, "\(appended.stderr)")
        // Read through the regional ring and at home: the same events (the stream is the home store's).
        let there = try await eddyAsync(["read", "geo/cli", "--server", regionalNodes[0]])
        let here = try await eddyAsync(["read", "geo/cli", "--server", homeNodes[0]])
        #expect(there.status == 0 && here.status == 0, "\(there.stderr) \(here.stderr)")
        #expect(Set(there.stdout.split(separator: "\n").map(String.init)) == Set(lines), "\(there.stdout)")
        #expect(there.stdout.split(separator: "\n").sorted() == here.stdout.split(separator: "\n").sorted())
        let info = try await eddyAsync(["info", "geo/cli", "--server", store])
        #expect(info.stdout.contains("geo/cli/00000001"), "the home store has the stream: \(info.stdout)")

        // Its stats say where it reads from.
        let stats = try await eddyAsync(["admin", "stats", "--server", regionalNodes[0], "--format", "json"])
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any], "\(stats.stdout)")
        #expect(document["upstream_ring"] as? [String] == homeNodes, "\(document)")
        #expect(document["upstream_read_bytes"] is Int)
    }

    /// `eddy up --secure` in `folder`: its nodes and the environment (token, CA) its output says to use.
    static func secureUp(_ folder: String) throws -> (ServerProcess, [String], [String: String]) {
        let store = "127.0.0.1:\(try freePort())"
        let nodes = try (0..<2).map { _ in "127.0.0.1:\(try freePort())" }
        let up = try ServerProcess(
            [
                "up", "--data", folder, "--secure", "--store", store, "--nodes", nodes.joined(separator: ","),
                "--admin-listen", "none", "--http-listen", "none", "--object-store", "none",
            ],
            log: folder + ".log", marker: "eddy up: try", output: folder + ".out")
        return (up, nodes, secureEnvironment(up.output))
    }

    @Test(
        "eddy mirror between two clusters with tokens and TLS, each side its own: the target reads as the source; a missing token is refused at once"
    )
    func mirrorWithCredentials() async throws {
        let folder = temporaryPath("mirror-secure")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let (home, homeNodes, homeEnv) = try Self.secureUp(folder + "/home")
        defer { home.stop() }
        let (other, otherNodes, otherEnv) = try Self.secureUp(folder + "/other")
        defer {
            other.stop()
            try? FileManager.default.removeItem(atPath: folder)
        }
        let homeToken = try #require(homeEnv["EDDY_TOKEN"], "\(home.output)")
        let otherToken = try #require(otherEnv["EDDY_TOKEN"], "\(other.output)")
        #expect(homeToken != otherToken)
        let created = try await eddyAsync(
            ["create", "geo/secure", "--segments", "2", "--server", homeNodes[0]], environment: homeEnv)
        #expect(created.status == 0, "\(created.stderr)")
        let lines = (0..<30).map { "secure-\($0)" }
        let appended = try await eddyAsync(
            ["append", "geo/secure", "--server", homeNodes[1]], input: lines.joined(separator: "\n") + "\n",
            environment: homeEnv)
        #expect(appended.status == 0, "\(appended.stderr)")
        let admin = "127.0.0.1:\(try freePort())"
        let arguments = [
            "mirror", "--from", homeNodes.joined(separator: ","), "--to", otherNodes.joined(separator: ","),
            "--streams", "geo/*", "--admin-listen", admin, "--from-token", homeToken,
            "--from-tls-ca", homeEnv["EDDY_TLS_CA"] ?? "", "--to-tls-ca", otherEnv["EDDY_TLS_CA"] ?? "",
        ]
        // Without the target's token: refused, with the reason, not retried for ever.
        let refused = try await eddyAsync(arguments)
        #expect(refused.status != 0 && refused.stderr.contains("the target cluster (--to)"), "\(refused.stderr)")
        let mirror = try ServerProcess(
            arguments + ["--to-token", otherToken], log: folder + "-mirror.log", marker: "eddy mirror running")
        defer {
            mirror.stop()
            try? FileManager.default.removeItem(atPath: folder + "-mirror.log")
        }
        var same = false
        var there = ""
        for _ in 0..<60 where !same {
            let here = try await eddyAsync(
                ["read", "geo/secure", "--server", homeNodes[0], "--format", "json"], environment: homeEnv)
            there = try await eddyAsync(
                ["read", "geo/secure", "--server", otherNodes[0], "--format", "json"], environment: otherEnv
            ).stdout
            same = here.status == 0 && here.stdout.split(separator: "\n").count == 30 && here.stdout == there
            if !same { try await Task.sleep(for: .milliseconds(500)) }
        }
        #expect(same, "target: \(there)\n\(mirror.log.suffix(2000))")
        let status = try await eddyAsync(["mirror", "status", "--admin", admin])
        #expect(status.status == 0 && status.stdout.contains("geo/secure"), "\(status.stdout)\(status.stderr)")
        #expect(status.stdout.contains("copied: 30 events"), "\(status.stdout)")
    }

    @Test("a regional node refuses write-back and a zone without a ring, with the reason")
    func badSettings() async throws {
        let me = "127.0.0.1:\(try freePort())"
        let other = "127.0.0.1:\(try freePort())"
        let folder = temporaryPath("region-objects")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let r1 = try await eddyAsync([
            "node", "--listen", me, "--members", me, "--upstream-ring", other, "--object-store", "file://" + folder,
            "--admin-listen", "none",
        ])
        #expect(r1.status != 0 && r1.stderr.contains("does not write back"), "\(r1.stderr)")
        let r2 = try await eddyAsync([
            "node", "--listen", me, "--members", me, "--upstream-zone", "a", "--admin-listen", "none",
        ])
        #expect(r2.status != 0 && r2.stderr.contains("--upstream-zone needs --upstream-ring"), "\(r2.stderr)")
        let r3 = try await eddyAsync([
            "node", "--listen", me, "--members", me, "--upstream-ring", me, "--admin-listen", "none",
        ])
        #expect(r3.status != 0 && r3.stderr.contains("a member of this ring"), "\(r3.stderr)")
    }
}
