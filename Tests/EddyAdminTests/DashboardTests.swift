import CacheNode
import EddyGateway
import EddyTestSupport
import Foundation
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import Testing
import WireProtocol

@testable import EddyAdmin

/// Opens `url` in headless Chromium (Debian's `chromium`), lets the page run for `budget` milliseconds of
/// virtual time (its timers fire, its fetches go to the real server) and returns the DOM it ends with.
/// `profile`: the browser's profile directory (its localStorage), kept for the caller; nil for a fresh one.
func chromiumDOM(_ url: String, budget: Int, profile kept: String? = nil) throws -> String {
    let profile = kept ?? NSTemporaryDirectory() + "eddy-chromium-" + UUID().uuidString
    defer { if kept == nil { try? FileManager.default.removeItem(atPath: profile) } }
    let result = try runProgram(
        "/usr/bin/chromium",
        [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--user-data-dir=" + profile, "--virtual-time-budget=\(budget)", "--dump-dom", url,
        ])
    try #require(result.status == 0, "chromium exited with \(result.status)")
    return result.stdout
}

/// ``chromiumDOM(_:budget:)`` waiting on a thread of its own: Chromium runs for seconds, and on Swift's
/// cooperative pool the wait would hold up the in-process servers of other tests.
func chromiumDOMAsync(_ url: String, budget: Int, profile: String? = nil) async throws -> String {
    try await offPool { try chromiumDOM(url, budget: budget, profile: profile) }
}

/// The text of the element with `id` in `dom` (the dashboard's cells hold plain text).
func text(ofID id: String, in dom: String) -> String? {
    guard let start = dom.range(of: "id=\"\(id)\"") else { return nil }
    guard let open = dom[start.upperBound...].firstIndex(of: ">") else { return nil }
    let rest = dom[dom.index(after: open)...]
    guard let close = rest.firstIndex(of: "<") else { return nil }
    return String(rest[..<close])
}

/// Waits for `condition`, failing the test after `timeout`.
func within(_ timeout: Duration, _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        try #require(ContinuousClock.now < deadline, "timed out")
        try await Task.sleep(for: .milliseconds(50))
    }
}

