/// MetricSample is one value a server reports when its metrics are scraped: a Prometheus series (name and
/// labels), what kind it is, its help text and its value now. Stores and nodes list their samples from the
/// counters they keep anyway; the admin server turns them into Prometheus metrics (`/metrics`), so a scrape
/// costs the hot path nothing.
public struct MetricSample: Sendable {
    /// Counter (only grows) or gauge (goes up and down).
    public enum Kind: Sendable, Hashable {
        /// A count since the process started: requests, bytes. Named `..._total`.
        case counter
        /// A value now: entries, bytes held, an epoch, a ratio.
        case gauge
    }

    /// The series name, Prometheus style (`eddy_cache_hits_total`).
    public var name: String
    /// The label pairs, in a fixed order.
    public var labels: [(String, String)]
    /// Counter or gauge.
    public var kind: Kind
    /// One line saying what it counts (the same for every series of a name).
    public var help: String
    /// The value now.
    public var value: Double

    /// Creates a sample.
    public init(_ name: String, _ kind: Kind, _ value: Double, labels: [(String, String)] = [], help: String) {
        self.name = name
        self.kind = kind
        self.value = value
        self.labels = labels
        self.help = help
    }

    /// One sample per row (name, kind, value, help), all with `labels`.
    public static func rows(_ labels: [(String, String)], _ rows: [(String, Kind, Double, String)]) -> [MetricSample] {
        rows.map { MetricSample($0.0, $0.1, $0.2, labels: labels, help: $0.3) }
    }
}
