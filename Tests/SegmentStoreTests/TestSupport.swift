import Foundation
import SegmentStore
import StreamModel

/// A fresh directory under the system's temporary directory, removed by `cleanup()`.
struct TemporaryDirectory {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "eddy-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

func frames(_ payloads: [String], key: String? = nil) throws -> ([UInt8], [Int]) {
    var out: [UInt8] = []
    var sizes: [Int] = []
    for (i, p) in payloads.enumerated() {
        let before = out.count
        try EventFrame.encode(Event(routingKey: key, timestamp: Int64(i), payload: Array(p.utf8)), into: &out)
        sizes.append(out.count - before)
    }
    return (out, sizes)
}

func payloads(_ bytes: [UInt8]) throws -> [String] {
    try bytes.withBytes { (b) throws(EddyError) in try EventFrame.decodeAll(b) }.map {
        String(decoding: $0.payload, as: UTF8.self)
    }
}

func openStore(_ dir: TemporaryDirectory, io: IOBackend = .auto, checkpointBytes: UInt64 = 64 << 20) throws
    -> SegmentStore
{
    var configuration = StoreConfiguration(dataDirectory: dir.path)
    configuration.ioBackend = io
    configuration.checkpointBytes = checkpointBytes
    configuration.logger.logLevel = .warning
    return try SegmentStore(configuration: configuration)
}

/// The code of an ``EddyError``, or nil for any other error.
func code(of error: any Error) -> EddyError.Code? { (error as? EddyError)?.code }
