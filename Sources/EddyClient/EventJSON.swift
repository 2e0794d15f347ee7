import Foundation
import StreamModel

extension PointedEvent {
    /// The event as one line of JSON without its newline: `pointer`, `timestamp` (microseconds since 1970), `key`
    /// (null without one) and `payload` (UTF-8 text) or `payload_base64` (any other bytes), keys sorted. It is
    /// what `eddy read --format json` prints and what the HTTP gateway sends (NDJSON lines, Server-Sent Events'
    /// data).
    public func json() -> [UInt8] {
        var object: [String: Any] = [
            "pointer": pointer.description,
            "timestamp": event.timestamp,
            "key": event.routingKey.map { $0 as Any } ?? NSNull(),
        ]
        if let text = String(validating: event.payload, as: UTF8.self) {
            object["payload"] = text
        } else {
            object["payload_base64"] = Data(event.payload).base64EncodedString()
        }
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
        return Array(data)
    }
}
