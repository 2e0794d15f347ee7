import CZstd
import Foundation
import Testing

@testable import CacheCore
@testable import Workloads

@Suite("Trace readers and generators")
struct TraceTests {
    func write(_ text: String, _ suffix: String) -> String {
        let path = NSTemporaryDirectory() + "eddy-trace-\(UUID().uuidString)\(suffix)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    @Test("txt skips non-numeric lines and CR; csv picks columns; block needs its header")
    func formats() throws {
        let txt = write("1\r\n2\r\n*\r\n\r\n3\n", ".txt")
        defer { try? FileManager.default.removeItem(atPath: txt) }
        #expect(try TraceReader.load(path: txt, format: .txt).ids == [1, 2, 3])

        let csv = write("version,time,op,size,lbn\n1,10,r,4096,77\n1,11,r,512,78\n", ".csv")
        defer { try? FileManager.default.removeItem(atPath: csv) }
        let t = try TraceReader.load(path: csv, format: .csv, columns: CSVColumns(parsing: "time=2,id=5,size=4"))
        #expect(t.ids == [77, 78] && t.sizes == [4096, 512])
        #expect(throws: Error.self) { try TraceReader.load(path: csv, format: .csv, columns: CSVColumns(id: 3)) }
        #expect(throws: Error.self) { try CSVColumns(parsing: "size=2") }

        let block = write("time,segment,block,size\n0,3,10,1048576\n1,3,11,1048576\n", ".csv")
        defer { try? FileManager.default.removeItem(atPath: block) }
        let b = try TraceReader.load(path: block, format: .block)
        #expect(b.ids.map { BlockKey(rawValue: $0).block } == [10, 11])
        #expect(b.ids.map { BlockKey(rawValue: $0).segment } == [3, 3])
        #expect(throws: Error.self) { try TraceReader.load(path: csv, format: .block) }
        #expect(throws: Error.self) { try TraceReader.load(path: "/no/such/trace", format: .txt) }
    }

    @Test("zstd-compressed traces read like plain ones; damaged ones are refused")
    func zstd() throws {
        let plain = Array("5\n6\n7\n".utf8)
        var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(plain.count))
        let n = compressed.withUnsafeMutableBytes { out in
            plain.withUnsafeBytes { ZSTD_compress(out.baseAddress, out.count, $0.baseAddress, $0.count, 3) }
        }
        let path = NSTemporaryDirectory() + "eddy-trace-\(UUID().uuidString).txt.zst"
        _ = FileManager.default.createFile(atPath: path, contents: Data(compressed.prefix(n)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try TraceReader.load(path: path, format: .txt).ids == [5, 6, 7])
        _ = FileManager.default.createFile(atPath: path, contents: Data(compressed.prefix(n - 3)))
        #expect(throws: Error.self) { try TraceReader.load(path: path, format: .txt) }
    }

    @Test("generators are seeded, and write and read back in the block format")
    func generators() throws {
        var w = StreamWorkload()
        w.requests = 5_000
        let a = TraceGenerator.stream(w)
        #expect(a.ids == TraceGenerator.stream(w).ids)
        w.seed = 43
        #expect(a.ids != TraceGenerator.stream(w).ids)
        let path = NSTemporaryDirectory() + "eddy-gen-\(UUID().uuidString).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TraceGenerator.writeBlockTrace(a, to: path)
        let back = try TraceReader.load(path: path, format: .block)
        #expect(back.ids == a.ids && back.sizes == a.sizes)
        let z = TraceGenerator.zipf(objects: 1000, alpha: 1.0, requests: 20_000, blockSize: 4096, seed: 1)
        var counts: [UInt64: Int] = [:]
        for id in z.ids { counts[id, default: 0] += 1 }
        let top = counts.values.sorted(by: >)
        #expect(top[0] > 10 * top[99], "zipf skew missing: \(top.prefix(3))")
    }

    @Test("reports: CSV columns, a table, and an SVG curve with one line per policy")
    func reports() {
        let results = [
            SimulationResult(
                policy: "lru", cacheSize: 10, sizeMode: .objects, requests: 100, misses: 50, requestedBytes: 100,
                missedBytes: 50, seconds: 0.1),
            SimulationResult(
                policy: "lru", cacheSize: 1000, sizeMode: .objects, requests: 100, misses: 20, requestedBytes: 100,
                missedBytes: 20, seconds: 0.1),
            SimulationResult(
                policy: "stream", cacheSize: 10, sizeMode: .objects, requests: 100, misses: 40, requestedBytes: 100,
                missedBytes: 40, seconds: 0.1),
        ]
        let csv = Report.csv(results).split(separator: "\n")
        #expect(csv[0] == "policy,cache_size,size_mode,requests,misses,miss_ratio,byte_miss_ratio")
        #expect(csv[1] == "lru,10,objects,100,50,0.500000,0.500000")
        let svg = Report.svg(results, title: "t")
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<polyline").count == 3)
        #expect(svg.contains("miss ratio") && svg.contains("cache size (objects, log scale)"))
        #expect(Report.table(results).contains("stream"))
    }
}
