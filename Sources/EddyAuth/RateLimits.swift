import StreamModel
import Synchronization

/// Per-tenant rates (`--tenant-requests`, `--tenant-bytes`): a token bucket per principal for requests a second
/// and one for bytes a second, each holding one second's worth. The byte bucket pays for what a client sends
/// (appends' events) and for what it is served (reads, subscriptions: ``debit(_:bytes:now:)``). A request over
/// either is refused with ``EddyError/Code/overloaded`` naming the limit; the principal's other requests go on
/// once its buckets refill. Administrators of everything (the nodes' service identity,
/// operators) are not limited, so node-to-node traffic never is.
public final class TenantRates: Sendable {
    /// Requests a second per principal (0: no limit).
    public let requestsPerSecond: Double
    /// Request bytes a second per principal (0: no limit).
    public let bytesPerSecond: Double

    struct Bucket {
        var requests: Double
        var bytes: Double
        var refilled: ContinuousClock.Instant
    }

    private let buckets = Mutex<[String: Bucket]>([:])

    /// Rates of `requestsPerSecond` and `bytesPerSecond` per principal (0: that one is not limited).
    public init(requestsPerSecond: Double = 0, bytesPerSecond: Double = 0) {
        self.requestsPerSecond = requestsPerSecond
        self.bytesPerSecond = bytesPerSecond
    }

    /// Whether any rate is limited.
    public var enabled: Bool { requestsPerSecond > 0 || bytesPerSecond > 0 }

    /// Charges one request of `bytes` to `principal`.
    /// - Throws: ``EddyError/Code/overloaded`` when the principal is over one of its rates.
    public func charge(_ principal: Principal, bytes: Int, now: ContinuousClock.Instant = .now) throws(EddyError) {
        guard enabled, !principal.isAdministrator else { return }
        let refusal: String? = buckets.withLock { all in
            var b = refilled(all[principal.name], now: now)
            defer { all[principal.name] = b }
            if requestsPerSecond > 0 && b.requests < 1 {
                return "\(principal.name) is over its \(Int(requestsPerSecond)) requests a second (--tenant-requests)"
            }
            // A request bigger than a whole second's bytes passes when the bucket is full (else it never could).
            if bytesPerSecond > 0 && b.bytes < min(Double(bytes), bytesPerSecond) {
                return "\(principal.name) is over its \(Int(bytesPerSecond)) bytes a second (--tenant-bytes)"
            }
            if requestsPerSecond > 0 { b.requests -= 1 }
            if bytesPerSecond > 0 { b.bytes -= Double(bytes) }
            return nil
        }
        if let refusal { throw EddyError(.overloaded, refusal + ": try again shortly") }
    }

    /// Charges `bytes` served to `principal` (a read's answer, a subscription's push) to its byte bucket. The
    /// bytes are already sent, so nothing is refused here: the bucket goes below zero (at most a minute's worth),
    /// and the principal's next requests are refused until it has refilled.
    public func debit(_ principal: Principal, bytes: Int, now: ContinuousClock.Instant = .now) {
        guard bytesPerSecond > 0, bytes > 0, !principal.isAdministrator else { return }
        buckets.withLock { all in
            var b = refilled(all[principal.name], now: now)
            b.bytes = max(-60 * bytesPerSecond, b.bytes - Double(bytes))
            all[principal.name] = b
        }
    }

    /// `bucket` (a full one when nil) refilled for the time since it last was.
    private func refilled(_ bucket: Bucket?, now: ContinuousClock.Instant) -> Bucket {
        var b = bucket ?? Bucket(requests: requestsPerSecond, bytes: bytesPerSecond, refilled: now)
        let elapsed = (now - b.refilled).inSeconds
        b.requests = min(requestsPerSecond, b.requests + elapsed * requestsPerSecond)
        b.bytes = min(bytesPerSecond, b.bytes + elapsed * bytesPerSecond)
        b.refilled = now
        return b
    }
}
