/// An event: what a writer appends and a reader receives.
public struct Event: Hashable, Sendable {
    /// The routing key that chose the segment, or nil for an event written without one.
    public var routingKey: String?
    /// When the writer framed the event, in microseconds since the Unix epoch.
    public var timestamp: Int64
    /// The event's bytes, opaque to Eddy.
    public var payload: [UInt8]

    /// Creates an event.
    public init(routingKey: String? = nil, timestamp: Int64, payload: [UInt8]) {
        self.routingKey = routingKey
        self.timestamp = timestamp
        self.payload = payload
    }
}

/// EventFrame is the byte layout of an event inside a segment (docs/protocol.md, "Event frame").
///
/// All integers are big-endian:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | L: number of bytes after this field (the whole frame is 4 + L bytes) |
/// | 4 | 4 | CRC32C of bytes 8 ..< 4 + L |
/// | 8 | 8 | timestamp, microseconds since the Unix epoch (signed) |
/// | 16 | 2 | K: routing key length in bytes, 0 for no key |
/// | 18 | K | routing key, UTF-8 |
/// | 18 + K | L - 14 - K | payload |
///
/// The CRC covers everything but the length and itself, so a torn or corrupted frame fails the check
/// unless its length field alone is damaged, and then the CRC lands on the wrong bytes and fails too.
public enum EventFrame {
    /// Bytes before the routing key.
    public static let headerSize = 18
    /// The largest payload accepted, 8 MiB.
    public static let maxPayloadSize = 8 << 20
    /// The longest routing key accepted, in UTF-8 bytes.
    public static let maxKeyLength = 1024
    /// The largest whole frame.
    public static let maxFrameSize = headerSize + maxKeyLength + maxPayloadSize

    /// The size of the frame that holds a key and payload of these lengths.
    public static func frameSize(keyLength: Int, payloadLength: Int) -> Int {
        headerSize + keyLength + payloadLength
    }

