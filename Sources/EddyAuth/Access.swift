import StreamModel

/// What a grant lets a principal do with the streams its pattern names.
///
/// `read` covers reading and tailing events and the stream's metadata; `write` covers appends, a writer's
/// state and sealing; `admin` covers creating, deleting and truncating streams, backup, restore and export,
/// and the admin commands, and includes `read` and `write`.
public enum Role: String, Sendable, Hashable, CaseIterable, Codable {
    case read
    case write
    case admin
}

/// A scope pattern and the roles it grants: `tenant-a/*` (every stream of scope `tenant-a`), `tenant-a/orders`
/// (one stream), `*` (everything). A `*` matches any run of characters, `/` included; anything else matches
/// itself.
public struct Grant: Sendable, Hashable, Codable {
    /// The pattern of `scope/stream` names.
    public var scope: String
    /// The roles granted on the streams the pattern names.
    public var roles: [Role]

    /// A grant of `roles` on the streams `scope` names.
    public init(scope: String, roles: [Role]) {
        self.scope = scope
        self.roles = roles
    }

    /// Whether the pattern names `stream` (`scope/stream`). `*` and patterns without a `*` are decided without
    /// the glob (every request of every connection asks).
    public func names(_ stream: String) -> Bool {
        if scope == "*" { return true }
        if !scope.utf8.contains(UInt8(ascii: "*")) { return scope == stream }
        return Self.glob(Array(scope.utf8), Array(stream.utf8))
    }

    /// Glob match with `*` as the only special character (iterative, with one backtrack point: linear in
    /// practice, never exponential).
    static func glob(_ pattern: [UInt8], _ text: [UInt8]) -> Bool {
        var p = 0
        var t = 0
        var star = -1
        var mark = 0
        while t < text.count {
            if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p
                mark = t
                p += 1
            } else if p < pattern.count && pattern[p] == text[t] {
                p += 1
                t += 1
            } else if star >= 0 {
                p = star + 1
                mark += 1
                t = mark
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}

/// Who made a request, as the server established it from the connection's token: a name for logs and audit,
/// and the grants that decide what it may do. A service identity (nodes talking to the store and to each other)
/// is a principal with `admin` on `*`.
public struct Principal: Sendable, Hashable {
    /// The name (`alice`, `node-service`), for logs, audit entries and error messages.
    public let name: String
    /// The grants.
    public let grants: [Grant]
    /// Whether the principal holds `admin` on every stream (`*`): the service identity and operators; needed for
    /// node-to-node messages and server-wide admin commands, and enough for every request.
    public let isAdministrator: Bool

    /// A principal named `name` with `grants`.
    public init(name: String, grants: [Grant]) {
        self.name = name
        self.grants = grants
        isAdministrator = grants.contains { $0.scope == "*" && $0.roles.contains(.admin) }
    }

    /// The principal of a server whose authentication is off: every request is allowed.
    public static let unrestricted = Principal(name: "anonymous", grants: [Grant(scope: "*", roles: [.admin])])

    /// Whether some grant gives `role` (or `admin`, which includes the others) on `stream`.
    public func may(_ role: Role, on stream: StreamName) -> Bool {
        if isAdministrator { return true }
        let text = stream.description
        return grants.contains { $0.names(text) && ($0.roles.contains(role) || $0.roles.contains(.admin)) }
    }

    /// Whether some grant gives any role on `stream`: what a listing shows.
    public func seesAny(_ stream: StreamName) -> Bool {
        if isAdministrator { return true }
        let text = stream.description
        return grants.contains { $0.names(text) && !$0.roles.isEmpty }
    }

    /// Refuses unless the principal may act as `role` on `stream`.
    /// - Throws: ``EddyError/Code/forbidden``, naming the principal, the role and the stream asked for (only
    ///   what the caller sent: nothing of other tenants).
    public func require(_ role: Role, on stream: StreamName) throws(EddyError) {
        guard may(role, on: stream) else {
            throw EddyError(.forbidden, "\(name) may not \(role.rawValue) \(stream)")
        }
    }

    /// Refuses unless the principal is an administrator of everything.
    /// - Throws: ``EddyError/Code/forbidden`` naming `what` was asked.
    public func requireAdministrator(_ what: String) throws(EddyError) {
        guard isAdministrator else { throw EddyError(.forbidden, "\(name) may not \(what): it needs admin on *") }
    }
}