@Suite("dashboard in a real browser", .serialized)
struct DashboardTests {
    @Test("the charts' y-axis labels differ however small the values (what-if miss ratios near zero)")
    func axisLabelsDiffer() async throws {
        let html = Dashboard.html
        let start = try #require(html.range(of: "function axisTicks("))
        let end = try #require(html.range(of: "\n}\n", range: start.upperBound..<html.endIndex))
        let function = html[start.lowerBound..<end.upperBound]
        let page = NSTemporaryDirectory() + "eddy-axis-\(UUID().uuidString).html"
        defer { try? FileManager.default.removeItem(atPath: page) }
        try """
        <!doctype html><html><body><pre id="out"></pre><script>
        \(function)
        const cases = [[0, 0.0011], [0, 1], [0, 0.00004], [0, 37], [0, 0.9], [0, 1e-9]];
        document.getElementById("out").textContent =
          JSON.stringify(cases.map(([a, b]) => axisTicks(a, b, 4).labels));
        </script></body></html>
        """.write(toFile: page, atomically: true, encoding: .utf8)
        let dom = try await chromiumDOMAsync("file://" + page, budget: 200)
        let json = try #require(text(ofID: "out", in: dom), "\(dom)")
        let parsed = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String]]
        let labels = try #require(parsed, "\(json)")
        try #require(labels.count == 6)
        for list in labels {
            #expect(list.count == 5 && Set(list).count == 5, "labels \(list) repeat")
        }
        #expect(labels[0] == ["0.0000", "0.0005", "0.0010", "0.0015", "0.0020"])
        #expect(labels[1] == ["0.00", "0.25", "0.50", "0.75", "1.00"])
        #expect(labels[3] == ["0", "10", "20", "30", "40"])
    }

    @Test("headless Chromium shows the ring, hit ratio, throughput and the what-if table, and they change under load")
    func dashboard() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"),
            "Debian's chromium is needed (scripts/install-deps.sh installs it)")
        let rig = try await AdminRig()
        do {
            try await check(rig)
        } catch {
            await rig.shutdown()
            throw error
        }
        await rig.shutdown()
    }

    /// Counters the load task and the test share.
    final class Load: Sendable {
        let stop = Atomic<Bool>(false)
        let reads = Atomic<Int>(0)
        var count: Int { reads.load(ordering: .relaxed) }
    }

    func check(_ rig: AdminRig) async throws {
        let name = try StreamName(parsing: "dash/events")
        let client = try await StoreClient.connect(to: rig.address)
        try await client.createStream(name, segments: 2)
        for s in 0..<2 {
            let segment = SegmentID(stream: name, number: UInt32(s))
            for _ in 0..<8 {
                _ = try await client.append(
                    segment, frames: try frames((0..<200).map { "e\($0)-" + String(repeating: "x", count: 400) }))
            }
        }
        let state = Load()
        // Load: readers scanning both segments again and again while the page is open.
        let load = Task {
            while !state.stop.load(ordering: .relaxed) {
                for s in 0..<2 {
                    let segment = SegmentID(stream: name, number: UInt32(s))
                    var offset: UInt64 = 0
                    let length = try await client.info(segment).length
                    while offset < length && !state.stop.load(ordering: .relaxed) {
                        offset += UInt64(
                            try await client.read(segment, from: offset, maxBytes: 64 << 10).data.readableBytes)
                        state.reads.add(1, ordering: .relaxed)
                    }
                }
            }
        }
        defer {
            state.stop.store(true, ordering: .relaxed)
            load.cancel()
        }
        try await within(.seconds(30)) { state.count > 50 }

        let url = "http://\(rig.nodeAdmin.address)/"
        let first = try await chromiumDOMAsync(url, budget: 5000)
        // The page ran its poll several times and drew every panel from the node's answers.
        let samples = first.firstRange(of: #/data-samples="(\d+)"/#).flatMap {
            Int(first[$0].split(separator: "\"")[1])
        }
        #expect((samples ?? 0) >= 2, "the page polled \(samples ?? 0) times")
        #expect(text(ofID: "node", in: first) == rig.address.description)
        #expect(text(ofID: "member-count", in: first) == "1 of 1 alive")
        let hit = try #require(text(ofID: "hit-ratio-0", in: first).flatMap(Double.init), "no hit ratio in the page")
        #expect(hit > 0 && hit <= 1)
        let throughput = try #require(text(ofID: "throughput-0", in: first).flatMap(Double.init), "no throughput")
        #expect(first.components(separatedBy: "data-policy=").count - 1 == 11, "a what-if row per online policy")
        let note1 = try #require(text(ofID: "whatif-note", in: first))
        #expect(note1.contains("block requests sampled"), "\(note1)")
        #expect(!first.contains("class=\"error\""), "the page reported an error")

        // More load, and the page shows more requests.
        let before = state.count
        try await within(.seconds(30)) { state.count > before + 50 }
        let second = try await chromiumDOMAsync(url, budget: 3000)
        let note2 = try #require(text(ofID: "whatif-note", in: second))
        // Throughput is the rate between the page's last two polls: on a loaded machine one window may see no read
        // finish, so the page must show reads in one of its two visits (the second after more reads were seen).
        let throughput2 = try #require(text(ofID: "throughput-0", in: second).flatMap(Double.init), "no throughput")
        #expect(
            throughput > 0 || throughput2 > 0, "reads ran while the page was open: \(throughput), \(throughput2)")
        func requests(_ note: String) -> Int? {
            note.firstRange(of: #/of (\d+) block requests/#).flatMap { Int(note[$0].split(separator: " ")[1]) }
        }
        func rate(_ note: String) -> Double? {
            note.firstRange(of: #/sample rate ([0-9.e-]+),/#).flatMap {
                Double(note[$0].dropFirst("sample rate ".count).dropLast())
            }
        }
        let r1 = try #require(requests(note1), "\(note1)")
        let r2 = try #require(requests(note2), "\(note2)")
        // The what-if lowers its sampling rate when its replays use more CPU than their budget (a busy machine)
        // and then counts from zero at the new rate: the page shows the lower rate.
        let restarted = try #require(rate(note2)) < (try #require(rate(note1)))
        #expect(r2 > r1 || restarted, "the what-if saw \(r1) then \(r2) requests: \(note1) / \(note2)")
    }

    @Test(
        "the stream viewer follows a stream live through the node's gateway and, after a reload, resumes right after the last event it showed"
    )
    func streamViewer() async throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"),
            "Debian's chromium is needed (scripts/install-deps.sh installs it)")
        let rig = try await GatewayRig()
        var logger = rig.node.core.configuration.logger
        logger.logLevel = .warning
        let link = GatewayLink()
        let admin = try await AdminServer.start(
            address: ServerAddress(host: "127.0.0.1", port: 0), logger: logger,
            install: AdminRoutes.node(rig.node, metrics: MetricsExporter(), gateway: link))
        let profile = NSTemporaryDirectory() + "eddy-viewer-" + UUID().uuidString
        let appending = Load()
        var appender: Task<Void, any Error>?
        do {
            // Before the gateway is linked, the viewer says there is none.
            let none = try await http(admin, "/gateway").json()
            #expect(none["enabled"] as? Bool == false)
            rig.gateway.link(link, dashboardPort: admin.address.port)
            let linked = try await http(admin, "/gateway").json()
            #expect(linked["port"] as? Int == rig.gateway.address.port && linked["scheme"] as? String == "http")

            let base = rig.base
            #expect(try await gatewayCall(.PUT, "\(base)/v1/streams/view/live?segments=1").status == 201)
            func append(_ n: Int) async throws {
                let answer = try await gatewayCall(
                    .POST, "\(base)/v1/streams/view/live/events?key=k", body: "n=\(n)\n",
                    headers: [("Content-Type", "text/plain")])
                try #require(answer.status == 200, "\(answer.body)")
            }
            // Events from before the page opens: the viewer starts at the tail, so it never shows these.
            for n in 0..<5 { try await append(n) }
            appender = Task {
                var n = 5
                while !appending.stop.load(ordering: .relaxed) {
                    try await append(n)
                    n += 1
                    try await Task.sleep(for: .milliseconds(40))
                }
            }
            /// The payload numbers the viewer shows, oldest first, and the body's data-viewer-from.
            func shown(_ dom: String) throws -> (numbers: [Int], from: String?, pointers: [String]) {
                let table = try #require(dom.range(of: "id=\"viewer-events\""), "no viewer in the page")
                let rows = String(dom[table.lowerBound...])
                let numbers = rows.matches(of: #/<td>n=(\d+)</td>/#).map { Int($0.output.1)! }
                let pointers = rows.matches(of: #/data-pointer="([^"]+)"/#).map { String($0.output.1) }
                let from = dom.firstMatch(of: #/data-viewer-from="([^"]+)"/#).map { String($0.output.1) }
                return (numbers.reversed(), from, pointers.reversed())
            }
            let url = "http://\(admin.address)/#stream=view/live&viewer-close-after=5"

            let first = try await chromiumDOMAsync(url, budget: 3000, profile: profile)
            let one = try shown(first)
            #expect(one.from == "tail", "a first visit follows the tail: \(one.from ?? "none")")
            #expect(one.numbers.count == 5, "\(one.numbers); status \(text(ofID: "viewer-status", in: first) ?? "")")
            #expect(one.numbers.first.map { $0 >= 5 } == true, "the events from before the page are not shown")
            #expect(one.numbers == Array((one.numbers.first ?? 0)..<((one.numbers.first ?? 0) + 5)), "\(one.numbers)")
            #expect(text(ofID: "viewer-status", in: first) == "closed after 5 events")

            // More events arrive while the page is closed; the reload resumes right after the last one shown.
            try await Task.sleep(for: .milliseconds(300))
            let second = try await chromiumDOMAsync(url, budget: 3000, profile: profile)
            let two = try shown(second)
            #expect(two.from == one.pointers.last, "resumed from \(two.from ?? "none"), last shown \(one.pointers)")
            #expect(
                two.numbers == Array(((one.numbers.last ?? 0) + 1)...((one.numbers.last ?? 0) + 5)),
                "no gap and no duplicate across the reload: \(one.numbers) then \(two.numbers)")
        } catch {
            appending.stop.store(true, ordering: .relaxed)
            _ = try? await appender?.value
            await admin.close()
            await rig.shutdown()
            try? FileManager.default.removeItem(atPath: profile)
            throw error
        }
        appending.stop.store(true, ordering: .relaxed)
        _ = try? await appender?.value
        await admin.close()
        await rig.shutdown()
        try? FileManager.default.removeItem(atPath: profile)
    }
}
