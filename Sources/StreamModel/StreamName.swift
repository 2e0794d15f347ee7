/// A stream's full name, `scope/stream`.
///
/// Both parts are 1 to 64 characters of `[A-Za-z0-9._-]`, and neither is `.` or `..` (they name directories
/// and object keys). The validation lives in one place,
/// ``StreamName/init(parsing:)`` and ``StreamName/init(scope:stream:)``, so every module rejects the
/// same names with the same message.
public struct StreamName: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The scope, the first part of the name.
    public let scope: String
    /// The stream within the scope, the second part of the name.
    public let stream: String

    /// The longest allowed part, in characters.
    public static let maxPartLength = 64

    /// The scope of the streams Eddy keeps for itself (the write-back queues' journals): not a tenant's, left out
    /// of backups and of write-back, and not audited as an admin's action.
    public static let internalScope = "_eddy"

    /// Creates a name from its two parts, validating both.
    /// - Throws: ``EddyError`` with code ``EddyError/Code/invalidName`` naming the offending part.
    public init(scope: String, stream: String) throws(EddyError) {
        try Self.validate(part: scope, what: "scope")
        try Self.validate(part: stream, what: "stream")
        self.scope = scope
        self.stream = stream
    }

    /// Parses `scope/stream`.
    /// - Throws: ``EddyError`` with code ``EddyError/Code/invalidName`` when the text is not of that form.
    public init(parsing text: String) throws(EddyError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw EddyError(.invalidName, "invalid stream name '\(text)': expected SCOPE/STREAM")
        }
        try self.init(scope: String(parts[0]), stream: String(parts[1]))
    }

    public var description: String { "\(scope)/\(stream)" }

    public static func < (lhs: StreamName, rhs: StreamName) -> Bool {
        (lhs.scope, lhs.stream) < (rhs.scope, rhs.stream)
    }

    static func validate(part: String, what: String) throws(EddyError) {
        let utf8 = part.utf8
        guard !utf8.isEmpty else {
            throw EddyError(.invalidName, "invalid \(what) name '': must be 1 to \(maxPartLength) characters")
        }
        guard utf8.count <= maxPartLength else {
            throw EddyError(
                .invalidName,
                "invalid \(what) name '\(part)': \(utf8.count) characters, at most \(maxPartLength) allowed"
            )
        }
        guard part != "." && part != ".." else {
            throw EddyError(.invalidName, "invalid \(what) name '\(part)': '.' and '..' are reserved")
        }
        for byte in utf8 where !isNameByte(byte) {
            throw EddyError(
                .invalidName,
                "invalid \(what) name '\(part)': only letters, digits, '.', '_' and '-' are allowed"
            )
        }
    }

    static func isNameByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}

/// One segment of a stream: `scope/stream` and its number, counted from 0.
public struct SegmentID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The stream the segment belongs to.
    public let stream: StreamName
    /// The segment's number within its stream, `0 ..< segmentCount`.
    public let number: UInt32

    /// Creates a segment identifier.
    public init(stream: StreamName, number: UInt32) {
        self.stream = stream
        self.number = number
    }

    /// `scope/stream/00000003`: the number zero-padded to 8 digits so that string order is number order.
    public var description: String { "\(stream)/\(Decimal.padded(UInt64(number), width: 8))" }

    /// Parses `scope/stream/NUMBER`.
    /// - Throws: ``EddyError`` with code ``EddyError/Code/invalidName``.
    public init(parsing text: String) throws(EddyError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, let number = UInt32(parts[2]) else {
            throw EddyError(.invalidName, "invalid segment '\(text)': expected SCOPE/STREAM/NUMBER")
        }
        self.init(stream: try StreamName(scope: String(parts[0]), stream: String(parts[1])), number: number)
    }

    public static func < (lhs: SegmentID, rhs: SegmentID) -> Bool {
        (lhs.stream, lhs.number) < (rhs.stream, rhs.number)
    }
}

/// Zero-padded decimal formatting shared by the sortable text forms (pointers, segment and journal file names).
public enum Decimal {
    /// `value` in decimal, left-padded with zeros to `width` digits, so string order is numeric order.
    public static func padded(_ value: UInt64, width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
