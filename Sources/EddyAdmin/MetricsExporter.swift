import Prometheus
import StreamModel
import Synchronization

/// MetricsExporter is one server's Prometheus registry (swift-prometheus) and the swift-metrics factory on it.
///
/// Two kinds of series meet in it: histograms the server records as it works (request and journal sync
/// latencies, through ``factory``), and the counters and gauges it already keeps, read when `/metrics` is
/// scraped (``render(_:)`` takes them as ``MetricSample``s: counters advance by what they grew since the last
/// scrape, gauges are set, and a gauge series that is gone, such as the flush lag of a segment the node no longer
/// owns, is removed). One registry per server, so the three nodes of `eddy up` each export their own.
public final class MetricsExporter: Sendable {
    /// The registry the metrics live in.
    public let registry: PrometheusCollectorRegistry
    /// The swift-metrics factory for the registry (pass it to ``CacheNode`` and the store's configuration).
    public let factory: PrometheusMetricsFactory
    private let state = Mutex(State())

    private struct State {
        var counted: [String: Double] = [:]
        var gauges: [String: Prometheus.Gauge] = [:]
    }

    /// The buckets of every latency histogram: 50 µs to 10 s, about three per decade.
    public static let latencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
        .seconds(10),
    ]

    /// Creates an empty registry.
    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.latencyBuckets
        self.factory = factory
    }

    /// The exposition text (Prometheus text format 0.0.4) after taking in `samples`.
    public func render(_ samples: [MetricSample]) -> [UInt8] {
        state.withLock { s in
            var seen: Set<String> = []
            for sample in samples {
                let key = Self.key(sample)
                let descriptor = MetricNameDescriptor(metricName: sample.name, unitName: "", helpText: sample.help)
                switch sample.kind {
                case .counter:
                    let before = s.counted[key] ?? 0
                    if sample.value > before {
                        registry.makeCounter(descriptor: descriptor, labels: sample.labels)
                            .increment(by: sample.value - before)
                        s.counted[key] = sample.value
                    } else if s.counted[key] == nil {
                        _ = registry.makeCounter(descriptor: descriptor, labels: sample.labels)
                        s.counted[key] = sample.value
                    }
                case .gauge:
                    let gauge = registry.makeGauge(descriptor: descriptor, labels: sample.labels)
                    gauge.set(to: sample.value)
                    s.gauges[key] = gauge
                    seen.insert(key)
                }
            }
            for (key, gauge) in s.gauges where !seen.contains(key) {
                registry.unregisterGauge(gauge)
                s.gauges[key] = nil
            }
            return registry.emitToBuffer()
        }
    }

    private static func key(_ sample: MetricSample) -> String {
        sample.name + "{" + sample.labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }
}
