/// ObjectKey holds the rules every backend applies to keys, and the fixed-width numbers that make keys list in
/// order.
///
/// A key is 1 to 1024 bytes of UTF-8 without control characters, made of `/`-separated segments, none of them
/// empty, `.` or `..` (so it maps to a path under a folder and cannot escape it). These are the rules of S3's
/// "safe characters" guidance plus what a filesystem needs; a backend may add its own reserved names.
public enum ObjectKey {
    /// The longest key S3 accepts, in UTF-8 bytes.
    public static let maximumLength = 1024

    /// Checks `key` against the rules.
    /// - Throws: ``ObjectStoreError/invalidKey(_:_:)`` naming the broken rule.
    public static func validate(_ key: String) throws {
        let bytes = key.utf8
        if bytes.isEmpty { throw ObjectStoreError.invalidKey(key, "empty") }
        if bytes.count > maximumLength {
            throw ObjectStoreError.invalidKey(key, "longer than \(maximumLength) bytes")
        }
        if let bad = bytes.first(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw ObjectStoreError.invalidKey(key, "control character 0x\(String(bad, radix: 16))")
        }
        for segment in key.split(separator: "/", omittingEmptySubsequences: false) {
            if segment.isEmpty {
                throw ObjectStoreError.invalidKey(key, "empty path segment (leading, trailing or double '/')")
            }
            if segment == "." || segment == ".." {
                throw ObjectStoreError.invalidKey(key, "'\(segment)' path segment")
            }
        }
    }

    /// Checks a listing prefix: empty, or a key's start (it may end in `/`).
    /// - Throws: ``ObjectStoreError/invalidKey(_:_:)``.
    public static func validatePrefix(_ prefix: String) throws {
        if prefix.isEmpty { return }
        try validate(prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix)
    }

    /// `value` in decimal, zero-padded to `width` digits, so that keys built of such numbers sort by value
    /// (`fixedWidth(42, 8)` is `00000042`).
    /// - Precondition: `value` is not negative and has at most `width` digits.
    public static func fixedWidth<T: BinaryInteger>(_ value: T, _ width: Int) -> String {
        precondition(value >= 0, "fixed-width key numbers are not negative")
        let digits = String(value)
        precondition(digits.count <= width, "\(digits) has more than \(width) digits")
        return String(repeating: "0", count: width - digits.count) + digits
    }

    /// `prefix` and `rest` joined by one `/` (an empty prefix adds nothing).
    public static func join(_ prefix: String, _ rest: String) -> String {
        if prefix.isEmpty { return rest }
        return prefix.hasSuffix("/") ? prefix + rest : prefix + "/" + rest
    }
}