    /// Appends the frame of `event` to `out`.
    /// - Throws: ``EddyError/Code/malformedEvent`` when the key or payload is over its limit.
    public static func encode(_ event: Event, into out: inout [UInt8]) throws(EddyError) {
        let key = Array((event.routingKey ?? "").utf8)
        guard key.count <= maxKeyLength else {
            throw EddyError(.malformedEvent, "routing key of \(key.count) bytes, at most \(maxKeyLength) allowed")
        }
        guard event.payload.count <= maxPayloadSize else {
            throw EddyError(
                .malformedEvent, "event payload of \(event.payload.count) bytes, at most \(maxPayloadSize) allowed")
        }
        let start = out.count
        let bodyLength = 14 + key.count + event.payload.count
        out.reserveCapacity(start + 4 + bodyLength)
        appendBigEndian(UInt32(bodyLength), to: &out)
        appendBigEndian(UInt32(0), to: &out)  // CRC, filled below
        appendBigEndian(UInt64(bitPattern: event.timestamp), to: &out)
        appendBigEndian(UInt16(key.count), to: &out)
        out.append(contentsOf: key)
        out.append(contentsOf: event.payload)
        let crc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + 8)...])) }
        out.withUnsafeMutableBytes { $0.storeBytes(of: crc.bigEndian, toByteOffset: start + 4, as: UInt32.self) }
    }

    /// Returns the frame of `event` as a new array.
    public static func encode(_ event: Event) throws(EddyError) -> [UInt8] {
        var out: [UInt8] = []
        try encode(event, into: &out)
        return out
    }

    /// What ``check(_:at:)`` found at an offset.
    public enum CheckResult: Equatable, Sendable {
        /// A whole, valid frame of this many bytes.
        case frame(size: Int)
        /// The bytes end before the frame does; `size` is the frame's declared size if known, else 0.
        case incomplete(size: Int)
        /// The bytes are not a valid frame; the string says why.
        case corrupt(String)
    }

    /// Checks the frame that starts at `offset`: structure and CRC32C.
    /// - Complexity: O(frame size).
    public static func check(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> CheckResult {
        let available = bytes.count - offset
        guard available >= 4 else { return .incomplete(size: 0) }
        let bodyLength = Int(loadBigEndian(UInt32.self, bytes, offset))
        guard bodyLength >= 14, bodyLength <= maxFrameSize - 4 else {
            return .corrupt("frame length \(bodyLength) is impossible")
        }
        let size = 4 + bodyLength
        guard available >= size else {
            if available >= headerSize {
                let keyLength = Int(loadBigEndian(UInt16.self, bytes, offset + 16))
                if keyLength > maxKeyLength || keyLength > bodyLength - 14 {
                    return .corrupt("routing key length \(keyLength) does not fit the frame")
                }
            }
            return .incomplete(size: size)
        }
        let keyLength = Int(loadBigEndian(UInt16.self, bytes, offset + 16))
        guard keyLength <= maxKeyLength, keyLength <= bodyLength - 14 else {
            return .corrupt("routing key length \(keyLength) does not fit the frame")
        }
        let stored = loadBigEndian(UInt32.self, bytes, offset + 4)
        let actual = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[(offset + 8)..<(offset + size)]))
        guard stored == actual else {
            return .corrupt(
                "CRC32C mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(actual, radix: 16)))")
        }
        return .frame(size: size)
    }

    /// Decodes the valid frame at `offset`.
    /// - Returns: the event and the frame's size in bytes.
    /// - Throws: ``EddyError/Code/malformedEvent`` when the frame is incomplete or corrupt.
    public static func decode(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(EddyError) -> (Event, Int) {
        switch check(bytes, at: offset) {
        case .incomplete:
            throw EddyError(.malformedEvent, "event frame at \(offset) is cut short")
        case .corrupt(let why):
            throw EddyError(.malformedEvent, "event frame at \(offset): \(why)")
        case .frame(let size):
            return (decode(checked: bytes, at: offset, size: size), size)
        }
    }

    /// Decodes the frame of `size` bytes at `offset`, which ``check(_:at:)`` found valid (`.frame(size)`): no
    /// second pass over its bytes for the CRC.
    public static func decode(checked bytes: UnsafeRawBufferPointer, at offset: Int, size: Int) -> Event {
        let timestamp = Int64(bitPattern: loadBigEndian(UInt64.self, bytes, offset + 8))
        let keyLength = Int(loadBigEndian(UInt16.self, bytes, offset + 16))
        let keyStart = offset + headerSize
        let key = keyLength == 0 ? nil : String(decoding: bytes[keyStart..<(keyStart + keyLength)], as: UTF8.self)
        let payload = Array(bytes[(keyStart + keyLength)..<(offset + size)])
        return Event(routingKey: key, timestamp: timestamp, payload: payload)
    }

    /// Decodes every frame in `bytes`, which must hold whole frames only.
    public static func decodeAll(_ bytes: UnsafeRawBufferPointer) throws(EddyError) -> [Event] {
        var events: [Event] = []
        var at = 0
        while at < bytes.count {
            let (event, size) = try decode(bytes, at: at)
            events.append(event)
            at += size
        }
        return events
    }

    /// Sizes of the whole frames in `bytes` in order; every byte must belong to a valid frame.
    /// - Throws: ``EddyError/Code/malformedEvent`` naming the first bad frame's offset.
    public static func frameSizes(_ bytes: UnsafeRawBufferPointer) throws(EddyError) -> [Int] {
        var sizes: [Int] = []
        var at = 0
        while at < bytes.count {
            switch check(bytes, at: at) {
            case .frame(let size):
                sizes.append(size)
                at += size
            case .incomplete:
                throw EddyError(.malformedEvent, "event frame at byte \(at) of the batch is cut short")
            case .corrupt(let why):
                throw EddyError(.malformedEvent, "event frame at byte \(at) of the batch: \(why)")
            }
        }
        return sizes
    }
}

@inline(__always)
func loadBigEndian<T: FixedWidthInteger>(_: T.Type, _ bytes: UnsafeRawBufferPointer, _ offset: Int) -> T {
    T(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
}

@inline(__always)
func appendBigEndian<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
    withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) }
}
