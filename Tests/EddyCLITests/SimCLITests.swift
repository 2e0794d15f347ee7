import Foundation
import Testing

@Suite("eddy sim")
struct SimCLITests {
    @Test("generate a stream trace, simulate it, write CSV and SVG; bad input is one clear line")
    func simulate() throws {
        let base = temporaryPath("sim")
        defer {
            for suffix in [".csv", "-out.csv", ".svg"] { try? FileManager.default.removeItem(atPath: base + suffix) }
        }
        let generated = try eddy(["sim", "--generate", "stream", "--requests", "20000", "--out", base + ".csv"])
        #expect(generated.status == 0, "\(generated.stderr)")
        let trace = try String(contentsOfFile: base + ".csv", encoding: .utf8).split(separator: "\n")
        #expect(trace.first == "time,segment,block,size" && trace.count == 20_001)

        let run = try eddy([
            "sim", base + ".csv", "--format", "block", "--policies", "lru,s3fifo:small=0.2,stream,belady", "--sizes",
            "0.05,500", "--out", base + "-out.csv", "--plot", base + ".svg",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("s3fifo:small=0.2") && run.stdout.contains("M requests/s"))
        #expect(run.stderr.contains("working set"))
        let rows = try String(contentsOfFile: base + "-out.csv", encoding: .utf8).split(separator: "\n")
        #expect(rows.first == "policy,cache_size,size_mode,requests,misses,miss_ratio,byte_miss_ratio")
        #expect(rows.count == 1 + 4 * 2)
        let byPolicy = Dictionary(grouping: rows.dropFirst().map { $0.split(separator: ",") }) { String($0[0]) }
        // Belady is a lower bound for every policy at every size.
        for size in ["500"] {
            let belady = Double(byPolicy["belady"]!.first { $0[1] == size }![5])!
            for (policy, lines) in byPolicy where policy != "belady" {
                let ratio = Double(lines.first { $0[1] == size }![5])!
                #expect(belady <= ratio, "\(policy) beat Belady")
            }
        }
        let svg = try String(contentsOfFile: base + ".svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<polyline").count == 5)

        for bad in [
            ["sim", base + ".csv", "--format", "block", "--policies", "nope"],
            ["sim", base + ".csv", "--format", "block", "--sizes", "0"],
            ["sim", base + ".csv", "--format", "nope"],
            ["sim", "/no/such/trace.csv", "--format", "block"],
            ["sim", base + ".csv", "--format", "oracleGeneral"],
            ["sim", "--generate", "nope", "--out", base + "-x.csv"],
        ] {
            let r = try eddy(bad)
            #expect(r.status != 0, "\(bad) succeeded")
            #expect(r.stderr.split(separator: "\n").last?.hasPrefix("eddy: ") == true, "\(bad): \(r.stderr)")
        }
    }
}
