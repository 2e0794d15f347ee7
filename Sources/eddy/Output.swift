import EddyClient
import Foundation
import StreamModel
import Synchronization

/// Output writes whole lines to stdout from any task, buffered, one lock for all writers.
final class Output: Sendable {
    static let shared = Output()

    private let buffer = Mutex<[UInt8]>([])

    func line(_ text: String) {
        buffer.withLock {
            $0.append(contentsOf: text.utf8)
            $0.append(UInt8(ascii: "\n"))
        }
    }

    func line(bytes: [UInt8]) {
        buffer.withLock {
            $0.append(contentsOf: bytes)
            $0.append(UInt8(ascii: "\n"))
        }
    }

    /// Writes what is buffered.
    func flush() {
        let bytes = buffer.withLock { b -> [UInt8] in
            defer { b.removeAll(keepingCapacity: true) }
            return b
        }
        guard !bytes.isEmpty else { return }
        do {
            try FileHandle.standardOutput.write(contentsOf: Data(bytes))
        } catch {
            // The reader went away (`eddy read | head`): stop quietly, as Unix tools do on a broken pipe.
            exit(0)
        }
    }
}

/// How `read` and `tail` print events.
enum EventFormat: String, CaseIterable, Sendable {
    /// The payload, one event per line.
    case text
    /// One JSON object per line: pointer, key, timestamp, payload.
    case json

    func render(_ event: Event, pointer: EventPointer) -> [UInt8] {
        switch self {
        case .text:
            return event.payload
        case .json:
            return PointedEvent(event: event, pointer: pointer).json()
        }
    }
}

/// Prints `object` as one line of JSON with sorted keys (the `--json` output of the bench commands).
func printJSON(_ object: [String: Any]) {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    print(String(decoding: data, as: UTF8.self))
}
