import StreamModel

/// ServerAddress is a `HOST:PORT` pair as the CLI and configs write it (`[::1]:9090` for IPv6).
public struct ServerAddress: Hashable, Sendable, CustomStringConvertible {
    /// Host name or IP address.
    public let host: String
    /// TCP port.
    public let port: Int

    /// Creates an address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses a comma-separated list, `HOST:PORT,HOST:PORT,...` (empty text: none).
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the first item that is not `HOST:PORT`.
    public static func list(parsing text: String) throws(EddyError) -> [ServerAddress] {
        var out: [ServerAddress] = []
        for item in text.split(separator: ",") { out.append(try ServerAddress(parsing: String(item))) }
        return out
    }

    /// Parses `HOST:PORT`.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the text when it is not of that form.
    public init(parsing text: String) throws(EddyError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw EddyError(.invalidArgument, "invalid address '\(text)': expected HOST:PORT with a port 0-65535")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw EddyError(.invalidArgument, "invalid address '\(text)': empty host") }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
