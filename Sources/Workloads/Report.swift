import Foundation
import StreamModel

/// Report renders simulation results: a table for people, the CSV `eddy sim --out` writes, and an SVG
/// miss-ratio curve.
public enum Report {
    /// The CSV header; one row per result follows.
    public static let csvHeader = "policy,cache_size,size_mode,requests,misses,miss_ratio,byte_miss_ratio"

    /// Results as CSV text.
    public static func csv(_ results: [SimulationResult]) -> String {
        var out = csvHeader + "\n"
        for r in results {
            out += "\(r.policy),\(r.cacheSize),\(r.sizeMode.rawValue),\(r.requests),\(r.misses),"
            out += String(format: "%.6f,%.6f\n", r.missRatio, r.byteMissRatio)
        }
        return out
    }

    /// Results as an aligned text table.
    public static func table(_ results: [SimulationResult]) -> String {
        let header = ["policy", "cache size", "requests", "misses", "miss ratio", "byte miss", "Mreq/s"]
        var rows = [header]
        for r in results {
            rows.append([
                r.policy, "\(r.cacheSize)", "\(r.requests)", "\(r.misses)", String(format: "%.4f", r.missRatio),
                String(format: "%.4f", r.byteMissRatio), String(format: "%.1f", r.requestsPerSecond / 1e6),
            ])
        }
        return aligned(rows)
    }

    /// Rows of cells as a text table: the first column left-aligned, the others right-aligned, two spaces apart.
    public static func aligned(_ rows: [[String]]) -> String {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, cell in
                c == 0
                    ? cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    static let palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
        "#000000", "#393b79",
    ]

    /// A miss-ratio curve: miss ratio against cache size, one line per policy, with axes, ticks and a legend.
    /// The size axis is logarithmic when the sizes span more than a factor of 10.
    public static func svg(_ results: [SimulationResult], title: String) -> String {
        let width = 860.0
        let height = 520.0
        let left = 80.0
        let right = 190.0
        let top = 50.0
        let bottom = 70.0
        let plotW = width - left - right
        let plotH = height - top - bottom
        let sizes = Set(results.map(\.cacheSize)).sorted()
        let policies = results.reduce(into: [String]()) { if !$0.contains($1.policy) { $0.append($1.policy) } }
        guard let minSize = sizes.first, let maxSize = sizes.last else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\"/>"
        }
        let logScale = Double(maxSize) / Double(max(1, minSize)) > 10
        func x(_ size: Int64) -> Double {
            guard maxSize > minSize else { return left + plotW / 2 }
            let t =
                logScale
                ? (log(Double(size)) - log(Double(minSize))) / (log(Double(maxSize)) - log(Double(minSize)))
                : Double(size - minSize) / Double(maxSize - minSize)
            return left + t * plotW
        }
        let maxRatio = min(1.0, (results.map(\.missRatio).max() ?? 1) * 1.05 + 0.01)
        let yTop = (maxRatio * 10).rounded(.up) / 10
        func y(_ ratio: Double) -> Double { top + (1 - ratio / yTop) * plotH }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            font-family="Helvetica, Arial, sans-serif" font-size="13">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left + plotW / 2)" y="28" text-anchor="middle" font-size="16">\(escape(title))</text>

            """
        // Grid and y ticks every 0.1 (0.05 for small ranges).
        let step = yTop <= 0.3 ? 0.05 : 0.1
        var r = 0.0
        while r <= yTop + 1e-9 {
            let yy = f(y(r))
            s += "<line x1=\"\(left)\" y1=\"\(yy)\" x2=\"\(left + plotW)\" y2=\"\(yy)\" stroke=\"#e0e0e0\"/>\n"
            s +=
                "<text x=\"\(left - 8)\" y=\"\(f(y(r) + 4))\" text-anchor=\"end\">\(String(format: "%.2f", r))</text>\n"
            r += step
        }
        for size in sizes {
            let xx = f(x(size))
            s += "<line x1=\"\(xx)\" y1=\"\(top)\" x2=\"\(xx)\" y2=\"\(top + plotH)\" stroke=\"#f0f0f0\"/>\n"
            s +=
                "<text x=\"\(xx)\" y=\"\(top + plotH + 18)\" text-anchor=\"middle\">\(humanSize(size, bytes: results.first?.sizeMode == .bytes))</text>\n"
        }
        s += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotW)\" height=\"\(plotH)\" fill=\"none\" stroke=\"#333\"/>\n"
        let unit = results.first?.sizeMode == .bytes ? "bytes" : "objects"
        s +=
            "<text x=\"\(left + plotW / 2)\" y=\"\(height - 22)\" text-anchor=\"middle\">cache size (\(unit)\(logScale ? ", log scale" : ""))</text>\n"
        s +=
            "<text transform=\"translate(22,\(top + plotH / 2)) rotate(-90)\" text-anchor=\"middle\">miss ratio</text>\n"
        for (i, policy) in policies.enumerated() {
            let color = palette[i % palette.count]
            let points = results.filter { $0.policy == policy }.sorted { $0.cacheSize < $1.cacheSize }
            let path = points.map { "\(f(x($0.cacheSize))),\(f(y($0.missRatio)))" }.joined(separator: " ")
            let dash = i >= palette.count ? " stroke-dasharray=\"6,3\"" : ""
            s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>\n"
            for p in points {
                s += "<circle cx=\"\(f(x(p.cacheSize)))\" cy=\"\(f(y(p.missRatio)))\" r=\"3.5\" fill=\"\(color)\"/>\n"
            }
            let ly = top + 14 + Double(i) * 22
            let lx = left + plotW + 20
            s +=
                "<line x1=\"\(lx)\" y1=\"\(ly)\" x2=\"\(lx + 28)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"3\"/>\n"
            s += "<text x=\"\(lx + 36)\" y=\"\(ly + 4)\">\(escape(policy))</text>\n"
        }
        s += "</svg>\n"
        return s
    }

    /// A count for people: bytes in KiB, MiB, ... (`4MiB`, `57.6MiB`), other counts in thousands.
    public static func humanSize(_ v: Int64, bytes: Bool) -> String {
        guard bytes else { return v >= 10_000 ? String(format: "%.0fk", Double(v) / 1000) : "\(v)" }
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(v)
        var u = 0
        while value >= 1024 && u < units.count - 1 {
            value /= 1024
            u += 1
        }
        return value >= 100 || value == value.rounded()
            ? String(format: "%.0f%@", value, units[u]) : String(format: "%.1f%@", value, units[u])
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Writes text to a file.
    public static func write(_ text: String, to path: String) throws(EddyError) {
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw EddyError(.ioError, "cannot write \(path): \(error.localizedDescription)")
        }
    }
}
