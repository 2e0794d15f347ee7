import EddyClient
import Foundation
import NIOCore
import StreamModel
import Testing
import WireProtocol

/// The what-if of a real node process, checked against `eddy sim` on the node's own recorded trace.
@Suite("what-if hit ratios of a node against eddy sim", .serialized)
struct WhatIfCLITests {
    @Test("a node's what-if is within 0.02 of eddy sim on its --trace-out; eddy admin whatif asks the admin API")
    func whatIfMatchesSim() async throws {
        let trace = temporaryPath("whatif-trace") + ".csv"
        defer { try? FileManager.default.removeItem(atPath: trace) }
        let adminPort = try freePort()
        let ring = try Ring(
            nodes: 1,
            nodeArguments: [
                "--block-size", "4K", "--cache-bytes", "1M", "--near-cache-share", "0", "--trace-out", trace,
                // The sampling rate is the default; the CPU governor is off because a debug build replays the
                // shadows an order of magnitude slower than the release build it is tuned for.
                "--whatif-cpu-budget", "1",
            ],
            environment: ["EDDY_NODE_ADMIN_LISTEN": "127.0.0.1:\(adminPort)"])
        defer { ring.stopAll() }

        // 4 segments of 2 MiB: 2048 blocks of 4 KiB, against an owner cache of 224 blocks.
        let name = try StreamName(parsing: "whatif/s")
        let store = try await RingTests.client([ring.storeAddress])
        try await store.createStream(name, segments: 4)
        try await RingTests.fill(store, name, segments: 4, count: 10_000, size: 180)
        await store.close()
        let lengths = try await {
            let c = try await RingTests.client(ring.nodeAddresses)
            defer { Task { await c.close() } }
            var out: [UInt64] = []
            for s in 0..<4 { out.append(try await c.info(SegmentID(stream: name, number: UInt32(s))).length) }
            return out
        }()

        let nodes = ring.nodeAddresses
        // Readers pick blocks with skewed popularity (a hot head of each segment, a long tail), so the policies
        // and sizes differ.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for r in 0..<4 {
                group.addTask {
                    let c = try await RingTests.client(nodes)
                    var rng = SeededRandom(seed: UInt64(r + 1))
                    for _ in 0..<3000 {
                        let s = Int(rng.next() % 4)
                        let blocks = lengths[s] / 4096
                        // Squaring a uniform number favours the low blocks: block b has density ~ 1/sqrt(b).
                        let u = rng.unit()
                        let block = UInt64(u * u * Double(blocks))
                        _ = try await c.read(
                            SegmentID(stream: name, number: UInt32(s)), from: block * 4096, maxBytes: 4096)
                    }
                    await c.close()
                }
            }
            try await group.waitForAll()
        }

        let text = try await eddyAsync([
            "admin", "whatif", "--server", ring.nodeAddresses[0], "--admin", "127.0.0.1:\(adminPort)", "--format",
            "json",
        ])
        try #require(text.status == 0, "\(text.stderr)")
        let answer = try #require(try JSONSerialization.jsonObject(with: Data(text.stdout.utf8)) as? [String: Any])
        let rows = try #require(answer["rows"] as? [[String: Any]])
        #expect((answer["sample_rate"] as? Double) == 1, "the default rate samples every request of a small cache")
        #expect((answer["restarts"] as? Int) == 0, "the CPU governor did not lower the rate")
        #expect((answer["requests"] as? Int ?? 0) >= 12_000)
        let policies = Set(rows.compactMap { $0["policy"] as? String })
        #expect(policies.count == 11, "every online policy: \(policies.sorted())")
        let sizes = Array(Set(rows.compactMap { ($0["cache_bytes"] as? NSNumber)?.int64Value })).sorted()
        // The owner cache is 7/8 of --cache-bytes (the last eighth is left to answers in flight): 224 blocks.
        let owner: Int64 = 1_048_576 * 7 / 8
        #expect(sizes == [owner / 4, owner / 2, owner, owner * 2, owner * 4])

        // The table, as an operator reads it.
        let table = try await eddyAsync([
            "admin", "whatif", "--server", ring.nodeAddresses[0], "--admin", "127.0.0.1:\(adminPort)",
        ])
        #expect(
            table.status == 0 && table.stdout.contains("s3fifo") && table.stdout.contains("3.5MiB"), "\(table.stdout)")

        // Stopping the node writes the rest of its trace; eddy sim replays it at the same sizes.
        ring.nodes[0].stop()
        let csv = temporaryPath("whatif-sim") + ".csv"
        defer { try? FileManager.default.removeItem(atPath: csv) }
        let sim = try await eddyAsync([
            "sim", trace, "--format", "block", "--bytes", "--object-size", "4096",
            "--policies", policies.sorted().joined(separator: ","),
            "--sizes", sizes.map(String.init).joined(separator: ","), "--out", csv,
        ])
        try #require(sim.status == 0, "\(sim.stderr)")
        var simulated: [String: Double] = [:]
        for line in try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").dropFirst() {
            let f = line.split(separator: ",")
            simulated["\(f[0])@\(f[1])"] = 1 - Double(f[5])!
        }
        #expect(simulated.count == rows.count)
        var spread: [Double] = []
        var worst = 0.0
        defer { FileHandle.standardError.write(Data("what-if against eddy sim: largest difference \(worst)\n".utf8)) }
        for row in rows {
            let key = "\(row["policy"] as? String ?? "")@\((row["cache_bytes"] as? NSNumber)?.int64Value ?? 0)"
            let expected = try #require(simulated[key], "eddy sim has no \(key)")
            let got = try #require(row["hit_ratio"] as? Double)
            spread.append(expected)
            worst = max(worst, abs(got - expected))
            #expect(abs(got - expected) <= 0.02, "\(key): what-if \(got), eddy sim \(expected)")
        }
        // The workload separates the sizes: the figures are not all one number.
        #expect((spread.max() ?? 0) - (spread.min() ?? 0) > 0.1, "\(spread)")
    }
}
