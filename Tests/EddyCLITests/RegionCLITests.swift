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
